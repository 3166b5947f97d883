"""The accuracy benchmark's table: collect results/<run-id>/metrics.json of every accuracy run into
benchmarks/accuracy.md and into the accuracy table of docs/RESULTS.md (between the
accuracy-table markers, rewritten atomically)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.accuracy_runs import (_TRIMMED_MFCC, ACCURACY_PREP, ACCURACY_RUNS,
                                      accuracy_command, show)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = REPO_ROOT / "results"
# The accuracy table lives in docs/RESULTS.md (README.md keeps a short summary and links there).
RESULTS_DOC = REPO_ROOT / "docs" / "RESULTS.md"
README_BEGIN = "<!-- accuracy-table:begin -->"
README_END = "<!-- accuracy-table:end -->"
README_TITLE = "### Accuracy benchmark (`python -m benchmarks.run --accuracy`)"
ACCURACY_COMMAND = "python -m benchmarks.run --accuracy --skip_speed"
# LOSO folds = speakers (EMODB: 10 speakers, RAVDESS: 24 actors) unless --loso_groups is given.
LOSO_FOLDS = {"EMODB": 10, "RAVDESS": 24}
_METRIC_FIELDS = ("war_mean", "war_std", "uar_mean", "uar_std", "macro_f1_mean", "macro_f1_std",
                  "uar_pooled", "war_pooled", "n_folds", "seconds_per_epoch", "epochs", "finished", "machine")


class ReadmeError(Exception):
    """The results document cannot take the accuracy table (missing file or markers): one clear
    line. (Named for where the table used to live.)"""


def _flag(args: list[str], name: str, default: str | None = None) -> str | None:
    return args[args.index(name) + 1] if name in args else default


def run_info(run: dict) -> dict:
    """What an ACCURACY_RUNS entry trains, read from its flags (no TensorFlow import)."""
    from src.training.config import RunConfig

    args = run["args"]
    defaults = RunConfig()
    data = _flag(args, "--data").upper()
    target = (_flag(args, "--target_data") or "").upper() or None
    protocol = _flag(args, "--protocol", defaults.protocol)
    if protocol == "loso":
        total = int(_flag(args, "--loso_groups", "0")) or LOSO_FOLDS.get(data)
    else:
        total = int(_flag(args, "--split_fold", str(defaults.split_fold)))
    max_folds = int(_flag(args, "--max_folds", "0"))
    if max_folds and total:
        total = min(total, max_folds)
    feature = _flag(args, "--feature_type", defaults.feature_type)
    label = feature
    if _flag(args, "--feature_set") == _TRIMMED_MFCC:
        label += ", trimmed"
    for flag in ("--domain_norm", "--speaker_norm"):
        if flag in args:
            label += f", {flag}"
    label_set = RunConfig(label_set=_flag(args, "--label_set") or "").label_list()
    if label_set:
        label += f", {len(label_set)} classes"
    if feature == "FUSION":
        label += f" ({_flag(args, '--fusion_streams', defaults.fusion_streams)})"
    model = run.get("model") or _flag(args, "--model", defaults.model)
    label = run.get("feature", label)
    return {"data": data, "target_data": target, "cross": target is not None,
            "feature_type": feature, "feature": label, "protocol": protocol, "model": model,
            "label_set": ",".join(label_set),
            "baseline": run.get("group") == "baseline",
            "da_method": _flag(args, "--da_method", defaults.da_method) if target else None,
            "folds_total": total}


def finished_folds(models_root: Path, info: dict, run_id: str) -> int:
    """Folds of an unfinished run that have their result.json (how training counts them)."""
    folder = Path(models_root) / info["data"] / info["feature_type"] / run_id
    return len(list(folder.glob("fold_*/result.json")))


def collect_accuracy(results_root: Path = RESULTS_ROOT,
                     models_root: Path | None = None) -> tuple[list[dict], str]:
    """Rows and Markdown (benchmarks/accuracy.md) of every ACCURACY_RUNS entry.

    A run with results/<run-id>/metrics.json is finished; one without it counts the folds that
    training finished under `models_root` (default: the saved_models/ beside `results_root`)."""
    results_root = Path(results_root)
    models_root = Path(models_root) if models_root else results_root.parent / "saved_models"
    rows = []
    for run in ACCURACY_RUNS:
        run_id = f"bench-acc-{run['name']}"
        path = results_root / run_id / "metrics.json"
        info = run_info(run)
        row = {"name": run["name"], "run_id": run_id, "command": show(accuracy_command(run)),
               **info}
        if path.exists():
            metrics = json.loads(path.read_text())
            row.update({k: metrics.get(k) for k in _METRIC_FIELDS})
            row["source"] = metrics.get("source") or {}
            row["source_uar_mean"] = row["source"].get("uar_mean")
            row["folds_done"] = metrics.get("n_folds")
        else:
            row["folds_done"] = finished_folds(models_root, info, run_id)
        rows.append(row)

    def pct(row, key):
        mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
        if mean is None:
            return "-"
        return f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"

    lines = ["# Accuracy", "",
             "Commands of `benchmarks.run.ACCURACY_RUNS` (WAR, UAR, macro-F1 in %, mean ± std "
             "over folds; cross-corpus runs: on the whole target corpus, with the held-out "
             "source folds' UAR beside).", "",
             "| run | WAR | UAR | macro-F1 | source UAR | folds | s/epoch | command |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "war_mean" not in r:
            state = "unfinished" if r.get("folds_done") else "not run"
            lines.append(f"| {r['name']} | {state} | | | | {_folds(r)} | | `{r['command']}` |")
            continue
        source = f"{100 * r['source_uar_mean']:.2f}" if r.get("source_uar_mean") is not None \
            else "-"
        spe = f"{r['seconds_per_epoch']:.2f}" if r.get("seconds_per_epoch") else "-"
        lines.append(f"| {r['name']} | {pct(r, 'war')} | {pct(r, 'uar')} | "
                     f"{pct(r, 'macro_f1')} | {source} | {r.get('n_folds')} | {spe} | "
                     f"`{r['command']}` |")
    return rows, "\n".join(lines) + "\n"


def same_corpus_reference(row: dict, rows: list[dict]) -> dict | None:
    """The finished same-corpus row that trains what cross-corpus `row` trains without a target:
    same source corpus, feature type, model and label set (so the same training files per
    epoch), with a seconds_per_epoch; None when the benchmark has none."""
    for other in rows:
        if (not other["cross"] and other.get("seconds_per_epoch")
                and all(other[k] == row[k] for k in ("data", "feature_type", "model",
                                                     "label_set"))):
            return other
    return None


def _epoch_cost(row: dict, rows: list[dict]) -> tuple[str, str]:
    """(s/epoch, `ratio x` against its same-corpus reference) cells of a cross-corpus row."""
    seconds = row.get("seconds_per_epoch")
    if not seconds:
        return "-", "-"
    reference = same_corpus_reference(row, rows)
    if reference is None:
        return f"{seconds:.2f}", "-"
    return (f"{seconds:.2f}", f"{seconds / reference['seconds_per_epoch']:.2f}x "
                              f"({reference['name']})")


def _folds(row: dict) -> str:
    return f"{row.get('folds_done') or 0} / {row.get('folds_total') or '?'}"


def _readme_pct(values: dict, key: str) -> str:
    """`mean +/- std` in % (the notation of docs/RESULTS.md), or `-`."""
    mean, std = values.get(f"{key}_mean"), values.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} +/- {100 * (std or 0):.2f}"


def render_readme_block(rows: list[dict], machine: dict) -> str:
    """The text between the accuracy-table markers of docs/RESULTS.md."""
    if not any(r.get("folds_done") or "war_mean" in r for r in rows):
        return "\n".join([
            README_TITLE,
            "No run of the accuracy benchmark has finished yet. This command fills the table in",
            "(hours on 2 cores; run again, it resumes each run at its first unfinished fold):",
            "```bash", ACCURACY_COMMAND, "```"]) + "\n"
    gpus = ", ".join(machine.get("gpus") or []) or "none visible to TensorFlow"
    trained_on = sorted({r["machine"] for r in rows if r.get("machine")})
    lines = [
        README_TITLE,
        f"Written by `python -m benchmarks.run --accuracy` on {machine['date']} (the text between "
        f"the accuracy-table markers is regenerated; edit outside them). Collected on "
        f"{machine['cpu_count']} CPU cores ({machine.get('cpu_model') or 'unknown CPU'}), "
        f"{machine.get('memory_gib') or '-'} GiB, {machine['platform']}, Python "
        f"{machine['python']} / TensorFlow {machine.get('tensorflow') or '-'}, GPU: {gpus}"
        + (f"; runs trained on: {', '.join(trained_on)}" if trained_on else "") + ".",
        "Mean +/- std over the finished folds (population std), in %; folds = finished / total. "
        "Cross corpus: target figures on the whole target corpus, source UAR on the held-out "
        "source folds.",
    ]
    same = [r for r in rows if not r["cross"]]
    cross = [r for r in rows if r["cross"]]
    if same:
        lines += ["", "| run | data | feature | model | protocol | folds | WAR | UAR | macro-F1 "
                      "| UAR, all folds pooled | finished |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in same:
            pooled = (f"{100 * r['uar_pooled']:.2f}" if r.get("uar_pooled") is not None
                      else "-")
            model = r["model"] + (" (baseline)" if r.get("baseline") else "")
            lines.append(f"| {r['name']} | {r['data']} | {r['feature']} | {model} | "
                         f"{r['protocol']} | {_folds(r)} | {_readme_pct(r, 'war')} | "
                         f"{_readme_pct(r, 'uar')} | {_readme_pct(r, 'macro_f1')} | {pooled} | "
                         f"{(r.get('finished') or '-')[:10]} |")
    if cross:
        lines += ["", "s/epoch: median over folds of each fold's median epoch (with "
                      "--self_training: of its last round, whose training set holds the "
                      "pseudo-labelled target files too); x same corpus: against the same "
                      "model trained on the same source files without a target, in the same "
                      "benchmark (the row named).",
                  "", "| run | direction | feature | model | method | folds | target UAR | "
                      "target WAR | target macro-F1 | source UAR | s/epoch | x same corpus | "
                      "finished |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in cross:
            model = r["model"] + (" (baseline)" if r.get("baseline") else "")
            lines.append(f"| {r['name']} | {r['data']} -> {r['target_data']} | {r['feature']} | "
                         f"{model} | {r['da_method']} | {_folds(r)} | {_readme_pct(r, 'uar')} | "
                         f"{_readme_pct(r, 'war')} | {_readme_pct(r, 'macro_f1')} | "
                         f"{_readme_pct(r.get('source') or {}, 'uar')} | "
                         f"{' | '.join(_epoch_cost(r, same))} | "
                         f"{(r.get('finished') or '-')[:10]} |")
    lines += ["", "Commands, from the repository root (feature extraction first; a training "
                  "command run again resumes at its first unfinished fold):", "```bash"]
    lines += [show(argv) for argv in ACCURACY_PREP]
    lines += [r["command"] for r in rows]
    lines += ["```"]
    return "\n".join(lines) + "\n"


def read_readme(path: Path) -> str:
    """The text of the results document (docs/RESULTS.md), checked to have the accuracy-table
    markers once each, in order."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReadmeError(f"cannot read {path}: {err}") from None
    begin, end = text.count(README_BEGIN), text.count(README_END)
    if begin == 0 or end == 0:
        raise ReadmeError(
            f"{path} has no accuracy table markers: add the lines {README_BEGIN} and "
            f"{README_END} where the table goes (docs/RESULTS.md has them in '## Results')")
    if begin > 1 or end > 1 or text.index(README_END) < text.index(README_BEGIN):
        raise ReadmeError(f"{path}: {README_BEGIN} and {README_END} must appear once each, "
                          f"in that order")
    return text


def replace_readme_block(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block` (markers kept)."""
    start = text.index(README_BEGIN) + len(README_BEGIN)
    end = text.index(README_END)
    return text[:start] + "\n" + block.rstrip("\n") + "\n" + text[end:]


def update_readme(path: Path, block: str) -> None:
    """Rewrite only the text between the markers, atomically (bytes outside them unchanged)."""
    from src.utils.io import atomic_path

    text = replace_readme_block(read_readme(path), block)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
