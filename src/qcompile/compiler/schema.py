"""The config model: one cerberus schema per config group, documented field by field.

Each field carries ``meta.doc``; ``qcompile docs`` turns these schemas into
docs/config-reference.md, so the reference cannot drift from what validation enforces.
"""

from __future__ import annotations

from typing import Any

from qcompile.runtimedefaults import ALERT_KINDS

PHASES = ("ideation", "research", "validation", "production")
STRATEGY_TYPES = ("intraday", "daily", "weekly")
INTERVALS = ("1m", "5m", "15m", "30m", "1h", "4h", "12h", "1d", "1w", "1M")
SIGNOFF_ARTEFACTS = ("brief", "report", "validation", "checklist")
SIGNOFF_ROLES = {
    "brief": "researcher",
    "report": "researcher",
    "validation": "peer_reviewer",
    "checklist": "quant_engineer",
}
ID_PATTERN = r"STR-\d{4}-\d{4}"
SEMVER_PATTERN = (
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)
DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"
TIMESTAMP_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})"
EMAIL_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s]+"
IDENTIFIER_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
SYMBOL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def _doc(text: str, **rules: Any) -> dict[str, Any]:
    return {**rules, "meta": {"doc": text}}


def _text(doc: str, required: bool = True, **rules: Any) -> dict[str, Any]:
    return _doc(doc, type="string", required=required, empty=False, **rules)


def _date(doc: str, required: bool = True, nullable: bool = False) -> dict[str, Any]:
    return _doc(
        doc,
        type="string",
        regex=DATE_PATTERN,
        required=required,
        nullable=nullable,
        check_with="calendar_date",
    )


def _signoff(item: bool = False) -> dict[str, Any]:
    """A sign-off: of an artefact (with the hash of what was signed) or of a checklist item
    (with the item's wording it attests to)."""
    record = {
        "by": _text("Email of the person signing.", regex=EMAIL_PATTERN),
        "at": _text(
            "UTC timestamp of the sign-off, ISO 8601 (2026-01-20T14:03:00Z).",
            regex=TIMESTAMP_PATTERN,
            check_with="utc_timestamp",
        ),
    }
    if item:
        record["attests"] = _doc(
            "The item's wording as it was signed, written by `qcompile signoff --item`: the "
            "signature counts only while the item still reads the same.",
            type="string",
            required=False,
        )
    else:
        record["sha256"] = _doc(
            "Hash of the signed artefact, written by `qcompile signoff`.",
            type="string",
            regex=r"[0-9a-f]{64}",
            required=False,
        )
    return {"type": "dict", "schema": record}


def _number(doc: str, minimum: float | None = None, required: bool = True, **rules: Any) -> dict:
    extra = {"min": minimum} if minimum is not None else {}
    return _doc(doc, type="number", required=required, **extra, **rules)


