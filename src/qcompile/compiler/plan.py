"""Stage 4 (plan): compiled strategies -> the list of artefacts to render, with their contexts.

Consumes :class:`CompiledStrategy` records (config, lock, gate results); produces, per strategy,
the artefacts under ``generated/<id>/`` and a hash of everything they are rendered from, plus the
portfolio index. All logic that decides *what* an artefact says lives here, in Python; the
templates only place these values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from qcompile import __version__
from qcompile.alertcatalog import ALERTS
from qcompile.compiler.compose import ComposedStrategy
from qcompile.compiler.generator import generator_pin
from qcompile.compiler.lock import Lock
from qcompile.compiler.render import render
from qcompile.compiler.rules.checklist import ItemStatus
from qcompile.compiler.rules.gates import Unmet, beyond_floor, next_phase
from qcompile.compiler.schema import SIGNOFF_ROLES
from qcompile.hashing import sha256_json
from qcompile.runtimedefaults import RATE_LIMIT_DEFAULT_S, SAFE_STATE_BUDGET_MS, reconnect_policy

REGENERATE = "qcompile build"
ENV_REFERENCE = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")
STRATEGY_TEMPLATES = (
    "passport.yaml.j2",
    "config.yaml.j2",
    "params.yaml.j2",
    "backtest.py.j2",
    "runner.py.j2",
    "runbook.md.j2",
    "rollback.sh.j2",
    "checklist.md.j2",
)
INDEX_TEMPLATE = "index.md.j2"


@dataclass
class CompiledStrategy:
    """Everything the compiler knows about one strategy after compose, validate, lock and gates."""

    composed: ComposedStrategy
    data: dict[str, Any]
    lock: Lock
    evidence_file: str  # relative to the root; may not exist
    evidence_present: bool
    unmet_next: list[Unmet] = field(default_factory=list)
    checklist: list[ItemStatus] = field(default_factory=list)
    gates: dict[str, list[str]] = field(default_factory=dict)  # effective, the floor applied
    waived: list[Unmet] = field(default_factory=list)  # unmet for its phase, passed by a waiver
    # the backtest evidence's daily statistics: what the runner's deviation alert compares with
    expected_daily: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.data["strategy"]["id"])


@dataclass(frozen=True)
class Artefact:
    path: str  # relative to generated/
    template: str
    context: dict[str, Any]


@dataclass
class StrategyPlan:
    id: str
    source: str
    inputs_sha256: str
    artefacts: list[Artefact]
    summary: dict[str, Any]


def _header(compiled: CompiledStrategy) -> dict[str, Any]:
    return {
        "generator": f"qcompile {__version__}",
        "source": compiled.composed.file.path,
        "overrides": compiled.composed.override_texts,
        "regenerate": REGENERATE,
    }


def passport(compiled: CompiledStrategy) -> dict[str, Any]:
    """The source document's §2.2 passport, every field filled from config and lock."""
    data, pins = compiled.data, compiled.lock.pins
    strategy, source, universe, costs = (
        data["strategy"],
        data["data"],
        data["universe"],
        data["costs"],
    )
    deployment, backtest = data["deployment"], strategy["backtest"]
    record = strategy.get("deployment_record") or {}
    following = next_phase(strategy["status"])
    return {
        "identity": {
            "strategy_id": strategy["id"],
            "name": strategy["name"],
            "version": strategy["version"],
            "status": strategy["status"],
            "type": strategy["type"],
        },
        "research": {
            "researcher": strategy["researcher"],
            "hypothesis_date": strategy["hypothesis_date"],
            "alpha_thesis": strategy["alpha_thesis"],
            "brief": strategy["brief"],
        },
        "signal": {
            "signal": {
                **strategy["signal"],
                "source_sha256": pins["signal"]["source_sha256"],
                "module": pins["signal"]["module"],
            },
            "rules": strategy["rules"],
        },
        "data_sources": [
            {
                "source": source["vendor"],
                "api_version": source["api_version"],
                "protocol": pins["data"]["protocol"],
                "endpoints": source["endpoints"],
                "markets": source["markets"],
                "interval": source["interval"],
                "adjustment": source["adjustment"],
                "timestamp_convention": pins["data"]["timestamp"],
                "lookback_years": source.get("lookback_years"),
                "local_path": (source.get("local") or {}).get("path"),
                "fingerprint": pins["data"]["fingerprint"],
            }
        ],
        "backtest": {
            "start_date": backtest["start_date"],
            "end_date": backtest["end_date"],
            "out_of_sample": backtest.get("out_of_sample"),
            "universe": universe["name"],
            "universe_as_of": universe["as_of"],
            "initial_capital": backtest["initial_capital"],
            "slippage_bps": costs["slippage_bps"],
            "commission_per_share": costs["commission_per_share"],
            "min_commission": costs.get("min_commission"),
            "execution": backtest.get("execution", "next_open"),
            "report": compiled.evidence_file.removesuffix("evidence.json") + "report.md",
        },
        "validation": {
            "robustness_checks": (strategy.get("validation") or {}).get("robustness_checks", []),
            "evidence": compiled.evidence_file if compiled.evidence_present else None,
        },
        "deployment": {
            "target": deployment["name"],
            "broker": broker_summary(deployment),
            "deployment_date": record.get("deployment_date"),
            "parameters_file": f"generated/{strategy['id']}/params.yaml",
            "signal_version": f"{strategy['signal']['name']}@{strategy['signal']['version']}",
            "monitoring_alerts": record.get("monitoring_alerts", []),
            "last_review_date": record.get("last_review_date"),
            "on_call": deployment["on_call"],
        },
        "signoffs": strategy.get("signoffs") or {},
        "checklist": strategy.get("checklist") or {},
        "lifecycle": {
            "phase": strategy["status"],
            "next_phase": following,
            "next_gate_missing": [
                f"{u.requirement}: {u.detail}" + (f" ({u.waived})" if u.waived else "")
                for u in compiled.unmet_next
            ],
            "waived": [f"{u.requirement}: {u.detail}; {u.waived}" for u in compiled.waived],
            "gates": compiled.gates,
            "beyond_the_floor": beyond_floor(compiled.gates),
        },
        "pins": pins,
    }


