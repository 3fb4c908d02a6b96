"""The plateau-versus-peak reading on hand-made sweep tables."""

from __future__ import annotations

import pytest

from qcompile.research.backtest.svgheatmap import heatmap
from qcompile.research.sweep.summary import plateau


def _rows(sharpes: dict[tuple[int, int], float]) -> list[dict]:
    return [
        {"job": number, "fast": str(f), "slow": str(s), "sharpe": value, "error": None}
        for number, ((f, s), value) in enumerate(sorted(sharpes.items()))
    ]


def test_neighbours_that_keep_the_sharpe_make_a_plateau() -> None:
    grid = {(f, s): 1.0 for f in (5, 10, 20) for s in (50, 100, 200)}
    grid[(10, 100)] = 1.1
    rows = _rows(grid)
    chosen = next(r["job"] for r in rows if (r["fast"], r["slow"]) == ("10", "100"))
    reading = plateau(rows, ["fast", "slow"], chosen)
    assert reading is not None
    assert reading["neighbours"] == 4  # one step along each axis, both ways
    assert reading["share"] == pytest.approx(1.0 / 1.1)
    assert reading["reading"] == "plateau"


def test_an_isolated_spike_is_a_peak_and_numbers_order_numerically() -> None:
    grid = {(f, s): 0.1 for f in (5, 10, 20) for s in (50, 100, 200)}
    grid[(5, 50)] = 2.0  # a corner: only two neighbours, "10" after "5" despite the text order
    rows = _rows(grid)
    chosen = next(r["job"] for r in rows if (r["fast"], r["slow"]) == ("5", "50"))
    reading = plateau(rows, ["fast", "slow"], chosen)
    assert reading == {
        "job": chosen,
        "neighbours": 2,
        "share": pytest.approx(0.05),
        "reading": "peak",
    }


def test_no_reading_without_a_positive_sharpe() -> None:
    rows = _rows({(5, 50): -0.5, (10, 50): 0.2})
    assert plateau(rows, ["fast", "slow"], rows[0]["job"]) is None


def test_the_heatmap_writes_each_cells_value_and_fades_those_under_the_minimum() -> None:
    rows = [
        {"params": {"fast": "5", "slow": "50"}, "sharpe": 0.4, "trades": 250},
        {"params": {"fast": "10", "slow": "50"}, "sharpe": 1.2, "trades": 210},
        {"params": {"fast": "5", "slow": "100"}, "sharpe": 2.5, "trades": 12},  # lucky, few
        {"params": {"fast": "10", "slow": "100"}, "sharpe": -0.3, "trades": 300},
    ]
    svg = heatmap(rows, "fast", "slow", "Sharpe", minimum_trades=200)
    for value in (">0.40<", ">1.20<", ">-0.30<", ">2.50*<"):
        assert value in svg
    assert svg.count('fill-opacity="0.35"') == 1
    assert "fast=5, slow=100: Sharpe 2.50 (fewer than 200 trades: not ranked)" in svg
    # the colour scale spans the ranked cells: the lucky 2.50 does not squeeze it
    assert (
        ">1.20</text>" in svg.split("</rect>")[-1] and ">-0.30</text>" in svg.split("</rect>")[-1]
    )
    assert heatmap(rows, "fast", "slow", "Sharpe", minimum_trades=200) == svg  # deterministic
