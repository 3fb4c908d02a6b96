"""The engine's per-bar loop compiled with numba: the reference engine's semantics, at C speed.

``simulate`` is ``engine._run_symbol`` transcribed for one sleeve over numpy arrays, with the same
floating-point operations in the same order, so results match the reference exactly (tests check
it on random inputs). The compiled code is cached on disk (``cache=True``): only the very first run
after an install pays the compile time.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _commission(shares: float, per_share: float, minimum: float) -> float:
    if shares == 0:
        return 0.0
    return max(minimum, per_share * abs(shares))


@numba.njit(cache=True)
def _affordable(
    budget: float, fill: float, per_share: float, minimum: float, fractional: bool
) -> float:
    count = budget / (fill + per_share)
    if _commission(count, per_share, minimum) > per_share * count:
        count = (budget - minimum) / fill
    if not fractional:
        count = float(math.floor(count))
        while count > 0 and count * fill + _commission(count, per_share, minimum) > budget:
            count -= 1
    return max(count, 0.0)


@numba.njit(cache=True)
def simulate(
    prices: np.ndarray,  # the fill reference of each bar: its open (next_open) or close (same_close)
    closes: np.ndarray,
    wanted: np.ndarray,  # target position to hold from each bar's fill
    capital: float,
    slippage: float,  # as a fraction
    per_share: float,
    minimum: float,
    fractional: bool,
    equity: np.ndarray,  # out: sleeve equity at each close
    position: np.ndarray,  # out: position held at each close
    gross: np.ndarray,  # out: |position value| at each close
    trades: np.ndarray,  # out, (n, 10): entry row, exit row, side, shares, entry fill, exit fill,
    # costs, pnl, entry equity, unused
) -> int:
    """Run one sleeve; returns the number of trades written to ``trades``."""
    n = prices.shape[0]
    cash = capital
    side = 0
    shares = 0.0
    entry_price = 0.0
    entry_reference = 0.0
    entry_row = 0
    entry_equity = 0.0
    paid = 0.0
    count_trades = 0
    for index in range(n):
        target = wanted[index]
        price = prices[index]
        for _ in range(2):  # at most: close the open position, then open the new one
            if target == side:
                break
            if side != 0:
                fill = price * (1.0 + slippage) if side < 0 else price * (1.0 - slippage)
                commission = _commission(shares, per_share, minimum)
                cash += side * shares * fill - commission
                slip = shares * (abs(fill - price) + abs(entry_price - entry_reference))
                trades[count_trades, 0] = entry_row
                trades[count_trades, 1] = index
                trades[count_trades, 2] = side
                trades[count_trades, 3] = shares
                trades[count_trades, 4] = entry_price
                trades[count_trades, 5] = fill
                trades[count_trades, 6] = paid + commission + slip
                trades[count_trades, 7] = side * shares * (fill - entry_price) - paid - commission
                trades[count_trades, 8] = entry_equity
                count_trades += 1
                side = 0
                shares = 0.0
                paid = 0.0
                continue
            if index < n - 1:  # never open on the last bar
                fill = price * (1.0 + slippage) if target > 0 else price * (1.0 - slippage)
                budget = cash
                count = _affordable(budget, fill, per_share, minimum, fractional)
                if count > 0:
                    commission = _commission(count, per_share, minimum)
                    side = target
                    shares = count
                    entry_price = fill
                    entry_row = index
                    entry_reference = price
                    entry_equity = budget
                    paid = commission
                    cash -= target * count * fill + commission
            break
        mark = side * shares * closes[index]
        if index == n - 1 and side != 0:  # end of data: close at the last close
            price = closes[index]
            fill = price * (1.0 + slippage) if side < 0 else price * (1.0 - slippage)
            commission = _commission(shares, per_share, minimum)
            cash += side * shares * fill - commission
            slip = shares * (abs(fill - price) + abs(entry_price - entry_reference))
            trades[count_trades, 0] = entry_row
            trades[count_trades, 1] = index
            trades[count_trades, 2] = side
            trades[count_trades, 3] = shares
            trades[count_trades, 4] = entry_price
            trades[count_trades, 5] = fill
            trades[count_trades, 6] = paid + commission + slip
            trades[count_trades, 7] = side * shares * (fill - entry_price) - paid - commission
            trades[count_trades, 8] = entry_equity
            count_trades += 1
            side = 0
            shares = 0.0
            paid = 0.0
            mark = 0.0
        equity[index] = cash + mark
        position[index] = side
        gross[index] = abs(shares * closes[index])
    return count_trades


@numba.njit(cache=True)
def simulate_many(
    prices: np.ndarray,
    closes: np.ndarray,
    wanted: np.ndarray,
    starts: np.ndarray,  # first row of each sleeve, plus the total row count at the end
    capital: float,
    slippage: float,
    per_share: float,
    minimum: float,
    fractional: bool,
    equity: np.ndarray,
    position: np.ndarray,
    gross: np.ndarray,
    trades: np.ndarray,  # as in simulate, with column 9 set to the sleeve's index
) -> int:
    """Every sleeve in one call: ``simulate`` over each [starts[i], starts[i + 1]) slice."""
    total = 0
    for sleeve in range(starts.shape[0] - 1):
        first, last = starts[sleeve], starts[sleeve + 1]
        count = simulate(
            prices[first:last],
            closes[first:last],
            wanted[first:last],
            capital,
            slippage,
            per_share,
            minimum,
            fractional,
            equity[first:last],
            position[first:last],
            gross[first:last],
            trades[total:],
        )
        for row in range(total, total + count):
            trades[row, 0] += first  # rows become global
            trades[row, 1] += first
            trades[row, 9] = sleeve
        total += count
    return total
