"""However the grid spreads its work (combinations in parallel, one combination's sleeves in
parallel, or the engine beside the signal on a thread of its own) and however it blocks the
symbols, the results are the same, bit for bit, on shared and ragged calendars; and the symbol
runs it reads off the timestamps are the symbols' own."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qcompile.research.backtest import grid as grid_module
from qcompile.research.backtest.engine import Costs, Settings
from qcompile.research.backtest.grid import _clock_map, _wanted, run_grid, sleeve_scratch
from qcompile.research.backtest.kernel import (
    grid_accumulate,
    grid_accumulate_sleeves,
    shared_calendar,
)
from qcompile.signals import frames as frames_module
from qcompile.signals.frames import compared_starts
from qcompile.signals.trend import _ma_grid, ma_crossover

DAY = 86_400_000
PPY = 252.0


def _universe(symbols: int, bars: int, seed: int, ragged: bool) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for number in range(symbols):
        first, last = (int(rng.integers(0, bars // 3)), bars - int(rng.integers(0, bars // 3)))
        if not ragged:
            first, last = 0, bars
        closes = 100 * np.cumprod(1 + rng.normal(0.0003, 0.02, last - first))
        opens = closes * (1 + rng.normal(0, 0.003, last - first))
        frames.append(
            pl.DataFrame(
                {
                    "symbol": f"S{number:03d}",
                    "timestamp": np.arange(first, last, dtype=np.int64) * DAY,
                    "open": opens,
                    "high": np.maximum(opens, closes),
                    "low": np.minimum(opens, closes),
                    "close": closes,
                    "volume": 1e5,
                }
            )
        )
    return pl.concat(frames).rechunk()


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("execution", ["next_open", "same_close"])
@pytest.mark.parametrize("batch_rows", [1, 700, 1_000_000])
def test_sleeves_in_parallel_equal_combinations_in_parallel(ragged, execution, batch_rows) -> None:
    bars = _universe(9, 400, seed=11, ragged=ragged)
    starts = compared_starts(bars["symbol"])
    times = bars["timestamp"].to_numpy()
    clock, latest, own, shared = _clock_map(times, starts)
    assert shared is not ragged and shared_calendar(times, starts) is shared
    combos = [{"fast": f, "slow": s, "allow_short": f == 5} for f, s in ((5, 40), (10, 30))]
    wanted = _wanted(_ma_grid(bars, combos), starts, execution)
    closes = bars["close"].to_numpy()
    prices = bars["open"].to_numpy() if execution == "next_open" else closes
    terms = (shared, 5_000.0, 0.0005, 0.005, 1.0, False)
    together = [np.full((len(combos), len(clock)), 55_000.0), None, np.zeros((len(combos), 4))]
    together[1] = np.zeros_like(together[0])
    grid_accumulate(prices, closes, wanted, starts, 0, latest, own, *terms, *together, 2)
    for row in range(len(combos)):
        portfolio, exposure, stats = (
            np.full(len(clock), 55_000.0),
            np.zeros(len(clock)),
            np.zeros(4),
        )
        grid_accumulate_sleeves(
            prices, closes, wanted[row], starts, 0, latest, own, *terms, portfolio, exposure,
            stats, *sleeve_scratch(starts, 2, batch_rows),
        )  # fmt: skip
        assert np.array_equal(portfolio, together[0][row])
        assert np.array_equal(exposure, together[1][row])
        assert np.array_equal(stats, together[2][row]) and stats[0] > 0


@pytest.mark.parametrize("ragged", [False, True])
def test_one_combination_blocked_or_not_equals_it_among_others(ragged, monkeypatch) -> None:
    bars = _universe(12, 300, seed=4, ragged=ragged)
    config = Settings(initial_capital=1e5, costs=Costs(5, 0.005, 1.0))
    combo = {"fast": 10, "slow": 50}
    window = (20 * DAY, 280 * DAY)
    several = run_grid(bars, window, [combo, combo], ma_crossover, _ma_grid, config, PPY)
    alone = run_grid(bars, window, [combo], ma_crossover, _ma_grid, config, PPY)
    monkeypatch.setattr(grid_module, "BLOCK_ROWS", 500)  # about two symbols per block
    monkeypatch.setattr(frames_module, "RUNS_FROM_TIMES", 1)
    monkeypatch.setattr(grid_module, "BATCH_ROWS", 1)  # one sleeve per batch
    blocked = run_grid(bars, window, [combo], ma_crossover, _ma_grid, config, PPY)
    assert several.metrics.row(0) == several.metrics.row(1)
    assert alone.metrics["trade_count"][0] > 0
    for result in (alone, blocked):
        assert result.metrics.equals(several.metrics.head(1))
        assert np.array_equal(result.equity[0], several.equity[0])
        assert np.array_equal(result.clock, several.clock)


@pytest.mark.parametrize(
    "frame",
    [
        pl.DataFrame({"symbol": ["A"] * 3 + ["B"] * 2, "timestamp": [1, 2, 3, 1, 2]}),
        # B starts after A ends: the time rises at the boundary
        pl.DataFrame({"symbol": ["A"] * 3 + ["B"] * 2 + ["C"], "timestamp": [1, 2, 3, 4, 5, 0]}),
        # a repeated timestamp within a symbol
        pl.DataFrame({"symbol": ["A"] * 3 + ["B"] * 3, "timestamp": [1, 2, 2, 1, 2, 3]}),
        pl.DataFrame({"symbol": ["A"], "timestamp": [7]}),
        pl.DataFrame({"symbol": ["S0", "S1", "S2"], "timestamp": [5, 5, 5]}),
        pl.DataFrame(
            {"symbol": ["A"] * 2 + ["B"] * 2, "timestamp": pl.Series([1, 2, 1, 2], dtype=pl.Int32)}
        ),
        pl.DataFrame(
            {"symbol": [], "timestamp": []}, schema={"symbol": pl.String, "timestamp": pl.Int64}
        ),
    ],
)
def test_symbol_runs_read_off_the_times_equal_the_symbols_runs(
    frame: pl.DataFrame, monkeypatch
) -> None:
    from qcompile.research.backtest.grid import _symbol_runs

    monkeypatch.setattr(frames_module, "RUNS_FROM_TIMES", 1)
    starts, first, last = _symbol_runs(frame)
    lengths = frame["symbol"].rle().struct.field("len").to_list()
    assert starts.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert (first, last) == (frame["timestamp"].min(), frame["timestamp"].max())
    assert np.array_equal(compared_starts(frame["symbol"]), starts)


def test_symbol_runs_of_a_universe_equal_the_symbols_runs(monkeypatch) -> None:
    from qcompile.research.backtest.grid import _symbol_runs

    monkeypatch.setattr(frames_module, "RUNS_FROM_TIMES", 1)
    for ragged in (False, True):
        bars = _universe(30, 200, seed=8, ragged=ragged)
        starts, first, last = _symbol_runs(bars)
        lengths = bars["symbol"].rle().struct.field("len").to_numpy()
        assert np.array_equal(starts, np.concatenate(([0], np.cumsum(lengths))))
        assert (first, last) == (bars["timestamp"].min(), bars["timestamp"].max())


def test_a_signal_failing_in_a_later_block_stops_the_grid(monkeypatch) -> None:
    bars = _universe(6, 300, seed=2, ragged=False)
    config = Settings(initial_capital=1e5, costs=Costs(5, 0.005, 1.0))
    monkeypatch.setattr(grid_module, "BLOCK_ROWS", 600)
    calls = []

    def failing(block: pl.DataFrame, combos):
        calls.append(block.height)
        if len(calls) == 2:
            raise RuntimeError("signal failed")
        return _ma_grid(block, combos)

    with pytest.raises(RuntimeError, match="signal failed"):
        run_grid(bars, (0, 2**62), [{"fast": 5, "slow": 20}], ma_crossover, failing, config, PPY)
    assert len(calls) == 2
