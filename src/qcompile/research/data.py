"""Historical bars: read with polars and checked against the declared data contract.

Consumes a data source's local directory (one Parquet or CSV file per symbol, named after it) and
its declared timestamp convention; produces one frame of bars for the whole universe, sorted by
symbol then timestamp, with columns ``symbol, timestamp, open, high, low, close, volume`` (plus
``adj_close`` where the files have it). Timestamps come out as integer milliseconds, UTC.

Every violation is collected, one per check per file, naming the file, the symbol and the first
bad row, so a broken data set is described completely in one run. A timestamp unit that does not
match the declared convention is recognised from the magnitudes and refused: it is exactly the
silent format change the source document's story is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from qcompile.errors import QcompileError
from qcompile.research.datalayout import symbol_files

PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_COLUMNS = ("timestamp", *PRICE_COLUMNS, "volume")
OPTIONAL_COLUMNS = ("adj_close",)
TO_MILLISECONDS = {"s": 1_000, "ms": 1, "us": 1 / 1_000, "ns": 1 / 1_000_000}
# Integer timestamps of dates between 1971 and 2100 fall in these disjoint ranges, per unit.
_PLAUSIBLE = {
    "s": (3.2e7, 4.2e9),
    "ms": (3.2e10, 4.2e12),
    "us": (3.2e13, 4.2e15),
    "ns": (3.2e16, 4.2e18),
}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


@dataclass(frozen=True)
class Convention:
    """The timestamp convention a data source declares."""

    unit: str  # s, ms, us, ns
    timezone: str  # UTC for integer epochs
    stamping: str  # bar_open, bar_close or session_date


class DataContractError(QcompileError):
    """The local data breaks its declared contract; ``problems`` lists every violation."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} data contract violation(s):\n" + "\n".join(problems))


def detect_unit(value: int) -> str | None:
    """The unit in which ``value`` is a plausible epoch timestamp (1971-2100), if any."""
    for unit, (low, high) in _PLAUSIBLE.items():
        if low <= abs(value) <= high:
            return unit
    return None


def _read(path: Path, file_format: str) -> pl.DataFrame:
    if file_format == "parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, schema_overrides={"timestamp": pl.Int64})


def _first_bad(frame: pl.DataFrame, mask: pl.Series) -> tuple[int, dict] | None:
    index = mask.arg_true()
    if index.len() == 0:
        return None
    row = int(index[0])
    return row, frame.row(row, named=True)


def check_frame(frame: pl.DataFrame, where: str, symbol: str, convention: Convention) -> list[str]:
    """Every contract problem of one symbol's bars (first bad row per check)."""
    problems: list[str] = []
    prefix = f"{where}: {symbol}"
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        return [f"{prefix}: missing column(s) {', '.join(missing)}"]
    timestamp = frame["timestamp"]
    if timestamp.dtype not in (pl.Int64, pl.Int32, pl.UInt64, pl.UInt32):
        return [
            f"{prefix}: column timestamp must hold integer epoch {convention.unit}, was {timestamp.dtype}"
        ]
    for column in (*PRICE_COLUMNS, "volume", *(c for c in OPTIONAL_COLUMNS if c in frame.columns)):
        if not frame[column].dtype.is_numeric():
            problems.append(f"{prefix}: column {column} must be numeric, was {frame[column].dtype}")
    if problems or frame.height == 0:
        return problems or [f"{prefix}: no rows"]
    if convention.timezone != "UTC":
        problems.append(
            f"{prefix}: integer epoch timestamps are UTC, the source declares {convention.timezone}"
        )
    observed = detect_unit(int(timestamp.max()))  # type: ignore[arg-type]
    if observed != convention.unit:
        seen = _UNIT_NAMES.get(observed or "", "no plausible unit")
        problems.append(
            f"{prefix}: timestamps look like {seen} (max {int(timestamp.max())}), "  # type: ignore[arg-type]
            f"the source declares {_UNIT_NAMES[convention.unit]}"
        )
    checks = {
        "timestamp is null": pl.col("timestamp").is_null(),
        "timestamp is not after the previous row (unsorted or duplicate)": (
            pl.col("timestamp").diff().fill_null(1) <= 0
        ),
        "high < max(open, close)": pl.col("high") < pl.max_horizontal("open", "close"),
        "low > min(open, close)": pl.col("low") > pl.min_horizontal("open", "close"),
        "price <= 0": pl.min_horizontal(*PRICE_COLUMNS) <= 0,
        "negative volume": pl.col("volume") < 0,
    }
    masks = frame.select(**{f"m{i}": e.fill_null(True) for i, e in enumerate(checks.values())})
    for number, what in enumerate(checks):
        bad = _first_bad(frame, masks[f"m{number}"])
        if bad:
            row, values = bad
            shown = ", ".join(f"{k}={values[k]}" for k in REQUIRED_COLUMNS)
            problems.append(f"{prefix}: row {row + 1}: {what} ({shown})")
    return problems


def load_bars(
    directory: Path,
    file_format: str,
    symbols: list[str],
    convention: Convention,
    display_root: Path | None = None,
) -> pl.DataFrame:
    """Bars of ``symbols`` from ``directory``; raises DataContractError listing every problem."""
    files = symbol_files(directory, file_format)
    problems: list[str] = []
    frames: list[pl.DataFrame] = []
    for symbol in symbols:
        path = files.get(symbol)
        where = _display(path or directory / f"{symbol}.{file_format}", display_root)
        if path is None:
            problems.append(f"{where}: {symbol}: no data file")
            continue
        try:
            frame = _read(path, file_format)
        except (pl.exceptions.PolarsError, OSError) as exc:
            problems.append(f"{where}: {symbol}: unreadable: {str(exc).splitlines()[0]}")
            continue
        found = check_frame(frame, where, symbol, convention)
        problems.extend(found)
        if found:
            continue
        keep = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
        frames.append(
            frame.select(keep).with_columns(
                (pl.col("timestamp").cast(pl.Float64) * TO_MILLISECONDS[convention.unit]).cast(
                    pl.Int64
                ),
                *(pl.col(c).cast(pl.Float64) for c in keep if c != "timestamp"),
                symbol=pl.lit(symbol),
            )
        )
    if problems:
        raise DataContractError(problems)
    columns = ["symbol", "timestamp", *PRICE_COLUMNS, "volume"]
    if frames and all("adj_close" in f.columns for f in frames):
        columns.append("adj_close")
    return pl.concat([f.select(columns) for f in frames]).sort("symbol", "timestamp")


def _display(path: Path, root: Path | None) -> str:
    if root is None:
        return path.as_posix()
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