def _plain(value: float) -> float | int:
    """A whole number shown as one (60, not 60.0) in the runbook."""
    return int(value) if float(value).is_integer() else value


def runtime_parameters(compiled: CompiledStrategy) -> dict[str, Any]:
    """What the backtest harness and the production runner read at start-up: nothing else."""
    data, pins = compiled.data, compiled.lock.pins
    strategy, source = data["strategy"], data["data"]
    return {
        "strategy": {k: strategy[k] for k in ("id", "name", "version", "type")},
        "signal": {
            "name": strategy["signal"]["name"],
            "version": strategy["signal"]["version"],
            "source_sha256": pins["signal"]["source_sha256"],
            "packages": data["project"]["signal_packages"],
            "params": strategy["signal"]["params"],
            "ranges": strategy["signal"].get("ranges") or {},
        },
        "universe": {
            k: data["universe"].get(k)
            for k in (
                "name",
                "as_of",
                "symbols",
                "benchmarks",
                "filters",
                "rebalance",
                "snapshot_date",
                "survivorship",
            )
        },
        "rules": strategy["rules"],
        "costs": {k: v for k, v in data["costs"].items() if k != "name"},
        "backtest": {
            "start_date": strategy["backtest"]["start_date"],
            "end_date": strategy["backtest"]["end_date"],
            "out_of_sample": strategy["backtest"].get("out_of_sample"),
            "initial_capital": strategy["backtest"]["initial_capital"],
            "execution": strategy["backtest"].get("execution", "next_open"),
            "sizing": strategy["backtest"].get("sizing") or {"method": "equal_weight"},
            "benchmark": strategy["backtest"].get("benchmark", "equal_weight"),
            "seed": strategy["backtest"].get("seed", 0),
            "walk_forward": strategy["backtest"].get("walk_forward"),
            "reports_dir": data["project"].get("reports_dir", "reports"),
        },
        "data": dict(source),
        "deployment": {k: v for k, v in data["deployment"].items() if k not in ("name", "on_call")},
        "pins": pins,
        # what a report's evidence must record as its inputs for the gates to accept it
        "evidence_inputs": compiled.lock.backtest_inputs,
        "monitoring": {
            "thresholds": dict(strategy.get("monitoring") or {}),
            "backtest_daily": compiled.expected_daily,
            "backtest_evidence": compiled.evidence_file if compiled.expected_daily else None,
        },
    }


def _environment_names(value: Any) -> set[str]:
    """Names of the environment variables a config subtree references (never their values)."""
    if isinstance(value, dict):
        return set().union(*(_environment_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_environment_names(v) for v in value))
    return set(ENV_REFERENCE.findall(value)) if isinstance(value, str) else set()


