"""The bundled signals against plain-Python references written from their docstrings.

Each reference computes one symbol at a time with loops and three-valued logic (None where a
window is not full), independently of polars expressions and the numba kernels; the signals must
agree bar for bar on seeded random walks of several symbols, long and short, over parameter sets
that include windows longer than a symbol's history. These tests are the signal-coverage evidence
the deployment checklist reads (docs/lifecycle.md, `project.coverage_report`).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable
from functools import partial

import numpy as np
import polars as pl
import pytest

from qcompile.signals.registry import get_signal
from qcompile.signals.reversion import gap_fill, zscore_reversion
from qcompile.signals.trend import breakout, ma_crossover, vwma_crossover

Row = dict[str, float]


def _walk(symbols: dict[str, int], seed: int) -> pl.DataFrame:
    """Bars sorted by symbol then time: a random walk with gaps at the open and zero volumes."""
    rng = random.Random(seed)
    rows = []
    for symbol, length in symbols.items():
        close = 100.0
        for day in range(length):
            open_ = close * (1 + rng.gauss(0, 0.02))
            close = open_ * (1 + rng.gauss(0, 0.015))
            high = max(open_, close) * (1 + rng.random() * 0.01)
            low = min(open_, close) * (1 - rng.random() * 0.01)
            volume = 0.0 if rng.random() < 0.05 else rng.uniform(1e5, 1e6)
            rows.append((symbol, day * 86_400_000, open_, high, low, close, volume))
    return pl.DataFrame(
        rows,
        schema=["symbol", "timestamp", "open", "high", "low", "close", "volume"],
        orient="row",
    )


def _per_symbol(bars: pl.DataFrame, reference: Callable[[list[Row]], list[int]]) -> list[int]:
    out: list[int] = []
    for _, group in bars.group_by("symbol", maintain_order=True):
        out += reference(group.to_dicts())
    return out


def _window(values: list[float], end: int, size: int) -> list[float] | None:
    """values[end-size+1 .. end], or None before a full window exists."""
    return values[end - size + 1 : end + 1] if end + 1 >= size else None


def _hold(events: list[int | None]) -> list[int]:
    """Position from entry/exit events: the last event so far, flat before any."""
    position, out = 0, []
    for event in events:
        position = position if event is None else event
        out.append(position)
    return out


def _crossover(rows: list[Row], fast: int, slow: int, short: int, weighted: bool) -> list[int]:
    closes = [r["close"] for r in rows]
    volumes = [r["volume"] for r in rows]

    def average(end: int, size: int) -> float | None:
        window = _window(closes, end, size)
        if window is None:
            return None
        if not weighted:
            return sum(window) / size
        weights = volumes[end - size + 1 : end + 1]
        total = sum(weights)
        return sum(c * v for c, v in zip(window, weights, strict=True)) / total if total else None

    out = []
    for i in range(len(rows)):
        a, b = average(i, fast), average(i, slow)
        out.append(0 if a is None or b is None else (1 if a > b else short))
    return out


def _breakout(rows: list[Row], lookback: int, exit_lookback: int, allow_short: bool) -> list[int]:
    highs, lows = [r["high"] for r in rows], [r["low"] for r in rows]

    def prior(values: list[float], i: int, size: int, pick: Callable) -> float | None:
        return pick(values[i - size : i]) if i >= size else None  # the previous `size` bars

    def below(a: float, b: float | None) -> bool | None:
        return None if b is None else a < b

    def above(a: float, b: float | None) -> bool | None:
        return None if b is None else a > b

    events: list[int | None] = []
    for i, row in enumerate(rows):
        close = row["close"]
        enter_long = above(close, prior(highs, i, lookback, max))
        enter_short = below(close, prior(lows, i, lookback, min))
        enter_short = enter_short if allow_short or enter_short is None else False
        out_low = below(close, prior(lows, i, exit_lookback, min))
        out_high = above(close, prior(highs, i, exit_lookback, max))
        leave = True if (out_low or out_high) else (None if None in (out_low, out_high) else False)
        # leave & ~enter_long & ~enter_short in three-valued logic; `when` takes None as false
        leave_now = bool(leave) and enter_long is False and enter_short is False
        events.append(1 if enter_long else -1 if enter_short else 0 if leave_now else None)
    return _hold(events)


def _zscore(rows: list[Row], window: int, entry_z: float, exit_z: float, short: bool) -> list[int]:
    closes = [r["close"] for r in rows]
    events: list[int | None] = []
    for i, close in enumerate(closes):
        values = _window(closes, i, window)
        if values is None or window < 2:
            events.append(None)
            continue
        z = (close - statistics.fmean(values)) / statistics.stdev(values)
        if z < -entry_z:
            events.append(1)
        elif z > entry_z and short:
            events.append(-1)
        elif abs(z) < exit_z:
            events.append(0)
        else:
            events.append(None)
    return _hold(events)


def _gap_fill(rows: list[Row], min_gap_pct: float, max_hold: int, short: bool) -> list[int]:
    entries = [0]
    for previous, row in itertools.pairwise(rows):
        gap = (row["open"] / previous["close"] - 1) * 100
        if gap <= -min_gap_pct and row["close"] < previous["close"]:
            entries.append(1)
        elif gap >= min_gap_pct and row["close"] > previous["close"] and short:
            entries.append(-1)
        else:
            entries.append(0)
    out = []
    for i in range(len(rows)):
        recent = entries[max(0, i - max_hold + 1) : i + 1]
        out.append(1 if max(recent) > 0 else -1 if min(recent) < 0 else 0)
    return out


SYMBOLS = {"AAA": 240, "BBB": 160, "CCC": 9}  # CCC is shorter than most windows


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize(("fast", "slow"), [(3, 10), (10, 30), (5, 5), (20, 12)])
def test_crossovers_match_reference(seed: int, allow_short: bool, fast: int, slow: int) -> None:
    bars = _walk(SYMBOLS, seed)
    short = -1 if allow_short else 0
    for function, weighted in ((ma_crossover, False), (vwma_crossover, True)):
        got = function(bars, fast=fast, slow=slow, allow_short=allow_short)["signal"].to_list()
        want = _per_symbol(
            bars, partial(_crossover, fast=fast, slow=slow, short=short, weighted=weighted)
        )
        assert got == want, function.__name__


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", ["ma_crossover", "vwma_crossover"])
def test_an_arrays_companion_gives_the_signals_targets_without_a_frame(
    seed: int, name: str
) -> None:
    """As the runner calls it: the bars as one float matrix (a row per bar), each column made
    contiguous, the runs' starts from their lengths; the targets equal the signal's and the
    plain-Python reference's."""
    spec = get_signal(name, None, ["qcompile.signals"])
    assert spec.arrays is not None
    bars = _walk(SYMBOLS, seed)
    matrix = bars.select("timestamp", "open", "high", "low", "close", "volume").to_numpy()
    values = matrix.astype(np.float64).T.copy()
    columns = dict(
        zip(("timestamp", "open", "high", "low", "close", "volume"), values, strict=True)
    )
    columns["timestamp"] = values[0].astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(list(SYMBOLS.values()))))
    params = {"fast": 7, "slow": 19, "allow_short": True}
    got = np.asarray(spec.arrays(columns, starts, **params)).tolist()
    assert got == spec.function(bars, **params)["signal"].to_list()
    weighted = name == "vwma_crossover"
    assert got == _per_symbol(
        bars, partial(_crossover, fast=7, slow=19, short=-1, weighted=weighted)
    )


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize(("lookback", "exit_lookback"), [(20, 10), (5, 15), (12, 12)])
def test_breakout_matches_reference(
    seed: int, allow_short: bool, lookback: int, exit_lookback: int
) -> None:
    bars = _walk(SYMBOLS, seed)
    got = breakout(bars, lookback=lookback, exit_lookback=exit_lookback, allow_short=allow_short)
    want = _per_symbol(bars, lambda rows: _breakout(rows, lookback, exit_lookback, allow_short))
    assert got["signal"].to_list() == want
    assert set(want) >= {0, 1}  # the data exercises entries and exits


