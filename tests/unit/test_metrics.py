"""Metrics on fixed series, computed by hand from the formulas the report states."""

from __future__ import annotations

import math

import pytest

from qcompile.dailystats import bar_returns, max_drawdown
from qcompile.research.backtest.metrics import FORMULAS, compute, sharpe, sortino


def test_returns_total_and_annualised() -> None:
    equity = [100.0, 110.0, 99.0, 108.9]
    assert bar_returns(equity) == pytest.approx([0.1, -0.1, 0.1])
    metrics = compute(equity, [], [0.0] * 4, periods_per_year=3)
    assert metrics.total_return == pytest.approx(0.089)
    # 3 returns at 3 per year = one year: annualised equals total
    assert metrics.annualised_return == pytest.approx(0.089)
    assert compute(equity, [], [], periods_per_year=6).annualised_return == pytest.approx(
        1.089**2 - 1
    )


def test_sharpe_and_sortino_by_hand() -> None:
    returns = [0.01, -0.02, 0.03, 0.00]
    mean = 0.005
    stdev = math.sqrt(((0.005) ** 2 + (0.025) ** 2 + (0.025) ** 2 + (0.005) ** 2) / 3)
    assert sharpe(returns, 252) == pytest.approx(mean / stdev * math.sqrt(252))
    downside = math.sqrt((0.02**2) / 4)  # over all four periods, target 0
    assert sortino(returns, 252) == pytest.approx(mean / downside * math.sqrt(252))
    assert sharpe([0.01, 0.01], 252) is None  # zero variance: undefined, not infinite
    assert sortino([0.01, 0.02], 252) is None


def test_max_drawdown_with_peak_and_trough() -> None:
    equity = [100, 120, 90, 130, 104, 125]
    drawdown = max_drawdown(equity)
    assert drawdown.depth == pytest.approx(90 / 120 - 1)  # -25 % beats 104/130 - 1 = -20 %
    assert (drawdown.peak_index, drawdown.trough_index) == (1, 2)
    assert max_drawdown([1, 2, 3]).depth == 0


def test_trade_statistics() -> None:
    metrics = compute(
        [100.0, 100.0], [30.0, -10.0, 20.0, -20.0, 0.0], [0.5, 1.0], periods_per_year=252
    )
    assert metrics.trade_count == 5
    assert metrics.win_rate == pytest.approx(2 / 5)  # a zero-PnL trade is not a win
    assert metrics.average_win == pytest.approx(25.0)
    assert metrics.average_loss == pytest.approx(-10.0)  # (-10 - 20 + 0) / 3
    assert metrics.profit_factor == pytest.approx(50 / 30)
    assert metrics.exposure == pytest.approx(0.75)


def test_every_metric_has_a_stated_formula() -> None:
    assert {
        "total_return",
        "annualised_return",
        "sharpe",
        "sortino",
        "max_drawdown",
        "win_rate",
        "average_win_loss",
        "profit_factor",
        "trade_count",
        "exposure",
    } == set(FORMULAS)


def test_annualised_return_of_a_short_huge_gain_is_infinite_not_an_error() -> None:
    metrics = compute([1.0, 1e6], [], [0.0, 0.0], 252.0)
    assert metrics.annualised_return == float("inf")
    assert metrics.total_return == 999_999.0


def test_bars_after_the_account_is_wiped_out_have_no_return() -> None:
    assert bar_returns([100.0, 0.0, 0.0, 5.0]) == [-1.0]  # no division by a zero equity
    metrics = compute([100.0, 50.0, 0.0, 0.0], [], [0.0] * 4, 252.0)
    assert metrics.total_return == -1.0
    assert metrics.max_drawdown == -1.0
