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
from qcompile.research.datalayout import TO_MILLISECONDS, epoch_time, symbol_files

PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_COLUMNS = ("timestamp", *PRICE_COLUMNS, "volume")
OPTIONAL_COLUMNS = ("adj_close",)
# Integer timestamps of dates between 1971 and 2100 fall in these disjoint ranges, per unit.
_PLAUSIBLE = {
    "s": (3.2e7, 4.2e9),
    "ms": (3.2e10, 4.2e12),
    "us": (3.2e13, 4.2e15),
    "ns": (3.2e16, 4.2e18),
}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


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
    try:
        return pl.read_csv(path, schema_overrides={"timestamp": pl.Int64})
    except pl.exceptions.ComputeError:  # not integers: read as text, the check says what it is
        return pl.read_csv(path, schema_overrides={"timestamp": pl.String})


@dataclass(frozen=True)
class Violation:
    """One way one symbol's file breaks the contract, at its first bad row (if it is a row)."""

    symbol: str
    what: str
    row: int | None = None  # 1-based, as a spreadsheet or `sed -n` counts
    timestamp: int | None = None  # as stored in the file, in its declared unit
    values: str = ""  # the row's required columns, for the reader

    def message(self, unit: str) -> str:
        """What is wrong, for a reader who knows which file (``unit``: the declared one)."""
        if self.row is None:
            return f"{self.symbol}: {self.what}"
        when = stamp_text(self.timestamp, unit)
        return f"{self.symbol}: row {self.row} ({when}): {self.what} ({self.values})"

    def describe(self, where: str, unit: str) -> str:
        return f"{where}: {self.message(unit)}"


def stamp_text(timestamp: int | None, unit: str) -> str:
    """A stored timestamp as an ISO time, when it is one (for messages)."""
    if timestamp is None:
        return "no timestamp"
    moment = epoch_time(timestamp, unit)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else f"timestamp {timestamp}"


def _row_checks() -> dict[str, pl.Expr]:
    """What a row must satisfy, checked in this order; a null fails every check it reaches."""
    checks: dict[str, pl.Expr] = {"timestamp is null": pl.col("timestamp").is_null()}
    for column in (*PRICE_COLUMNS, "volume"):
        checks[f"{column} is null"] = pl.col(column).is_null()
        finite = pl.col(column).cast(pl.Float64).is_finite().fill_null(True)  # null: above
        checks[f"{column} is NaN or infinite"] = ~finite
    checks |= {
        "timestamp is not after the previous row (unsorted or duplicate)": (
            pl.col("timestamp").diff().fill_null(1) <= 0
        ),
        "high < max(open, close)": pl.col("high") < pl.max_horizontal("open", "close"),
        "low > min(open, close)": pl.col("low") > pl.min_horizontal("open", "close"),
        "price <= 0": pl.min_horizontal(*PRICE_COLUMNS) <= 0,
        "negative volume": pl.col("volume") < 0,
    }
    return checks


def frame_violations(frame: pl.DataFrame, symbol: str, convention: Convention) -> list[Violation]:
    """Every contract problem of one symbol's bars (the first bad row of each check)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        return [Violation(symbol, f"missing column(s) {', '.join(missing)}")]
    timestamp = frame["timestamp"]
    if timestamp.dtype not in (pl.Int64, pl.Int32, pl.UInt64, pl.UInt32):
        return [
            Violation(
                symbol,
                f"column timestamp must hold integer epoch {convention.unit}, was "
                f"{timestamp.dtype} (row 1: {timestamp[0]!r})",
            )
        ]
    problems = [
        Violation(symbol, f"column {column} must be numeric, was {frame[column].dtype}")
        for column in (
            *PRICE_COLUMNS,
            "volume",
            *(c for c in OPTIONAL_COLUMNS if c in frame.columns),
        )
        if not frame[column].dtype.is_numeric()
    ]
    if problems or frame.height == 0:
        return problems or [Violation(symbol, "no rows")]
    if convention.timezone != "UTC":
        problems.append(
            Violation(
                symbol,
                f"integer epoch timestamps are UTC, the source declares {convention.timezone}",
            )
        )
    latest = timestamp.drop_nulls().max()
    observed = detect_unit(int(latest)) if latest is not None else None  # type: ignore[arg-type]
    if observed != convention.unit:
        seen = UNIT_NAMES.get(observed or "", "no plausible unit")
        problems.append(
            Violation(
                symbol,
                f"timestamps look like {seen} (max {latest}), "
                f"the source declares {UNIT_NAMES[convention.unit]}",
            )
        )
    checks = _row_checks()
    masks = frame.select(**{f"m{i}": e.fill_null(True) for i, e in enumerate(checks.values())})
    for number, what in enumerate(checks):
        index = masks[f"m{number}"].arg_true()
        if index.len():
            row = int(index[0])
            values = frame.row(row, named=True)
            shown = ", ".join(f"{k}={values[k]}" for k in REQUIRED_COLUMNS)
            problems.append(Violation(symbol, what, row + 1, values["timestamp"], shown))
    return problems


def check_frame(frame: pl.DataFrame, where: str, symbol: str, convention: Convention) -> list[str]:
    """Every contract problem of one symbol's bars, as one line each naming ``where``."""
    return [v.describe(where, convention.unit) for v in frame_violations(frame, symbol, convention)]


def file_violations(
    path: Path, file_format: str, symbol: str, convention: Convention
) -> list[Violation]:
    """The contract problems of one symbol's file, an unreadable file included."""
    try:
        frame = _read(path, file_format)
    except (pl.exceptions.PolarsError, OSError) as exc:
        return [Violation(symbol, f"unreadable: {str(exc).splitlines()[0]}")]
    return frame_violations(frame, symbol, convention)


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
        where = display_path(path or directory / f"{symbol}.{file_format}", display_root)
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


def display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies inside it, else as given (for messages)."""
    if root is None:
        return path.as_posix()
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
