"""Corpus download against a local HTTP server (no internet needed)."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from src.data_processing import corpora, download
from src.data_processing.corpora import load_corpus
from src.data_processing.download import URLS, DownloadError, download_corpus
from src.data_processing.run_data_processing import main


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1:<free port>; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def emodb_zip(path: Path, make_wav, scratch: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like EMO-DB's download.zip: wav/*.wav plus other folders."""
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(["03a01Wa", "08a02Nb", "16b10Tc"]):
            wav = make_wav(scratch / f"{name}.wav", 0.3 + 0.1 * i, seed=i)
            zf.write(wav, f"wav/{name}.wav")
        zf.writestr("lablaut/03a01Wa.lablaut", "labels\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path.read_bytes()


def test_urls_and_known_checksums():
    assert URLS["EMODB"] == "http://emodb.bilderbar.info/download/download.zip"
    assert URLS["RAVDESS"] == "https://zenodo.org/record/1188976/files/Audio_Speech_Actors_01-24.zip"
    assert download.EXPECTED["RAVDESS"] == {"size": 208468073,
                                            "md5": "bc696df654c87fed845eb13823edef8a"}


def test_download_extract_and_load(server, tmp_path, make_wav):
    www, base = server
    data = emodb_zip(www / "download.zip", make_wav, tmp_path)
    dest = tmp_path / "raw"
    folder = download_corpus("emodb", dest_root=dest, url=f"{base}/download.zip",
                             md5=hashlib.md5(data).hexdigest(), progress=False)
    assert folder == dest / "EMODB"
    assert sorted(p.name for p in (folder / "wav").glob("*.wav")) == ["03a01Wa.wav", "08a02Nb.wav",
                                                                     "16b10Tc.wav"]
    assert not list(dest.glob("*.part")) and not list(dest.glob(".EMODB.extract-*"))
    df = load_corpus("EMODB", raw_dir=folder)
    assert list(df["label"]) == ["angry", "neutral", "sad"]
    # a second call finds the folder and does not download again
    (www / "download.zip").unlink()
    assert download_corpus("EMODB", dest_root=dest, url=f"{base}/download.zip") == folder


def test_md5_mismatch_leaves_nothing(server, tmp_path, make_wav):
    www, base = server
    emodb_zip(www / "download.zip", make_wav, tmp_path)
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError, match="MD5"):
        download_corpus("EMODB", dest_root=dest, url=f"{base}/download.zip", md5="0" * 32,
                        progress=False)
    assert not (dest / "EMODB").exists()
    assert list(dest.iterdir()) == []


def test_size_mismatch_and_bad_zip(server, tmp_path, make_wav):
    www, base = server
    emodb_zip(www / "download.zip", make_wav, tmp_path)
    (www / "junk.zip").write_bytes(b"this is not a zip file" * 10)
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError, match="expected 12;"):
        download_corpus("EMODB", dest_root=dest, url=f"{base}/download.zip", size=12, progress=False)
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_corpus("EMODB", dest_root=dest, url=f"{base}/junk.zip", progress=False)
    assert list(dest.iterdir()) == []


def test_zip_slip_is_refused(server, tmp_path, make_wav):
    www, base = server
    emodb_zip(www / "evil.zip", make_wav, tmp_path, extra={"../../escaped.txt": b"gotcha"})
    dest = tmp_path / "deep" / "raw"
    with pytest.raises(DownloadError, match="outside"):
        download_corpus("EMODB", dest_root=dest, url=f"{base}/evil.zip", progress=False)
    assert not (dest / "EMODB").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_network_error_is_clear(tmp_path):
    with socket.socket() as s:   # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as info:
        download_corpus("RAVDESS", dest_root=tmp_path, url=f"http://127.0.0.1:{port}/x.zip",
                        progress=False, timeout=5)
    assert "--raw_dir" in str(info.value) and "network" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="available"):
        download_corpus("IEMOCAP", dest_root=tmp_path)


def test_cli_download_flag(server, tmp_path, make_wav, monkeypatch, capsys):
    www, base = server
    emodb_zip(www / "download.zip", make_wav, tmp_path)
    repo = tmp_path / "repo"
    monkeypatch.setattr(corpora, "REPO_ROOT", repo)
    monkeypatch.setattr(download, "DEFAULT_DEST", repo / "data" / "raw")
    monkeypatch.setitem(download.URLS, "EMODB", f"{base}/download.zip")
    monkeypatch.delenv("SER_DATA_ROOT", raising=False)
    root = tmp_path / "features"
    code = main(["--dataset", "EMODB", "--download", "--features_root", str(root),
                 "--features", "MFCC", "--no_progress", "--workers", "1"])
    assert code == 0
    assert "EMODB MFCC: 3 ok, 0 failed" in capsys.readouterr().out
    assert (repo / "data" / "raw" / "EMODB" / "wav" / "03a01Wa.wav").is_file()