@pytest.mark.parametrize("seed", [6, 7])
@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize(("window", "entry_z", "exit_z"), [(20, 1.5, 0.5), (10, 1.0, 0.2)])
def test_zscore_reversion_matches_reference(
    seed: int, allow_short: bool, window: int, entry_z: float, exit_z: float
) -> None:
    bars = _walk(SYMBOLS, seed)
    got = zscore_reversion(
        bars, window=window, entry_z=entry_z, exit_z=exit_z, allow_short=allow_short
    )
    want = _per_symbol(bars, lambda rows: _zscore(rows, window, entry_z, exit_z, allow_short))
    assert got["signal"].to_list() == want
    assert (-1 in want) == allow_short


@pytest.mark.parametrize("seed", [8, 9])
@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize(("min_gap_pct", "max_hold"), [(1.0, 3), (2.5, 1), (0.5, 7)])
def test_gap_fill_matches_reference(
    seed: int, allow_short: bool, min_gap_pct: float, max_hold: int
) -> None:
    bars = _walk(SYMBOLS, seed)
    got = gap_fill(bars, min_gap_pct=min_gap_pct, max_hold_bars=max_hold, allow_short=allow_short)
    want = _per_symbol(bars, lambda rows: _gap_fill(rows, min_gap_pct, max_hold, allow_short))
    assert got["signal"].to_list() == want
    assert got.columns == [*bars.columns, "signal"]


