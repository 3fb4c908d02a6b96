"""Download klines into the local layout the backtest reads: one Parquet file per symbol.

Columns ``timestamp`` (integer milliseconds, UTC, bar open, as the vendor stamps them), ``open``,
``high``, ``low``, ``close``, ``volume`` (floats; the vendor sends decimal strings). Each file is
written to a temporary name and renamed, so an interrupted download never leaves half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from qcompile.marketdata.rest import RestClient

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def download_symbol(
    client: RestClient, vendor_symbol: str, interval: str, start_ms: int, end_ms: int, target: Path
) -> int:
    rows = [
        (
            int(k["time"]),
            float(k["open"]),
            float(k["high"]),
            float(k["low"]),
            float(k["close"]),
            float(k["volume"]),
        )
        for k in client.klines(vendor_symbol, interval, start_ms, end_ms)
    ]
    frame = (
        pl.DataFrame(rows, schema=list(COLUMNS), orient="row").unique("timestamp").sort("timestamp")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    frame.write_parquet(temporary)
    os.replace(temporary, target)
    return frame.height


def download(
    client: RestClient,
    symbols: list[str],
    suffix: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    directory: Path,
) -> dict[str, int]:
    """Rows written per symbol; ``suffix`` maps a universe symbol to the vendor's (AAPL -> AAPL.US)."""
    return {
        symbol: download_symbol(
            client, f"{symbol}{suffix}", interval, start_ms, end_ms, directory / f"{symbol}.parquet"
        )
        for symbol in symbols
    }