PROJECT_SCHEMA: dict[str, Any] = {
    "project": _doc(
        "Project-wide settings.",
        type="dict",
        required=True,
        schema={
            "name": _text("Team or portfolio name shown on the portfolio index."),
            "signal_packages": _doc(
                "Python packages scanned for `@signal` functions, in order; the first definition of a "
                "name wins. The team's own package goes here beside `qcompile.signals`.",
                type="list",
                required=True,
                empty=False,
                schema={"type": "string", "regex": r"[\w.]+"},
            ),
            "reports_dir": _text(
                "Where backtest reports and their evidence live, relative to the root.",
                required=False,
            ),
            "coverage_report": _text(
                "coverage.py JSON report of the signal tests (`coverage json`), relative to the "
                "root: the checklist's signal-coverage item reads it.",
                required=False,
            ),
        },
    ),
    "gates": _doc(
        "What each phase requires, cumulatively: a strategy declared in a phase must meet the "
        "requirements listed for that phase and every earlier one. The source document's own "
        "requirements are a floor: listed or not, they apply at their phase; a project may add "
        "requirements or ask for one earlier, and a build warns about every floor requirement the "
        "list leaves out (gate.floor). See the lifecycle reference for the vocabulary and the floor.",
        type="dict",
        required=True,
        schema={
            phase: _doc(
                f"Requirements to be in {phase}.",
                type="list",
                required=True,
                schema={"type": "string", "check_with": "gate_requirement"},
            )
            for phase in PHASES[1:]
        },
    ),
    "operations": _doc(
        "Production operations: the weekly review and the quarterly refresh (docs/reviews.md).",
        type="dict",
        required=False,
        schema={
            "review_threshold": _number(
                "Relative deviation of a live statistic from its backtest expectation above "
                "which `qcompile review weekly` flags it (0.2 = 20 %).",
                minimum=0,
                required=False,
            ),
            "refresh_thresholds": _doc(
                "Divergence of a refreshed backtest from its original report that sends the "
                "strategy back to validation: `sharpe` and `win_rate` absolute differences, "
                "`total_return` and `max_drawdown` relative to the original's magnitude, "
                "`trade_count` relative. Unlisted metrics keep their defaults (docs/reviews.md).",
                type="dict",
                required=False,
                keysrules={
                    "type": "string",
                    "allowed": [
                        "sharpe",
                        "total_return",
                        "max_drawdown",
                        "win_rate",
                        "trade_count",
                    ],
                },
                valuesrules={"type": "number", "min": 0},
            ),
        },
    ),
}