def test_gap_fill_counts_only_event_bars() -> None:
    bars = _walk({"AAA": 200}, 10)
    every = gap_fill(bars, min_gap_pct=0.5, max_hold_bars=1)["signal"]
    entries = bars.filter(every == 1).head(2)
    assert entries.height == 2  # the walk gaps down and stays down at least twice
    events = entries.head(1).select("symbol", "timestamp")
    only = gap_fill(bars, min_gap_pct=0.5, max_hold_bars=1, events=events)
    assert only["signal"].sum() == 1
    assert (
        only.filter(pl.col("signal") == 1)["timestamp"].to_list() == events["timestamp"].to_list()
    )
    assert only.columns == [*bars.columns, "signal"]  # the join's marker column is dropped


def test_vwma_is_undefined_without_volume() -> None:
    bars = _walk({"AAA": 30}, 11).with_columns(volume=pl.lit(0.0))
    assert vwma_crossover(bars, fast=2, slow=5)["signal"].to_list() == [0] * 30
    assert not math.isnan(float(ma_crossover(bars, fast=2, slow=5)["signal"].sum()))


@pytest.mark.parametrize("name", ["ma_crossover", "vwma_crossover"])
def test_a_grid_companion_gives_each_combinations_targets(name: str) -> None:
    spec = get_signal(name, None, ["qcompile.signals"])
    assert spec.grid is not None
    bars = _walk(SYMBOLS, 8)
    combos = [
        {"fast": fast, "slow": slow, "allow_short": short}
        for fast, slow, short in [(3, 10, False), (10, 30, True), (20, 12, True)]
    ]
    grid = spec.grid(bars, combos)
    for row, combo in zip(grid, combos, strict=True):
        assert row.tolist() == spec.function(bars, **combo)["signal"].to_list()


def test_rolling_sums_on_one_thread_and_in_parallel_are_the_same_numbers() -> None:
    from qcompile.signals import trend

    rng = np.random.default_rng(11)
    values = rng.normal(100.0, 5.0, 5_000)
    starts = np.array([0, 7, 1_500, 1_501, 3_200, 5_000], dtype=np.int64)
    for window in (1, 3, 20, 2_000):
        serial = trend._rolling_sums_serial(values, starts, window, float(window))
        parallel = trend._rolling_sums_parallel(values, starts, window, float(window))
        assert np.array_equal(serial, parallel, equal_nan=True), window
        run = values[1_501:3_200]
        expected = np.convolve(run, np.ones(window), "valid") / window if window <= run.size else []
        assert np.allclose(serial[1_501 + window - 1 : 3_200], expected)
        assert np.isnan(serial[1_501 : 1_501 + min(window - 1, run.size)]).all()
