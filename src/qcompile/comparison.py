"""A backtest before and after a change: the metrics side by side, and the inputs that changed.

Consumes two evidence.json documents and the two params.yaml files they were computed from;
produces rows for `qcompile diff` and for report.html's "since the committed report" section. A
reviewer who changes a parameter sees what it did to the numbers and what else moved with it
(data, signal code, costs), instead of two reports to compare by eye.
"""

from __future__ import annotations

import json
import math
from typing import Any

# label, where in evidence.json, how to show it
METRICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("total return", ("metrics", "total_return"), "percent"),
    ("annualised return", ("metrics", "annualised_return"), "percent"),
    ("Sharpe ratio", ("metrics", "sharpe"), "number"),
    ("Sortino ratio", ("metrics", "sortino"), "number"),
    ("max drawdown", ("metrics", "max_drawdown"), "percent"),
    ("win rate", ("metrics", "win_rate"), "percent"),
    ("profit factor", ("metrics", "profit_factor"), "number"),
    ("trades", ("metrics", "trade_count"), "count"),
    ("exposure", ("metrics", "exposure"), "percent"),
    ("out-of-sample Sharpe", ("out_of_sample", "sharpe"), "number"),
    ("alpha against the benchmark", ("benchmark", "relative", "alpha"), "percent"),
    ("beta", ("benchmark", "relative", "beta"), "number"),
    ("information ratio", ("benchmark", "relative", "information_ratio"), "number"),
    ("deflated Sharpe ratio", ("robustness", "overfitting", "deflated_sharpe"), "number"),
    ("probability of backtest overfitting", ("robustness", "overfitting", "pbo"), "number"),
    ("Monte Carlo p5 final return", ("robustness", "monte_carlo", "final_return", "p5"), "percent"),
    ("eligible for production", ("eligible_for_production",), "flag"),
)

# the parts of params.yaml that decide a backtest's numbers, by their params.yaml key
INPUTS = ("strategy.version", "signal", "universe", "costs", "backtest", "data", "pins.data")
IGNORED = ("signal.packages", "backtest.reports_dir", "pins.data.fingerprint.checked_at")


def _at(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def show(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "flag":
        return "yes" if value else "no"
    if not isinstance(value, int | float) or isinstance(value, bool):  # a hand-edited file
        return f"{value!r} (not a number)"
    if kind == "percent":
        return f"{value * 100:.2f} %"
    if kind == "count":
        return str(value)
    return f"{value:.3f}"


def _change(before: Any, after: Any, kind: str) -> str:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (before, after))
    if before == after:
        return ""
    if not numbers or kind == "flag":
        return "changed"
    delta = after - before
    if kind == "percent":
        return f"{delta * 100:+.2f} pp"
    if kind == "count":
        return f"{delta:+d}"
    return f"{delta:+.3f}"


def metric_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, str]]:
    """Every metric of ``METRICS`` either side has: label, before, after, change ('' if none)."""
    rows = []
    for label, path, kind in METRICS:
        old, new = _at(before, path), _at(after, path)
        if old is None and new is None:
            continue
        rows.append(
            {
                "label": label,
                "before": show(old, kind),
                "after": show(new, kind),
                "change": _change(old, new, kind),
            }
        )
    return rows


def _flatten(value: Any, prefix: str) -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value if isinstance(value, str) else json.dumps(value, sort_keys=True)}


def input_changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, before, after) for each input of ``INPUTS`` that differs, in params.yaml's terms;
    a key present on one side only shows '(none)' on the other."""
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    for key in INPUTS:
        path = tuple(key.split("."))
        old.update(_flatten(_at(before, path), key))
        new.update(_flatten(_at(after, path), key))
    keys = list(new) + [k for k in old if k not in new]
    return [
        (key, old.get(key, "(none)"), new.get(key, "(none)"))
        for key in keys
        if old.get(key) != new.get(key) and not key.startswith(IGNORED)
    ]


def stale(evidence: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether ``evidence`` was computed from other inputs than ``params`` pins (config, data or
    signal changed since): its numbers then do not describe that side."""
    recorded = evidence.get("inputs") or {}
    expected = params.get("evidence_inputs") or {}
    return any(recorded.get(k) != v for k, v in expected.items())


def text(
    before: tuple[dict[str, Any], dict[str, Any]] | None,
    after: tuple[dict[str, Any], dict[str, Any]] | None,
    where: str,
) -> list[str]:
    """`qcompile diff`'s metrics section: the two sides' (evidence, params), or None where a side
    has no report."""
    if before is None and after is None:
        return [f"metrics: no backtest report ({where}) on either side\n"]
    if before is None or after is None:
        missing = "before" if before is None else "after"
        return [f"metrics: no backtest report ({where}) {missing}: run `qcompile backtest`\n"]
    rows = metric_changes(before[0], after[0])
    width = max(len(r["label"]) for r in rows)
    left = max(len(r["before"]) for r in rows)
    right = max(len(r["after"]) for r in rows)
    out = [f"metrics ({where}):\n"]
    for side, (evidence, params) in (("before", before), ("after", after)):
        if stale(evidence, params):
            out.append(f"  ({side}: the report is older than its config, data or signal)\n")
    for row in rows:
        out.append(
            f"  {row['label']:<{width}}  {row['before']:>{left}} -> {row['after']:>{right}}"
            f"  {row['change']}".rstrip()
            + "\n"
        )
    changed = input_changes(before[1], after[1])
    out += ["\n", "inputs that changed (params.yaml):\n" if changed else "inputs: unchanged\n"]
    out += [f"  {key}: {old} -> {new}\n" for key, old, new in changed]
    return out
