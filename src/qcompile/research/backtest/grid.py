"""Parameter grids in one pass: every combination's metrics without building its full result.

Consumes bars, a signal and a list of parameter combinations; produces one row of metrics per
combination (the columns of ``kernel.GRID_COLUMNS``), equal to what ``fast.run`` followed by
``metrics.compute`` gives for each combination alone (tests check it).

Two things make a grid cheap. A signal may register a ``grid`` companion that computes every
combination's targets at once, each distinct indicator window once (``ma_crossover`` does); other
signals are called once per combination. And the compiled kernel runs the combinations in
parallel and keeps only their portfolio curves and trade statistics, never a trade list.

Memory stays bounded however large the grid: a grid companion works per symbol, so the universe is
processed in blocks of symbols (of at most ``BLOCK_ROWS`` rows, so that a block's arrays are small
and reused), each block's sleeves added to every combination's portfolio in symbol order; a signal
without one is called for a chunk of combinations at a time. With fewer combinations than threads,
the engine adds each block on a thread of its own while the signal computes the next block. The
order of every sum is fixed however the work is spread, so the results never depend on it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import polars as pl

from qcompile.research.backtest.engine import Costs, Settings, sleeve_capital
from qcompile.research.backtest.kernel import (
    GRID_COLUMNS,
    grid_accumulate,
    grid_accumulate_serial,
    grid_accumulate_sleeves,
    grid_finish,
    shared_calendar,
)
from qcompile.signals.frames import symbol_starts

GridFunction = Callable[[pl.DataFrame, Sequence[dict[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class GridResult:
    metrics: pl.DataFrame  # one row per combination, the columns of kernel.GRID_COLUMNS
    clock: np.ndarray  # the portfolio's timestamps
    equity: np.ndarray  # (combinations, len(clock)): each combination's equity curve


BLOCK_CELLS = 48_000_000  # targets (combinations x rows) held at once: 48 MB of int8
BLOCK_ROWS = 524_288  # history rows per block at most: a block's arrays stay small
BATCH_ROWS = 262_144  # rows of sleeve curves held at once when sleeves run in parallel
# A grid this small (combinations x traded rows) runs on one thread: it takes milliseconds, less
# than starting the parallel kernel's threads, and a process that never needs the parallel
# kernel never compiles it (5 s of a first run's numba compilation, for a report's grid).
SERIAL_CELLS = 4_000_000


def _symbol_runs(bars: pl.DataFrame) -> tuple[np.ndarray, Any, Any]:
    """The symbol runs of a frame sorted by symbol then time (``symbol_starts``), and its earliest
    and latest timestamps: with times rising within each run, the runs' ends are its extremes."""
    starts = symbol_starts(bars)
    stamps = bars["timestamp"]
    if len(starts) > 1 and stamps.dtype.is_integer() and stamps.null_count() == 0:
        times = stamps.to_numpy()
        return starts, times[starts[:-1]].min(), times[starts[1:] - 1].max()
    return starts, stamps.min(), stamps.max()