def broker_summary(deployment: dict[str, Any]) -> dict[str, Any]:
    """Where a deployment's orders go, for the passport, runbook and checklist: the broker, its
    endpoint and account, never a key (the key references are in the environment list)."""
    broker = deployment.get("broker", "paper")
    settings = {"kind": broker} if isinstance(broker, str) else dict(broker)
    kind = settings.get("kind", "paper")
    if kind == "alpaca":
        endpoint = settings.get("endpoint", "paper")
        where = f"Alpaca ({endpoint} endpoint)"
    elif kind == "ccxt":
        sandbox = " (sandbox)" if settings.get("sandbox") else ""
        where = f"{settings.get('exchange')} spot through ccxt{sandbox}"
    else:
        where = "the paper broker"
    account = settings.get("account")
    return {
        "kind": kind,
        "description": where + (f", account {account}" if account else ""),
        "account": account,
        "url": settings.get("url"),  # a stand-in's address, shown so that no one misses it
        "real": kind != "paper",
    }


def state_directory(store: dict[str, Any], strategy_id: str) -> str | None:
    """Where a file state store (a deployment's ``state_store``) keeps a strategy's state, journal
    and logs, relative to the project; None for other stores."""
    return f"{store.get('path', 'state')}/{strategy_id}" if store["kind"] == "file" else None


def runbook(compiled: CompiledStrategy) -> dict[str, Any]:
    """How to start, monitor, stop and roll back this strategy: every value from its config."""
    data, pins = compiled.data, compiled.lock.pins
    strategy, deployment, source = data["strategy"], data["deployment"], data["data"]
    strategy_id = compiled.id
    store = deployment["state_store"]
    directory = state_directory(store, strategy_id)
    if directory is not None:
        state = {
            "kind": "file",
            "where": directory,
            "state": f"{directory}/state.json",
            "heartbeat": f"{directory}/heartbeat.json",
            "ledger": f"{directory}/state.json (paper_ledger)",
            "lease": f"{directory}/lease",
        }
    else:
        prefix = f"qcompile:{strategy_id}"
        state = {
            "kind": "redis",
            "where": f"Redis ({store.get('url', '')}), keys {prefix}:*",
            "state": f"{prefix}:state",
            "heartbeat": f"{prefix}:heartbeat",
            "ledger": f"{prefix}:state (paper_ledger)",
            "lease": f"{prefix}:lease",
        }
    reconnect = {k: _plain(v) for k, v in reconnect_policy(deployment).items()}
    return {
        "id": strategy_id,
        "name": strategy["name"],
        "version": strategy["version"],
        "phase": strategy["status"],
        "signal": pins["signal"],
        "data": {
            "vendor": source["vendor"],
            "api_version": source["api_version"],
            "interval": source["interval"],
            "timestamp": pins["data"]["timestamp"],
            "ws_base": source.get("ws_base"),
            "rest_base": source.get("rest_base"),
            "local": (source.get("local") or {}).get("path"),
        },
        "environment": sorted(_environment_names({"data": source, "deployment": deployment})),
        "deployment": {
            "name": deployment["name"],
            "broker": broker_summary(deployment),
            "heartbeat_interval_s": deployment["heartbeat_interval_s"],
            "silence_s": 2 * deployment["heartbeat_interval_s"],
            "reconnect": reconnect,
            "rate_limit_default_s": _plain(
                deployment.get("rate_limit_default_s", RATE_LIMIT_DEFAULT_S)
            ),
            "safe_state_budget_ms": _plain(
                deployment.get("safe_state_budget_ms", SAFE_STATE_BUDGET_MS)
            ),
            "alert_sinks": [a["kind"] for a in deployment["alerts"]],
            "on_call": deployment["on_call"],
        },
        "state": state,
        "alerts": [
            {
                "key": key,
                "severity": entry.severity,
                "meaning": entry.meaning,
                "action": entry.action,
            }
            for key, entry in ALERTS.items()
        ],
    }


CHECKLIST_SECTIONS = (
    ("code", "Code review"),
    ("data", "Data and infrastructure"),
    ("monitoring", "Monitoring and alerting"),
    ("docs", "Documentation and handoff"),
)


