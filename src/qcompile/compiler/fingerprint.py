"""Fingerprint a data source's local history: schema, row count, time range and content hash.

Consumes the directory named by ``data.local.path``; produces a :class:`DataFingerprint`. File
content hashes are cached in ``.qcompile/fingerprints.json`` keyed by size and mtime (like git's
index), so an unchanged data set costs a few ``stat`` calls; the cache holds only derived values
and is never committed. polars is imported only when a file's statistics must be recomputed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

from qcompile.hashing import files_sha256, sha256_file
from qcompile.research import datalayout
from qcompile.research.datalayout import symbol_files

TIMESTAMP_COLUMN = "timestamp"


@dataclass(frozen=True)
class DataFingerprint:
    files: int
    rows: int
    first_timestamp: int | None
    last_timestamp: int | None
    schema: dict[str, str]
    content_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_files(directory: Path, file_format: str) -> list[Path]:
    return list(symbol_files(directory, file_format).values())


class FingerprintCache:
    """Per-file statistics keyed by path, valid while size and mtime are unchanged."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            self.entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def lookup(self, file: Path) -> dict[str, Any] | None:
        stat = file.stat()
        entry = self.entries.get(str(file.resolve()))
        if (
            entry
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
        ):
            return entry
        return None

    def store(self, file: Path, values: dict[str, Any]) -> dict[str, Any]:
        stat = file.stat()
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **values}
        self.entries[str(file.resolve())] = entry
        self.dirty = True
        return entry

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(self.entries, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self.path)
        self.dirty = False


def file_sha256(file: Path, cache: FingerprintCache) -> str:
    """Content hash of one file, from the cache when its size and mtime are unchanged."""
    entry = cache.lookup(file)
    if entry and "sha256" in entry:
        return str(entry["sha256"])
    previous = cache.entries.get(str(file.resolve()), {})
    values = {k: v for k, v in previous.items() if k not in ("size", "mtime_ns", "sha256", "stats")}
    return str(cache.store(file, {**values, "sha256": sha256_file(file)})["sha256"])


def _file_stats(file: Path, file_format: str) -> dict[str, Any]:
    import polars as pl

    frame = pl.scan_parquet(file) if file_format == "parquet" else pl.scan_csv(file)
    try:
        schema = {name: str(dtype) for name, dtype in frame.collect_schema().items()}
        aggregates = [pl.len().alias("rows")]
        if TIMESTAMP_COLUMN in schema:
            column = pl.col(TIMESTAMP_COLUMN)
            if not schema[TIMESTAMP_COLUMN].startswith(("Int", "UInt")):
                column = column.cast(pl.Int64, strict=False)
            aggregates += [column.min().alias("first"), column.max().alias("last")]
        row = frame.select(aggregates).collect().row(0, named=True)
    except (pl.exceptions.PolarsError, OSError):
        # an empty or corrupt file: its bytes are still pinned, and the data contract check
        # reports it as unreadable with its file and symbol
        return {"schema": {}, "rows": 0, "first": None, "last": None}
    return {
        "schema": schema,
        "rows": int(row["rows"]),
        "first": row.get("first"),
        "last": row.get("last"),
    }


def _combined_schema(schemas: list[dict[str, str]]) -> dict[str, str]:
    """Every column of any file, sorted, with a note where only some files have it.

    Sorted because the stat cache round-trips through JSON with sorted keys: a fresh and a cached
    fingerprint must read the same.
    """
    seen: dict[str, list[str]] = {}
    for schema in schemas:
        for name, dtype in schema.items():
            seen.setdefault(name, []).append(dtype)
    combined = {}
    for name in sorted(seen):
        dtypes = sorted(set(seen[name]))
        text = " | ".join(dtypes)
        if len(seen[name]) < len(schemas):
            text += f" (in {len(seen[name])} of {len(schemas)} files)"
        combined[name] = text
    return combined


