"""Side by side: nkululeko (audEERING's SER toolkit) against ours, same corpora and protocols.

    python -m benchmarks.bench_nkululeko [--rows a,b,c,d] [--skip_ours] [--skip_peer]
        [--features_root DIR] [--threads 1]

Rows (each system reads the same wavs of $SER_DATA_ROOT, default /work/shared/data):
  a  EMODB leave-one-speaker-out, ComParE_2016 functionals, per-speaker standardisation;
     peer: class-weighted RBF SVM with `logo = 10` (10 speakers, one per group);
     ours: `--protocol loso --speaker_norm`, --model logreg and --model svm
  b  the same on eGeMAPSv02 (ours: eGeMAPS)
  c  cross corpus EMODB -> RAVDESS, five classes (angry, fear, happy, neutral, sad), eGeMAPSv02,
     per-speaker standardisation, class-weighted SVM; peer: trained on the whole source, tested
     on the whole target; ours: `--mode train-lmmd --da_method none --model svm --split_fold 10
     --max_folds 3` (three models, each on 9/10 of the source, all tested on the whole target;
     UAR/WAR are their means)
  d  the same RAVDESS -> EMODB

The peer reads CSVs (file,emotion,speaker; absolute wav paths, labels in our names, speakers
prefixed by the corpus) and one INI per row, written to $NKULULEKO_WORK (default
/work/scratch/nkululeko-work), never into this repository or the corpora. Each peer row runs
`$NKULULEKO_PYTHON -m nkululeko.nkululeko --config ROW.ini` in a fresh experiment folder, so its
seconds include the openSMILE extraction; UAR (macro recall) and WAR (accuracy) are read from the
classification report nkululeko writes to <experiment>/results/*.txt. Our rows run
`python -m src.training.main ...` on features extracted beforehand (`python -m
src.data_processing.run_data_processing --dataset EMODB --features eGeMAPS,ComParE`, likewise
RAVDESS; --features_root names them), so our seconds exclude extraction; their metrics.json and
models go to $NKULULEKO_WORK/ours. Prints a Markdown table (row, system, protocol, UAR, WAR,
seconds) and writes benchmarks/results_nkululeko.json and benchmarks/nkululeko.md.

Obtaining the peer (outside this repository; none of its code is copied here):
    python3 -m venv /work/scratch/nkululeko-venv
    /work/scratch/nkululeko-venv/bin/pip install torch==2.13.0   # first: a CPU build, no CUDA
    /work/scratch/nkululeko-venv/bin/pip install nkululeko==1.14.1
When $NKULULEKO_PYTHON is missing or cannot import nkululeko, one line says so and only our rows
run. A run that fails, or a peer result that does not parse, ends the benchmark with one line
naming the log or file (exit 1).
"""
from __future__ import annotations

import argparse
import configparser
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import write_report

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
FIVE = ("angry", "fear", "happy", "neutral", "sad")
OBTAIN = ("python3 -m venv /work/scratch/nkululeko-venv && /work/scratch/nkululeko-venv/bin/pip "
          "install torch==2.13.0 && /work/scratch/nkululeko-venv/bin/pip install "
          "nkululeko==1.14.1 (see benchmarks/bench_nkululeko.py)")
NOTE = ("UAR and WAR are over all test predictions together (LOSO: the ten held-out speakers' "
        "predictions pooled, as nkululeko reports them; cross corpus: ours pools its three "
        "models' predictions on the whole target, which equals their mean); fold-mean UAR is "
        "the mean over the speakers (LOSO) or models. Cross corpus, the peer fits one model on "
        "the whole source, ours three, each on 9/10 of it. Peer seconds include openSMILE "
        "extraction; ours read features extracted beforehand.")