def checklist(compiled: CompiledStrategy) -> dict[str, Any]:
    """The §5 checklist as the build evaluated it (the same list the production gate reads).
    The engineer's own sign-off of this checklist is not shown: it signs this file's hash."""
    strategy = compiled.data["strategy"]
    items = compiled.checklist
    recorded = strategy.get("signoffs") or {}
    signoffs = []
    for artefact in ("brief", "report", "validation"):
        record = recorded.get(artefact) or {}
        signed = f"{record['by']} at {record['at']}" if record.get("by") else "not signed"
        signoffs.append({"artefact": artefact, "role": SIGNOFF_ROLES[artefact], "signed": signed})
    return {
        "id": compiled.id,
        "name": strategy["name"],
        "version": strategy["version"],
        "sections": CHECKLIST_SECTIONS,
        "items": [item.__dict__ for item in items],
        "ticked": sum(item.ticked for item in items),
        "total": len(items),
        "signoffs": signoffs,
        "deployment": compiled.data["deployment"]["name"],
        "broker": broker_summary(compiled.data["deployment"]),
    }


def checklist_bytes(compiled: CompiledStrategy) -> bytes:
    """The checklist.md this strategy's build writes (what the quant engineer signs)."""
    return render(
        "checklist.md.j2", {"header": _header(compiled), "checklist": checklist(compiled)}
    )


def rollback(compiled: CompiledStrategy) -> dict[str, Any]:
    """Values the rollback script pins; every one reaches the shell through ``shquote``."""
    deployment = compiled.data["deployment"]
    log_dir = state_directory(deployment["state_store"], compiled.id) or "logs"
    heartbeat = deployment["heartbeat_interval_s"]
    return {
        "strategy_id": compiled.id,
        "log_file": f"{log_dir}/runner.log",
        "stop_timeout_s": 60,
        # a restarted runner writes its heartbeat once connected; allow two intervals and start-up
        "heartbeat_timeout_s": int(2 * heartbeat + 60),
        "real_broker": broker_summary(deployment)["real"],
    }


def plan_strategy(compiled: CompiledStrategy) -> StrategyPlan:
    strategy_id = compiled.id
    header = _header(compiled)
    contexts = {
        "passport.yaml.j2": {"header": header, "passport": passport(compiled)},
        "config.yaml.j2": {"header": header, "config": compiled.data, "strategy_id": strategy_id},
        "params.yaml.j2": {
            "header": header,
            "params": runtime_parameters(compiled),
            "strategy_id": strategy_id,
        },
        "backtest.py.j2": {"header": header, "strategy_id": strategy_id},
        "runner.py.j2": {"header": header, "strategy_id": strategy_id},
        "runbook.md.j2": {"header": header, "runbook": runbook(compiled)},
        "rollback.sh.j2": {"header": header, **rollback(compiled)},
        "checklist.md.j2": {"header": header, "checklist": checklist(compiled)},
    }
    artefacts = [
        Artefact(f"{strategy_id}/{t.removesuffix('.j2')}", t, contexts[t])
        for t in STRATEGY_TEMPLATES
    ]
    strategy = compiled.data["strategy"]
    summary = {
        "id": strategy_id,
        "name": strategy["name"],
        "phase": strategy["status"],
        "version": strategy["version"],
        "signal": f"{strategy['signal']['name']}@{strategy['signal']['version']}",
        "signal_sha256": compiled.lock.pins["signal"]["source_sha256"],
        "data": "{vendor} {api_version} {interval} ({unit}, {timezone}, {stamping})".format(
            vendor=compiled.data["data"]["vendor"],
            api_version=compiled.data["data"]["api_version"],
            interval=compiled.data["data"]["interval"],
            **compiled.lock.pins["data"]["timestamp"],
        ),
        "data_fingerprint": (compiled.lock.pins["data"]["fingerprint"] or {}).get("content_sha256"),
        "last_review_date": (strategy.get("deployment_record") or {}).get("last_review_date"),
        "next_phase": next_phase(strategy["status"]),
        "next_gate_missing": [
            u.requirement + (" (waived)" if u.waived else "") for u in compiled.unmet_next
        ],
        "waived": [u.requirement for u in compiled.waived],
        "source": compiled.composed.file.path,
    }
    inputs = sha256_json({"contexts": contexts, "generator": generator_pin()})
    return StrategyPlan(strategy_id, compiled.composed.file.path, inputs, artefacts, summary)


def plan_index(
    project_name: str, summaries: list[dict[str, Any]], gates: dict[str, list[str]]
) -> Artefact:
    ordered = sorted(summaries, key=lambda s: s["id"])
    return Artefact(
        "index.md",
        INDEX_TEMPLATE,
        {
            "generator": f"qcompile {__version__}",
            "regenerate": REGENERATE,
            "project_name": project_name,
            "strategies": ordered,
            "phase_counts": {
                p: sum(1 for s in ordered if s["phase"] == p)
                for p in ("ideation", "research", "validation", "production")
            },
            "gates": gates,
            "beyond_the_floor": beyond_floor(gates),
        },
    )
