"""The robustness checks against signals and return series whose answer is known: a look-ahead
check that catches a one-bar peek (also through smoothing) and passes every bundled signal, and a
Monte Carlo that resamples what the portfolio experienced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from qcompile.emulator import load_bars
from qcompile.research.backtest.robustness import (
    bootstrap_indices,
    look_ahead,
    mean_block_bars,
    monte_carlo,
)
from qcompile.signals import get_signal
from tests.conftest import REPO

SAMPLE = REPO / "data/sample_us_daily"
SYMBOLS = ["GOOGL", "MSFT"]


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return load_bars(SAMPLE, SYMBOLS).sort("symbol", "timestamp")


def crossover(frame: pl.DataFrame, fast: int, slow: int, peek: int = 0) -> pl.DataFrame:
    """Long while the fast average of the close is above the slow one; with ``peek``, the
    averages are of the close ``peek`` bars ahead: a look-ahead hidden inside smoothing."""
    close = pl.col("close").shift(-peek) if peek else pl.col("close")
    above = close.rolling_mean(fast).over("symbol") > close.rolling_mean(slow).over("symbol")
    return frame.with_columns(signal=pl.when(above).then(1).otherwise(0))


def _check(bars: pl.DataFrame, signal: Any, seed: int = 7) -> dict[str, Any]:
    window_start = int(bars["timestamp"].quantile(0.3))
    return look_ahead(signal, bars, signal(bars), window_start, seed)


@pytest.mark.parametrize(("fast", "slow"), [(5, 20), (20, 50)])
def test_a_one_bar_peek_through_moving_averages_is_caught(
    bars: pl.DataFrame, fast: int, slow: int
) -> None:
    found = _check(bars, lambda b: crossover(b, fast, slow, peek=1))
    assert found["passed"] is False
    offending = found["first_offending_bar"]
    assert offending["symbol"] in SYMBOLS
    assert offending["with_full_history"] != offending["with_history_to_then"]


def test_the_honest_twin_of_the_peeking_signal_passes(bars: pl.DataFrame) -> None:
    found = _check(bars, lambda b: crossover(b, 5, 20))
    assert found["passed"] is True and found["first_offending_bar"] is None
    assert found["change_bars"] > 20  # entries and exits: where a peek would pay
    assert found["cuts"] == found["change_bars_checked"] + found["sampled_bars"]


def test_a_peek_on_a_bar_where_nothing_changes_is_still_found_by_the_sample(
    bars: pl.DataFrame,
) -> None:
    """A signal whose last value depends on the next bar everywhere (not only at changes)."""

    def next_close_up(frame: pl.DataFrame) -> pl.DataFrame:
        ahead = pl.col("close").shift(-1).over("symbol")
        return frame.with_columns(signal=pl.when(ahead > pl.col("close")).then(1).otherwise(0))

    assert _check(bars, next_close_up)["passed"] is False


def _example_signals() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(REPO.glob("generated/*/params.yaml")):
        params = yaml.safe_load(path.read_text(encoding="utf-8"))["signal"]
        if not params.get("events"):  # an event calendar needs files the sample lacks
            found.append((params["name"], params["params"]))
    return found


@pytest.mark.parametrize(("name", "params"), _example_signals())
def test_no_bundled_signal_is_a_false_positive(
    bars: pl.DataFrame, name: str, params: dict[str, Any]
) -> None:
    spec = get_signal(name, None, ["qcompile.signals"])
    found = _check(bars, lambda b: spec.function(b, **params))
    assert found["passed"] is True, found["first_offending_bar"]
    assert found["change_bars"] > 0


def test_more_change_bars_than_the_cap_are_sampled_and_said(bars: pl.DataFrame) -> None:
    window_start = int(bars["timestamp"].min())
    found = look_ahead(
        lambda b: crossover(b, 2, 3), bars, crossover(bars, 2, 3), window_start, 1, 4, 10
    )
    assert found["change_bars"] > 10 and found["change_bars_checked"] == 10
    assert found["sampled_bars"] == 4 and found["passed"] is True


# -- Monte Carlo ---------------------------------------------------------------------------------


def test_bootstrap_blocks_are_consecutive_bars_of_the_stated_mean_length() -> None:
    bars, block = 3000, 12
    drawn = bootstrap_indices(bars, seed=3, samples=200, mean_block=block)
    assert drawn.shape == (200, bars)
    continues = (np.diff(drawn, axis=1) % bars) == 1
    assert 1 / (1 - continues.mean()) == pytest.approx(block, rel=0.1)  # mean block length
    counts = np.bincount(drawn.ravel(), minlength=bars)  # every bar equally likely
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()
    again = bootstrap_indices(bars, seed=3, samples=200, mean_block=block)
    other = bootstrap_indices(bars, seed=4, samples=200, mean_block=block)
    assert np.array_equal(drawn, again) and not np.array_equal(drawn, other)


def test_mean_block_length_is_the_cube_root_of_the_history() -> None:
    assert [mean_block_bars(n) for n in (1, 8, 1000, 2121)] == [1, 2, 10, 13]


@pytest.mark.parametrize("drift", [-0.0004, 0.0, 0.0006])
def test_the_median_resample_sits_near_the_realised_result(drift: float) -> None:
    rng = np.random.default_rng(11)
    shocks = rng.normal(drift, 0.012, 2500)
    returns = shocks + 0.3 * np.concatenate([[0.0], shocks[:-1]])  # autocorrelated, as held
    found = monte_carlo(returns.tolist(), seed=5)
    realised = found["realised"]["final_return"]
    assert realised == pytest.approx(float(np.prod(1 + returns) - 1))
    growth = np.log1p([found["final_return"][p] for p in ("p5", "p50", "p95")])
    assert abs(growth[1] - np.log1p(realised)) < 0.15 * (growth[2] - growth[0])
    assert growth[0] < np.log1p(realised) < growth[2]
    drawdowns = found["max_drawdown"]
    assert drawdowns["p5"] <= drawdowns["p50"] <= drawdowns["p95"] <= 0.0
    assert 0.0 <= found["probability_of_loss"] <= 1.0


def test_simultaneous_positions_are_not_compounded_in_turn() -> None:
    """Four sleeves of a quarter each, every one up 10 % over the same days: the portfolio made
    10 %, and a resample of what it experienced cannot make that 46 % (1.1^4 - 1), which is what
    drawing its four trades one after another would say."""
    days = 40
    returns = [0.1 / days] * days  # the portfolio: all four sleeves together
    found = monte_carlo(returns, seed=1)
    assert found["final_return"]["p50"] == pytest.approx((1 + 0.1 / days) ** days - 1)
    assert found["final_return"]["p95"] < 0.2


def test_no_returns_means_no_resamples() -> None:
    found = monte_carlo([], seed=1)
    assert found["realised"] is None and found["final_return"] is None


@pytest.mark.parametrize(
    "evidence", sorted(REPO.glob("reports/*/*/evidence.json")), ids=lambda p: p.parent.parent.name
)
def test_on_the_examples_the_median_resample_sits_near_the_realised_result(
    evidence: Path,
) -> None:
    """The committed reports (CI re-runs the README's and diffs it): median within a sixth of the
    5-95 % spread of the realised growth, where the trade bootstrap put it twelve times higher."""
    found = json.loads(evidence.read_text(encoding="utf-8"))["robustness"]["monte_carlo"]
    assert found["method"] == "stationary_bootstrap"
    realised = np.log1p(found["realised"]["final_return"])
    growth = np.log1p([found["final_return"][p] for p in ("p5", "p50", "p95")])
    assert abs(growth[1] - realised) < (growth[2] - growth[0]) / 6
