"""Lifecycle gates: Ideation -> Research -> Validation -> Production (source document §2.1).

Consumes a strategy's resolved config, its lock pins and its backtest evidence (if any report has
run); produces the list of unmet requirements for a phase. The requirement vocabulary is fixed
here, and so is its floor: the source document's requirements, which a project's ``gates`` in
``conf/qcompile.yaml`` may add to but never remove or postpone (``effective_gates``).
Evidence that does not exist is reported missing, never assumed. A sign-off that recorded the
hash of what it signed is checked against that artefact's current hash, which the caller supplies
(this module reads no artefact itself): a changed artefact makes the sign-off stale.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from qcompile.compiler.rules.evidence import EVIDENCE_SHAPE, Evidence, read_evidence
from qcompile.dailystats import DAILY_STATISTICS

NO_BACKTEST = "no backtest has run for this version"  # why there is no evidence (none on file)

PHASES = ("ideation", "research", "validation", "production")

# requirement -> (what it means, the config key a problem points at)
REQUIREMENTS: dict[str, tuple[str, str]] = {
    "brief.alpha_thesis": ("research brief states the alpha thesis", "strategy.alpha_thesis"),
    "brief.expected_signal": (
        "research brief states the expected signal characteristics",
        "strategy.brief.expected_signal",
    ),
    "brief.data_requirements": (
        "research brief states the estimated data requirements",
        "strategy.brief.data_requirements",
    ),
    "signoff.brief": ("researcher signed the research brief", "strategy.signoffs.brief"),
    "evidence.backtest": (
        "a backtest report with evidence exists for this version",
        "strategy.version",
    ),
    "evidence.fresh": (
        "the backtest evidence was produced from the current pinned inputs",
        "strategy.version",
    ),
    "evidence.minimum_sample": (
        "the backtest meets the minimum sample for the strategy type",
        "strategy.type",
    ),
    "signoff.report": ("researcher signed the backtest report", "strategy.signoffs.report"),
    "evidence.out_of_sample": ("an out-of-sample test was run", "strategy.backtest.out_of_sample"),
    "evidence.robustness": (
        "every robustness check listed in the passport has a result",
        "strategy.validation.robustness_checks",
    ),
    "evidence.no_critical_failures": ("validation found no critical failure", "strategy.version"),
    "signoff.validation": (
        "peer reviewer signed the validation report",
        "strategy.signoffs.validation",
    ),
    "checklist.complete": ("every deployment checklist item is signed off", "strategy.checklist"),
    "pins.complete": (
        "strategy, signal and data-source versions are all pinned, with the local data fingerprint",
        "data.local",
    ),
    "signoff.checklist": (
        "quant engineer signed the deployment checklist",
        "strategy.signoffs.checklist",
    ),
    "deployment.real_broker": (
        "orders go to a real broker: the safe state's cancel is a real broker call",
        "deployment.broker",
    ),
}

# The source document's requirements (§2.1, §3.2, §5), each at the phase it guards: a project's
# ``gates`` may add requirements or ask for one earlier, never drop one or ask for it later.
# §3.2: a short sample may enter validation (its report says so at the top) but not production;
# a critical failure (a look-ahead) already bars validation.
FLOORS: dict[str, tuple[str, ...]] = {
    "research": (
        "brief.alpha_thesis",
        "brief.expected_signal",
        "brief.data_requirements",
        "signoff.brief",
    ),
    "validation": (
        "evidence.backtest",
        "evidence.fresh",
        "evidence.no_critical_failures",
        "signoff.report",
    ),
    "production": (
        "evidence.minimum_sample",
        "evidence.out_of_sample",
        "evidence.robustness",
        "signoff.validation",
        "checklist.complete",
        "pins.complete",
        "signoff.checklist",
        "deployment.real_broker",
    ),
}

# The source document's §5 checklist, §5.1-5.4 (§5.5 is the sign-offs above), by stable id.
CHECKLIST_ITEMS: dict[str, str] = {
    "code.signal_matches_backtest": "Signal logic matches the backtest exactly",
    "code.parameters_externalised": "All parameters are externalised in the configuration file",
    "code.no_hardcoded_secrets": "No hard-coded data, symbols or API keys in the strategy logic",
    "code.state_persistence": "State persistence is implemented for all critical state",
    "code.safe_state": "Safe state is triggered on disconnection",
    "code.signal_coverage": "Unit tests cover signal generation with >= 80 % code coverage",
    "code.integration_tests": "Integration tests verify connection, heartbeat and reconnection",
    "data.endpoints_verified": "Data source endpoints are verified and accessible",
    "data.lookback_covered": "Historical lookback covers the backtest period without gaps",
    "data.api_permissions": "API key has permissions for all required endpoints",
    "data.stream_authenticated": "WebSocket connection is established and authenticated",
    "data.rate_limits_tested": "Rate-limit handling is tested under simulated load",
    "data.state_recovery_verified": "State recovery from persisted state is verified end to end",
    "monitoring.heartbeat": "Heartbeat is running and reaching the monitoring system",
    "monitoring.alert_thresholds": "Alert thresholds: max drawdown, win-rate streak, feed heartbeat",
    "monitoring.alerts_tested": "Slack or email alerts are tested and confirmed functional",
    "monitoring.dashboard": "Dashboard shows positions, daily PnL, open orders, signal cursor",
    "docs.passport": "Metadata passport is complete and stored in the repository",
    "docs.report_linked": "Backtest report is in the repository and linked from the passport",
    "docs.runbook": "Runbook: starting, monitoring and stopping the strategy",
    "docs.rollback": "Rollback procedure to restore the previous version",
    "docs.on_call": "On-call contact list is posted in the operations channel",
}


@dataclass(frozen=True)
class Unmet:
    """One requirement a phase needs that the strategy does not meet."""

    phase: str
    requirement: str
    detail: str
    key: str
    waived: str = ""  # who waived it, until when and why: then the gate lets it pass


class SignedArtefact(NamedTuple):
    """What a sign-off covers now: where it lives (for messages) and its hash (None: it is gone)."""

    where: str
    sha256: str | None


def evidence_path(reports_dir: Path, strategy_id: str, version: str) -> Path:
    return reports_dir / strategy_id / version / "evidence.json"


def load_evidence(path: Path, where: str, strategy_id: str) -> Evidence:
    """A version's evidence.json, read against the shape the gates and the checklist read
    (``rules.evidence``): absent, malformed (an ``evidence.malformed`` diagnostic), or the
    document."""
    return read_evidence(
        path, where, EVIDENCE_SHAPE, f"written by `qcompile backtest {strategy_id}`: run it again"
    )


def expected_daily(evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """The backtest's daily statistics (``daily`` in evidence.json), what the runner's deviation
    alert compares the live days with; None when the evidence has none (or predates them)."""
    daily = evidence.get("daily") if isinstance(evidence, dict) else None
    if not isinstance(daily, dict):
        return None
    if not all(isinstance(daily.get(key), int | float) for key in DAILY_STATISTICS):
        return None
    return {key: daily[key] for key in ("days", "window", *DAILY_STATISTICS) if key in daily}


def stale_inputs(evidence: dict[str, Any], expected_inputs: dict[str, Any]) -> list[str]:
    """The pinned inputs that differ from those the evidence was produced from."""
    recorded = evidence.get("inputs") if isinstance(evidence.get("inputs"), dict) else {}
    return [k for k, v in sorted(expected_inputs.items()) if recorded.get(k) != v]


def effective_gates(configured: dict[str, list[str]]) -> dict[str, list[str]]:
    """What each phase requires: the floor, then what the project adds, each requirement at the
    earliest phase either names (asking earlier is stricter, allowed). Listing a floor
    requirement or leaving it out changes nothing here."""
    effective: dict[str, list[str]] = {}
    seen: set[str] = set()
    for phase in PHASES[1:]:
        wanted = [*FLOORS[phase], *configured.get(phase, [])]
        effective[phase] = [r for r in dict.fromkeys(wanted) if r not in seen]
        seen.update(effective[phase])
    return effective


def floor_gaps(configured: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(phase, requirement) of the floor that the project's gates do not ask for by that phase:
    the floor applies anyway, and the build says so."""
    gaps, asked = [], set()
    for phase in PHASES[1:]:
        asked.update(configured.get(phase, []))
        gaps += [(phase, r) for r in FLOORS[phase] if r not in asked]
    return gaps


