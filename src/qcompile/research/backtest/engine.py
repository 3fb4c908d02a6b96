"""The backtest engine: bars + target positions -> fills, trades and an equity curve.

Conventions (stated in every report):

* A signal computed from bar t's close is executed at bar t+1's open (``next_open``), or at bar
  t's close where the strategy declares ``same_close``. Targets are -1 short, 0 flat, 1 long.
* Sleeves, sizing and costs are the shared execution rules (``qcompile.execution``, which the
  production runner applies too): each symbol trades in its own sleeve; a trade invests the whole
  sleeve at entry (the most whole shares, or fractional ones, whose cost and commission fit);
  shares stay fixed for the trade; fills pay ``slippage_bps`` against their side and each fill
  pays max(min_commission, commission_per_share x shares).
* A position still open at a symbol's last bar (the end of the window, or a delisting) is closed
  at that bar's close, with costs.
* Equity is marked at every bar's close; the portfolio holds the sleeves plus unallocated cash.

This module is the reference implementation: one explicit loop per symbol, written to be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qcompile import execution
from qcompile.execution import Costs, rebalance

__all__ = ["Costs", "Result", "Settings", "Trade", "run", "sleeve_capital"]


@dataclass(frozen=True)
class Settings:
    initial_capital: float
    costs: Costs = field(default_factory=Costs)
    execution: str = "next_open"  # or same_close
    sizing: str = "equal_weight"  # or fixed_fraction
    fraction: float | None = None
    fractional_shares: bool = False


@dataclass(frozen=True)
class Trade:
    symbol: str
    side: int  # 1 long, -1 short
    entry_time: int
    entry_price: float  # the fill, slippage included
    exit_time: int
    exit_price: float
    shares: float
    costs: float  # commissions plus slippage, both legs
    pnl: float  # net of all costs
    entry_equity: float  # sleeve equity committed at entry

    @property
    def return_pct(self) -> float:
        return self.pnl / self.entry_equity if self.entry_equity else 0.0


@dataclass
class Result:
    equity: pl.DataFrame  # timestamp, equity, gross_exposure (position value / equity)
    trades: list[Trade]
    per_symbol: dict[str, pl.DataFrame]  # timestamp, position, equity of each sleeve


def sleeve_capital(settings: Settings, symbols: int) -> float:
    return execution.sleeve_capital(
        settings.initial_capital, settings.sizing, settings.fraction, symbols
    )


def _run_symbol(
    symbol: str, bars: pl.DataFrame, capital: float, settings: Settings
) -> tuple[list[Trade], pl.DataFrame]:
    times = bars["timestamp"].to_list()
    opens, closes = bars["open"].to_list(), bars["close"].to_list()
    targets = [int(t) for t in bars["signal"].fill_null(0).to_list()]
    costs = settings.costs
    cash = capital  # sleeve cash; a long holds shares bought with it, a short holds the proceeds
    side, shares, entry_price, entry_time, entry_equity, paid = 0, 0.0, 0.0, 0, 0.0, 0.0
    trades: list[Trade] = []
    positions, equity, exposure = [], [], []

    def close_position(time: int, price: float) -> None:
        nonlocal cash, side, shares, paid
        fill = costs.fill(price, buying=side < 0)
        commission = costs.commission(shares)
        cash += side * shares * fill - commission
        slippage = shares * (abs(fill - price) + abs(entry_price - entry_reference))
        pnl = side * shares * (fill - entry_price) - paid - commission
        trades.append(
            Trade(
                symbol,
                side,
                entry_time,
                entry_price,
                time,
                fill,
                shares,
                paid + commission + slippage,
                pnl,
                entry_equity,
            )
        )
        side, shares, paid = 0, 0.0, 0.0

    entry_reference = 0.0
    for index, time in enumerate(times):
        if settings.execution == "next_open":
            wanted = targets[index - 1] if index > 0 else 0
            price = opens[index]
        else:
            wanted, price = targets[index], closes[index]
        if wanted != side:
            opening = wanted if index < len(times) - 1 else 0  # never open on the last bar
            legs = rebalance(cash, side, shares, opening, price, costs, settings.fractional_shares)
            if side != 0:
                close_position(time, price)  # the exit leg: the position, whole
            if legs.entry:  # then the new side, with the whole sleeve
                count = abs(legs.entry)
                fill = costs.fill(price, buying=opening > 0)
                commission = costs.commission(count)
                side, shares, entry_price, entry_time = opening, count, fill, time
                entry_reference, entry_equity, paid = price, cash, commission
                cash -= opening * count * fill + commission
        mark = side * shares * closes[index]
        if index == len(times) - 1 and side != 0:  # end of data: close at the last close
            close_position(time, closes[index])
            mark = 0.0
        value = cash + mark
        positions.append(side)
        equity.append(value)
        exposure.append(abs(shares * closes[index]))
    frame = pl.DataFrame(
        {"timestamp": times, "position": positions, "equity": equity, "gross": exposure},
        schema={
            "timestamp": pl.Int64,
            "position": pl.Int8,
            "equity": pl.Float64,
            "gross": pl.Float64,
        },
    )
    return trades, frame


def run(bars: pl.DataFrame, settings: Settings) -> Result:
    """Backtest ``bars`` (symbol, timestamp, open, close, signal; sorted) under ``settings``."""
    symbols = bars["symbol"].unique(maintain_order=True).sort().to_list()
    if not symbols:
        raise ValueError("no bars to backtest")
    capital = sleeve_capital(settings, len(symbols))
    trades: list[Trade] = []
    sleeves: dict[str, pl.DataFrame] = {}
    for symbol in symbols:
        symbol_trades, frame = _run_symbol(
            symbol, bars.filter(pl.col("symbol") == symbol), capital, settings
        )
        trades.extend(symbol_trades)
        sleeves[symbol] = frame
    trades.sort(key=lambda t: (t.entry_time, t.symbol))
    return Result(combine_sleeves(sleeves, settings, capital), trades, sleeves)


def combine_sleeves(
    sleeves: dict[str, pl.DataFrame], settings: Settings, capital: float
) -> pl.DataFrame:
    """The portfolio's equity and gross exposure per timestamp: every sleeve plus idle cash."""
    names = sorted(sleeves)
    return combine_arrays(
        [sleeves[n]["timestamp"].to_numpy() for n in names],
        [sleeves[n]["equity"].to_numpy() for n in names],
        [sleeves[n]["gross"].to_numpy() for n in names],
        settings.initial_capital - capital * len(names),
        capital,
    )


