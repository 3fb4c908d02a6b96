"""The JSON evidence files the build reads back, each read once and checked against its shape.

They are a version's ``evidence.json`` (the backtest) and ``parity.json`` (the runner against the
backtest), the runtime self-test result (``reports/runtime/qcompile-<version>.json``) and the
signal tests' coverage.py report. qcompile (or coverage.py) writes them and the team commits
them, so a bad merge or a hand edit can leave one that is not what was written. ``read_evidence``
reads one against the shape the gates and the checklist rely on: a file that does not exist is
no evidence (the gates and the checklist say what is missing); one that exists but is not UTF-8
JSON of that shape is one ``evidence.malformed`` diagnostic naming the file, the key and what was
expected, never a traceback and never silently taken for no evidence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcompile.errors import Diagnostic

CODE = "evidence.malformed"

# A shape maps a dotted key to the type its value must have wherever it is present and not null;
# ``*`` stands for every key of a mapping (its parent must be listed first). Only what the gates
# and the checklist read, and the operations that compile first (refresh, review), is listed: any
# other key may hold anything.
Shape = Mapping[str, type | tuple[type, ...]]

NUMBER = (int, float)
EVIDENCE_SHAPE: Shape = {
    "inputs": dict,
    "minimum_sample": dict,
    "out_of_sample": dict,
    "robustness": dict,
    "critical_failures": list,
    "daily": dict,
    "daily.*": NUMBER,  # what the runner's deviation alert and `qcompile review` compare with
    "metrics": dict,
    "metrics.*": NUMBER,  # what `qcompile refresh` compares a new run with
}
PARITY_SHAPE: Shape = {"inputs": dict, "fills": dict, "window": list}
SELFTEST_SHAPE: Shape = {"checks": dict, "checks.*": dict}
COVERAGE_SHAPE: Shape = {"files": dict, "files.*": dict, "files.*.summary": dict}

_NAMES: dict[type, str] = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "true or false",
    int: "a number",
    float: "a number",
    type(None): "null",
}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Evidence:
    """One evidence file as read: ``document`` is None when it does not exist or is malformed
    (then ``problem`` says how)."""

    where: str  # the file, relative to the project root: what messages name
    document: dict[str, Any] | None
    problem: Diagnostic | None = None


def read_evidence(path: Path, where: str, shape: Shape, remedy: str) -> Evidence:
    """The file at ``path`` (shown as ``where``) checked against ``shape``; ``remedy`` is the
    hint of a malformed file's diagnostic (the command that writes it again)."""
    if not path.is_file():
        return Evidence(where, None)

    def malformed(message: str, key: str = "", line: int = 0) -> Evidence:
        return Evidence(where, None, Diagnostic(where, line, key, message, CODE, remedy))

    try:
        data = path.read_bytes()
    except OSError as error:
        return malformed(f"cannot be read: {error.strerror or error}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        message, line = not_utf8(data, error)
        return malformed(message, line=line)
    if not text.strip():
        return malformed("empty: expected a JSON object")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return malformed(f"not valid JSON: {error.msg}", line=error.lineno)
    except RecursionError:
        return malformed("not valid JSON: nested too deeply")
    if not isinstance(document, dict):
        return malformed(f"expected a mapping at the top, got {_name(document)}")
    for pattern, expected in shape.items():
        for key, value in _values(document, pattern.split(".")):
            if value is not None and not isinstance(value, expected):
                return malformed(f"expected {_expected(expected)}, got {_name(value)}", key)
    return Evidence(where, document)


def not_utf8(data: bytes, error: UnicodeDecodeError) -> tuple[str, int]:
    """What to say about ``data``, which failed to decode with ``error``, and on which line."""
    line = data.count(b"\n", 0, error.start) + 1
    return f"not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start}", line


def _values(node: Any, parts: list[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(shown key, value) of every value ``parts`` reaches in ``node``; absent keys reach none."""
    head, rest = parts[0], parts[1:]
    if not isinstance(node, dict):
        return
    keys = list(node) if head == "*" else [head] if head in node else []
    for key in keys:
        shown = f"{prefix}.{key}" if _PLAIN_KEY.fullmatch(str(key)) else f"{prefix}[{key!r}]"
        shown = shown.removeprefix(".")
        if rest:
            yield from _values(node[key], rest, shown)
        else:
            yield shown, node[key]


def _name(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _expected(expected: type | tuple[type, ...]) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(dict.fromkeys(_NAMES.get(kind, kind.__name__) for kind in kinds))