def beyond_floor(gates: dict[str, list[str]]) -> list[str]:
    """``phase: requirement`` for each requirement the gates ask for beyond the floor: one the
    source document does not name, or asks for only at a later phase."""
    extra, floor = [], set()
    for phase in PHASES[1:]:
        floor.update(FLOORS[phase])
        extra += [f"{phase}: {r}" for r in gates.get(phase, []) if r not in floor]
    return extra


def requirements_for(phase: str, gates: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(phase, requirement) pairs a strategy in ``phase`` must meet, earliest phase first."""
    needed = []
    for earlier in PHASES[1 : PHASES.index(phase) + 1]:
        needed.extend((earlier, r) for r in gates.get(earlier, []))
    return needed


def next_phase(phase: str) -> str | None:
    index = PHASES.index(phase)
    return PHASES[index + 1] if index + 1 < len(PHASES) else None


def evaluate(
    phase: str,
    gates: dict[str, list[str]],
    strategy: dict[str, Any],
    pins: dict[str, Any],
    evidence: dict[str, Any] | None,
    evidence_problem: str,
    expected_inputs: dict[str, Any],
    artefacts: dict[str, SignedArtefact] | None = None,
    unticked: list[str] | None = None,
    waivers: dict[str, str] | None = None,
    deployment: dict[str, Any] | None = None,
) -> list[Unmet]:
    """Every unmet requirement for ``phase`` (cumulative), in gate order.

    ``artefacts`` holds, per sign-off artefact, its current state; a sign-off with a recorded
    ``sha256`` is stale (unmet) when that differs. Without an entry the hash is not checked.
    ``unticked`` lists the checklist items neither verified nor signed (the build evaluates the
    checklist); without it, every item needs a sign-off.
    """
    unmet, signed = [], artefacts or {}
    for gate_phase, requirement in requirements_for(phase, gates):
        detail = _check(
            requirement,
            strategy,
            pins,
            evidence,
            evidence_problem,
            expected_inputs,
            signed,
            unticked,
            deployment,
        )
        if detail:
            key = REQUIREMENTS[requirement][1]
            waived = (waivers or {}).get(requirement, "")
            unmet.append(Unmet(gate_phase, requirement, detail, key, waived))
    return unmet


def active_waivers(strategy: dict[str, Any], on: dt.date) -> tuple[dict[str, str], list[str]]:
    """(requirement -> description) of the strategy's waivers in force on date ``on``, and the
    descriptions of those that have expired (they waive nothing)."""
    active: dict[str, str] = {}
    expired: list[str] = []
    for waiver in strategy.get("waivers") or []:
        text = f"waived by {waiver['by']} until {waiver['until']}: {waiver['reason']}"
        if str(waiver["until"]) >= on.isoformat():
            active[waiver["requirement"]] = text
        else:
            expired.append(f"{waiver['requirement']}: {text}")
    return active, expired


def _check(
    requirement: str,
    strategy: dict[str, Any],
    pins: dict[str, Any],
    evidence: dict[str, Any] | None,
    evidence_problem: str,
    expected_inputs: dict[str, Any],
    artefacts: dict[str, SignedArtefact],
    unticked: list[str] | None = None,
    deployment: dict[str, Any] | None = None,
) -> str:
    """Empty when met, else what is missing."""
    group, _, item = requirement.partition(".")
    if group == "deployment":
        broker = (deployment or {}).get("broker", "paper")
        kind = broker if isinstance(broker, str) else (broker or {}).get("kind")
        if kind == "paper":  # the source document: a placeholder cancel exposes open orders
            return "deployment.broker is the paper broker: production trades at a real one"
        return ""
    if group == "brief":
        value = (
            strategy.get("alpha_thesis")
            if item == "alpha_thesis"
            else (strategy.get("brief") or {}).get(item)
        )
        return (
            ""
            if isinstance(value, str) and value.strip()
            else f"missing {REQUIREMENTS[requirement][1]}"
        )
    if group == "signoff":
        record = (strategy.get("signoffs") or {}).get(item)
        if not isinstance(record, dict) or not record.get("by") or not record.get("at"):
            return f"no {item} sign-off with a timestamp"
        return signoff_staleness(item, record, artefacts.get(item))
    if group == "checklist":
        if unticked is not None:
            missing = unticked
        else:
            signed = strategy.get("checklist") or {}
            missing = [i for i in CHECKLIST_ITEMS if i not in signed]
        return (
            f"{len(missing)} checklist item(s) not ticked: {', '.join(missing)}" if missing else ""
        )
    if group == "pins":
        missing = [name for name, value in sorted(_flat(pins)) if value in (None, "")]
        return f"unpinned: {', '.join(missing)}" if missing else ""
    if evidence is None:
        return evidence_problem if item == "backtest" else "needs the backtest evidence first"
    if item == "backtest":
        return ""
    if item == "fresh":
        stale = stale_inputs(evidence, expected_inputs)
        return (
            f"evidence is stale: {', '.join(stale)} changed since the report ran" if stale else ""
        )
    if item == "minimum_sample":
        sample = evidence.get("minimum_sample") or {}
        if sample.get("met") is True:
            return ""
        return (
            f"sample too small: {sample.get('trades', '?')} trades over {sample.get('years', '?')} "
            f"years, needs {sample.get('required_trades', '?')} over {sample.get('required_years', '?')}"
        )
    if item == "out_of_sample":
        return "" if evidence.get("out_of_sample") else "no out-of-sample result in the evidence"
    if item == "robustness":
        done = evidence.get("robustness") if isinstance(evidence.get("robustness"), dict) else {}
        wanted = (strategy.get("validation") or {}).get("robustness_checks") or []
        missing = [c for c in wanted if c not in done]
        if not done:
            return "no robustness results in the evidence"
        return f"no result for: {', '.join(missing)}" if missing else ""
    if item == "no_critical_failures":
        failures = evidence.get("critical_failures")
        if failures is None:
            return "the evidence does not record critical failures"
        return f"critical failures: {'; '.join(map(str, failures))}" if failures else ""
    raise AssertionError(f"unhandled requirement {requirement}")  # REQUIREMENTS and _check disagree


def signoff_staleness(artefact: str, record: Any, current: SignedArtefact | None) -> str:
    """Why a sign-off no longer covers its artefact, or empty.

    Hand-written sign-offs carry no ``sha256`` and cannot go stale; neither can one whose
    artefact's current state the caller did not supply.
    """
    if not isinstance(record, dict) or current is None:
        return ""
    signed = record.get("sha256")
    if not isinstance(signed, str) or signed == current.sha256:
        return ""
    what = "no longer exists" if current.sha256 is None else "changed since it was signed"
    return (
        f"{artefact} sign-off by {record.get('by')} at {record.get('at')} is stale: "
        f"{current.where} {what}"
    )


def _flat(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            items.extend(_flat(value, name))
        else:
            items.append((name, value))
    return items
