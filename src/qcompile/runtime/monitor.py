"""The strategy's own alerts: the thresholds its passport promises, watched as it trades.

Consumes the strategy's ``monitoring`` thresholds and, as the engine trades, its equity, the
equity at the start of the day, its gross exposure and each closed trade's result; produces
alerts, each once per breach: a breach re-arms only when its condition has cleared (equity back
within half the drawdown threshold of its peak, a new day, a winning trade, exposure back under
its limit). What a
breach has already said is part of the durable state, so a restart does not say it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MonitorState:
    peak_equity: float | None = None
    day: int | None = None  # start (ms) of the interval the day's opening equity belongs to
    day_start_equity: float | None = None
    losing_streak: int = 0
    breached: list[str] = field(default_factory=list)  # alert keys said and not yet cleared

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_equity": self.peak_equity,
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "losing_streak": self.losing_streak,
            "breached": sorted(self.breached),
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
        )


@dataclass(frozen=True)
class Breach:
    key: str
    severity: str
    summary: str
    details: dict[str, float]


class Monitor:
    def __init__(self, thresholds: Mapping[str, Any], state: MonitorState | None = None):
        self.thresholds = {k: float(v) for k, v in thresholds.items() if v is not None}
        self.state = state or MonitorState()

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
