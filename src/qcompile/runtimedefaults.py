"""The runner's operating defaults, defined once (shared).

The production runner applies them where a deployment leaves a setting out, and the compiler
writes the same values into each runbook, so what an operator reads is what the process does.
The reconnect schedule is the source document's: 1 s doubling to a 60 s cap, ±10 % jitter,
reset after 30 s of stable connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RECONNECT: dict[str, float] = {"initial_s": 1.0, "cap_s": 60.0, "jitter": 0.1, "stable_s": 30.0}
RATE_LIMIT_DEFAULT_S = 60.0  # a rate limit without Retry-After pauses this long
SAFE_STATE_BUDGET_MS = 100.0
HISTORY_BARS = 400
CHANNEL = "ticker"
MAX_MALFORMED_PER_MINUTE = 10
MAX_FRAME_BYTES = 1_000_000  # a push is a few hundred bytes; a larger frame closes the link
# pushes waiting for the decision thread before it counts as lagging and the queue coalesces
# each symbol's pushes into the bar being built (about 0.2 s of pushes at 10,000 msg/s)
MAX_QUEUED_PUSHES = 2_000


def reconnect_policy(deployment: Mapping[str, Any]) -> dict[str, float]:
    """The reconnect schedule a deployment runs: its own values over the defaults."""
    configured = deployment.get("reconnect") or {}
    return {key: float(configured.get(key, default)) for key, default in RECONNECT.items()}


# The strategy alerts a passport may declare (strategy.deployment_record.monitoring_alerts): each
# with the threshold in strategy.monitoring that the runner watches it by. data_feed_heartbeat
# is the feed's own silence alert, always on.
ALERT_THRESHOLDS = {
    "drawdown_threshold": "max_drawdown_pct",
    "daily_loss": "max_daily_loss_pct",
    "winrate_streak": "max_losing_streak",
    "exposure_limit": "max_exposure_pct",
    "backtest_deviation": "max_backtest_deviation_pct",
}
ALERT_KINDS = (*ALERT_THRESHOLDS, "data_feed_heartbeat")