def _clock_map(
    times: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """The portfolio's timestamps and, per sleeve and timestamp, the sleeve's last row at or before
    it (-1: none yet) and whether that row is stamped exactly then; the last flag says the
    calendar is shared, in which case both maps are left empty (row = sleeve start + clock index).
    """
    sleeves = len(starts) - 1
    if shared_calendar(times, starts):  # the common case
        empty = np.empty((sleeves, 0), dtype=np.int64)
        return times[: starts[1] - starts[0]], empty, empty.astype(np.bool_), True
    clock = np.unique(times)
    latest = np.empty((sleeves, len(clock)), dtype=np.int64)
    own = np.empty((sleeves, len(clock)), dtype=np.bool_)
    for sleeve in range(sleeves):
        a, b = starts[sleeve], starts[sleeve + 1]
        stamps = times[a:b]
        index = np.searchsorted(stamps, clock, side="right") - 1
        latest[sleeve] = np.where(index >= 0, index + a, -1)
        own[sleeve] = (index >= 0) & (stamps[np.maximum(index, 0)] == clock)
    return clock, latest, own, False


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


def serial_scratch(starts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scratch arrays for ``grid_accumulate_serial`` over the sleeves ``starts`` delimits."""
    longest = max(1, int(np.diff(starts).max()))
    return (
        np.empty(longest),
        np.empty(longest, dtype=np.int8),
        np.empty(longest),
        np.empty((longest + 1, 10)),
        np.empty(4),
    )


def sleeve_scratch(starts: np.ndarray, threads: int, batch_rows: int) -> tuple[np.ndarray, ...]:
    """Scratch arrays for ``grid_accumulate_sleeves`` over the sleeves ``starts`` delimits, with
    about ``batch_rows`` rows of sleeve curves (in whole sleeves)."""
    sleeves = len(starts) - 1
    longest = max(1, int(np.diff(starts).max()))
    groups = max(1, min(threads, sleeves))
    batch = max(groups, min(sleeves, batch_rows // longest))
    return (
        np.empty((2, batch, longest)),
        np.empty((groups, longest), dtype=np.int8),
        np.empty((groups, longest + 1, 10)),
        np.empty((batch, 4)),
    )


@dataclass(frozen=True)
class _Block:
    history: slice  # rows of the signal's input
    traded: slice  # rows of the backtest window
    sleeves: slice  # sleeves of the backtest window


def _blocks(
    starts: np.ndarray, kept_before: np.ndarray | None, rows_per_block: int
) -> list[_Block]:
    """Consecutive runs of whole symbols of about ``rows_per_block`` history rows each.

    ``starts``: each history symbol's first row, plus the end; ``kept_before``: how many traded
    rows precede each history row (and the end), None when every row is traded."""
    kept = (lambda row: row) if kept_before is None else kept_before.__getitem__
    blocks, first, sleeve = [], 0, 0
    for index in range(1, len(starts)):
        last_symbol = index == len(starts) - 1
        if not last_symbol and starts[index + 1] - starts[first] <= rows_per_block:
            continue
        h0, h1 = int(starts[first]), int(starts[index])
        t0, t1 = int(kept(h0)), int(kept(h1))
        traded_sleeves = sum(
            1 for s in range(first, index) if kept(starts[s + 1]) > kept(starts[s])
        )
        blocks.append(_Block(slice(h0, h1), slice(t0, t1), slice(sleeve, sleeve + traded_sleeves)))
        sleeve += traded_sleeves
        first = index
    return blocks


class _Portfolios:
    """Every combination's portfolio over the traded rows, built one block of sleeves at a time."""

    def __init__(
        self, traded: pl.DataFrame, starts: np.ndarray, combinations: int, settings: Settings
    ) -> None:
        self.traded, self.starts, self.settings = traded, starts, settings
        self.combinations = combinations
        self.threads = numba.get_num_threads()
        self.serial: tuple[np.ndarray, ...] = ()  # scratch of each kernel, allocated once
        self.parallel: tuple[np.ndarray, ...] = ()

    def prepare(self) -> None:
        """The clock and the starting portfolios (all cash); before any ``add``."""
        traded, starts, settings = self.traded, self.starts, self.settings
        sleeves = len(starts) - 1
        self.clock, self.latest, self.own, self.shared = _clock_map(
            traded["timestamp"].to_numpy(), starts
        )
        self.closes = traded["close"].cast(pl.Float64).to_numpy()
        self.prices = (
            traded["open"].cast(pl.Float64).to_numpy()
            if settings.execution == "next_open"
            else self.closes
        )
        self.capital = sleeve_capital(settings, sleeves)
        self.portfolio = np.full(
            (self.combinations, len(self.clock)), settings.initial_capital - self.capital * sleeves
        )
        self.exposure = np.zeros_like(self.portfolio)
        self.stats = np.zeros((self.combinations, 4))

    def add(self, targets: np.ndarray, block: _Block, rows: slice, serial: bool = False) -> None:
        """Add a block's sleeves to the portfolios of the combinations ``rows``, in parallel
        unless ``serial`` (the caller runs it on a thread of its own) or the whole grid is small
        (``SERIAL_CELLS``)."""
        settings, costs, threads = self.settings, self.settings.costs, self.threads
        serial = serial or self.combinations * self.traded.height <= SERIAL_CELLS
        starts = self.starts[block.sleeves.start : block.sleeves.stop + 1] - block.traded.start
        wanted = _wanted(targets, starts, settings.execution)
        data = (self.prices[block.traded], self.closes[block.traded])
        layout = (starts, block.traded.start, self.latest[block.sleeves], self.own[block.sleeves])
        terms = (
            self.shared, self.capital, costs.slippage_bps / 10_000.0, costs.commission_per_share,
            costs.min_commission, settings.fractional_shares,
        )  # fmt: skip
        curves = (self.portfolio[rows], self.exposure[rows], self.stats[rows])
        if serial:
            self.serial = self.serial or serial_scratch(self.starts)
            grid_accumulate_serial(*data, wanted, *layout, *terms, *curves, *self.serial)
        elif len(wanted) >= threads or len(starts) <= 2:  # combinations in parallel
            grid_accumulate(*data, wanted, *layout, *terms, *curves, threads)
        else:  # too few combinations to use the threads: each one's sleeves in parallel
            self.parallel = self.parallel or sleeve_scratch(self.starts, threads, BATCH_ROWS)
            for target, row in zip(wanted, range(rows.start, rows.stop), strict=True):
                grid_accumulate_sleeves(
                    *data, target, *layout, *terms, self.portfolio[row], self.exposure[row],
                    self.stats[row], *self.parallel,
                )  # fmt: skip


# -- a first run's compilation, on the second core ---------------------------------------------

_SMALL_GRID_KERNELS = (shared_calendar, grid_accumulate_serial, grid_finish)
_HELPER: list[subprocess.Popen[bytes]] = []  # at most one: the process compiling them
HELPER_TIMEOUT_S = 300.0


def _cold(kernels: Sequence[Any] = _SMALL_GRID_KERNELS) -> bool:
    """Whether numba's cache lacks a compiled kernel of ``kernels`` for this source (a first
    run, or the kernels changed). Reads numba's cache index; where its internals moved, says no."""
    try:
        return any(not k._cache._cache_file._load_index() for k in kernels)
    except Exception:  # numba internals moved: no helper, the kernels compile here as before
        return False


def compile_beside() -> None:
    """On a first run, compile the small-grid kernels in a second process while this one
    compiles the others (the signal's, the single run's): numba compiles on one core, and the
    grid kernels are 3 of a first backtest's 7 seconds of compilation. ``run_grid`` waits for
    it, then loads what it cached. Warm, this only reads numba's cache index."""
    if _HELPER or not _cold():
        return
    _HELPER.append(
        subprocess.Popen(
            [sys.executable, "-c", "from qcompile.research.backtest.grid import warm; warm()"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    if _cold([grid_finish]):  # the helper's last kernel: this process has the time, and caches it
        out = np.empty((1, len(GRID_COLUMNS)))
        grid_finish(np.ones((1, 2)), np.zeros((1, 2)), np.zeros((1, 4)), 252.0, out)


def _await_helper() -> None:
    while _HELPER:
        helper = _HELPER.pop()
        try:
            helper.wait(HELPER_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # stuck: compile here instead
            helper.kill()
            helper.wait()


def warm() -> None:
    """Compile and cache the small-grid kernels with the argument types a backtest's grid passes
    them (a tiny grid of two symbols and two combinations)."""
    rows = 6
    bars = pl.DataFrame(
        {
            "symbol": ["A"] * rows + ["B"] * rows,
            "timestamp": list(range(0, rows * 86_400_000, 86_400_000)) * 2,
            "open": [10.0 + i for i in range(rows)] * 2,
            "close": [10.5 + i for i in range(rows)] * 2,
        }
    )

    def alternating(frame: pl.DataFrame, **_: Any) -> pl.DataFrame:
        flip = pl.int_range(pl.len()).mod(2).cast(pl.Int8)
        return frame.with_columns(signal=flip)

    settings = Settings(1000.0, Costs(1.0, 0.01, 1.0))
    run_grid(bars, (0, rows * 86_400_000), [{}, {}], alternating, None, settings, 252.0)


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
    _await_helper()
    start, end = window
    history_starts, first_time, last_time = _symbol_runs(bars)
    history = bars
    if last_time > end:
        history = bars.filter(pl.col("timestamp") <= end)
        history_starts, first_time, _ = _symbol_runs(history)
    everything_kept = first_time >= start
    keep = None if everything_kept else (history["timestamp"] >= start).to_numpy()
    traded = history if keep is None else history.filter(pl.Series(keep))
    if traded.height == 0:
        raise ValueError("no bars in the window")
    if keep is None:
        kept_before = None  # every row is traded
        starts = history_starts
    else:
        kept_before = np.concatenate(([0], np.cumsum(keep)))
        starts = np.unique(kept_before[history_starts])  # symbols with no traded row vanish
    sleeves = len(starts) - 1
    combinations = len(combos)
    portfolios = _Portfolios(traded, starts, combinations, settings)
    everything = _Block(slice(0, history.height), slice(0, traded.height), slice(0, sleeves))
    if grid is not None:  # per symbol by contract: blocks of symbols, all combinations at once
        blocks = _blocks(
            history_starts,
            kept_before,
            min(BLOCK_ROWS, max(1, BLOCK_CELLS // max(1, combinations))),
        )
        # Too few combinations to fill the threads: the engine works on a thread of its own,
        # beside the signal computing the next block (one job at a time, in order, so the sums
        # are the same as on one thread); the last block, with nothing left to overlap, runs here
        # on every thread.
        overlap = len(blocks) > 1 and combinations < portfolios.threads
        with ThreadPoolExecutor(1) if overlap else contextlib.nullcontext() as worker:
            jobs: list[Future] = []
            if worker:
                jobs.append(worker.submit(portfolios.prepare))
            else:
                portfolios.prepare()
            rows = slice(0, combinations)
            try:
                for number, block in enumerate(blocks, 1):
                    targets = grid(history[block.history], combos)
                    if keep is not None:
                        targets = targets[:, keep[block.history]]
                    if worker and number < len(blocks):
                        jobs.append(worker.submit(portfolios.add, targets, block, rows, True))
                        continue
                    for job in jobs:  # the engine catches up first
                        job.result()
                    portfolios.add(targets, block, rows)
            except BaseException:
                if worker:
                    worker.shutdown(cancel_futures=True)
                raise
    else:  # any signal: chunks of combinations over the whole universe
        portfolios.prepare()
        chunk = max(1, BLOCK_CELLS // max(1, history.height))
        for first in range(0, combinations, chunk):
            part = slice(first, min(first + chunk, combinations))
            targets = targets_by_call(function, history, combos[part])
            portfolios.add(targets if keep is None else targets[:, keep], everything, part)
    out = np.empty((combinations, len(GRID_COLUMNS)))
    grid_finish(portfolios.portfolio, portfolios.exposure, portfolios.stats, periods_per_year, out)
    frame = pl.DataFrame(out, schema=list(GRID_COLUMNS), orient="row").with_columns(
        pl.col("trade_count").cast(pl.Int64), pl.all().exclude("trade_count").fill_nan(None)
    )
    return GridResult(frame, portfolios.clock, portfolios.portfolio)
