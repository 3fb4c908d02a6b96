"""The plateau-versus-peak reading on hand-made sweep tables."""

from __future__ import annotations

import pytest

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