STRATEGY_SCHEMA: dict[str, Any] = {
    "strategy": _doc(
        "The metadata passport (source document §2.2).",
        type="dict",
        required=True,
        schema={
            "id": _text(
                "Strategy id, STR-YYYY-NNNN, unique across the portfolio.", regex=ID_PATTERN
            ),
            "name": _text("Human name."),
            "version": _text(
                "Strategy version, semantic (1.3.2); bump it when logic or parameters change.",
                regex=SEMVER_PATTERN,
            ),
            "status": _doc(
                "Lifecycle phase; the gates of this phase and all earlier ones must pass.",
                type="string",
                required=True,
                allowed=list(PHASES),
            ),
            "type": _doc(
                "Strategy type: sets the minimum sample (intraday 500 trades/1 y, daily "
                "200/3 y, weekly 100/5 y).",
                type="string",
                required=True,
                allowed=list(STRATEGY_TYPES),
            ),
            "researcher": _text("Email of the owning researcher.", regex=EMAIL_PATTERN),
            "hypothesis_date": _date("Date the hypothesis was formed."),
            "alpha_thesis": _text("The alpha thesis in one or two sentences."),
            "brief": _doc(
                "The one-page research brief (Ideation's deliverable).",
                type="dict",
                required=True,
                schema={
                    "expected_signal": _text("Expected signal characteristics.", required=False),
                    "data_requirements": _text("Estimated data requirements.", required=False),
                },
            ),
            "signal": _doc(
                "The signal function and its parameters.",
                type="dict",
                required=True,
                schema={
                    "name": _text(
                        "Registered signal name (see docs/signals.md, written by `qcompile docs`).",
                        regex=IDENTIFIER_PATTERN,
                    ),
                    "version": _text(
                        "Signal version the strategy was built on; must match the library.",
                        regex=SEMVER_PATTERN,
                    ),
                    "params": _doc(
                        "Parameter values passed to the signal function.",
                        type="dict",
                        required=True,
                        keysrules={"type": "string", "regex": IDENTIFIER_PATTERN},
                    ),
                    "ranges": _doc(
                        "Tested values of each parameter: exactly the values the parameter grid "
                        "backtests; the chosen value must be one of them.",
                        type="dict",
                        required=False,
                        keysrules={"type": "string"},
                        valuesrules={"type": "list", "empty": False},
                    ),
                    "events": _text(
                        "Event calendar for signals that take ``events`` (gap_fill: earnings "
                        "dates): a CSV or Parquet file relative to the project root with columns "
                        "symbol and date (YYYY-MM-DD, the session date). Pinned by content hash.",
                        required=False,
                        regex=r"[^/~$][^$`]*\.(csv|parquet)",
                    ),
                },
            ),
            "rules": _doc(
                "Entry and exit logic in words, precise enough to reimplement.",
                type="dict",
                required=True,
                schema={
                    "entry": _text("Entry rule."),
                    "exit": _text("Exit rule: stop-loss, take-profit or time-based."),
                },
            ),
            "backtest": _doc(
                "Backtest settings.",
                type="dict",
                required=True,
                schema={
                    "start_date": _date("First day of the backtest window."),
                    "end_date": _date("Last day of the backtest window."),
                    "out_of_sample": _doc(
                        "Held-out period, inside the window, not used to choose parameters.",
                        type="dict",
                        required=False,
                        nullable=True,
                        schema={
                            "start_date": _date("First held-out day."),
                            "end_date": _date("Last held-out day."),
                        },
                    ),
                    "parity_from": _date(
                        "First day of the recent slice of the window that `qcompile parity` "
                        "replays (default: the whole window); the slice must hold the strategy "
                        "type's minimum sample of trades.",
                        required=False,
                        nullable=True,
                    ),
                    "initial_capital": _number(
                        "Starting equity in the account currency.", minimum=1
                    ),
                    "execution": _doc(
                        "When a signal computed on bar t's close trades: next_open (default) "
                        "or same_close (only where the strategy can act at the close).",
                        type="string",
                        required=False,
                        allowed=["next_open", "same_close"],
                    ),
                    "sizing": _doc(
                        "Position sizing.",
                        type="dict",
                        required=False,
                        schema={
                            "method": _doc(
                                "fixed_fraction of equity per position, or equal_weight across "
                                "the universe.",
                                type="string",
                                required=True,
                                allowed=["fixed_fraction", "equal_weight"],
                            ),
                            "fraction": _number(
                                "Fraction of equity per position (fixed_fraction).",
                                minimum=0,
                                required=False,
                                max=1,
                            ),
                            "fractional_shares": _doc(
                                "Allow fractional share quantities.", type="boolean", required=False
                            ),
                        },
                    ),
                    "benchmark": _doc(
                        "What the report compares the strategy with: a symbol of "
                        "universe.symbols or universe.benchmarks, bought at its first close in "
                        "the window and held; default equal_weight, the universe's symbols "
                        "bought in equal parts and held (no rebalancing, no costs).",
                        type="string",
                        required=False,
                        empty=False,
                    ),
                    "seed": _doc(
                        "Seed for Monte Carlo and any other resampling.",
                        type="integer",
                        required=False,
                        min=0,
                    ),
                    "walk_forward": _doc(
                        "Anchored walk-forward analysis: the window is cut into folds + 1 equal "
                        "segments; each fold chooses parameters (best Sharpe over the tested ranges) on "
                        "every segment before it and trades the next one with them.",
                        type="dict",
                        required=False,
                        nullable=True,
                        schema={
                            "folds": _doc(
                                "Number of out-of-sample folds.",
                                type="integer",
                                required=True,
                                min=2,
                                max=20,
                            )
                        },
                    ),
                },
            ),
            "validation": _doc(
                "Validation record: checks planned or done.",
                type="dict",
                required=False,
                schema={
                    "robustness_checks": _doc(
                        "Robustness checks the report must carry.",
                        type="list",
                        required=False,
                        schema={
                            "type": "string",
                            "allowed": [
                                "parameter_sensitivity",
                                "survivorship_bias",
                                "look_ahead_bias",
                                "monte_carlo",
                                "walk_forward",
                                "overfitting",
                            ],
                        },
                    ),
                },
            ),
            "monitoring": _doc(
                "Thresholds the production runner alerts on, each once per breach (docs/runner.md).",
                type="dict",
                required=False,
                schema={
                    "max_drawdown_pct": _number(
                        "Equity this many percent below its peak (drawdown_threshold).",
                        minimum=0,
                        required=False,
                    ),
                    "max_daily_loss_pct": _number(
                        "Equity this many percent below the day's first mark (daily_loss).",
                        minimum=0,
                        required=False,
                    ),
                    "max_losing_streak": _doc(
                        "This many losing trades in a row, costs in (winrate_streak).",
                        type="integer",
                        required=False,
                        min=1,
                    ),
                    "max_exposure_pct": _number(
                        "Gross exposure above this percentage of equity (exposure_limit).",
                        minimum=0,
                        required=False,
                    ),
                    "max_backtest_deviation_pct": _number(
                        "A trailing 20-day daily statistic (win rate, mean return, volatility, "
                        "drawdown) off the backtest's by more than this percentage of its "
                        "magnitude, checked at each day's close (backtest_deviation).",
                        minimum=0,
                        required=False,
                    ),
                },
            ),
            "deployment_record": _doc(
                "Production deployment record.",
                type="dict",
                required=False,
                schema={
                    "deployment_date": _date("Date first deployed.", required=False, nullable=True),
                    "monitoring_alerts": _doc(
                        "Alerts promised for this strategy in production; each but "
                        "data_feed_heartbeat needs its threshold in strategy.monitoring.",
                        type="list",
                        required=False,
                        schema={"type": "string", "allowed": list(ALERT_KINDS)},
                    ),
                    "last_review_date": _date(
                        "Date of the last full code review.", required=False, nullable=True
                    ),
                    "refresh_history": _doc(
                        "Results of `qcompile refresh`, oldest first, appended by the command: "
                        "the date, the result (consistent, diverged, data_changed) and why.",
                        type="list",
                        required=False,
                        schema={
                            "type": "dict",
                            "schema": {
                                "date": _date("Date of the refresh (UTC)."),
                                "result": _doc(
                                    "What the refresh found.",
                                    type="string",
                                    required=True,
                                    allowed=["consistent", "diverged", "data_changed"],
                                ),
                                "reason": _text("Why, in one line.", required=False),
                                "phase": _doc(
                                    "The phase the strategy was moved to, if it was.",
                                    type="string",
                                    required=False,
                                    allowed=list(PHASES),
                                ),
                            },
                        },
                    ),
                },
            ),
            "signoffs": _doc(
                "Sign-offs by artefact: brief and report (researcher), validation (peer "
                "reviewer), checklist (quant engineer).",
                type="dict",
                required=False,
                schema={a: _signoff() for a in SIGNOFF_ARTEFACTS},
            ),
            "checklist": _doc(
                "Manual deployment-checklist items signed off, by item id.",
                type="dict",
                required=False,
                keysrules={"type": "string", "check_with": "checklist_item"},
                valuesrules=_signoff(item=True),
            ),
            "waivers": _doc(
                "Exceptions to gate requirements, each signed and dated: the only way past a "
                "requirement the strategy does not meet. A waiver applies until its `until` "
                "date and shows in the passport, the portfolio index and every build's output.",
                type="list",
                required=False,
                schema={
                    "type": "dict",
                    "schema": {
                        "requirement": _text(
                            "The gate requirement waived (see the lifecycle reference).",
                            check_with="gate_requirement",
                        ),
                        "reason": _text("Why it is acceptable, for reviewers."),
                        "by": _text("Email of the person granting it.", regex=EMAIL_PATTERN),
                        "at": _text(
                            "UTC timestamp of the grant, ISO 8601.",
                            regex=TIMESTAMP_PATTERN,
                            check_with="utc_timestamp",
                        ),
                        "until": _date("Last day the waiver applies (YYYY-MM-DD)."),
                    },
                },
            ),
        },
    ),
}

