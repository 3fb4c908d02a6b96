"""Load the signal a strategy pinned, refusing anything but the exact pinned source.

Shared by the backtest and the production runner, so both run the same function: same name,
same version, same source hash (the deployment checklist compares them), and the same event
calendar when the signal takes one.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import polars as pl

from qcompile.hashing import sha256_file
from qcompile.signals.registry import SignalError, SignalSpec, get_signal
from qcompile.signals.source import function_sha256


def pinned_signal(pinned: dict[str, Any], packages: list[str], root: Path) -> SignalSpec:
    """The registered signal ``pinned`` names, checked against its pinned source hash."""
    spec = get_signal(pinned["name"], pinned["version"], packages, [root, root / "src"])
    source = inspect.getsourcefile(spec.function)
    actual = function_sha256(Path(source), spec.function.__name__) if source else None
    if actual != pinned["source_sha256"]:
        raise SignalError(
            f"signal {pinned['name']}@{pinned['version']} differs from the pinned source "
            f"(pinned {str(pinned['source_sha256'])[:12]}, found {str(actual)[:12]}); "
            "run `qcompile build`"
        )
    return spec


def event_calendar(pin: dict[str, Any] | None, root: Path) -> pl.DataFrame | None:
    """The pinned event calendar as (symbol, date) rows, checked against its hash."""
    if not pin:
        return None
    path = root / pin["path"]
    if not path.is_file():
        raise SignalError(f"events file {pin['path']} not found; create it, then `qcompile build`")
    if sha256_file(path) != pin["sha256"]:
        raise SignalError(
            f"the events in {pin['path']} changed since they were pinned; run `qcompile build`"
        )
    try:
        raw = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
        return raw.select(
            pl.col("symbol").cast(pl.String), pl.col("date").cast(pl.String).str.to_date()
        )
    except (pl.exceptions.PolarsError, OSError) as error:
        message = str(error).splitlines()[0]
        raise SignalError(
            f"{pin['path']}: needs columns symbol and date (YYYY-MM-DD): {message}"
        ) from None


def events_on(calendar: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    """The calendar's events on the bars' own timestamps, as (symbol, timestamp) rows."""
    sessions = bars.select(
        "symbol",
        "timestamp",
        date=pl.from_epoch("timestamp", time_unit="ms").dt.date(),
    )
    return calendar.join(sessions, on=["symbol", "date"], how="inner").select("symbol", "timestamp")
