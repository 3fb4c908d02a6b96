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
        if target == side and index < n - 1:  # most bars: no order, mark to the close (as below)
            close = closes[index]
            equity[index] = cash + side * shares * close
            position[index] = side
            gross[index] = abs(shares * close)
            continue
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


# Columns of ``grid_finish``' output, in order; NaN stands for "undefined" (None in metrics.py).
GRID_COLUMNS = (
    "total_return",
    "annualised_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "trade_count",
    "win_rate",
    "profit_factor",
    "exposure",
)


@numba.njit(cache=True)
def _portfolio_metrics(
    equity: np.ndarray, gross: np.ndarray, periods_per_year: float, out: np.ndarray
) -> None:
    """metrics.compute's curve metrics, the same operations in the same order, into out[0:5, 8]."""
    m = equity.shape[0]
    growth = equity[m - 1] / equity[0]
    out[0] = growth - 1.0
    # bar returns exist only where the previous equity is positive (dailystats.bar_returns)
    count = 0
    total = 0.0
    for i in range(1, m):
        if equity[i - 1] > 0:
            count += 1
            total += equity[i] / equity[i - 1] - 1.0
    out[1] = growth ** (periods_per_year / count) - 1.0 if count > 0 and growth > 0 else -1.0
    mean = total / count if count > 0 else 0.0
    out[2] = np.nan
    if count >= 2:
        variance = 0.0
        for i in range(1, m):
            if equity[i - 1] > 0:
                variance += (equity[i] / equity[i - 1] - 1.0 - mean) ** 2
        variance /= count - 1
        if variance != 0:
            out[2] = mean / math.sqrt(variance) * math.sqrt(periods_per_year)
    out[3] = np.nan
    if count >= 1:
        downside = 0.0
        for i in range(1, m):
            if equity[i - 1] > 0:
                downside += min(equity[i] / equity[i - 1] - 1.0, 0.0) ** 2
        downside = math.sqrt(downside / count)
        if downside != 0:
            out[3] = mean / downside * math.sqrt(periods_per_year)
    peak = equity[0]
    worst = 0.0
    for i in range(m):
        if equity[i] > peak:
            peak = equity[i]
        depth = equity[i] / peak - 1.0
        if depth < worst:
            worst = depth
    out[4] = worst
    exposure = 0.0
    defined = 0
    for i in range(m):
        if equity[i] > 0:
            exposure += gross[i] / equity[i]
            defined += 1
    out[8] = exposure / defined if defined else 0.0


@numba.njit(cache=True, nogil=True)
def shared_calendar(times: np.ndarray, starts: np.ndarray) -> bool:
    """Whether every sleeve has the first sleeve's timestamps, row for row."""
    if starts.shape[0] < 2:
        return True
    span = starts[1] - starts[0]
    for sleeve in range(1, starts.shape[0] - 1):
        first = starts[sleeve]
        if starts[sleeve + 1] - first != span:
            return False
        differ = False
        for i in range(span):  # no early exit: a loop the compiler can vectorise
            differ |= times[first + i] != times[i]
        if differ:
            return False
    return True