UNIVERSE_SCHEMA: dict[str, Any] = {
    "universe": _doc(
        "The tradable universe (symbols) and what it is compared against (benchmarks).",
        type="dict",
        required=True,
        schema={
            "name": _text("Universe name, e.g. NASDAQ-100."),
            "as_of": _date("Date the initial set is taken as of."),
            "symbols": _doc(
                "Initial set of symbols.",
                type="list",
                required=True,
                empty=False,
                schema={"type": "string", "regex": SYMBOL_PATTERN},
            ),
            "benchmarks": _doc(
                "Symbols loaded beside the universe and never traded: indices or funds to "
                "compare against (strategy.backtest.benchmark). Not subscribed by the runner.",
                type="list",
                required=False,
                schema={"type": "string", "regex": SYMBOL_PATTERN},
            ),
            "filters": _doc(
                "Filter criteria in words or numbers (market cap, liquidity, sectors).",
                type="dict",
                required=False,
            ),
            "rebalance": _doc(
                "Rebalancing frequency.",
                type="string",
                required=True,
                allowed=["daily", "weekly", "monthly", "quarterly", "none"],
            ),
            "snapshot_date": _date("Snapshot date of the latest rebalance.", required=False),
            "survivorship": _doc(
                "point_in_time (delisted members included), as_of (membership on "
                "as_of), or survivors_only (biased; the report warns).",
                type="string",
                required=True,
                allowed=["point_in_time", "as_of", "survivors_only"],
            ),
        },
    ),
}

