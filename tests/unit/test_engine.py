"""The backtest engine against hand-computed trade lists, costs and equity curves."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompile.research.backtest.engine import Costs, Settings, run

DAY = 86_400_000


def bars(
    symbol: str, opens: list[float], closes: list[float], signal: list[int], start: int = 0
) -> pl.DataFrame:
    n = len(opens)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timestamp": [start + i * DAY for i in range(n)],
            "open": opens,
            "high": [max(o, c) for o, c in zip(opens, closes, strict=True)],
            "low": [min(o, c) for o, c in zip(opens, closes, strict=True)],
            "close": closes,
            "volume": [1000.0] * n,
            "signal": signal,
        },
        schema_overrides={"signal": pl.Int8},
    )


def test_next_open_long_trade_by_hand() -> None:
    frame = bars("A", [10, 11, 12, 13, 14], [10.5, 11.5, 12.5, 13.5, 14.5], [0, 1, 1, 0, 0])
    result = run(frame, Settings(initial_capital=1200, fractional_shares=True))
    (trade,) = result.trades
    # signal at bar 1's close -> buy at bar 2's open (12); flat at bar 3's close -> sell at bar 4's open (14)
    assert (trade.entry_time, trade.entry_price, trade.exit_time, trade.exit_price) == (
        2 * DAY,
        12,
        4 * DAY,
        14,
    )
    assert trade.shares == pytest.approx(100.0)
    assert trade.pnl == pytest.approx(200.0) and trade.costs == 0
    # marked at each close: 1200, 1200, 100 x 12.5, 100 x 13.5, then cash after selling at 14
    assert result.equity["equity"].to_list() == pytest.approx([1200, 1200, 1250, 1350, 1400])
    assert result.per_symbol["A"]["position"].to_list() == [0, 0, 1, 1, 0]


def test_same_close_execution_trades_at_the_signal_bar() -> None:
    frame = bars("A", [10, 11, 12, 13, 14], [10, 11, 12, 13, 14], [0, 1, 1, 0, 0])
    result = run(
        frame, Settings(initial_capital=1100, execution="same_close", fractional_shares=True)
    )
    (trade,) = result.trades
    assert (trade.entry_price, trade.exit_price) == (11, 13)
    assert trade.pnl == pytest.approx(200.0)


def test_costs_are_charged_on_both_legs() -> None:
    frame = bars("A", [100, 100, 100, 110], [100, 100, 100, 110], [1, 1, 0, 0])
    costs = Costs(slippage_bps=10, commission_per_share=0.01, min_commission=1.0)
    result = run(frame, Settings(initial_capital=10_000, costs=costs))
    (trade,) = result.trades
    # buy at bar 1's open 100 with 10 bps slippage -> 100.1; whole shares that fit with commission
    assert trade.entry_price == pytest.approx(100.1)
    assert (
        trade.shares == 99
    )  # 99 x 100.1 + max(1, 0.99) = 9910.9 <= 10000; 100 shares would not fit
    assert trade.exit_price == pytest.approx(
        109.89
    )  # flat at bar 2's close: sell at bar 3's open 110 less 10 bps
    commissions = 1.0 + 1.0  # the minimum applies on both legs (99 x 0.01 = 0.99)
    assert trade.pnl == pytest.approx(99 * (109.89 - 100.1) - commissions)
    assert trade.costs == pytest.approx(commissions + 99 * 0.1 + 99 * 0.11)
    assert result.equity["equity"][-1] == pytest.approx(10_000 + trade.pnl)


def test_short_trade_profits_when_price_falls() -> None:
    frame = bars("A", [50, 50, 40, 40], [50, 50, 40, 40], [-1, -1, 0, 0])
    result = run(frame, Settings(initial_capital=1000, fractional_shares=True))
    (trade,) = result.trades
    assert trade.side == -1 and trade.shares == pytest.approx(20)
    assert trade.pnl == pytest.approx(20 * (50 - 40))
    assert result.equity["equity"].to_list() == pytest.approx([1000, 1000, 1200, 1200])


def test_reversal_closes_and_reopens_at_the_same_fill() -> None:
    frame = bars("A", [10, 10, 12, 9], [10, 11, 12, 9], [1, -1, -1, 0])
    result = run(frame, Settings(initial_capital=100, fractional_shares=True))
    long, short = result.trades
    assert (long.side, long.entry_price, long.exit_price) == (1, 10, 12)
    assert (short.side, short.entry_price, short.exit_time) == (-1, 12, 3 * DAY)
    assert short.exit_price == 9  # open at the last bar's close: closed at that close
    assert short.shares == pytest.approx(120 / 12)


def test_open_position_at_the_end_closes_at_the_last_close() -> None:
    frame = bars("A", [10, 10, 10], [10, 10, 15], [1, 1, 1])
    result = run(frame, Settings(initial_capital=100, fractional_shares=True))
    (trade,) = result.trades
    assert (trade.exit_time, trade.exit_price, trade.pnl) == (2 * DAY, 15, pytest.approx(50))


def test_delisted_symbol_closes_at_its_last_price_and_its_sleeve_stays_cash() -> None:
    long_lived = bars("A", [10] * 5, [10] * 5, [0] * 5)
    delisted = bars("B", [20, 20, 22], [20, 21, 23], [1, 1, 1])  # stops trading after bar 2
    result = run(
        pl.concat([long_lived, delisted]), Settings(initial_capital=200, fractional_shares=True)
    )
    (trade,) = result.trades
    assert (trade.symbol, trade.exit_time, trade.exit_price) == ("B", 2 * DAY, 23)
    # sleeves of 100 each; B bought 5 shares at 20, closed at 23 -> its sleeve ends at 115 and stays there
    assert result.equity["equity"].to_list() == pytest.approx([200, 205, 215, 215, 215])


def test_fixed_fraction_keeps_the_rest_in_cash() -> None:
    frame = bars("A", [10, 10, 20], [10, 10, 20], [1, 1, 1])
    result = run(
        frame,
        Settings(
            initial_capital=1000, sizing="fixed_fraction", fraction=0.25, fractional_shares=True
        ),
    )
    assert result.trades[0].shares == pytest.approx(25)
    assert result.equity["equity"][-1] == pytest.approx(750 + 25 * 20)


prices = st.lists(st.floats(min_value=1, max_value=1000, allow_nan=False), min_size=3, max_size=30)


@settings(max_examples=60, deadline=None)
@given(prices, st.data())
def test_scaling_all_prices_leaves_returns_unchanged(series: list[float], data) -> None:
    signal = data.draw(
        st.lists(st.sampled_from([-1, 0, 1]), min_size=len(series), max_size=len(series))
    )
    factor = data.draw(st.sampled_from([0.01, 3.0, 250.0]))
    costs = Costs(slippage_bps=data.draw(st.sampled_from([0.0, 5.0])))  # proportional costs only
    base = run(
        bars("A", series, series, signal),
        Settings(initial_capital=1e6, costs=costs, fractional_shares=True),
    )
    scaled_prices = [p * factor for p in series]
    scaled = run(
        bars("A", scaled_prices, scaled_prices, signal),
        Settings(initial_capital=1e6, costs=costs, fractional_shares=True),
    )
    # relative to each value, and absolute to a millionth of a dollar: an account wiped out by a
    # short whose price doubled is 0.0 one way and -2.3e-10 the other (found by hypothesis)
    assert scaled.equity["equity"].to_list() == pytest.approx(
        base.equity["equity"].to_list(), rel=1e-9, abs=1e-6
    )


@settings(max_examples=40, deadline=None)
@given(prices)
def test_zero_costs_and_a_flat_signal_give_a_flat_equity_curve(series: list[float]) -> None:
    result = run(bars("A", series, series, [0] * len(series)), Settings(initial_capital=5000))
    assert set(result.equity["equity"].to_list()) == {5000}
    assert result.trades == []


@settings(max_examples=40, deadline=None)
@given(prices, prices, st.data())
def test_results_do_not_depend_on_symbol_order(
    first: list[float], second: list[float], data
) -> None:
    sig_a = data.draw(
        st.lists(st.sampled_from([-1, 0, 1]), min_size=len(first), max_size=len(first))
    )
    sig_b = data.draw(
        st.lists(st.sampled_from([-1, 0, 1]), min_size=len(second), max_size=len(second))
    )
    a, b = bars("A", first, first, sig_a), bars("B", second, second, sig_b)
    forward = run(pl.concat([a, b]), Settings(initial_capital=1e5, costs=Costs(5, 0.01, 1)))
    backward = run(pl.concat([b, a]), Settings(initial_capital=1e5, costs=Costs(5, 0.01, 1)))
    assert forward.equity.equals(backward.equity)
    assert forward.trades == backward.trades
