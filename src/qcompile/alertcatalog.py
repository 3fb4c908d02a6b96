"""Every alert the production runner raises: what it means and what to do (shared).

The runtime raises alerts by these keys; the compiler writes this table into each strategy's
runbook. A test checks that every key the runtime uses is listed here, so the runbook never
meets an alert it cannot explain.
"""

from __future__ import annotations

from typing import NamedTuple


class AlertEntry(NamedTuple):
    severity: str
    meaning: str
    action: str


ALERTS: dict[str, AlertEntry] = {
    "feed.silent": AlertEntry(
        "critical",
        "Nothing arrived from the feed for two heartbeat intervals (a half-open connection): "
        "treated as a disconnection.",
        "The runner is already in its safe state and reconnecting. If it repeats, check the "
        "vendor's status page and this host's network.",
    ),
    "runner.safe_state": AlertEntry(
        "critical",
        "The feed was lost or refused: working orders were cancelled, signals suspended, state "
        "saved.",
        "Nothing to do while it reconnects; trading resumes by itself after a fresh data check. "
        "Investigate if it does not resume within a few minutes.",
    ),
    "runner.safe_state_slow": AlertEntry(
        "critical",
        "Reaching the safe state took longer than the budget (safe_state_budget_ms).",
        "Check the host's load and the state store's latency; confirm with the broker that no "
        "order was left working.",
    ),
    "feed.contract": AlertEntry(
        "critical",
        "A message broke the pinned data contract (timestamp unit, number format or protocol "
        "variant): the feed is not what the strategy was validated on.",
        "Do not force a resume. Compare the feed with the pinned convention in params.yaml; if "
        "the vendor changed it, the data source version must change and the strategy go back "
        "through validation.",
    ),
    "feed.malformed": AlertEntry(
        "warning",
        "The feed sent a message that is not valid JSON, a binary frame, or a push with a field "
        "of the wrong type or value (NaN, a list, a negative quantity); it was dropped. More than "
        "max_malformed_per_minute in a minute is a data-contract breach (feed.contract). A frame "
        "announcing more than max_frame_bytes is critical: the connection is closed unread "
        "(1009), the safe state entered, and the runner reconnects.",
        "Occasional: nothing. Repeated: report to the vendor.",
    ),
    "feed.stalled": AlertEntry(
        "critical",
        "The feed thread made no progress for two and a half heartbeat intervals (a frame that "
        "trickles in, or takes too long to handle): the runner's own watchdog entered the safe "
        "state and dropped the connection.",
        "Nothing while it reconnects. If it repeats, capture the feed's traffic and report it to "
        "the vendor.",
    ),
    "feed.unsubscribed": AlertEntry(
        "warning",
        "The feed pushed a channel the runner did not subscribe to; it was dropped, never traded.",
        "Report to the vendor; check that no other subscription shares the connection.",
    ),
    "runner.failed": AlertEntry(
        "critical",
        "A worker thread of the runner (feed, decisions, saver, an alert sink's delivery) failed "
        "unexpectedly: the runner entered its safe state, saved what it could and exited "
        "non-zero.",
        "The process manager restarts it from the durable state (docs/runner.md, systemd unit). "
        "Read the error in the alert and the log; if it repeats at every start, roll back.",
    ),
    "feed.rate_limited": AlertEntry(
        "warning",
        "The vendor answered a command with a rate limit (3001); the command sender paused for "
        "Retry-After while reading went on.",
        "Check that no other process uses the same API key.",
    ),
    "feed.refused": AlertEntry(
        "critical",
        "The vendor refused the connection: authentication (1001-1004), quota (3002) or the "
        "connection limit (3003).",
        "Check the API key in the environment, the plan's quota and other connections on the key.",
    ),
    "feed.error": AlertEntry(
        "warning",
        "The vendor answered one of the runner's commands with an error.",
        "Read the log line for the code; a subscription error needs the symbols checked.",
    ),
    "runner.reconciled": AlertEntry(
        "warning",
        "At start-up the persisted state disagreed with the broker; the broker's books were "
        "adopted.",
        "Read the listed differences and confirm the positions with the broker.",
    ),
    "runner.recovered_fills": AlertEntry(
        "warning",
        "At start-up the broker reported fills made after the runner's last save (it was killed "
        "between the two): they were applied as if received, and the orders are not sent again.",
        "None if the runner was killed or crashed; otherwise find out why it stopped.",
    ),
    "broker.mismatch": AlertEntry(
        "critical",
        "A real broker's positions differ from the runner's books (at start-up, or after a "
        "reconnect once no order was working): working orders were cancelled and trading is "
        "held; fresh data does not lift it.",
        "Find out who moved the account (a manual trade, a fill the runner missed); then "
        "`qcompile reconcile STRATEGY` shows the differences and `--accept-broker` adopts the "
        "broker's positions (docs/brokers.md).",
    ),
    "broker.rejected": AlertEntry(
        "critical",
        "The broker refused an order (buying power, an unknown or halted asset, a closed "
        "market): the strategy's position is not what it decided.",
        "Read the broker's reason; fix the account or the universe. The next bar's decision "
        "tries again.",
    ),
    "broker.cancel_failed": AlertEntry(
        "critical",
        "A safe state could not cancel the working orders at the broker (unreachable or "
        "refusing); the runner keeps trying every poll interval.",
        "Cancel them by hand in the broker's console if the broker stays unreachable.",
    ),
    "broker.unreachable": AlertEntry(
        "warning",
        "The broker did not answer the runner's questions about its working orders; after 30 s "
        "the runner fails into its safe state and exits non-zero.",
        "Check the broker's status page and the host's network.",
    ),
    "runner.broker_override": AlertEntry(
        "warning",
        "deployment.broker.url sends orders to another address than the broker's own API (a "
        "local stand-in for a rehearsal).",
        "Expected in a rehearsal; in production, remove deployment.broker.url.",
    ),
    "runner.lagging": AlertEntry(
        "warning",
        "Decisions fall behind the feed: max_queued_pushes pushes are waiting (the queue then "
        "coalesces each symbol's pushes into the bar being built), or the oldest waiting push "
        "is older than a heartbeat interval.",
        "Check the host's load; the strategy may need a faster host or fewer symbols.",
    ),
    "runner.resumed": AlertEntry(
        "info", "The feed passed a fresh data check after a safe state: signals resumed.", "None."
    ),
    "runner.started": AlertEntry("info", "The runner started (instance named).", "None."),
    "strategy.drawdown": AlertEntry(
        "critical",
        "Equity fell strategy.monitoring.max_drawdown_pct below its peak (once per breach; "
        "re-armed when equity is back above that line).",
        "Compare with the backtest's worst drawdown in the report; if beyond it, stop the "
        "runner and review the strategy (docs/reviews.md).",
    ),
    "strategy.daily_loss": AlertEntry(
        "critical",
        "Equity fell strategy.monitoring.max_daily_loss_pct below the day's first mark (once "
        "per day).",
        "Check the day's fills in `qcompile journal`; stop the runner if the loss is not what "
        "the strategy's risk allows.",
    ),
    "strategy.losing_streak": AlertEntry(
        "warning",
        "strategy.monitoring.max_losing_streak closed trades in a row lost money, costs in "
        "(re-armed by a winning trade).",
        "Compare with the backtest's longest losing run; a longer one is a review trigger.",
    ),
    "strategy.backtest_deviation": AlertEntry(
        "warning",
        "At a day's close, a statistic of the last 20 trading days (up-day share, mean daily "
        "return, volatility, 20-day drawdown) is off the backtest's by more than "
        "strategy.monitoring.max_backtest_deviation_pct (the weekly review's test, daily; "
        "re-armed when every statistic is back within it).",
        "Run `qcompile review weekly` for the full comparison; a deviation that persists is a "
        "review trigger (docs/reviews.md), not a reason to change parameters live.",
    ),
    "strategy.exposure": AlertEntry(
        "critical",
        "Gross exposure exceeded strategy.monitoring.max_exposure_pct of equity.",
        "Check positions with the broker; reduce them by hand if sizing went wrong.",
    ),
    "runner.feed_override": AlertEntry(
        "warning",
        "The runner was started against another feed than its data source's (`qcompile run "
        "--ws-url/--rest-url`): a staging or recorded feed.",
        "Confirm that it was intended; a production strategy needs `--i-know` for it.",
    ),
    "runner.down": AlertEntry(
        "critical",
        "Sent by `qcompile watch`, outside the runner: no heartbeat for more than two heartbeat "
        "intervals. The process died (kill -9, out of memory, host down) or is stuck.",
        "Check the process manager (`systemctl status`); it should already be restarting it. "
        "If the runner does not come back within a minute, start it by hand and read its log.",
    ),
    "runner.recovered": AlertEntry(
        "info", "Sent by `qcompile watch`: the heartbeat is fresh again after an outage.", "None."
    ),
    "alert.test": AlertEntry(
        "info",
        "Sent by `qcompile alert test`: proves that a sink delivers.",
        "None; confirm receipt for the checklist's alerts item.",
    ),
}
