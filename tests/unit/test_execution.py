"""The shared execution rules (qcompile.execution): sleeves, sizing, the exit-then-entry legs
of a change of target, fills and commissions; the backtest and the runner both call them."""

from __future__ import annotations

import math

import pytest

from qcompile.execution import Costs, Rebalance, affordable, rebalance, sleeve_capital

COSTS = Costs(slippage_bps=10, commission_per_share=0.01, min_commission=1.0)


def test_sleeves_split_the_capital_or_take_a_fraction_of_it() -> None:
    assert sleeve_capital(100_000, "equal_weight", None, 4) == 25_000
    assert sleeve_capital(100_000, "fixed_fraction", 0.1, 4) == 10_000
    with pytest.raises(ValueError, match="needs a fraction"):
        sleeve_capital(100_000, "fixed_fraction", None, 4)


def test_fills_pay_slippage_against_their_side_and_a_minimum_commission() -> None:
    assert COSTS.fill(100.0, buying=True) == pytest.approx(100.1)
    assert COSTS.fill(100.0, buying=False) == pytest.approx(99.9)
    assert COSTS.commission(0) == 0.0
    assert COSTS.commission(50) == 1.0  # 0.50 by the share: the minimum applies
    assert COSTS.commission(-300) == pytest.approx(3.0)
    assert Costs.from_config({"slippage_bps": 5, "commission_per_share": 0.005}) == Costs(
        5.0, 0.005, 0.0
    )


def test_the_most_whole_shares_whose_cost_and_commission_fit() -> None:
    count = affordable(10_000.0, 100.1, COSTS, fractional=False)
    assert count == 99  # 100 would cost 10,010 + 1
    assert count * 100.1 + COSTS.commission(count) <= 10_000
    fractional = affordable(10_000.0, 100.1, COSTS, fractional=True)
    assert fractional == pytest.approx((10_000 - 1.0) / 100.1)  # the minimum commission applies
    assert affordable(0.5, 100.0, COSTS, fractional=False) == 0


def test_no_change_of_target_is_no_order() -> None:
    assert rebalance(10_000.0, 1, 50, 1, 100.0, COSTS, False) == Rebalance()
    assert rebalance(10_000.0, 0, 0, 0, 100.0, COSTS, False).orders() == []


def test_an_entry_invests_the_whole_sleeve() -> None:
    legs = rebalance(10_000.0, 0, 0, -1, 100.0, COSTS, False)
    assert legs.exit == 0 and legs.entry == -affordable(10_000.0, 99.9, COSTS, False)
    assert legs.orders() == [("entry", legs.entry)]


def test_a_flip_exits_whole_then_enters_with_what_the_exit_left() -> None:
    # long 60 bought from a 10,000 sleeve: 3,994 left in cash; exit at 110 x (1 - 0.001)
    cash = 10_000 - 60 * 100.1 - COSTS.commission(60)
    legs = rebalance(cash, 1, 60, -1, 110.0, COSTS, False)
    after_exit = cash + 60 * 110 * 0.999 - COSTS.commission(60)
    assert legs.exit == -60
    assert legs.entry == -math.floor(after_exit / (110 * 0.999 + 0.01))
    assert [leg for leg, _ in legs.orders()] == ["exit", "entry"]


def test_an_unaffordable_entry_leaves_only_the_exit() -> None:
    legs = rebalance(-5_000.0, 1, 1, -1, 1_000.0, COSTS, False)  # a sleeve that lost everything
    assert legs.exit == -1 and legs.entry == 0
    assert legs.orders() == [("exit", -1)]
