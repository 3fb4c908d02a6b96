"""The source document's minimum sample (§3.2) and the survivorship check, at their boundaries."""

from __future__ import annotations

import polars as pl
import pytest

from qcompile.research.backtest.robustness import survivorship
from qcompile.research.backtest.runner import minimum_sample

DAY = 86_400_000


@pytest.mark.parametrize(
    ("kind", "trades", "years"), [("intraday", 500, 1), ("daily", 200, 3), ("weekly", 100, 5)]
)
def test_each_type_needs_both_its_trades_and_its_years(kind: str, trades: int, years: int) -> None:
    assert minimum_sample(kind, trades, years)["met"] is True
    assert minimum_sample(kind, trades - 1, years + 10)["met"] is False  # too few trades
    assert minimum_sample(kind, trades * 10, years - 0.01)["met"] is False  # too short
    found = minimum_sample(kind, trades, years + 0.004)
    assert (found["required_trades"], found["required_years"]) == (trades, years)
    assert found["years"] == round(years + 0.004, 2)


def _bars(last_day: dict[str, int]) -> pl.DataFrame:
    rows = [(s, d * DAY) for s, last in last_day.items() for d in range(last + 1)]
    return pl.DataFrame(rows, schema=["symbol", "timestamp"], orient="row")


def test_a_universe_of_survivors_by_declaration_is_warned_about() -> None:
    found = survivorship(_bars({"A": 100, "B": 100}), 100 * DAY, "survivors_only", "2020-01-01")
    assert "only survivors" in found["warning"] and found["stopped_trading"] == []


def test_an_as_of_universe_where_every_member_survives_is_suspect() -> None:
    found = survivorship(_bars({"A": 100, "B": 100}), 100 * DAY, "as_of", "2020-01-01")
    assert "may contain only survivors" in found["warning"]


def test_an_as_of_universe_with_a_member_that_stopped_is_not_warned_about() -> None:
    found = survivorship(_bars({"A": 100, "B": 40}), 100 * DAY, "as_of", "2020-01-01")
    assert found["warning"] is None
    assert found["stopped_trading"] == [{"symbol": "B", "last_timestamp": 40 * DAY}]
    # a member whose last bar is within the tolerance of the window's end has not stopped
    assert survivorship(_bars({"A": 100, "B": 95}), 100 * DAY, "as_of", "x")["warning"]