@numba.njit(cache=True, parallel=True)
def grid_accumulate(
    prices: np.ndarray,  # the block's rows: fill reference per bar
    closes: np.ndarray,
    wanted: np.ndarray,  # (combinations, block rows): target from each bar's fill
    starts: np.ndarray,  # block-relative first row of each of the block's sleeves, plus the end
    first_row: int,  # the block's first row in the whole traded frame
    latest: np.ndarray,  # (block sleeves, clock): last global row at or before, or -1
    own: np.ndarray,  # (block sleeves, clock): whether that row is stamped at this clock time
    shared: bool,  # a shared calendar: clock index = row in the sleeve (latest and own unused)
    capital: float,
    slippage: float,
    per_share: float,
    minimum: float,
    fractional: bool,
    portfolio: np.ndarray,  # in/out (combinations, clock): equity, sleeves added in symbol order
    exposure: np.ndarray,  # in/out (combinations, clock): gross position value
    stats: np.ndarray,  # in/out (combinations, 4): closed trades, wins, won, lost
    threads: int,  # numba.get_num_threads(), passed in so the compiled code can be cached
) -> None:
    """Add one block of sleeves to every combination's portfolio, as ``combine_arrays`` does: a
    sleeve is cash before its first bar and keeps its last value after its last. Combinations
    run in parallel; each writes only its own rows, so the result does not depend on threads."""
    sleeves = starts.shape[0] - 1
    longest = 0
    for sleeve in range(sleeves):
        longest = max(longest, starts[sleeve + 1] - starts[sleeve])
    combinations = wanted.shape[0]
    groups = max(1, min(threads, combinations))
    # Scratch per group, allocated here: numba may hoist allocations out of a prange body, and
    # shared scratch would be a race. Each group owns combinations g, g + groups, ...
    equities = np.empty((groups, longest))
    positions = np.empty((groups, longest), dtype=np.int8)
    grosses = np.empty((groups, longest))
    # a reversal closes a trade on every bar: up to one trade per bar, plus the last close
    trade_rows = np.empty((groups, longest + 1, 10))
    tallies = np.empty((groups, 4))
    for group in numba.prange(groups):
        for combination in range(group, combinations, groups):
            _accumulate_one(
                prices, closes, wanted[combination], starts, first_row, latest, own, shared,
                capital, slippage, per_share, minimum, fractional, equities[group],
                positions[group], grosses[group], trade_rows[group], tallies[group],
                portfolio[combination], exposure[combination], stats[combination],
            )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def grid_accumulate_serial(
    prices: np.ndarray,
    closes: np.ndarray,
    wanted: np.ndarray,  # (combinations, block rows)
    starts: np.ndarray,
    first_row: int,
    latest: np.ndarray,
    own: np.ndarray,
    shared: bool,
    capital: float,
    slippage: float,
    per_share: float,
    minimum: float,
    fractional: bool,
    portfolio: np.ndarray,  # in/out (combinations, clock)
    exposure: np.ndarray,
    stats: np.ndarray,
    equity: np.ndarray,  # scratch (longest sleeve,)
    position: np.ndarray,  # scratch (longest sleeve,), int8
    gross: np.ndarray,  # scratch (longest sleeve,)
    trades: np.ndarray,  # scratch (longest sleeve + 1, 10)
    tally: np.ndarray,  # scratch (4,)
) -> None:
    """``grid_accumulate`` on one thread, without the GIL: the grid engine runs it beside the
    signal of the next block of symbols. Same operations in the same order, same results."""
    for combination in range(wanted.shape[0]):
        _accumulate_one(
            prices, closes, wanted[combination], starts, first_row, latest, own, shared, capital,
            slippage, per_share, minimum, fractional, equity, position, gross, trades, tally,
            portfolio[combination], exposure[combination], stats[combination],
        )  # fmt: skip


@numba.njit(cache=True)
def _accumulate_one(
    prices: np.ndarray,
    closes: np.ndarray,
    wanted: np.ndarray,  # (block rows,): one combination's targets
    starts: np.ndarray,
    first_row: int,
    latest: np.ndarray,
    own: np.ndarray,
    shared: bool,
    capital: float,
    slippage: float,
    per_share: float,
    minimum: float,
    fractional: bool,
    equity: np.ndarray,
    position: np.ndarray,
    gross: np.ndarray,
    trades: np.ndarray,
    tally: np.ndarray,
    portfolio: np.ndarray,  # in/out (clock,)
    exposure: np.ndarray,
    stats: np.ndarray,
) -> None:
    """One combination over the block's sleeves, in symbol order."""
    clock = portfolio.shape[0]
    for sleeve in range(starts.shape[0] - 1):
        first, last = starts[sleeve], starts[sleeve + 1]
        length = last - first
        count = simulate(
            prices[first:last], closes[first:last], wanted[first:last], capital, slippage,
            per_share, minimum, fractional, equity[:length], position[:length], gross[:length],
            trades,
        )  # fmt: skip
        _tally_trades(trades, count, tally)
        _add_tally(tally, stats)
        _add_to_clock(
            equity, gross, latest, own, shared, sleeve, first_row + first, capital, portfolio,
            exposure, 0, clock,
        )  # fmt: skip


