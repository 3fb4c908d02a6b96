"""Turning bars into the pushes a market-data vendor would send.

Bars become ticks (:func:`ticks_from_bars`); the server walks the ticks on its replay clock and
renders each one with the functions here, in whichever wire style the active faults call for
(:class:`WireStyle`). Rendering lives here, not in the server, so that the exact bytes a client
sees can be tested without sockets.

Decimal strings are fixed-point with at most 8 decimal places and no trailing zeros
(``196.946945``, ``0.0672``, ``1371300000``): deterministic, never in exponent notation, and
precise enough for stocks and crypto alike.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from qcompile.marketdata.intervals import INTERVAL_MS as INTERVAL_MS  # the emulator's users

BAR_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")

DEPTH_LEVELS = 5
TICKS_PER_CENT = 100  # synthetic depth sits on a 0.01 price grid


def load_bars(directory: Path, symbols: list[str] | None = None) -> pl.DataFrame:
    """Bars of every ``<directory>/<SYMBOL>.parquet`` (or only ``symbols``), sorted by time.

    Files written in qcompile's layout carry no ``symbol`` column: the file stem names it.
    Extra columns (``adj_close``...) are dropped so that every file concatenates.
    """
    directory = Path(directory)
    paths = sorted(directory.glob("*.parquet"))
    if symbols is not None:
        wanted = set(symbols)
        missing = sorted(wanted - {p.stem for p in paths})
        if missing:
            raise FileNotFoundError(
                f"no Parquet file for {', '.join(missing)} in {directory}"
                f" (expected {directory}/<SYMBOL>.parquet)"
            )
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        raise FileNotFoundError(f"no *.parquet file in {directory}")
    frames = []
    for path in paths:
        frame = pl.read_parquet(path)
        if "symbol" not in frame.columns:
            frame = frame.with_columns(pl.lit(path.stem).alias("symbol"))
        frames.append(
            frame.select(
                pl.col("symbol").cast(pl.String),
                pl.col("timestamp").cast(pl.Int64),
                *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
            )
        )
    return pl.concat(frames).sort(["timestamp", "symbol"])


def ticks_from_bars(
    bars: pl.DataFrame, interval_ms: int, symbol_suffix: str = ""
) -> list[dict[str, Any]]:
    """Four ``ticker`` events per bar, all inside the bar's interval, in global time order.

    A bar is walked open -> nearer extreme -> farther extreme -> close (high first on an up bar,
    low first on a down bar), at offsets 0, 1/4, 2/4 and 3/4 of ``interval_ms``, each carrying a
    quarter of the bar's volume. Ties in time are ordered by symbol, so the output is
    deterministic whatever the input order.
    """
    offsets = [interval_ms * k // 4 for k in range(4)]
    events: list[dict[str, Any]] = []
    for row in bars.select(BAR_COLUMNS).iter_rows(named=True):
        open_, close = float(row["open"]), float(row["close"])
        high, low = float(row["high"]), float(row["low"])
        path = (open_, high, low, close) if close >= open_ else (open_, low, high, close)
        quantity = float(row["volume"]) / 4
        symbol = f"{row['symbol']}{symbol_suffix}"
        for offset, price in zip(offsets, path, strict=True):
            events.append(
                {
                    "channel": "ticker",
                    "symbol": symbol,
                    "price": price,
                    "timestamp": int(row["timestamp"]) + offset,
                    "quantity": quantity,
                }
            )
    # Stable sort: the four ticks of one bar keep their path order even if two offsets coincide.
    events.sort(key=lambda e: (e["timestamp"], e["symbol"]))
    return events


def format_decimal(value: float) -> str:
    """The vendor's decimal string: fixed point, at most 8 decimals, no trailing zeros."""
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass(frozen=True)
class WireStyle:
    """How pushes are encoded right now; faults switch these (see scenario.py)."""

    timestamp_unit: str = "ms"  # ms (documented), s or us
    numeric_prices: bool = False  # JSON numbers instead of decimal strings
    variant: str = "documented"  # or "article": {"channel", "data": {..., "ts"}} without "cmd"
    shift_ms: int = 0  # added to every push's time: a vendor's clock or timezone slip
    live_clock: bool = False  # stamp pushes with the time they are sent, as a live feed does

    def number(self, value: float) -> str | float:
        text = format_decimal(value)
        return float(text) if self.numeric_prices else text

    def time(self, ms: int) -> int:
        if self.live_clock:
            ms = time.time_ns() // 1_000_000
        ms += self.shift_ms
        if self.timestamp_unit == "s":
            return ms // 1000
        if self.timestamp_unit == "us":
            return ms * 1000
        return ms


