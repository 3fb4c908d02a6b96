"""Parameter grids in one pass: every combination's metrics without building its full result.

Consumes bars, a signal and a list of parameter combinations; produces one row of metrics per
combination (the columns of ``kernel.GRID_COLUMNS``), equal to what ``fast.run`` followed by
``metrics.compute`` gives for each combination alone (tests check it).

Two things make a grid cheap. A signal may register a ``grid`` companion that computes every
combination's targets at once, each distinct indicator window once (``ma_crossover`` does); other
signals are called once per combination. And the compiled kernel runs the combinations in
parallel and keeps only their portfolio curves and trade statistics, never a trade list.

Memory stays bounded however large the grid: a grid companion works per symbol, so the universe is
processed in blocks of symbols, each block's sleeves added to every combination's portfolio in
symbol order; a signal without one is called for a chunk of combinations at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import polars as pl

from qcompile.backtest.engine import Settings, sleeve_capital
from qcompile.backtest.kernel import GRID_COLUMNS, grid_accumulate, grid_finish

GridFunction = Callable[[pl.DataFrame, Sequence[dict[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class GridResult:
    metrics: pl.DataFrame  # one row per combination, the columns of kernel.GRID_COLUMNS
    clock: np.ndarray  # the portfolio's timestamps
    equity: np.ndarray  # (combinations, len(clock)): each combination's equity curve


BLOCK_CELLS = 48_000_000  # targets (combinations x rows) held at once: 48 MB of int8


def _starts(symbols: pl.Series) -> np.ndarray:
    """First row of each symbol's run in a frame sorted by symbol, plus the row count."""
    lengths = symbols.rle().struct.field("len").to_numpy()
    return np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