COSTS_SCHEMA: dict[str, Any] = {
    "costs": _doc(
        "Cost model, charged on both legs.",
        type="dict",
        required=True,
        schema={
            "name": _text("Cost model name."),
            "slippage_bps": _number("Slippage per fill in basis points of price.", minimum=0),
            "commission_per_share": _number("Commission per share per fill.", minimum=0),
            "min_commission": _number("Minimum commission per order.", minimum=0, required=False),
        },
    ),
}

DATA_SCHEMA: dict[str, Any] = {
    "data": _doc(
        "Data source: its version is part of every strategy's pinned identity.",
        type="dict",
        required=True,
        schema={
            "vendor": _text("Data vendor."),
            "api_version": _text("Vendor API version."),
            "protocol": _doc(
                "Wire protocol variant: documented, or article (the source document's example).",
                type="string",
                required=False,
                allowed=["documented", "article"],
            ),
            "endpoints": _doc(
                "Endpoints used, e.g. kline/1d.",
                type="list",
                required=True,
                empty=False,
                schema={"type": "string"},
            ),
            "markets": _doc(
                "Markets, e.g. US.EQUITY.",
                type="list",
                required=True,
                empty=False,
                schema={"type": "string"},
            ),
            "interval": _doc(
                "Bar interval.", type="string", required=True, allowed=list(INTERVALS)
            ),
            "symbols": _doc(
                "Symbols this source provides.",
                type="list",
                required=True,
                empty=False,
                schema={"type": "string", "regex": SYMBOL_PATTERN},
            ),
            "adjustment": _doc(
                "Price adjustment of the bars.",
                type="string",
                required=True,
                allowed=["raw", "split", "split_dividend"],
            ),
            "timestamp": _doc(
                "Timestamp convention, checked on every bar and message.",
                type="dict",
                required=True,
                schema={
                    "unit": _doc(
                        "Integer timestamp unit.",
                        type="string",
                        required=True,
                        allowed=["s", "ms", "us", "ns"],
                    ),
                    "timezone": _text("IANA timezone of the timestamps, e.g. UTC."),
                    "stamping": _doc(
                        "What a bar's timestamp marks: its open, its close, or (daily bars) "
                        "00:00 of the session date in the declared timezone.",
                        type="string",
                        required=True,
                        allowed=["bar_open", "bar_close", "session_date"],
                    ),
                    "clock_tolerance_s": _number(
                        "Largest difference between a live push's time and this host's clock "
                        "the runner accepts, forward or back (default 300); beyond it the feed "
                        "breaks the data contract and nothing resumes until pushes agree with "
                        "the clock again. Not applied to replays of history through the "
                        "emulator.",
                        minimum=1,
                        required=False,
                    ),
                    "backward_run": _doc(
                        "Pushes in a row older than their symbol's last before the feed's clock "
                        "counts as gone back (a timezone switch, a replayed day) and breaks the "
                        "data contract (default 3); a single late push is only dropped.",
                        type="integer",
                        required=False,
                        min=1,
                    ),
                },
            ),
            "local": _doc(
                "Local copy of the history.",
                type="dict",
                required=False,
                schema={
                    "path": _text("Directory relative to the project root, one file per symbol."),
                    "format": _doc(
                        "File format.", type="string", required=True, allowed=["parquet", "csv"]
                    ),
                },
            ),
            "symbol_suffix": _doc(
                "Appended to a universe symbol to form the vendor's symbol (.US gives AAPL.US).",
                type="string",
                required=False,
            ),
            "rest_base": _text("REST base URL.", required=False, regex=r"https?://\S+"),
            "ws_base": _text("WebSocket base URL.", required=False, regex=r"wss?://\S+"),
            "api_key": _doc(
                "API key reference: always ${oc.env:NAME}, never a literal.",
                type="string",
                required=False,
                nullable=True,
            ),
            "lookback_years": _number(
                "Years of history the strategy needs.", minimum=0, required=False
            ),
        },
    ),
}

