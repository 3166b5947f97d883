"""Sweep files: the safe parser of the bash-syntax files under sweeps/.

A sweep file is a small file in bash syntax (it can be sourced by bash) read by the parser
here; nothing in it is executed. Allowed lines:

    # comment
    lr=(3e-4 1e-3)                      # one array per CLI flag of src.training.main (its dest)
    use_dtpm=(true false)               # store_true flags (--domain_norm) take true/false too
    FIXED="--preset light --epoch 30"   # flags given to every configuration
    VARIANTS=(                          # optional: one axis whose values are whole flag strings
      "--feature_type MFCC"             #   (for ablations that are not a Cartesian product)
      "--feature_type FUSION --fusion_streams MFCC,LogMel"
    )

Arrays may span lines. The grid is the Cartesian product of the arrays in file order
(`VARIANTS` counts as one array; see sweep_grid.py). Precedence when a flag is given twice:
FIXED < arrays and VARIANTS < the extra flags after `--`.

A sweep file ending in .yaml/.yml says the same as a mapping (flat, or grouped like the
`--config` files of src.training.main: `optimisation: {lr: [1e-3, 2e-3]}`):

    fixed: {preset: light, epoch: 30}     # flags given to every configuration (FIXED)
    grid:                                 # one list per flag, in file order
      lr: [3e-4, 1e-3]
      use_dtpm: [true, false]
      VARIANTS: ["--feature_type MFCC", {feature_type: FUSION, fusion_streams: "MFCC,LogMel"}]

Both forms give the same SweepSpec, hence the same configurations and sweep hashes.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from src.training.flags import FIELDS, flat_items, is_switch

VARIANTS_KEY = "VARIANTS"
FIXED_KEY = "FIXED"


class SweepError(Exception):
    """A problem with the sweep file or options: reported as one line, exit code 2."""


@dataclasses.dataclass
class SweepSpec:
    """A parsed sweep file: its name, its axes in file order and the FIXED flag tokens."""

    name: str
    axes: list[tuple[str, list[str]]]      # (key, raw values) in file order; VARIANTS included
    fixed: list[str]                       # flag tokens

    def grid_size(self) -> int:
        """Number of grid points: the product of the axis lengths (before deduplication)."""
        size = 1
        for _, values in self.axes:
            size *= len(values)
        return size


def _split_statements(text: str, source: str) -> list[tuple[int, str]]:
    """Cut the file into statements (line number, text): one per line, except that an array
    `name=( ... )` runs to its closing parenthesis outside quotes and comments."""
    statements: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        stripped = line.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        head = stripped.split("=", 1)
        if len(head) == 2 and head[1].startswith("("):
            buffer = stripped
            while not _array_closed(buffer):
                if i >= len(lines):
                    raise SweepError(f"{source}:{start}: array is not closed with ')'")
                buffer += "\n" + lines[i]
                i += 1
            statements.append((start, buffer))
        else:
            statements.append((start, stripped))
    return statements


def _array_closed(text: str) -> bool:
    """True when the `(` after the first `=` is closed (quotes, escapes and comments honoured)."""
    text = strip_comments(text)
    return _closing_paren(text, text.index("(") + 1) >= 0


class _Quoting:
    """Bash quoting state while text is scanned one character at a time."""

    def __init__(self) -> None:
        self.quote = ""
        self.escaped = False

    def bare(self, ch: str) -> bool:
        """Advance over `ch`; True when it stands outside quotes, unescaped, and is not itself
        a quote or escape character."""
        if self.escaped:
            self.escaped = False
        elif ch == "\\" and self.quote != "'":
            self.escaped = True
        elif self.quote:
            if ch == self.quote:
                self.quote = ""
        elif ch in "'\"":
            self.quote = ch
        else:
            return True
        return False


def strip_comments(text: str) -> str:
    """Drop bash comments: `#` at the start of a word, outside quotes, to the end of the line."""
    out: list[str] = []
    quoting = _Quoting()
    comment = False
    for index, ch in enumerate(text):
        if comment:
            if ch == "\n":
                comment = False
                out.append(ch)
            continue
        if quoting.bare(ch) and ch == "#" and (index == 0 or text[index - 1].isspace()
                                               or text[index - 1] == "("):
            comment = True
            continue
        out.append(ch)
    return "".join(out)


def _closing_paren(text: str, start: int) -> int:
    """Index of the first `)` at or after `start` outside quotes (comments already stripped),
    or -1."""
    quoting = _Quoting()
    for index in range(start, len(text)):
        if quoting.bare(text[index]) and text[index] == ")":
            return index
    return -1


def parse_sweep_text(text: str, name: str = "sweep", source: str = "<sweep>") -> SweepSpec:
    """Parse the text of a sweep file (see the module docstring); SweepError on a bad line."""
    axes: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    seen: set[str] = set()
    for lineno, statement in _split_statements(text, source):
        where = f"{source}:{lineno}"
        statement = strip_comments(statement).strip()
        key, sep, rest = statement.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SweepError(f"{where}: expected name=(values ...) or FIXED=\"flags\", got "
                             f"{statement.splitlines()[0]!r}")
        try:
            if rest.startswith("("):
                close = _closing_index(rest)
                trailing = shlex.split(rest[close + 1:])
                if trailing:
                    raise SweepError(f"{where}: unexpected text after ')': {' '.join(trailing)}")
                values = shlex.split(rest[1:close])
                if key in seen:
                    raise SweepError(f"{where}: {key} is given twice")
                if not values:
                    raise SweepError(f"{where}: {key}=() has no values")
                if key == FIXED_KEY:
                    raise SweepError(f"{where}: FIXED is a string, not an array: "
                                     f"FIXED=\"--flag value ...\"")
                seen.add(key)
                axes.append((key, values))
            elif key == FIXED_KEY:
                if key in seen:
                    raise SweepError(f"{where}: FIXED is given twice")
                seen.add(key)
                words = shlex.split(rest)
                if len(words) > 1:
                    raise SweepError(f"{where}: quote the flags: FIXED=\"--flag value ...\"")
                fixed += shlex.split(words[0]) if words else []
            else:
                raise SweepError(f"{where}: {key}: only arrays name=(v1 v2 ...) and "
                                 f"FIXED=\"...\" are allowed")
        except ValueError as err:  # shlex: unbalanced quotes
            raise SweepError(f"{where}: {err}") from None
    return SweepSpec(name=name, axes=axes, fixed=fixed)


def _closing_index(rest: str) -> int:
    """Index of the `)` closing the array `rest` starts with; SweepError when there is none."""
    close = _closing_paren(rest, 1)
    if close < 0:
        raise SweepError("array is not closed with ')'")
    return close


def parse_sweep_file(path: str | os.PathLike) -> SweepSpec:
    """Read and parse a sweep file, bash syntax or YAML (.yaml/.yml); its name is the file's
    stem. SweepError when unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SweepError(f"cannot read sweep file {path}: {err.strerror}") from None
    if path.suffix in (".yaml", ".yml"):
        return parse_sweep_yaml(text, name=path.stem, source=str(path))
    return parse_sweep_text(text, name=path.stem, source=str(path))


