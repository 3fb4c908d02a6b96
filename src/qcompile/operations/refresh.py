"""The quarterly refresh: re-run every production backtest and compare it with its report.

Glue, like research/workflows.py. Each production strategy's backtest runs from its committed
generated/<id>/params.yaml, the pins production runs, through the runtime's normal checks; the
result goes to reports/<id>/<version>/refresh/<date>/ beside (never over) the original report.

Outcomes, recorded in the strategy's YAML under ``strategy.deployment_record.refresh_history``:

- ``consistent``: every key metric within its threshold; the phase is unchanged.
- ``diverged``: a metric moved beyond its threshold; the strategy is demoted through the same gate
  machinery as ``qcompile promote`` (to validation; to research if the build no longer accepts it
  in validation either, e.g. its evidence is stale).
- ``data_changed``: the local data no longer matches the pinned fingerprint, so the pinned
  backtest cannot be reproduced at all. Nothing is demoted (no result says the strategy
  changed); the remedy is `qcompile build` to re-pin, then a new refresh. It is reported as a
  divergence of the inputs and makes the command fail.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qcompile.errors import QcompileError
from qcompile.project import Project

# metric -> (default threshold, how the difference is measured)
DEFAULT_THRESHOLDS: dict[str, tuple[float, str]] = {
    "sharpe": (0.5, "absolute"),
    "total_return": (0.5, "relative"),
    "max_drawdown": (0.5, "relative"),
    "win_rate": (0.1, "absolute"),
    "trade_count": (0.25, "relative"),
}
DATA_CHANGED = "changed since it was pinned"  # runner._check_data's wording


@dataclass(frozen=True)
class Comparison:
    metric: str
    original: float | None
    refreshed: float | None
    difference: float | None  # absolute, or relative to |original|, as ``kind`` says
    threshold: float
    kind: str
    diverged: bool


@dataclass(frozen=True)
class Refresh:
    strategy_id: str
    version: str
    result: str  # consistent | diverged | data_changed
    reason: str
    directory: str | None  # the refreshed report, relative to the root
    comparisons: list[Comparison] = field(default_factory=list)
    previous_phase: str = "production"
    phase: str = "production"  # after any demotion


def thresholds(operations: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """The defaults, overridden by ``operations.refresh_thresholds``."""
    configured = operations.get("refresh_thresholds") or {}
    return {
        metric: (float(configured.get(metric, default)), kind)
        for metric, (default, kind) in DEFAULT_THRESHOLDS.items()
    }


def compare(
    original: Mapping[str, Any], refreshed: Mapping[str, Any], limits: Mapping[str, Any]
) -> list[Comparison]:
    rows = []
    for metric, (limit, kind) in limits.items():
        before, after = original.get(metric), refreshed.get(metric)
        if before is None or after is None:
            # a metric appearing or vanishing (no trades, flat curve) is itself a divergence
            difference = None
            diverged = (before is None) != (after is None)
        else:
            change = abs(float(after) - float(before))
            if kind == "relative":
                change = change / abs(float(before)) if before else (0.0 if not change else 1e9)
            difference, diverged = change, change > limit
        rows.append(Comparison(metric, before, after, difference, limit, kind, diverged))
    return rows


def refresh(
    project: Project,
    only: list[str] | None = None,
    *,
    today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
) -> list[Refresh]:
    """Refresh every production strategy (or those in ``only``); returns one result each."""
    from qcompile.compiler.build import compile_project

    # gates are not enforced: a production strategy whose data changed under it fails its
    # evidence.fresh gate, and that is exactly the case the refresh must run and record
    compilation = compile_project(project, [], only, enforce_gates=False)
    if only:  # strategies named on the command line: each must be one the refresh can run
        elsewhere = [
            f"{c.id} is not in production (phase {c.data['strategy']['status']})"
            for c in sorted(compilation.strategies, key=lambda c: c.id)
            if c.data["strategy"]["status"] != "production"
        ]
        if elsewhere:
            raise QcompileError(
                f"{'; '.join(elsewhere)}: only a production strategy's pinned backtest is "
                "refreshed; nothing was refreshed"
            )
    day = today().isoformat()
    results = []
    for compiled in sorted(compilation.strategies, key=lambda c: c.id):
        if compiled.data["strategy"]["status"] != "production":
            continue
        limits = thresholds(compiled.data.get("operations") or {})
        outcome = _refresh_one(project, compiled, limits, day)
        results.append(_record(project, compiled.id, outcome, day))
    return results


def _refresh_one(project: Project, compiled: Any, limits: Mapping[str, Any], day: str) -> Refresh:
    from qcompile.compiler.build import built_params_file
    from qcompile.compiler.plan import runtime_parameters
    from qcompile.research.backtest.runner import BacktestError, backtest

    strategy_id = compiled.id
    version = str(compiled.data["strategy"]["version"])
    params = runtime_parameters(compiled)
    params_file = built_params_file(project, strategy_id, params, data_may_differ=True)
    evidence_file = project.root / compiled.evidence_file
    if not evidence_file.is_file():
        raise QcompileError(f"{compiled.evidence_file} not found: nothing to compare with")
    # the build read it (its shape checked: rules/evidence.py) before this was called
    original = json.loads(evidence_file.read_text(encoding="utf-8"))
    if not original.get("metrics"):
        raise QcompileError(f"{compiled.evidence_file} holds no metrics: nothing to compare with")
    target = evidence_file.parent / "refresh" / day
    try:
        report = backtest(params_file, project.root, target, html_report=False)
    except BacktestError as error:
        if DATA_CHANGED not in str(error):
            raise
        return Refresh(
            strategy_id, version, "data_changed", f"data changed since pinned: {error}", None
        )
    refreshed = json.loads(report.evidence.read_text(encoding="utf-8"))
    rows = compare(original["metrics"], refreshed["metrics"], limits)
    diverged = [r for r in rows if r.diverged]
    reason = (
        "; ".join(_describe(r) for r in diverged)
        if diverged
        else "every key metric within its threshold"
    )
    return Refresh(
        strategy_id,
        version,
        "diverged" if diverged else "consistent",
        reason,
        project.rel(target),
        rows,
    )


def _describe(row: Comparison) -> str:
    def show(value: float | None) -> str:
        return "none" if value is None else f"{value:.4g}"

    change = "n/a" if row.difference is None else f"{row.difference:.3g}"
    return (
        f"{row.metric} {show(row.original)} -> {show(row.refreshed)} "
        f"({row.kind} change {change} > {row.threshold:g})"
    )


def _record(project: Project, strategy_id: str, outcome: Refresh, day: str) -> Refresh:
    """Demote a diverged strategy, then append the outcome to its refresh history."""
    from dataclasses import replace

    from qcompile.lifecycle.conf_edit import load_strategy, write_key
    from qcompile.lifecycle.signoff import promote

    phase = outcome.previous_phase
    if outcome.result == "diverged":
        refusals = []
        for lower in ("validation", "research"):
            try:
                phase = promote(project, strategy_id, lower).phase
                break
            except QcompileError as error:  # that gate is not met either: go one further
                refusals.append(str(error).splitlines()[0])
        else:
            raise QcompileError(
                f"{strategy_id} diverged ({outcome.reason}) but could not be demoted: "
                + "; ".join(refusals)
            )
    composed, config = load_strategy(project, strategy_id)
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    record = (config["strategy"].get("deployment_record") or {}).get("refresh_history") or []
    entry: dict[str, Any] = {"date": day, "result": outcome.result, "reason": outcome.reason}
    if phase != outcome.previous_phase:
        entry["phase"] = phase
    # dates quoted as conf/ writes them: unquoted, YAML would load a date, not a string
    history = [
        CommentedMap({k: DoubleQuotedScalarString(v) if k == "date" else v for k, v in e.items()})
        for e in [*record, entry]
    ]
    write_key(project, composed.file, ("strategy", "deployment_record", "refresh_history"), history)
    return replace(outcome, phase=phase)


def summary_rows(results: list[Refresh]) -> list[dict[str, str]]:
    """One row per strategy for the CLI's table."""
    rows = []
    for item in results:
        metrics = {c.metric: c for c in item.comparisons}
        sharpe = metrics.get("sharpe")
        rows.append(
            {
                "id": item.strategy_id,
                "version": item.version,
                "result": item.result,
                "sharpe": "n/a"
                if sharpe is None
                else f"{_fmt(sharpe.original)} -> {_fmt(sharpe.refreshed)}",
                "phase": item.phase
                if item.phase == item.previous_phase
                else f"{item.previous_phase} -> {item.phase}",
                "report": item.directory or "-",
                "reason": item.reason,
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
