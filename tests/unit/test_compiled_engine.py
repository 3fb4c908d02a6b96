"""The compiled engine gives exactly the reference engine's results."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompile.research.backtest import engine, fast
from qcompile.research.backtest.engine import Costs, Settings
from tests.unit.test_engine import bars

prices = st.floats(min_value=0.5, max_value=500, allow_nan=False)


@st.composite
def universes(draw) -> pl.DataFrame:
    frames = []
    for symbol in draw(
        st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True)
    ):
        length = draw(st.integers(min_value=2, max_value=25))
        opens = draw(st.lists(prices, min_size=length, max_size=length))
        closes = draw(st.lists(prices, min_size=length, max_size=length))
        signal = draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=length, max_size=length))
        frames.append(
            bars(symbol, opens, closes, signal, start=draw(st.integers(0, 5)) * 86_400_000)
        )
    return pl.concat(frames).sort("symbol", "timestamp")


configurations = st.builds(
    Settings,
    initial_capital=st.sampled_from([50.0, 1_000.0, 1e6]),  # small budgets exercise failed entries
    costs=st.builds(
        Costs,
        st.sampled_from([0.0, 7.5]),
        st.sampled_from([0.0, 0.01]),
        st.sampled_from([0.0, 1.0]),
    ),
    execution=st.sampled_from(["next_open", "same_close"]),
    sizing=st.sampled_from(["equal_weight", "fixed_fraction"]),
    fraction=st.just(0.3),
    fractional_shares=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(frame=universes(), config=configurations)
def test_compiled_engine_equals_reference(frame: pl.DataFrame, config: Settings) -> None:
    expected = engine.run(frame, config)
    actual = fast.run(frame, config)
    assert len(actual.trades) == len(expected.trades)
    for got, want in zip(actual.trades, expected.trades, strict=True):
        assert (got.symbol, got.side, got.entry_time, got.exit_time) == (
            want.symbol,
            want.side,
            want.entry_time,
            want.exit_time,
        )
        assert (got.entry_price, got.exit_price, got.shares) == pytest.approx(
            (want.entry_price, want.exit_price, want.shares)
        )
        assert (got.pnl, got.costs, got.entry_equity) == pytest.approx(
            (want.pnl, want.costs, want.entry_equity)
        )
    assert actual.equity["timestamp"].to_list() == expected.equity["timestamp"].to_list()
    assert actual.equity["equity"].to_list() == pytest.approx(expected.equity["equity"].to_list())
    assert actual.equity["gross_exposure"].to_list() == pytest.approx(
        expected.equity["gross_exposure"].to_list()
    )
    for symbol, sleeve in expected.per_symbol.items():
        assert actual.per_symbol[symbol]["position"].to_list() == sleeve["position"].to_list()


@pytest.mark.parametrize("execution", ["next_open", "same_close"])
def test_a_reversal_on_every_bar_fits_the_trade_buffer(execution: str) -> None:
    """One closed trade per bar (more than half the bars): the compiled engine's buffer holds it."""
    n = 400
    frame = bars("A", [10.0] * n, [10.0] * n, [1 if i % 2 else -1 for i in range(n)])
    config = Settings(initial_capital=1e4, execution=execution, fractional_shares=True)
    expected, actual = engine.run(frame, config), fast.run(frame, config)
    assert len(expected.trades) >= n - 2
    assert [t.exit_time for t in actual.trades] == [t.exit_time for t in expected.trades]