def fingerprint(
    directory: Path, file_format: str, cache: FingerprintCache
) -> DataFingerprint | None:
    """The data set's fingerprint, or None when no local files exist."""
    files = data_files(directory, file_format) if directory.is_dir() else []
    if not files:
        return None
    rows, firsts, lasts = 0, [], []
    schemas: list[dict[str, str]] = []
    for file in files:
        file_sha256(file, cache)
        entry = cache.entries[str(file.resolve())]
        if entry.get("stats") is None:
            entry["stats"] = _file_stats(file, file_format)
            cache.dirty = True
        stats = entry["stats"]
        rows += stats["rows"]
        if stats.get("first") is not None:
            firsts.append(stats["first"])
            lasts.append(stats["last"])
        schemas.append(stats["schema"])
    return DataFingerprint(
        len(files),
        rows,
        min(firsts) if firsts else None,
        max(lasts) if lasts else None,
        _combined_schema(schemas),
        files_sha256(directory, files, lambda f: file_sha256(f, cache)),
    )


@cache
def _contract_sha256() -> str:
    """The contract's own source (read, not imported): a changed check re-checks every file."""
    return sha256_file(Path(datalayout.__file__).with_name("data.py"))


def contract_violations(
    directory: Path,
    file_format: str,
    convention: tuple[str, str, str],
    symbols: list[str],
    cache: FingerprintCache,
) -> list[tuple[Path, dict[str, Any]]]:
    """The data contract (research.data) checked on every file of a data source, and every
    universe member without a file: (file, violation fields) each. A file's result is cached
    with its content hash and the convention it was checked against, so an unchanged data set
    is not read again (and polars not imported)."""
    files = symbol_files(directory, file_format) if directory.is_dir() else {}
    key = "/".join((*convention, _contract_sha256()))
    found: list[tuple[Path, dict[str, Any]]] = []

    def check(file: Path, symbol: str) -> dict[str, Any]:
        from qcompile.research.data import Convention, file_violations

        violations = file_violations(file, file_format, symbol, Convention(*convention))
        return {"violations": [asdict(v) for v in violations]}

    for symbol, file in sorted(files.items()):
        checked = _verdict(cache, file, "contract", key, partial(check, file, symbol))
        found += [(file, violation) for violation in checked["violations"]]
    for symbol in sorted(set(symbols) - set(files)):
        missing = {"symbol": symbol, "what": "no data file for this member of the universe"}
        found.append((directory / f"{symbol}.{file_format}", missing))
    return found


def _verdict(
    cache: FingerprintCache, file: Path, name: str, key: str, compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A file's cached verdict ``name``, valid for its content hash and ``key`` (what it was
    judged against); computed and cached afresh otherwise."""
    sha = file_sha256(file, cache)
    entry = cache.entries[str(file.resolve())]
    checked = entry.get(name)
    if isinstance(checked, dict) and checked.get("sha256") == sha and checked.get("key") == key:
        return checked
    checked = {"sha256": sha, "key": key, **compute()}
    entry[name] = checked
    cache.dirty = True
    return checked


@cache
def _calendar_sha256() -> str:
    return sha256_file(Path(datalayout.__file__).with_name("calendar.py"))


def calendar_gaps(
    directory: Path,
    file_format: str,
    convention: tuple[str, str, str],
    calendar_name: str,
    cache: FingerprintCache,
    today_day: int,
) -> list[tuple[Path, str, list[list[int]], list[int]]]:
    """Each contract-clean file's sessions without a bar and bars on closed days, against the
    calendar ``calendar_name`` (research.calendar): (file, symbol, gaps as [first, last,
    sessions] day numbers, closed day numbers). Cached per file like the contract's verdict."""
    from qcompile.research import calendar

    files = symbol_files(directory, file_format) if directory.is_dir() else {}
    key = "/".join((*convention, calendar_name, calendar.library_version(), _calendar_sha256()))
    sessions: list[Any] = []  # loaded once, and only when a file needs judging

    def judge(file: Path) -> dict[str, Any]:
        if not sessions:
            sessions.append(calendar.sessions(calendar_name, today_day))
        gaps, closed = calendar.gaps(
            calendar.bar_days(file, file_format, convention, sessions[0].timezone), sessions[0]
        )
        return {"gaps": [[g.first, g.last, g.sessions] for g in gaps], "closed": closed}

    found = []
    for symbol, file in sorted(files.items()):
        contract = cache.entries.get(str(file.resolve()), {}).get("contract") or {}
        if contract.get("sha256") != file_sha256(file, cache) or contract.get("violations"):
            continue  # a file the contract refuses is not read for its dates
        checked = _verdict(cache, file, "calendar", key, partial(judge, file))
        if checked["gaps"] or checked["closed"]:
            found.append((file, symbol, checked["gaps"], checked["closed"]))
    return found
