"""The local data layout, shared by the lock's fingerprint and the backtest loader.

One file per symbol, named after it, directly in the data source's ``local.path``
(``data/us_daily/AAPL.parquet``). Both sides list files with this one function so that the
fingerprint pinned at build time covers exactly the files the backtest reads.
"""

from __future__ import annotations

from pathlib import Path

SUFFIXES = {"parquet": ".parquet", "csv": ".csv"}


def symbol_files(directory: Path, file_format: str) -> dict[str, Path]:
    """Symbol -> file, sorted by symbol; empty when the directory does not exist."""
    if not directory.is_dir():
        return {}
    suffix = SUFFIXES[file_format]
    return {p.stem: p for p in sorted(directory.glob(f"*{suffix}")) if p.is_file()}