# key: (protocol, source, target, peer feature set, our feature type, our models)
ROWS = {
    "a": ("EMODB LOSO", "EMODB", None, "ComParE_2016", "ComParE", ("logreg", "svm")),
    "b": ("EMODB LOSO", "EMODB", None, "eGeMAPSv02", "eGeMAPS", ("logreg", "svm")),
    "c": ("EMODB -> RAVDESS, 5 classes", "EMODB", "RAVDESS", "eGeMAPSv02", "eGeMAPS", ("svm",)),
    "d": ("RAVDESS -> EMODB, 5 classes", "RAVDESS", "EMODB", "eGeMAPSv02", "eGeMAPS", ("svm",)),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_nkululeko",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="a,b,c,d", help="comma list of rows (a,b,c,d)")
    p.add_argument("--skip_ours", action="store_true")
    p.add_argument("--skip_peer", action="store_true")
    p.add_argument("--features_root", default=str(REPO_ROOT / "data" / "features"),
                   help="our extracted features")
    p.add_argument("--threads", type=int, default=1, help="our TensorFlow threads")
    p.add_argument("--output", default=str(HERE / "results_nkululeko.json"))
    p.add_argument("--markdown", default=str(HERE / "nkululeko.md"))
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        p.error(f"unknown rows {bad}; choose from {','.join(ROWS)}")
    return args


def work_root() -> Path:
    return Path(os.environ.get("NKULULEKO_WORK", "/work/scratch/nkululeko-work"))


def data_root() -> Path:
    return Path(os.environ.get("SER_DATA_ROOT", "/work/shared/data"))


def peer_python() -> Path:
    return Path(os.environ.get("NKULULEKO_PYTHON", "/work/scratch/nkululeko-venv/bin/python"))


VERSIONS = ("import json, sys, importlib.metadata as m\nout = {}\nfor p in sys.argv[1:]:\n"
            "    try:\n        out[p] = m.version(p)\n    except m.PackageNotFoundError:\n"
            "        pass\nprint(json.dumps(out))")
PACKAGES = ("nkululeko", "scikit-learn", "opensmile")


def package_versions(python: str) -> dict:
    """{package: version} of those of PACKAGES installed for `python` ({} if it fails)."""
    probe = subprocess.run([python, "-c", VERSIONS, *PACKAGES], capture_output=True, text=True)
    return json.loads(probe.stdout) if probe.returncode == 0 else {}


def peer_version(python: Path) -> tuple[dict, str]:
    """(the peer's package versions, "") or ({}, one skip line saying how to obtain it)."""
    if not python.is_file():
        return {}, f"nkululeko peer skipped: no {python} (NKULULEKO_PYTHON); to obtain it: {OBTAIN}"
    versions = package_versions(str(python))
    if "nkululeko" not in versions:
        return {}, (f"nkululeko peer skipped: {python} cannot import nkululeko; to obtain it: "
                    f"{OBTAIN}")
    return versions, ""


# ------------------------------------------------------------------------------ peer inputs
def corpus_rows(corpus: str, root: Path, labels=None) -> list[tuple[str, str, str]]:
    """(absolute wav path, our label, corpus-prefixed speaker) of every file, optionally only
    those labelled with one of `labels`; read with our own corpus reader."""
    from src.data_processing.corpora import load_corpus

    frame = load_corpus(corpus, raw_dir=root / corpus)
    keep = frame if labels is None else frame[frame["label"].isin(labels)]
    return [(str(Path(p).resolve()), lab, f"{corpus.lower()}_{spk}")
            for p, lab, spk in zip(keep["path"], keep["label"], keep["speaker"])]


def write_csv(rows: list[tuple[str, str, str]], path: Path) -> Path:
    """nkululeko's csv database: header file,emotion,speaker."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "emotion", "speaker"])
        writer.writerows(rows)
    return path


def peer_config(name: str, exp_root: Path, csvs: dict[str, Path], feat_set: str,
                cross: bool) -> configparser.ConfigParser:
    """The INI of one row: csvs maps database name -> CSV (source first when cross)."""
    cfg = configparser.ConfigParser()
    cfg["EXP"] = {"root": str(exp_root), "name": name, "runs": "1", "epochs": "1",
                  "save": "False"}
    data = {"databases": str(list(csvs)), "target": "emotion"}
    for i, (db, csv_path) in enumerate(csvs.items()):
        data[db] = str(csv_path)
        data[f"{db}.type"] = "csv"
        data[f"{db}.absolute_path"] = "True"
        data[f"{db}.split_strategy"] = ("train" if i == 0 else "test") if cross \
            else "speaker_split"
    if cross:
        data["labels"] = str(list(FIVE))
    cfg["DATA"] = data
    cfg["FEATS"] = {"type": "['os']", "set": feat_set, "scale": "speaker"}
    cfg["MODEL"] = {"type": "svm", "class_weight": "True"}
    if not cross:
        cfg["MODEL"]["logo"] = "10"
    return cfg


def prepare_row(key: str, work: Path, root: Path) -> Path:
    """Write the row's CSVs and INI under work; the INI path."""
    _, source, target, feat_set, _, _ = ROWS[key]
    labels = FIVE if target else None
    csvs = {}
    for corpus in (source, target) if target else (source,):
        suffix = "_5" if target else ""
        csvs[corpus.lower()] = write_csv(corpus_rows(corpus, root, labels),
                                         work / "csv" / f"{corpus.lower()}{suffix}.csv")
    name = f"row_{key}"
    cfg = peer_config(name, work / "exp", csvs, feat_set, cross=target is not None)
    ini = work / f"{name}.ini"
    with open(ini, "w") as f:
        cfg.write(f)
    return ini


# ------------------------------------------------------------------------------ peer results
def parse_peer_result(res_dir: Path) -> dict:
    """UAR and WAR of all test predictions together, from nkululeko's classification report (a
    *.txt under res_dir whose first line is sklearn's JSON report with "macro avg"), and with
    logo the speaker groups' UARs (logo_results.txt); RuntimeError naming the folder or file
    when nothing parses."""
    for path in sorted(res_dir.rglob("*.txt")) if res_dir.is_dir() else []:
        first = path.read_text().split("\n", 1)[0].strip()
        if not (first.startswith("{") and '"macro avg"' in first):
            continue
        try:
            report = json.loads(first)
            out = {"uar": float(report["macro avg"]["recall"]),
                   "war": float(report["accuracy"]), "file": str(path)}
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"cannot parse nkululeko's report {path}: {exc}") from None
        logo = next(res_dir.rglob("logo_results.txt"), None)
        if logo is not None:
            out["uar_folds"] = parse_logo_results(logo)
            out["uar_fold_mean"] = sum(out["uar_folds"]) / len(out["uar_folds"])
        return out
    raise RuntimeError(f"no nkululeko classification report (*.txt whose first line is JSON "
                       f"with \"macro avg\") under {res_dir}")


