"""The benchmark: buy-and-hold equity, and the statistics against it checked against an
independent method (an ordinary least-squares fit and numpy's correlation matrix)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompile.research.backtest.benchmark import buy_and_hold, relative

DAY = 86_400_000


def frame(rows: list[tuple[str, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"symbol": pl.String, "timestamp": pl.Int64, "close": pl.Float64}, orient="row"
    )


def test_each_part_is_bought_at_its_first_close_and_held() -> None:
    bars = frame(
        [
            ("A", 0, 10.0),
            ("A", DAY, 11.0),
            ("A", 2 * DAY, 12.0),
            # B starts a bar late (its part waits in cash) and stops a bar early (keeps its close)
            ("B", DAY, 50.0),
        ]
    )
    equity = buy_and_hold(bars, ["A", "B"], [0, DAY, 2 * DAY], 1000.0)
    assert equity.tolist() == pytest.approx([1000.0, 550.0 + 500.0, 600.0 + 500.0])


def test_a_symbol_without_bars_stays_cash() -> None:
    equity = buy_and_hold(frame([("A", 0, 2.0), ("A", DAY, 4.0)]), ["A", "Z"], [0, DAY], 100.0)
    assert equity.tolist() == pytest.approx([100.0, 150.0])


def regression(r: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of r on b by least squares: beta and per-bar alpha."""
    design = np.column_stack([b, np.ones_like(b)])
    (slope, intercept), *_ = np.linalg.lstsq(design, r, rcond=None)
    return float(slope), float(intercept)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=5, max_value=400),
    st.floats(min_value=-2.0, max_value=2.0),
)
def test_relative_statistics_agree_with_a_least_squares_fit(
    seed: int, bars: int, tilt: float
) -> None:
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0004, 0.01, bars)
    r = tilt * b + rng.normal(0.0002, 0.008, bars)
    strategy = np.concatenate([[100.0], 100.0 * np.cumprod(1 + r)])
    benchmark = np.concatenate([[50.0], 50.0 * np.cumprod(1 + b)])
    found = relative(strategy.tolist(), benchmark.tolist(), 252.0)
    beta, alpha_per_bar = regression(r, b)
    active = r - b
    assert found["bars"] == bars
    assert found["beta"] == pytest.approx(beta, rel=1e-6, abs=1e-9)
    assert found["alpha"] == pytest.approx(alpha_per_bar * 252, rel=1e-6, abs=1e-9)
    assert found["correlation"] == pytest.approx(np.corrcoef(r, b)[0, 1], rel=1e-9)
    assert found["tracking_error"] == pytest.approx(active.std(ddof=1) * math.sqrt(252))
    assert found["information_ratio"] == pytest.approx(
        active.mean() / active.std(ddof=1) * math.sqrt(252)
    )


def test_holding_the_benchmark_itself_is_beta_one_and_no_alpha() -> None:
    curve = [100.0, 101.0, 99.0, 103.0, 104.0]
    found = relative(curve, [2 * v for v in curve], 252.0)
    assert found["beta"] == pytest.approx(1.0) and found["alpha"] == pytest.approx(0.0, abs=1e-12)
    assert found["correlation"] == pytest.approx(1.0)
    assert found["tracking_error"] == pytest.approx(0.0, abs=1e-12)
    assert found["information_ratio"] is None  # no active risk: the ratio is undefined


def test_bars_after_the_account_is_gone_are_left_out() -> None:
    found = relative([100.0, 50.0, 0.0, 0.0, 0.0], [10.0, 11.0, 12.0, 11.0, 13.0], 252.0)
    assert found["bars"] == 2


def test_a_flat_benchmark_has_no_beta() -> None:
    found = relative([100.0, 101.0, 102.0], [5.0, 5.0, 5.0], 252.0)
    assert found["beta"] is None and found["alpha"] is None and found["correlation"] is None
