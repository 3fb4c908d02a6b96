"""The strategy's own alerts: the thresholds its passport promises, watched as it trades.

Consumes the strategy's ``monitoring`` thresholds, the backtest's daily statistics and, as the
engine trades, its equity, the equity at the start of the day, its gross exposure, each closed
trade's result and each day's closing equity; produces alerts, each once per breach: a breach
re-arms only when its condition has cleared (equity back within half the drawdown threshold of
its peak, a new day, a winning trade, exposure back under its limit, every statistic back within
its deviation). What a breach has already said is part of the durable state, so a restart does
not say it again.

The deviation check is the weekly review's test run at every day's close: the same statistics
(``qcompile.dailystats.daily_statistics``, the function the backtest's evidence and the
review use) over the trailing 20 trading days, each against the backtest's. It starts once 20
daily returns exist: fewer days would flag noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qcompile.dailystats import (
    DAILY_STATISTICS,
    REVIEW_WINDOW,
    daily_statistics,
    relative_deviation,
)


@dataclass
class MonitorState:
    peak_equity: float | None = None
    day: int | None = None  # start (ms) of the interval the day's opening equity belongs to
    day_start_equity: float | None = None
    losing_streak: int = 0
    breached: list[str] = field(default_factory=list)  # alert keys said and not yet cleared
    # the last REVIEW_WINDOW + 1 daily closing equities, [date, equity]: the deviation's window
    closes: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_equity": self.peak_equity,
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "losing_streak": self.losing_streak,
            "breached": sorted(self.breached),
            "closes": [list(close) for close in self.closes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MonitorState:
        data = data or {}
        return cls(
            peak_equity=data.get("peak_equity"),
            day=data.get("day"),
            day_start_equity=data.get("day_start_equity"),
            losing_streak=int(data.get("losing_streak", 0)),
            breached=list(data.get("breached") or []),
            closes=[[str(day), float(equity)] for day, equity in data.get("closes") or []],
        )


@dataclass(frozen=True)
class Breach:
    key: str
    severity: str
    summary: str
    details: dict[str, float]


class Monitor:
    def __init__(
        self,
        thresholds: Mapping[str, Any],
        state: MonitorState | None = None,
        expected: Mapping[str, Any] | None = None,
    ):
        self.thresholds = {k: float(v) for k, v in thresholds.items() if v is not None}
        self.state = state or MonitorState()
        self.expected = dict(expected or {})  # the backtest's daily statistics

    def _once(
        self, key: str, breached: bool, make: Any, cleared: bool | None = None
    ) -> list[Breach]:
        """The breach the first time its condition holds; re-armed once ``cleared`` (default:
        the condition no longer holds), so a figure wavering at the line is not news each time."""
        if not breached:
            if key in self.state.breached and (not breached if cleared is None else cleared):
                self.state.breached.remove(key)
            return []
        if key in self.state.breached:
            return []
        self.state.breached.append(key)
        return [make()]

    def observe(self, equity: float, exposure: float, day: int) -> list[Breach]:
        """After a price or a fill: equity (cash plus positions at their last prices), gross
        exposure (sum of |position x price|) and the start of the current day (ms)."""
        state, found = self.state, []
        if state.day is None or day > state.day:  # symbols interleave: only forward is new
            state.day, state.day_start_equity = day, equity
            if "strategy.daily_loss" in state.breached:  # a new day re-arms it
                state.breached.remove("strategy.daily_loss")
        state.peak_equity = equity if state.peak_equity is None else max(state.peak_equity, equity)
        limit = self.thresholds.get("max_drawdown_pct")
        if limit is not None and state.peak_equity > 0:
            drawdown = (1 - equity / state.peak_equity) * 100
            found += self._once(
                "strategy.drawdown",
                equity <= state.peak_equity * (1 - limit / 100),  # exact at the line
                lambda: Breach(
                    "strategy.drawdown",
                    "critical",
                    f"drawdown {drawdown:.2f} % from the equity peak {state.peak_equity:,.2f} "
                    f"(equity {equity:,.2f}; threshold {limit:g} %)",
                    {"drawdown_pct": round(drawdown, 4), "equity": round(equity, 2)},
                ),
                cleared=drawdown < limit / 2,  # halfway back to the peak re-arms it
            )
        limit = self.thresholds.get("max_daily_loss_pct")
        start = state.day_start_equity
        if limit is not None and start:
            loss = (1 - equity / start) * 100
            found += self._once(
                "strategy.daily_loss",
                equity <= start * (1 - limit / 100),
                lambda: Breach(
                    "strategy.daily_loss",
                    "critical",
                    f"down {loss:.2f} % today (from {start:,.2f} to {equity:,.2f}; threshold "
                    f"{limit:g} %)",
                    {"loss_pct": round(loss, 4), "equity": round(equity, 2)},
                ),
                cleared=False,  # once a day: only the next day re-arms it
            )
        limit = self.thresholds.get("max_exposure_pct")
        if limit is not None and equity > 0:
            used = exposure / equity * 100
            found += self._once(
                "strategy.exposure",
                used > limit,
                lambda: Breach(
                    "strategy.exposure",
                    "critical",
                    f"gross exposure {used:.1f} % of equity ({exposure:,.2f} of {equity:,.2f}; "
                    f"limit {limit:g} %)",
                    {"exposure_pct": round(used, 4)},
                ),
            )
        return found

    def closed_trade(self, pnl: float) -> list[Breach]:
        """After a position went back to flat (or flipped): that trade's result, costs in."""
        state = self.state
        state.losing_streak = state.losing_streak + 1 if pnl < 0 else 0
        limit = self.thresholds.get("max_losing_streak")
        if limit is None:
            return []
        streak = state.losing_streak
        return self._once(
            "strategy.losing_streak",
            streak >= limit,
            lambda: Breach(
                "strategy.losing_streak",
                "warning",
                f"{streak} losing trades in a row (the last {pnl:,.2f}; threshold {limit:g})",
                {"streak": streak, "last_pnl": round(pnl, 2)},
            ),
        )

    def day_closed(self, day: str, equity: float) -> list[Breach]:
        """At a day's close (ISO date, closing equity): the trailing window's statistics against
        the backtest's; a breach names every statistic off by more than the threshold."""
        closes = self.state.closes
        if closes and closes[-1][0] == day:
            closes[-1][1] = equity  # a day marked twice (a restart): the last mark counts
        else:
            closes.append([day, equity])
        del closes[: -(REVIEW_WINDOW + 1)]
        limit = self.thresholds.get("max_backtest_deviation_pct")
        if limit is None or not self.expected or len(closes) < REVIEW_WINDOW + 1:
            return []
        live = daily_statistics([c[0] for c in closes], [c[1] for c in closes], REVIEW_WINDOW)
        off = {}
        for key in DAILY_STATISTICS:
            deviation = relative_deviation(live.get(key), self.expected.get(key))
            if deviation is not None and deviation * 100 > limit:
                off[key] = deviation
        return self._once(
            "strategy.backtest_deviation",
            bool(off),
            lambda: Breach(
                "strategy.backtest_deviation",
                "warning",
                f"live vs backtest over the last {REVIEW_WINDOW} days (to {day}): "
                + "; ".join(
                    f"{DAILY_STATISTICS[key]} {_shown(key, live[key])} vs "
                    f"{_shown(key, self.expected[key])} ({_percent(off[key])} off)"
                    for key in off
                )
                + f"; threshold {limit:g} %",
                {
                    **{f"live_{key}": round(float(live[key] or 0.0), 6) for key in off},
                    **{f"backtest_{key}": round(float(self.expected[key]), 6) for key in off},
                },
            ),
        )


def _shown(key: str, value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.{3 if key == 'mean_return' else 2}f} %"


def _percent(value: float) -> str:
    return "inf" if value == float("inf") else f"{value * 100:.0f} %"
