"""The local data layout, shared by the lock's fingerprint and the backtest loader.

One file per symbol, named after it, directly in the data source's ``local.path``
(``data/us_daily/AAPL.parquet``). Both sides list files with this one function so that the
fingerprint pinned at build time covers exactly the files the backtest reads. Timestamps are
integer epochs in the source's declared unit; ``epoch_time`` reads one the same way everywhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

SUFFIXES = {"parquet": ".parquet", "csv": ".csv"}
TO_MILLISECONDS = {"s": 1_000, "ms": 1, "us": 1 / 1_000, "ns": 1 / 1_000_000}


def epoch_time(stamp: int, unit: str) -> dt.datetime | None:
    """A stored epoch timestamp in ``unit`` as a UTC time; None when it is not one (a value in
    another unit, out of any calendar's range)."""
    try:
        return dt.datetime.fromtimestamp(stamp * TO_MILLISECONDS[unit] / 1000, tz=dt.UTC)
    except (KeyError, OverflowError, OSError, ValueError, TypeError):
        return None


def symbol_files(directory: Path, file_format: str) -> dict[str, Path]:
    """Symbol -> file, sorted by symbol; empty when the directory does not exist."""
    if not directory.is_dir():
        return {}
    suffix = SUFFIXES[file_format]
    return {p.stem: p for p in sorted(directory.glob(f"*{suffix}")) if p.is_file()}


def loaded_symbols(universe: dict) -> list[str]:
    """Every symbol whose history a backtest reads: the universe's tradable ones, then its
    benchmarks (loaded to compare against, never traded)."""
    return [*universe["symbols"], *(universe.get("benchmarks") or [])]