def parse_logo_results(path: Path) -> list[float]:
    """The per-group UARs of logo_results.txt (a line `LOGO results: [0.7,0.59,...]`)."""
    for line in path.read_text().splitlines():
        if line.startswith("LOGO results:"):
            try:
                return [float(v) for v in line.split("[", 1)[1].rstrip("] ").split(",")]
            except (IndexError, ValueError):
                break
    raise RuntimeError(f"cannot parse the per-group UARs of {path}")


def run_timed(cmd: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run cmd from the repository root, output to log_path; rc, wall seconds, command."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.call(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
    return {"rc": rc, "seconds": time.perf_counter() - start, "log": str(log_path),
            "command": shlex.join(cmd)}


def run_peer_row(key: str, python: Path, work: Path) -> dict:
    """Run nkululeko on one row in a fresh experiment folder; its figures."""
    ini = prepare_row(key, work, data_root())
    exp_dir = work / "exp" / f"row_{key}"
    shutil.rmtree(exp_dir, ignore_errors=True)
    run = run_timed([str(python), "-m", "nkululeko.nkululeko", "--config", str(ini)],
                    work / f"row_{key}.log")
    if run["rc"] != 0:
        raise RuntimeError(f"nkululeko failed on row {key} (rc {run['rc']}), see {run['log']}")
    return {**run, **parse_peer_result(exp_dir / "results"), "ini": str(ini),
            "ini_text": ini.read_text()}


# ------------------------------------------------------------------------------ our rows
def our_command(key: str, model: str, args) -> tuple[str, list[str]]:
    """(run id, argv) of our run for row `key` with `model`."""
    _, source, target, _, feature, _ = ROWS[key]
    if target:
        run_id = f"bench-nkulu-ours-{source.lower()}2{target.lower()}-{model}-{feature}"
        mode = ["--mode", "train-lmmd", "--data", source, "--target_data", target,
                "--da_method", "none", "--label_set", ",".join(FIVE), "--split_fold", "10",
                "--max_folds", "3"]
    else:
        run_id = f"bench-nkulu-ours-loso-{model}-{feature}"
        mode = ["--mode", "train", "--data", source, "--protocol", "loso"]
    ours = work_root() / "ours"
    return run_id, [sys.executable, "-m", "src.training.main", *mode, "--feature_type", feature,
                    "--model", model, "--speaker_norm", "--run_id", run_id, "--overwrite",
                    "--features_root", str(args.features_root), "--results_root",
                    str(ours / "results"), "--models_root", str(ours / "models"),
                    "--threads", str(args.threads), "--verbose", "0"]


def read_our_metrics(path: Path) -> dict:
    """UAR/WAR of all test predictions together (pooled) and the fold means, of metrics.json."""
    m = json.loads(path.read_text())
    return {"uar": m["uar_pooled"], "war": m["war_pooled"], "uar_fold_mean": m["uar_mean"],
            "war_fold_mean": m["war_mean"], "n_folds": m.get("n_folds"),
            "train_seconds": m.get("train_seconds"), "ensemble": m.get("ensemble"),
            "metrics": str(path)}


def run_our_row(key: str, model: str, args) -> dict:
    run_id, cmd = our_command(key, model, args)
    run = run_timed(cmd, work_root() / "ours" / f"{run_id}.log",
                    env={"SER_DATA_ROOT": str(data_root()), "TF_CPP_MIN_LOG_LEVEL": "2"})
    if run["rc"] != 0:
        raise RuntimeError(f"our run {run_id} failed (rc {run['rc']}), see {run['log']}")
    return {**run, "run_id": run_id,
            **read_our_metrics(work_root() / "ours" / "results" / run_id / "metrics.json")}


# ------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    """The table, the machine and the exact commands."""
    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    lines = [f"# nkululeko peer benchmark ({report['date']})", "",
             "| row | system | protocol | UAR % | WAR % | fold-mean UAR % | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        secs = "–" if r.get("seconds") is None else f"{r['seconds']:.0f}"
        lines.append(f"| {r['row']} | {r['system']} | {r['protocol']} | {pct(r.get('uar'))} | "
                     f"{pct(r.get('war'))} | {pct(r.get('uar_fold_mean'))} | {secs} |")
    m = report["machine"]
    lines += ["", f"Machine: {m['platform']}, {m['cpus']} CPUs, load average at start "
              f"{m['load_average_at_start']} (other jobs share the CPUs: seconds are indicative), "
              f"Python {m['python']}. "
              f"Peer packages: {report['peer_versions'] or '(absent)'}; ours: "
              f"{report['ours_versions']}.",
              f"Benchmark: `{report['command']}`", "", NOTE, ""]
    if report.get("peer_skipped"):
        lines += [f"Peer: {report['peer_skipped']}", ""]
    lines += ["Commands:", ""] + [f"- {r['row']} {r['system']}: `{r['command']}`"
                                  for r in report["results"] if r.get("command")]
    for r in report["results"]:
        if r.get("ini_text"):
            lines += ["", f"Peer INI of row {r['row']} ({r['ini']}):", "", "```ini",
                      r["ini_text"].strip(), "```"]
    return "\n".join(lines) + "\n"


def row_result(key: str, system: str, figures: dict) -> dict:
    return {"row": key, "system": system, "protocol": f"{ROWS[key][0]}, {ROWS[key][3]}",
            **figures}


def run_rows(args, report: dict, python: Path) -> None:
    """Each row: the peer (unless skipped), then our models; appended to report["results"]."""
    for key in args.rows:
        if not report["peer_skipped"]:
            version = report["peer_versions"]["nkululeko"]
            r = row_result(key, f"nkululeko {version} svm",
                           run_peer_row(key, python, work_root()))
            report["results"].append(r)
            print(f"row {key} nkululeko: UAR {100 * r['uar']:.2f} in {r['seconds']:.0f} s")
        for model in () if args.skip_ours else ROWS[key][5]:
            r = row_result(key, f"ours {model}", run_our_row(key, model, args))
            report["results"].append(r)
            print(f"row {key} ours {model}: UAR {100 * r['uar']:.2f} in {r['seconds']:.0f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    python = peer_python()
    versions, skip = ({}, "nkululeko peer skipped (--skip_peer)") if args.skip_peer \
        else peer_version(python)
    if skip:
        print(skip)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(),
                          "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
              "nkululeko_version": versions.get("nkululeko", ""), "peer_versions": versions,
              "ours_versions": package_versions(sys.executable),
              "nkululeko_python": str(python), "work": str(work_root()), "rows": args.rows,
              "peer_skipped": skip,
              "command": shlex.join([sys.executable, "-m", "benchmarks.bench_nkululeko"]
                                    + (argv if argv is not None else sys.argv[1:])),
              "results": []}
    try:
        run_rows(args, report, python)
    except RuntimeError as exc:
        print(f"bench_nkululeko: error: {exc}", file=sys.stderr)
        return 1
    write_report(report, markdown(report), args.output, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