def _clock_map(times: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The portfolio's timestamps and, per sleeve and timestamp, the sleeve's last row at or before
    it (-1: none yet) and whether that row is stamped exactly then."""
    sleeves = len(starts) - 1
    span = np.diff(starts)
    first = times[: span[0]]
    if np.all(span == span[0]) and np.array_equal(
        times.reshape(sleeves, span[0]), np.broadcast_to(first, (sleeves, span[0]))
    ):  # the common case, a shared calendar: row = sleeve start + clock index
        latest = starts[:-1, None] + np.arange(span[0], dtype=np.int64)[None, :]
        return first, latest, np.ones(latest.shape, dtype=np.bool_)
    clock = np.unique(times)
    latest = np.empty((sleeves, len(clock)), dtype=np.int64)
    own = np.empty((sleeves, len(clock)), dtype=np.bool_)
    for sleeve in range(sleeves):
        a, b = starts[sleeve], starts[sleeve + 1]
        stamps = times[a:b]
        index = np.searchsorted(stamps, clock, side="right") - 1
        latest[sleeve] = np.where(index >= 0, index + a, -1)
        own[sleeve] = (index >= 0) & (stamps[np.maximum(index, 0)] == clock)
    return clock, latest, own


def targets_by_call(
    function: Callable[..., pl.DataFrame], bars: pl.DataFrame, combos: Sequence[dict[str, Any]]
) -> np.ndarray:
    """The fallback for signals without a grid companion: one call per combination."""
    out = np.empty((len(combos), bars.height), dtype=np.int8)
    for row, combo in enumerate(combos):
        out[row] = function(bars, **combo)["signal"].fill_null(0).cast(pl.Int8).to_numpy()
    return out


def _wanted(targets: np.ndarray, starts: np.ndarray, execution: str) -> np.ndarray:
    """Targets as positions to hold from each bar's fill (shifted one bar for next_open)."""
    if execution != "next_open":
        return np.ascontiguousarray(targets)
    # C order matters: the kernel walks one combination's row at a time
    wanted = np.empty(targets.shape, dtype=targets.dtype, order="C")
    wanted[:, 1:] = targets[:, :-1]
    wanted[:, starts[:-1]] = 0  # each sleeve starts flat
    return wanted


@dataclass(frozen=True)
class _Block:
    history: slice  # rows of the signal's input
    traded: slice  # rows of the backtest window
    sleeves: slice  # sleeves of the backtest window


def _blocks(starts: np.ndarray, kept_before: np.ndarray, rows_per_block: int) -> list[_Block]:
    """Consecutive runs of whole symbols of about ``rows_per_block`` history rows each.

    ``starts``: each history symbol's first row, plus the end; ``kept_before``: how many traded
    rows precede each history row (and the end)."""
    blocks, first, sleeve = [], 0, 0
    for index in range(1, len(starts)):
        last_symbol = index == len(starts) - 1
        if not last_symbol and starts[index + 1] - starts[first] <= rows_per_block:
            continue
        h0, h1 = int(starts[first]), int(starts[index])
        t0, t1 = int(kept_before[h0]), int(kept_before[h1])
        traded_sleeves = sum(
            1 for s in range(first, index) if kept_before[starts[s + 1]] > kept_before[starts[s]]
        )
        blocks.append(_Block(slice(h0, h1), slice(t0, t1), slice(sleeve, sleeve + traded_sleeves)))
        sleeve += traded_sleeves
        first = index
    return blocks


def run_grid(
    bars: pl.DataFrame,
    window: tuple[int, int],
    combos: Sequence[dict[str, Any]],
    function: Callable[..., pl.DataFrame],
    grid: GridFunction | None,
    settings: Settings,
    periods_per_year: float,
) -> GridResult:
    """Metrics and equity curves of every combination over ``window`` (inclusive ms); signals see
    bars up to its end. ``bars`` must be sorted by symbol then time; combinations stay in order.
    """
    start, end = window
    stamps = bars["timestamp"]
    history = bars if stamps.max() <= end else bars.filter(pl.col("timestamp") <= end)
    everything_kept = history["timestamp"].min() >= start
    keep = (
        np.ones(history.height, dtype=np.bool_)
        if everything_kept
        else (history["timestamp"] >= start).to_numpy()
    )
    traded = history if everything_kept else history.filter(pl.Series(keep))
    if traded.height == 0:
        raise ValueError("no bars in the window")
    history_starts = _starts(history["symbol"])
    if everything_kept:
        kept_before = np.arange(history.height + 1, dtype=np.int64)
        starts = history_starts
    else:
        kept_before = np.concatenate(([0], np.cumsum(keep)))
        starts = np.unique(kept_before[history_starts])  # symbols with no traded row vanish
    sleeves = len(starts) - 1
    times = traded["timestamp"].to_numpy()
    clock, latest, own = _clock_map(times, starts)
    closes = traded["close"].cast(pl.Float64).to_numpy()
    prices = (
        traded["open"].cast(pl.Float64).to_numpy() if settings.execution == "next_open" else closes
    )
    capital = sleeve_capital(settings, sleeves)
    costs = settings.costs
    combinations = len(combos)
    portfolio = np.full(
        (combinations, latest.shape[1]), settings.initial_capital - capital * sleeves
    )
    exposure = np.zeros_like(portfolio)
    stats = np.zeros((combinations, 4))

    def accumulate(targets: np.ndarray, block: _Block, rows: slice) -> None:
        block_starts = starts[block.sleeves.start : block.sleeves.stop + 1] - block.traded.start
        wanted = _wanted(targets, block_starts, settings.execution)
        grid_accumulate(
            prices[block.traded], closes[block.traded], wanted, block_starts, block.traded.start,
            latest[block.sleeves], own[block.sleeves], capital, costs.slippage_bps / 10_000.0,
            costs.commission_per_share, costs.min_commission, settings.fractional_shares,
            portfolio[rows], exposure[rows], stats[rows], numba.get_num_threads(),
        )  # fmt: skip

    everything = _Block(slice(0, history.height), slice(0, traded.height), slice(0, sleeves))
    if grid is not None:  # per symbol by contract: blocks of symbols, all combinations at once
        for block in _blocks(
            history_starts, kept_before, max(1, BLOCK_CELLS // max(1, combinations))
        ):
            targets = grid(history[block.history], combos)
            if not everything_kept:
                targets = targets[:, keep[block.history]]
            accumulate(targets, block, slice(0, combinations))
    else:  # any signal: chunks of combinations over the whole universe
        chunk = max(1, BLOCK_CELLS // max(1, history.height))
        for first in range(0, combinations, chunk):
            part = slice(first, min(first + chunk, combinations))
            targets = targets_by_call(function, history, combos[part])
            accumulate(targets if everything_kept else targets[:, keep], everything, part)
    out = np.empty((combinations, len(GRID_COLUMNS)))
    grid_finish(portfolio, exposure, stats, periods_per_year, out)
    frame = pl.DataFrame(out, schema=list(GRID_COLUMNS), orient="row").with_columns(
        pl.col("trade_count").cast(pl.Int64), pl.all().exclude("trade_count").fill_nan(None)
    )
    return GridResult(frame, clock, portfolio)
