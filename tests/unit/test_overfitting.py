"""Overfitting statistics on inputs whose answers are known."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from qcompile.research.backtest.overfitting import (
    EULER_GAMMA,
    deflated_sharpe,
    expected_max_sharpe,
    per_bar_sharpe,
    probability_of_overfitting,
)


def test_expected_max_sharpe_of_two_trials_by_hand() -> None:
    # V = var([0.1, -0.1], ddof=1) = 0.02; inv_cdf(1 - 1/2) = 0, so only the gamma term remains
    expected = math.sqrt(0.02) * EULER_GAMMA * NormalDist().inv_cdf(1 - 1 / (2 * math.e))
    assert expected == pytest.approx(0.0735, abs=5e-4)
    assert expected_max_sharpe(np.array([0.1, -0.1])) == pytest.approx(expected, rel=1e-12)
    assert expected_max_sharpe(np.array([0.3])) == 0.0  # one trial: nothing to deflate


def test_deflated_sharpe_of_symmetric_returns_reduces_to_a_normal_cdf() -> None:
    # returns of +-1 % around 0.1 %: skewness 0, kurtosis 1, so the variance term is exactly 1
    returns = 0.001 + 0.01 * np.tile([-1.0, 1.0], 500)
    result = deflated_sharpe(returns, np.array([per_bar_sharpe(returns)]))
    assert result.skewness == pytest.approx(0.0, abs=1e-9)
    assert result.kurtosis == pytest.approx(1.0, rel=1e-9)
    sharpe = 0.001 / np.std(returns, ddof=1)
    assert result.sharpe == pytest.approx(sharpe, rel=1e-12)
    assert result.probability == pytest.approx(NormalDist().cdf(sharpe * math.sqrt(999)), rel=1e-9)


def test_more_trials_deflate_the_same_sharpe_more() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0005, 0.01, 1500)
    few = deflated_sharpe(returns, rng.normal(0, 0.02, 5))
    many = deflated_sharpe(returns, rng.normal(0, 0.02, 500))
    assert many.benchmark > few.benchmark and many.probability < few.probability


def test_a_trial_that_only_wins_in_sample_is_always_overfit() -> None:
    # four trials, four blocks: trial i earns +3 in block i and -1 elsewhere, the same noise for all.
    # Half the blocks in sample: the best trial in sample owns one of them, and out of sample it sits
    # below the trials owning the other half, every time.
    noise = np.tile([-0.5, 0.5], 50)
    blocks = [np.full(100, -1.0) + noise for _ in range(4)]
    trials = []
    for owner in range(4):
        parts = [b.copy() for b in blocks]
        parts[owner] = parts[owner] + 4.0
        trials.append(np.concatenate(parts))
    result = probability_of_overfitting(np.array(trials), blocks=4)
    assert (result.combinations, result.splits, result.trials) == (6, 4, 4)
    assert result.probability == 1.0


def test_a_trial_that_dominates_everywhere_is_never_overfit() -> None:
    rng = np.random.default_rng(11)
    trials = rng.normal(0, 0.01, (20, 1600))
    trials[7] += 0.01  # best in every block
    result = probability_of_overfitting(trials, blocks=16)
    assert result.combinations == 12870
    assert result.probability == 0.0


def test_pure_noise_is_overfit_about_half_the_time() -> None:
    trials = np.random.default_rng(5).normal(0, 0.01, (50, 2000))
    assert 0.3 < probability_of_overfitting(trials, blocks=10).probability < 0.7
