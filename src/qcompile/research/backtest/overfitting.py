"""Overfitting statistics over a parameter sweep: deflated Sharpe ratio and PBO.

Consumes per-bar return series (one per trial, on a shared clock); produces plain numbers that a
sweep summary prints beside their definitions:

* the deflated Sharpe ratio (Bailey and Lopez de Prado, 2014): the probability that the chosen
  trial's true Sharpe ratio exceeds the best one expected from ``N`` trials of pure noise, given
  the sample length and the returns' skewness and kurtosis;
* the probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey,
  Borwein, Lopez de Prado and Zhu, 2015): split the bars into ``S`` blocks, and for every way of
  choosing half of them as in-sample, take the trial with the best in-sample Sharpe and see where
  it ranks out of sample; PBO is the share of splits in which it ranks at or below the median.

Sharpe ratios here are per bar (not annualised), as both papers define them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def per_bar_sharpe(returns: np.ndarray) -> float:
    """mean / sample standard deviation; 0 for a series that never moves."""
    if returns.size < 2:
        return 0.0
    spread = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / spread if spread > 0 else 0.0


def expected_max_sharpe(trial_sharpes: np.ndarray) -> float:
    """SR0: the best Sharpe ratio expected among N trials whose true Sharpe is zero."""
    n = trial_sharpes.size
    if n < 2:
        return 0.0
    spread = math.sqrt(float(np.var(trial_sharpes, ddof=1)))
    return spread * (
        (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n)
        + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n * math.e))
    )


@dataclass(frozen=True)
class DeflatedSharpe:
    sharpe: float  # the chosen trial's per-bar Sharpe
    benchmark: float  # SR0
    trials: int
    bars: int
    skewness: float
    kurtosis: float  # not excess: 3 for a normal distribution
    probability: float  # DSR


def deflated_sharpe(chosen: np.ndarray, trial_sharpes: np.ndarray) -> DeflatedSharpe:
    """DSR of the chosen trial's returns against ``trial_sharpes`` (every trial, chosen too)."""
    bars = chosen.size
    sharpe = per_bar_sharpe(chosen)
    deviation = chosen - chosen.mean()
    spread = math.sqrt(float(np.mean(deviation**2)))
    skewness = float(np.mean(deviation**3)) / spread**3 if spread > 0 else 0.0
    kurtosis = float(np.mean(deviation**4)) / spread**4 if spread > 0 else 3.0
    benchmark = expected_max_sharpe(trial_sharpes)
    variance = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if bars < 2 or variance <= 0:
        probability = float("nan")
    else:
        probability = _NORMAL.cdf((sharpe - benchmark) * math.sqrt(bars - 1) / math.sqrt(variance))
    return DeflatedSharpe(
        sharpe, benchmark, int(trial_sharpes.size), bars, skewness, kurtosis, probability
    )


@dataclass(frozen=True)
class Overfitting:
    probability: float  # PBO
    splits: int  # S blocks
    combinations: int  # in-sample/out-of-sample splits evaluated
    trials: int


def probability_of_overfitting(returns: np.ndarray, blocks: int = 16) -> Overfitting:
    """PBO by CSCV over ``returns`` of shape (trials, bars)."""
    trials, bars = returns.shape
    blocks = min(blocks, bars - bars % 2)
    if trials < 2 or blocks < 2:
        return Overfitting(float("nan"), blocks, 0, trials)
    edges = np.linspace(0, bars, blocks + 1).astype(int)
    # per block and trial: count, sum and sum of squares, so any union of blocks is a sum
    count = np.diff(edges).astype(float)
    sums = np.add.reduceat(returns, edges[:-1], axis=1).T  # (blocks, trials)
    squares = np.add.reduceat(returns**2, edges[:-1], axis=1).T
    splits = np.array(list(itertools.combinations(range(blocks), blocks // 2)))
    chosen = np.zeros((len(splits), blocks))
    np.put_along_axis(chosen, splits, 1.0, axis=1)

    def sharpe(mask: np.ndarray) -> np.ndarray:  # (splits, trials)
        n = (mask @ count)[:, None]
        mean = (mask @ sums) / n
        variance = ((mask @ squares) - n * mean**2) / (n - 1)
        spread = np.sqrt(np.maximum(variance, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(spread > 0, mean / spread, 0.0)

    inside, outside = sharpe(chosen), sharpe(1.0 - chosen)
    best = np.argmax(inside, axis=1)  # ties: the first trial
    best_outside = outside[np.arange(len(splits)), best]
    rank = (outside < best_outside[:, None]).sum(axis=1) + 1  # 1 = worst out of sample
    relative = rank / (trials + 1)
    logit = np.log(relative / (1 - relative))
    return Overfitting(float(np.mean(logit <= 0)), blocks, len(splits), trials)


def summarise(equity: np.ndarray, eligible: np.ndarray) -> dict[str, object]:
    """Both statistics over a grid's equity curves (trials, bars) on one clock.

    The chosen trial is the best per-bar Sharpe among ``eligible`` trials (those meeting the
    minimum trade count), or among all when none is; ties go to the first."""
    # a bar return exists where the previous equity is positive; PBO needs one set of bars for all
    # trials, so keep the bars where that holds for every trial
    valid = np.all(equity[:, :-1] > 0, axis=0)
    returns = equity[:, 1:][:, valid] / equity[:, :-1][:, valid] - 1.0
    sharpes = np.array([per_bar_sharpe(r) for r in returns])
    pool = np.flatnonzero(eligible) if eligible.any() else np.arange(len(sharpes))
    chosen = int(pool[np.argmax(sharpes[pool])])
    dsr = deflated_sharpe(returns[chosen], sharpes)
    pbo = probability_of_overfitting(returns)
    return {
        "computed": True,
        "trials": len(sharpes),
        "chosen": chosen,
        "chosen_eligible": bool(eligible.any()),
        "deflated_sharpe": dsr.probability,
        "per_bar_sharpe": dsr.sharpe,
        "expected_max_sharpe": dsr.benchmark,
        "skewness": dsr.skewness,
        "kurtosis": dsr.kurtosis,
        "bars": dsr.bars,
        "pbo": pbo.probability,
        "pbo_blocks": pbo.splits,
        "pbo_splits": pbo.combinations,
    }
