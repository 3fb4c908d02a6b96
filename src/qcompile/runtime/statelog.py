"""The file store's change log: each save appends what changed since the one before.

Rewriting the whole state on every cycle costs a temporary file, a rename and a directory sync,
and every one of those system calls waits for the interpreter lock again on a busy runner. The
log instead takes one write per save: a line holding the differences from the previous save,
written after the last in a file opened with O_DSYNC (the write returns once durable), into
space allocated ahead (zeros until written). A checkpoint (the whole
state, written atomically) starts each run and is rewritten when the log has grown, which then
starts afresh.

A line is ``<crc32, 8 hex digits> <JSON>``: ``{"seq": n, "d": <difference>}``. A difference
between two mappings is ``{"s": {key: new value}, "d": {removed key: 0}, "n": {key: nested
difference}}`` (absent parts omitted): mappings are compared key by key, at any depth, anything
else is replaced whole. Removed keys are the keys of a mapping so that they are written exactly
as the state's own keys are (a number becomes its string, as in the checkpoint).

Reading back: lines whose ``seq`` the checkpoint already holds are skipped (a crash between the
checkpoint's rename and the log's truncation leaves them), the others must follow one another
without a gap. A torn last line is a save that never returned (nothing acknowledged it) and is
dropped; a bad line anywhere else is corruption, and the store refuses to guess.

The difference is found by identity first: the runner replaces a value it changes rather than
change it in place (its snapshots are read by the saver thread while decisions go on), so an
unchanged symbol's row is the very object the previous snapshot held, and comparing 500 of them
is one pass in C.
"""

from __future__ import annotations

import operator
import zlib
from itertools import compress
from typing import Any

import orjson

_MISSING = object()


class LogError(ValueError):
    """A log line that cannot be read back."""


def difference(old: dict[Any, Any], new: dict[Any, Any]) -> dict[str, Any]:
    """What turns ``old`` into ``new`` (empty when they are equal)."""
    if len(old) == len(new) and list(old) == list(new):  # same keys, same order: the usual case
        candidates: Any = compress(new, map(operator.is_not, new.values(), old.values()))
        removed: dict[Any, int] = {}
    else:
        candidates = [key for key, value in new.items() if old.get(key, _MISSING) is not value]
        removed = {key: 0 for key in old if key not in new}
    replaced: dict[Any, Any] = {}
    nested: dict[Any, Any] = {}
    for key in candidates:
        value, before = new[key], old.get(key, _MISSING)
        if type(value) is dict and type(before) is dict:
            inner = difference(before, value)
            if inner:
                nested[key] = inner
        elif before is _MISSING or before != value or type(before) is not type(value):
            replaced[key] = value
    change: dict[str, Any] = {}
    if replaced:
        change["s"] = replaced
    if removed:
        change["d"] = removed
    if nested:
        change["n"] = nested
    return change


def apply(state: dict[str, Any], change: dict[str, Any]) -> None:
    """Apply a difference read back from the log to ``state``, in place."""
    for key in change.get("d", ()):
        state.pop(key, None)
    state.update(change.get("s", ()))
    for key, inner in change.get("n", {}).items():
        target = state.get(key)
        if type(target) is not dict:
            target = state[key] = {}
        apply(target, inner)


def encode(seq: int, change: dict[str, Any]) -> bytes:
    """One log line: the checksum, a space, the JSON record, a newline."""
    body = orjson.dumps({"seq": seq, "d": change}, option=orjson.OPT_NON_STR_KEYS)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line: bytes) -> tuple[int, dict[str, Any]]:
    """(seq, difference) of a line (without its newline); LogError if it is not intact."""
    checksum, _, body = line.partition(b" ")
    try:
        intact = len(checksum) == 8 and int(checksum, 16) == zlib.crc32(body)
    except ValueError:
        intact = False
    if not intact:
        raise LogError("checksum does not match")
    try:
        record = orjson.loads(body)
        seq, change = record["seq"], record["d"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise LogError(f"not a log record: {error}") from None
    if type(seq) is not int or type(change) is not dict:
        raise LogError("not a log record")
    return seq, change


def replay(state: dict[str, Any], data: bytes, where: str) -> tuple[int, int]:
    """Apply the log ``data`` to the checkpoint ``state`` in place; returns (lines applied,
    bytes of intact lines). Raises LogError naming ``where`` and the line number on a gap or a
    bad line before the last."""
    # the log's allocated space beyond its last line; stripped, a last line torn in its middle
    # (a power cut persists a write's sectors in any order) is the last one, and dropped
    data = data.rstrip(b"\0")
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines.pop()  # the empty remainder after the final newline
    seq = state.get("seq")
    seq = seq if type(seq) is int else 0
    applied = good_bytes = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            if last and not complete:
                raise LogError("the line has no end")
            line_seq, change = decode(line)
        except LogError as error:
            if last:  # a save that never returned: nothing acknowledged it
                break
            raise LogError(f"{where}:{number}: {error}") from None
        good_bytes += len(line) + 1
        if line_seq <= seq:
            continue  # held by the checkpoint already
        if line_seq != seq + 1:
            raise LogError(
                f"{where}:{number}: save {line_seq} follows save {seq}: saves are missing"
            )
        try:
            apply(state, change)
        except (TypeError, ValueError, AttributeError) as error:  # intact, but not our shape
            raise LogError(f"{where}:{number}: not a log record: {error}") from None
        state["seq"] = seq = line_seq
        applied += 1
    return applied, good_bytes