DEPLOYMENT_SCHEMA: dict[str, Any] = {
    "deployment": _doc(
        "Where and how strategies run in production.",
        type="dict",
        required=True,
        schema={
            "name": _text("Deployment target name."),
            "broker": _doc(
                "Where orders go: `paper` (the paper broker: fills at the next quote with the "
                "strategy's cost model), or a mapping naming a real broker (docs/brokers.md).",
                type=["string", "dict"],
                required=True,
                check_with="broker",
                schema={
                    "kind": _doc(
                        "paper, alpaca (US equities through alpaca-py) or ccxt (a crypto "
                        "exchange's spot market through ccxt).",
                        type="string",
                        required=True,
                        allowed=["paper", "alpaca", "ccxt"],
                    ),
                    "account": _text(
                        "The account's name or number, shown in the passport, runbook and "
                        "checklist (never a key).",
                        required=False,
                    ),
                    "api_key": _doc(
                        "Alpaca key id or exchange API key: a ${oc.env:NAME} reference.",
                        type="string",
                        required=False,
                    ),
                    "secret": _doc(
                        "Alpaca secret key or exchange secret: a ${oc.env:NAME} reference.",
                        type="string",
                        required=False,
                    ),
                    "endpoint": _doc(
                        "Alpaca: paper (default) or live.",
                        type="string",
                        required=False,
                        allowed=["paper", "live"],
                    ),
                    "exchange": _text(
                        "ccxt: the exchange's ccxt id (binance, kraken, coinbase...).",
                        required=False,
                        regex=r"[a-z][a-z0-9]*",
                    ),
                    "sandbox": _doc(
                        "ccxt: trade on the exchange's test network (default false).",
                        type="boolean",
                        required=False,
                    ),
                    "url": _text(
                        "Another base URL for the broker's API (a local stand-in for a "
                        "rehearsal); the runner alerts when it is set.",
                        required=False,
                        regex=r"https?://\S+",
                    ),
                    "poll_interval_s": _number(
                        "Seconds between the runner's questions about its working orders "
                        "(default 1).",
                        minimum=0.05,
                        required=False,
                    ),
                },
            ),
            "state_store": _doc(
                "Durable state store.",
                type="dict",
                required=True,
                schema={
                    "kind": _doc(
                        "file (atomic writes) or redis (several instances).",
                        type="string",
                        required=True,
                        allowed=["file", "redis"],
                    ),
                    "path": _text(
                        "Directory for the file store, relative to the working directory.",
                        required=False,
                    ),
                    "url": _doc(
                        "Redis URL reference, ${oc.env:NAME}.", type="string", required=False
                    ),
                    "lease_ttl_s": _number(
                        "Redis: seconds a crashed holder's lease lasts (default 10).",
                        minimum=0.1,
                        required=False,
                    ),
                },
            ),
            "heartbeat_interval_s": _number(
                "Seconds between feed pings and liveness heartbeats; two without any message "
                "received is a disconnection.",
                minimum=1,
            ),
            "reconnect": _doc(
                "Reconnect schedule: initial_s doubling up to cap_s, +/- jitter, reset after a "
                "connection stayed up stable_s (defaults 1, 60, 0.1, 30).",
                type="dict",
                required=False,
                schema={
                    "initial_s": _number("First wait.", minimum=0.01, required=False),
                    "cap_s": _number("Longest wait.", minimum=0.01, required=False),
                    "jitter": {"type": "number", "required": False, "min": 0, "max": 0.5},
                    "stable_s": _number("Uptime that resets the schedule.", 0, required=False),
                },
            ),
            "rate_limit_default_s": _number(
                "Pause after a rate limit without Retry-After (default 60, the vendor's).",
                minimum=0,
                required=False,
            ),
            "safe_state_budget_ms": _number(
                "A safe state slower than this raises a second alert (default 100).",
                minimum=1,
                required=False,
            ),
            "history_bars": _doc(
                "Completed bars kept for the signal (default 400).",
                type="integer",
                required=False,
                min=1,
            ),
            "channel": _doc(
                "Feed channel the runner subscribes to and trades on (default ticker); pushes "
                "of any other channel are dropped.",
                type="string",
                required=False,
                allowed=["ticker", "trade"],
            ),
            "max_frame_bytes": _doc(
                "Largest WebSocket frame the runner reads (default 1000000); one announcing "
                "more closes the connection unread (1009): safe state, alert, reconnect.",
                type="integer",
                required=False,
                min=1024,
            ),
            "max_queued_pushes": _doc(
                "Pushes waiting for the decision thread before the runner counts as lagging "
                "(runner.lagging) and coalesces each symbol's further pushes into the bar being "
                "built (default 2000); at four times as many entries the feed thread waits.",
                type="integer",
                required=False,
                min=10,
            ),
            "max_malformed_per_minute": _doc(
                "Malformed pushes dropped within a minute before the feed counts as breaking "
                "the data contract: safe state and reconnect (default 10).",
                type="integer",
                required=False,
                min=0,
            ),
            "alerts": _doc(
                "Alert sinks.",
                type="list",
                required=True,
                schema={
                    "type": "dict",
                    "schema": {
                        "kind": {
                            "type": "string",
                            "required": True,
                            "allowed": ["log", "webhook", "email"],
                        },
                        "url": {"type": "string", "required": False},
                        "to": {
                            "type": "list",
                            "required": False,
                            "schema": {"type": "string", "regex": EMAIL_PATTERN},
                        },
                        "smtp_host": {"type": "string", "required": False},
                        "smtp_port": {"type": "integer", "required": False, "min": 1, "max": 65535},
                        "from": {"type": "string", "required": False, "regex": EMAIL_PATTERN},
                        "username": {"type": "string", "required": False},
                        "password": {"type": "string", "required": False},
                        "starttls": {"type": "boolean", "required": False},
                        "timeout_s": {"type": "number", "required": False, "min": 0.1},
                        "name": {"type": "string", "required": False},
                    },
                },
            ),
            "on_call": _doc(
                "On-call contacts, first is primary.",
                type="list",
                required=True,
                empty=False,
                schema={
                    "type": "dict",
                    "schema": {
                        "name": {"type": "string", "required": True, "empty": False},
                        "email": {"type": "string", "required": True, "regex": EMAIL_PATTERN},
                        "phone": {"type": "string", "required": False},
                    },
                },
            ),
        },
    ),
}

# The composed config is validated against all groups at once; keys are the top-level packages.
COMPOSED_SCHEMA: dict[str, Any] = {
    **PROJECT_SCHEMA,
    **STRATEGY_SCHEMA,
    **UNIVERSE_SCHEMA,
    **COSTS_SCHEMA,
    **DATA_SCHEMA,
    **DEPLOYMENT_SCHEMA,
}

GROUP_SCHEMAS: dict[str, dict[str, Any]] = {
    "qcompile.yaml": PROJECT_SCHEMA,
    "strategy": STRATEGY_SCHEMA,
    "universe": UNIVERSE_SCHEMA,
    "costs": COSTS_SCHEMA,
    "data": DATA_SCHEMA,
    "deployment": DEPLOYMENT_SCHEMA,
}