def combine_arrays(
    times: list[np.ndarray],
    equities: list[np.ndarray],
    grosses: list[np.ndarray],
    idle_cash: float,
    capital: float,
) -> pl.DataFrame:
    """``combine_sleeves`` on arrays, sleeves in symbol order.

    A sleeve is cash before its first bar and keeps its last value after its last bar. Sleeves
    are added one by one in symbol order, so the sums do not depend on the input order.
    """
    clock = (
        times[0]
        if all(np.array_equal(t, times[0]) for t in times)
        else np.unique(np.concatenate(times))
    )
    equity = np.full(len(clock), idle_cash, dtype=np.float64)
    gross = np.zeros(len(clock), dtype=np.float64)
    for stamps, values, exposure in zip(times, equities, grosses, strict=True):
        if stamps is clock or np.array_equal(stamps, clock):  # the common case: a shared calendar
            equity += values
            gross += exposure
            continue
        latest = (
            np.searchsorted(stamps, clock, side="right") - 1
        )  # the sleeve's last bar at or before
        equity += np.where(latest >= 0, values[np.maximum(latest, 0)], capital)
        own = np.minimum(np.searchsorted(stamps, clock), len(stamps) - 1)
        gross += np.where(stamps[own] == clock, exposure[own], 0.0)  # only on the sleeve's own bars
    curve = pl.DataFrame({"timestamp": clock.astype(np.int64), "equity": equity, "gross": gross})
    return curve.select(
        "timestamp",
        "equity",
        # undefined (null) once the account has nothing left
        gross_exposure=pl.when(pl.col("equity") > 0).then(pl.col("gross") / pl.col("equity")),
    )