def parse_sweep_yaml(text: str, name: str = "sweep", source: str = "<sweep>") -> SweepSpec:
    """Parse a YAML sweep file ({fixed: {flag: value}, grid: {flag: [values]}}, see the module
    docstring) into the SweepSpec its bash equivalent gives; SweepError (one line naming
    `source`) on bad YAML, an unknown key or flag, or a grid entry that is not a list."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SweepError(f"{source}: cannot read it ({' '.join(str(err).split())})") from None
    if not isinstance(document, dict):
        raise SweepError(f"{source}: expected a mapping with 'fixed' and 'grid'")
    unknown = sorted(set(map(str, document)) - {"fixed", "grid"})
    if unknown:
        raise SweepError(f"{source}: unknown key {unknown[0]!r} (expected 'fixed' and 'grid')")
    fixed: list[str] = []
    for key, value in _flag_items(document.get("fixed") or {}, source, "fixed"):
        fixed += _value_tokens(key, value, f"{source}: fixed: {key}")
    axes: list[tuple[str, list[str]]] = []
    for key, values in _flag_items(document.get("grid") or {}, source, "grid"):
        where = f"{source}: grid: {key}"
        if not isinstance(values, list):
            raise SweepError(f"{where}: expected a list of values, got {values!r}")
        if not values:
            raise SweepError(f"{where}: the list has no values")
        if key == VARIANTS_KEY:
            axes.append((key, [_variant(value, where) for value in values]))
        else:
            axes.append((key, [_raw(value, where) for value in values]))
    return SweepSpec(name=name, axes=axes, fixed=fixed)


def _flag_items(values: Any, source: str, section: str) -> list[tuple[str, Any]]:
    """(flag, value) of the `fixed` or `grid` mapping (flat or grouped); SweepError naming the
    file and the key on an unknown flag."""
    if not isinstance(values, dict):
        raise SweepError(f"{source}: {section}: expected a mapping of flags")
    try:
        items = list(flat_items(values))
    except ValueError as err:
        raise SweepError(f"{source}: {section}: {err}") from None
    for key, _ in items:
        allowed = key in FIELDS and FIELDS[key].metadata["cli"]
        if not (allowed or (section == "grid" and key.upper() == VARIANTS_KEY)):
            raise SweepError(f"{source}: {section}: unknown flag {key!r} (not a flag of "
                             f"python -m src.training.main)")
    return [(VARIANTS_KEY if key.upper() == VARIANTS_KEY else key, value)
            for key, value in items]


def _raw(value: Any, where: str) -> str:
    """A YAML scalar as the text a bash sweep file would hold (true/false for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (dict, list)):
        raise SweepError(f"{where}: expected a single value, got {value!r}")
    return str(value)


def _value_tokens(key: str, value: Any, where: str) -> list[str]:
    """One fixed flag as argv tokens: a switch when true (nothing when false); lists (--audio)
    as several values."""
    if key in FIELDS and is_switch(key) and isinstance(value, bool):
        return [f"--{key}"] if value else []
    if isinstance(value, list):
        return [f"--{key}", *(_raw(item, where) for item in value)]
    return [f"--{key}", _raw(value, where)]


def _variant(value: Any, where: str) -> str:
    """A VARIANTS entry: a flag string as is, or a {flag: value} mapping as a flag string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        tokens: list[str] = []
        for key, item in _flag_items(value, where, "VARIANTS"):
            tokens += _value_tokens(key, item, f"{where} {key}")
        return shlex.join(tokens)
    raise SweepError(f"{where}: expected a flag string or a mapping, got {value!r}")
