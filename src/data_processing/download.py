"""Download and unpack EMO-DB / RAVDESS into data/raw/<DATASET>/.

The archive is streamed to `<dest_root>/<DATASET>.zip.part` (progress bar), checked against the
server's Content-Length and the known size / MD5, and extracted into a temporary folder that is
renamed to `<dest_root>/<DATASET>` only when every member was written, so a failed download never
leaves a half corpus behind. Members that would land outside the folder (zip-slip: absolute
paths, `..`) are refused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / "data" / "raw"

URLS = {
    "EMODB": "http://emodb.bilderbar.info/download/download.zip",
    "RAVDESS": "https://zenodo.org/record/1188976/files/Audio_Speech_Actors_01-24.zip",
}
# Known archive sizes (bytes) and MD5 sums; None = unknown (EMO-DB: checked against
# Content-Length only).
EXPECTED = {
    "EMODB": {"size": None, "md5": None},
    "RAVDESS": {"size": 208468073, "md5": "bc696df654c87fed845eb13823edef8a"},
}
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The corpus could not be downloaded, verified or unpacked."""


def download_corpus(dataset: str, dest_root: str | os.PathLike | None = None,
                    url: str | None = None, md5: str | None = None,
                    size: int | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch `dataset`'s archive and unpack it into `<dest_root>/<DATASET>/`; return that folder.

    `url` overrides the official address; the known size/MD5 are then only used when given
    explicitly (`md5`, `size`). An existing non-empty target folder is returned as it is.
    """
    name = str(dataset).strip().upper()
    if name not in URLS:
        raise DownloadError(f"no download for dataset {dataset!r}; available: {', '.join(URLS)}")
    official = url is None
    url = url or URLS[name]
    md5 = md5 or (EXPECTED[name]["md5"] if official else None)
    size = size or (EXPECTED[name]["size"] if official else None)

    dest_root = Path(dest_root) if dest_root is not None else DEFAULT_DEST
    target = dest_root / name
    if target.is_dir() and any(target.iterdir()):
        log.info("%s already present in %s; not downloading", name, target)
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    part = dest_root / f"{name}.zip.part"
    try:
        _fetch(url, part, md5, size, progress, timeout, name)
        _extract(part, target)
    finally:
        part.unlink(missing_ok=True)
    log.info("%s unpacked into %s", name, target)
    return target


def _fetch(url: str, part: Path, md5: str | None, size: int | None, progress: bool,
           timeout: float, name: str) -> None:
    digest = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            with tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"download {name}", disable=not progress, file=sys.stderr) as bar:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"cannot download {name} from {url}: {reason}. If this machine has no network "
            f"access, download the archive elsewhere, unpack it and pass --raw_dir <folder>") from None
    if length is not None and received != length:
        raise DownloadError(f"download of {name} incomplete: {received} of {length} bytes; try again")
    if size is not None and received != size:
        raise DownloadError(f"{name} archive has {received} bytes, expected {size}; "
                            f"the file on the server may have changed")
    if md5 is not None and digest.hexdigest() != md5.lower():
        raise DownloadError(f"{name} archive MD5 {digest.hexdigest()} does not match the expected "
                            f"{md5}; the download is corrupt or the file changed")


def _extract(archive: Path, target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                root = work.resolve()
                for member in zf.infolist():
                    if member.filename.startswith("__MACOSX/"):
                        continue
                    destination = (root / member.filename).resolve()
                    if os.path.isabs(member.filename) or (destination != root and root not in destination.parents):
                        raise DownloadError(f"refusing archive member {member.filename!r}: it "
                                            f"would be written outside {target}")
                    mode = member.external_attr >> 16
                    if (mode & 0o170000) == 0o120000:
                        raise DownloadError(f"refusing symbolic link {member.filename!r} in the archive")
                    zf.extract(member, root)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"downloaded file is not a valid zip archive: {exc}") from None
        if target.exists():  # an empty folder left by the user
            target.rmdir()
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