@numba.njit(cache=True, parallel=True)
def grid_accumulate_sleeves(
    prices: np.ndarray,
    closes: np.ndarray,
    wanted: np.ndarray,  # (block rows,): one combination's targets from each bar's fill
    starts: np.ndarray,
    first_row: int,
    latest: np.ndarray,
    own: np.ndarray,
    shared: bool,
    capital: float,
    slippage: float,
    per_share: float,
    minimum: float,
    fractional: bool,
    portfolio: np.ndarray,  # in/out (clock,)
    exposure: np.ndarray,  # in/out (clock,)
    stats: np.ndarray,  # in/out (4,)
    curves: np.ndarray,  # scratch (2, batch, longest sleeve): a batch of equity and gross curves
    positions: np.ndarray,  # scratch (groups, longest sleeve), int8
    trade_rows: np.ndarray,  # scratch (groups, longest sleeve + 1, 10)
    tallies: np.ndarray,  # scratch (batch, 4)
) -> None:
    """``grid_accumulate`` for one combination, for grids too small to fill the threads: sleeves
    are simulated in parallel (one group per row of ``positions``), a batch at a time, then the
    batch is added to the portfolio in parallel over clock ranges, each clock entry still summing
    its sleeves in symbol order; the trade statistics too are added in symbol order. So the result
    is the same, bit for bit. The caller allocates the scratch once for all its calls."""
    sleeves = starts.shape[0] - 1
    groups = positions.shape[0]
    batch = curves.shape[1]
    equities = curves[0]
    grosses = curves[1]
    clock = portfolio.shape[0]
    for begin in range(0, sleeves, batch):
        size = min(batch, sleeves - begin)
        for group in numba.prange(groups):
            position = positions[group]
            trades = trade_rows[group]
            for k in range(group, size, groups):
                first, last = starts[begin + k], starts[begin + k + 1]
                length = last - first
                count = simulate(
                    prices[first:last], closes[first:last], wanted[first:last], capital,
                    slippage, per_share, minimum, fractional, equities[k, :length],
                    position[:length], grosses[k, :length], trades,
                )  # fmt: skip
                _tally_trades(trades, count, tallies[k])
        for k in range(size):
            _add_tally(tallies[k], stats)
        for group in numba.prange(groups):
            low = clock * group // groups
            high = clock * (group + 1) // groups
            for k in range(size):
                _add_to_clock(
                    equities[k], grosses[k], latest, own, shared, begin + k,
                    first_row + starts[begin + k], capital, portfolio, exposure, low, high,
                )  # fmt: skip


@numba.njit(cache=True)
def _tally_trades(trades: np.ndarray, count: int, tally: np.ndarray) -> None:
    """One sleeve's closed trades as (closed, wins, won, lost)."""
    wins = 0
    won = 0.0
    lost = 0.0
    for t in range(count):
        pnl = trades[t, 7]
        if pnl > 0:
            wins += 1
            won += pnl
        elif pnl < 0:
            lost -= pnl
    tally[0] = count
    tally[1] = wins
    tally[2] = won
    tally[3] = lost


@numba.njit(cache=True)
def _add_tally(tally: np.ndarray, stats: np.ndarray) -> None:
    """Add a sleeve's sums to the totals, sleeve after sleeve in symbol order, so that the totals
    are the same whether sleeves ran one after another or in parallel."""
    for i in range(4):
        stats[i] += tally[i]


@numba.njit(cache=True)
def _add_to_clock(
    equity: np.ndarray,
    gross: np.ndarray,
    latest: np.ndarray,  # (sleeves, clock), unless shared
    own: np.ndarray,
    shared: bool,
    sleeve: int,  # the sleeve's row in latest and own
    offset: int,  # global row of equity[0]
    capital: float,
    portfolio: np.ndarray,
    exposure: np.ndarray,
    low: int,  # the clock range to add, [low, high)
    high: int,
) -> None:
    """Add one sleeve to the portfolio clock: cash before its first bar, its last value after."""
    if shared:  # every sleeve is stamped at every clock time
        for c in range(low, high):
            portfolio[c] += equity[c]
            exposure[c] += gross[c]
        return
    for c in range(low, high):
        row = latest[sleeve, c]
        portfolio[c] += capital if row < 0 else equity[row - offset]
        if own[sleeve, c]:
            exposure[c] += gross[row - offset]


@numba.njit(cache=True)
def grid_finish(
    portfolio: np.ndarray,
    exposure: np.ndarray,
    stats: np.ndarray,
    periods_per_year: float,
    out: np.ndarray,  # (combinations, len(GRID_COLUMNS))
) -> None:
    """Every combination's metrics from its accumulated portfolio and trade statistics."""
    for combination in range(portfolio.shape[0]):
        result = out[combination]
        _portfolio_metrics(portfolio[combination], exposure[combination], periods_per_year, result)
        closed = stats[combination, 0]
        result[5] = closed
        result[6] = stats[combination, 1] / closed if closed else np.nan
        lost = stats[combination, 3]
        result[7] = stats[combination, 2] / lost if lost > 0 else np.nan
