"""The batched grid gives each combination the metrics of a backtest run alone."""

from __future__ import annotations

import math
import random

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompile.research.backtest import fast
from qcompile.research.backtest.grid import run_grid, targets_by_call
from qcompile.research.backtest.metrics import compute
from qcompile.signals.trend import _ma_grid, _vwma_grid, ma_crossover, vwma_crossover
from tests.unit.test_compiled_engine import configurations, universes

DAY = 86_400_000
PPY = 252.0


def _alone(frame: pl.DataFrame, config, window: tuple[int, int]) -> dict:
    traded = frame.filter(pl.col("timestamp").is_between(*window))
    result = fast.run(traded, config)
    return compute(
        result.equity["equity"].to_list(),
        [t.pnl for t in result.trades],
        result.equity["gross_exposure"].to_list(),
        PPY,
    ).as_dict()


def _pick(bars: pl.DataFrame, *, column: str) -> pl.DataFrame:
    """A test signal whose parameter chooses which prepared column of targets to use."""
    return bars.with_columns(signal=pl.col(column))


@settings(max_examples=200, deadline=None)
@given(frame=universes(), config=configurations, data=st.data())
def test_each_combination_matches_its_own_backtest(frame, config, data) -> None:
    rows = frame.height
    for k in range(3):
        column = data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=rows, max_size=rows))
        frame = frame.with_columns(pl.Series(f"s{k}", column, dtype=pl.Int8))
    first, last = int(frame["timestamp"].min()), int(frame["timestamp"].max())
    start = data.draw(st.integers(first, last))
    window = (start, last)
    combos = [{"column": "signal"}, {"column": "s0"}, {"column": "s1"}, {"column": "s2"}]
    table = run_grid(frame, window, combos, _pick, None, config, PPY).metrics
    assert table.height == len(combos)
    for combo, row in zip(combos, table.iter_rows(named=True), strict=True):
        expected = _alone(_pick(frame, **combo), config, window)
        assert row["trade_count"] == expected["trade_count"]
        for name in (
            "total_return",
            "annualised_return",
            "sharpe",
            "sortino",
            "max_drawdown",
            "win_rate",
            "profit_factor",
            "exposure",
        ):
            if expected[name] is None:  # undefined stays undefined
                assert row[name] is None, name
            else:
                assert row[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def _walk(symbols: int, bars: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    frames = []
    for number in range(symbols):
        price, closes, volumes = 100.0, [], []
        for _ in range(bars):
            price *= 1 + rng.gauss(0, 0.02)
            closes.append(round(price, 2))  # ties between averages happen on rounded prices
            volumes.append(float(rng.randint(1, 9) * 1000))
        frames.append(
            pl.DataFrame(
                {
                    "symbol": f"S{number}",
                    "timestamp": [i * DAY for i in range(bars)],
                    "open": closes,
                    "high": closes,
                    "low": closes,
                    "close": closes,
                    "volume": volumes,
                }
            )
        )
    return pl.concat(frames)


def _polars_averages(bars: pl.DataFrame, window: int, weighted: bool) -> np.ndarray:
    """An independent computation of the averages, with polars' own rolling windows."""
    if weighted:
        numerator = (pl.col("close") * pl.col("volume")).rolling_sum(window).over("symbol")
        average = numerator / pl.col("volume").rolling_sum(window).over("symbol")
    else:
        average = pl.col("close").rolling_mean(window).over("symbol")
    return bars.select(average.cast(pl.Float64)).to_series().to_numpy()


@pytest.mark.parametrize(
    ("function", "grid", "weighted"),
    [(ma_crossover, _ma_grid, False), (vwma_crossover, _vwma_grid, True)],
)
def test_crossover_grids_equal_the_signal_and_an_independent_computation(
    function, grid, weighted
) -> None:
    bars = _walk(3, 400, seed=5)
    combos = [
        {"fast": f, "slow": s, "allow_short": short}
        for f in (1, 3, 10)
        for s in (3, 20, 50)
        for short in (False, True)
    ]
    batched = grid(bars, combos)
    assert batched.dtype == np.int8 and batched.shape == (len(combos), bars.height)
    np.testing.assert_array_equal(batched, targets_by_call(function, bars, combos))
    assert (batched == -1).any() and (batched == 1).any()  # the grid is not trivially flat
    for row, combo in enumerate(combos):
        fast = _polars_averages(bars, combo["fast"], weighted)
        slow = _polars_averages(bars, combo["slow"], weighted)
        undefined = np.isnan(fast) | np.isnan(slow)
        assert (batched[row][undefined] == 0).all()
        clear = ~undefined & (np.abs(fast - slow) > 1e-9 * np.abs(slow))  # ties may go either way
        expected = np.where(fast > slow, 1, -1 if combo["allow_short"] else 0)
        np.testing.assert_array_equal(batched[row][clear], expected[clear])


def test_grid_of_the_ma_signal_matches_single_runs_on_shared_and_ragged_calendars() -> None:
    bars = _walk(3, 300, seed=9)
    ragged = bars.filter((pl.col("symbol") != "S1") | (pl.col("timestamp") >= 40 * DAY))
    from qcompile.research.backtest.engine import Costs, Settings

    config = Settings(initial_capital=1e5, costs=Costs(5, 0.005, 1.0))
    combos = [{"fast": f, "slow": s} for f in (5, 10) for s in (20, 60)]
    for frame in (bars, ragged):
        window = (50 * DAY, 299 * DAY)
        table = run_grid(frame, window, combos, ma_crossover, _ma_grid, config, PPY).metrics
        for combo, row in zip(combos, table.iter_rows(named=True), strict=True):
            history = ma_crossover(frame.filter(pl.col("timestamp") <= window[1]), **combo)
            expected = _alone(history, config, window)
            assert row["trade_count"] == expected["trade_count"] > 0
            assert row["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-9)
            assert row["total_return"] == pytest.approx(expected["total_return"], rel=1e-9)
            assert not math.isnan(row["exposure"])


def test_blocks_of_symbols_and_chunks_of_combinations_change_nothing(monkeypatch) -> None:
    from qcompile.research.backtest import grid as grid_module
    from qcompile.research.backtest.engine import Costs, Settings

    bars = _walk(5, 200, seed=3)
    # S0 ends before the window, S3 starts inside it: blocks with no traded rows and ragged ones
    bars = bars.filter(
        ((pl.col("symbol") != "S0") | (pl.col("timestamp") < 60 * DAY))
        & ((pl.col("symbol") != "S3") | (pl.col("timestamp") >= 120 * DAY))
    )
    config = Settings(initial_capital=1e5, costs=Costs(5, 0.005, 1.0))
    combos = [{"fast": f, "slow": s} for f in (2, 5, 10) for s in (20, 40)]
    window = (80 * DAY, 199 * DAY)
    whole = run_grid(bars, window, combos, ma_crossover, _ma_grid, config, PPY).metrics
    by_call = run_grid(bars, window, combos, ma_crossover, None, config, PPY).metrics
    # one symbol per block with the grid companion, 5 combinations per chunk without it
    monkeypatch.setattr(grid_module, "BLOCK_CELLS", 1_000)
    blocked = run_grid(bars, window, combos, ma_crossover, _ma_grid, config, PPY).metrics
    chunked = run_grid(bars, window, combos, ma_crossover, None, config, PPY).metrics
    assert whole["trade_count"].sum() > 0
    for other in (by_call, blocked, chunked):
        assert other.equals(whole)
