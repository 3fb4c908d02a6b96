"""Performance metrics, each computed exactly as its formula in ``FORMULAS`` states.

Consumes an equity curve (one value per bar, net of all costs) and a trade list; produces plain
numbers. The report prints ``FORMULAS`` beside the values, so a reader can recompute any of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from qcompile.dailystats import bar_returns, max_drawdown

FORMULAS = {
    "total_return": "E_T / E_0 - 1, equity net of slippage and commission",
    "annualised_return": "(E_T / E_0) ^ (P / n) - 1, geometric; n bar returns, P bars per year",
    "sharpe": (
        "mean(r) / stdev(r) x sqrt(P); r_t = E_t / E_(t-1) - 1 for every bar whose previous equity "
        "is positive (none once the account is wiped out), sample stdev, risk-free 0"
    ),
    "sortino": "mean(r) / sqrt(mean(min(r_t, 0)^2)) x sqrt(P); downside over all bars, target 0",
    "max_drawdown": "min_t (E_t / max_(s<=t) E_s - 1), with the peak and trough bars",
    "win_rate": "trades with net PnL > 0 / all closed trades",
    "average_win_loss": "mean net PnL of winning trades, mean net PnL of losing trades",
    "profit_factor": "sum of winning PnL / |sum of losing PnL|",
    "trade_count": "closed round trips (entry and exit fills)",
    "exposure": "mean over bars of gross position value / equity",
}


@dataclass(frozen=True)
class Metrics:
    total_return: float
    annualised_return: float
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    drawdown_peak_index: int
    drawdown_trough_index: int
    win_rate: float | None
    average_win: float | None
    average_loss: float | None
    profit_factor: float | None
    trade_count: int
    exposure: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def sharpe(returns: Sequence[float], periods_per_year: float) -> float | None:
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    return None if variance == 0 else mean / math.sqrt(variance) * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], periods_per_year: float) -> float | None:
    if not returns:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    mean = sum(returns) / len(returns)
    return None if downside == 0 else mean / downside * math.sqrt(periods_per_year)


def compute(
    equity: Sequence[float],
    trade_pnls: Sequence[float],
    gross_exposure: Sequence[float | None],
    periods_per_year: float,
) -> Metrics:
    """All metrics for one run. ``gross_exposure`` is position value / equity per bar (None where
    equity is gone)."""
    returns = bar_returns(equity)
    growth = equity[-1] / equity[0]
    annualised = -1.0
    if returns and growth > 0:
        try:
            annualised = growth ** (periods_per_year / len(returns)) - 1.0
        except OverflowError:  # a short window of huge growth: annualised beyond any float
            annualised = math.inf
    drawdown = max_drawdown(equity)
    wins = [p for p in trade_pnls if p > 0]
    losses = [p for p in trade_pnls if p <= 0]
    lost = -sum(p for p in losses if p < 0)
    return Metrics(
        total_return=growth - 1.0,
        annualised_return=annualised,
        sharpe=sharpe(returns, periods_per_year),
        sortino=sortino(returns, periods_per_year),
        max_drawdown=drawdown.depth,
        drawdown_peak_index=drawdown.peak_index,
        drawdown_trough_index=drawdown.trough_index,
        win_rate=len(wins) / len(trade_pnls) if trade_pnls else None,
        average_win=sum(wins) / len(wins) if wins else None,
        average_loss=sum(losses) / len(losses) if losses else None,
        profit_factor=sum(wins) / lost if lost > 0 else None,
        trade_count=len(trade_pnls),
        exposure=sum(defined) / len(defined)
        if (defined := [g for g in gross_exposure if g is not None])
        else 0.0,
    )