@dataclass(frozen=True)
class Tick:
    """One replay event with what the clock derived while walking the replay in order."""

    symbol: str
    price: float
    quantity: float
    timestamp: int
    side: str  # "buy" when the price did not fall since the symbol's previous tick
    bar: tuple[int, float, float, float, float, float]  # running (open_ms, o, h, l, c, volume)


class TickWalker:
    """Derives trade sides and running bars; one walker per pass over the replay."""

    def __init__(self, interval_ms: int):
        self.interval_ms = interval_ms
        self._last_price: dict[str, float] = {}
        self._bars: dict[str, tuple[int, float, float, float, float, float]] = {}

    def walk(self, event: dict[str, Any]) -> Tick:
        symbol, price = event["symbol"], float(event["price"])
        timestamp, quantity = int(event["timestamp"]), float(event["quantity"])
        previous = self._last_price.get(symbol)
        self._last_price[symbol] = price
        side = "buy" if previous is None or price >= previous else "sell"
        bar = self._bars.get(symbol)
        # The first tick of a bar sits exactly at its open time (see ticks_from_bars).
        if bar is None or timestamp >= bar[0] + self.interval_ms:
            bar = (timestamp, price, price, price, price, quantity)
        else:
            start, open_, high, low, _, volume = bar
            bar = (start, open_, max(high, price), min(low, price), price, volume + quantity)
        self._bars[symbol] = bar
        return Tick(symbol, price, quantity, timestamp, side, bar)


def depth_levels(price: float, quantity: float) -> tuple[list[tuple[float, float]], ...]:
    """Synthetic book: 5 levels each side on a 0.01 grid strictly around ``price``.

    The vendor's depth cannot be derived from bars; this only gives depth subscribers a
    well-formed, plausible message. Bids below 0.01 are omitted.
    """
    cents = round(price * TICKS_PER_CENT, 6)  # absorb float noise before rounding to the grid
    best_bid, best_ask = math.ceil(cents) - 1, math.floor(cents) + 1
    bids = [
        ((best_bid - k) / TICKS_PER_CENT, quantity) for k in range(DEPTH_LEVELS) if best_bid - k > 0
    ]
    asks = [((best_ask + k) / TICKS_PER_CENT, quantity) for k in range(DEPTH_LEVELS)]
    return bids, asks


def render(tick: Tick, channel: str, style: WireStyle) -> str | None:
    """The JSON text of one push on ``channel`` for ``tick``; None if the style has no such push.

    Documented channels: ticker, trade, depth. Article channels (variant style only):
    ``kline.<interval>`` (the running bar) and ``depth.<levels>``.
    """
    article = style.variant == "article"
    if channel == "ticker":
        data: dict[str, Any] = {"symbol": tick.symbol, "last_price": style.number(tick.price)}
    elif channel == "trade":
        data = {
            "symbol": tick.symbol,
            "price": style.number(tick.price),
            "quantity": style.number(tick.quantity),
            "side": tick.side,
        }
    elif channel == "depth" or (article and channel.startswith("depth.")):
        levels = int(channel.split(".")[1]) if "." in channel else DEPTH_LEVELS
        bids, asks = depth_levels(tick.price, tick.quantity)
        data = {
            "symbol": tick.symbol,
            "bids": [[style.number(p), style.number(q)] for p, q in bids[:levels]],
            "asks": [[style.number(p), style.number(q)] for p, q in asks[:levels]],
        }
    elif article and channel.startswith("kline."):
        start, open_, high, low, close, volume = tick.bar
        data = {
            "symbol": tick.symbol,
            "open": style.number(open_),
            "high": style.number(high),
            "low": style.number(low),
            "close": style.number(close),
            "volume": style.number(volume),
        }
        return json.dumps({"channel": channel, "data": {**data, "ts": style.time(start)}})
    else:
        return None
    if article:
        return json.dumps({"channel": channel, "data": {**data, "ts": style.time(tick.timestamp)}})
    return json.dumps({"cmd": channel, "data": {**data, "timestamp": style.time(tick.timestamp)}})


def kline_records(bars: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """REST kline records: numbers as decimal strings, ``time`` as integer ms at bar open.

    ``quote_volume`` is not in bar data; it is approximated as volume x close.
    """
    return [
        {
            "time": int(bar["timestamp"]),
            "open": format_decimal(bar["open"]),
            "high": format_decimal(bar["high"]),
            "low": format_decimal(bar["low"]),
            "close": format_decimal(bar["close"]),
            "volume": format_decimal(bar["volume"]),
            "quote_volume": format_decimal(bar["volume"] * bar["close"]),
        }
        for bar in bars
    ]
