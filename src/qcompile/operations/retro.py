"""``qcompile retro``: what broke in a month, from the runners' journals and the release history.

The input of the monthly retrospective (docs/retrospective-template.md). Per strategy: alerts by
severity with counts and first/last time, safe-state transitions, rollbacks; plus the releases
made that month. Glue like research/workflows.py: it reads generated/ for each strategy's state store and
the runtime's journals, never taking a lease.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qcompile.errors import QcompileError
from qcompile.operations.status import generated_strategies, read_store
from qcompile.project import Project

SAFE_STATE_KEY = "runner.safe_state"
SEVERITY_ORDER = ("critical", "error", "warning", "info")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def month_range(month: str) -> tuple[dt.date, dt.date]:
    """First day of ``YYYY-MM`` and first day of the month after."""
    match = _MONTH.fullmatch(month)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise QcompileError(f"--month must be YYYY-MM, got {month!r}")
    start = dt.date(int(match.group(1)), int(match.group(2)), 1)
    following = dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start, following


def previous_month(on: dt.date) -> str:
    """The calendar month before ``on``'s, as YYYY-MM: a retrospective looks at a closed month."""
    last_day = on.replace(day=1) - dt.timedelta(days=1)
    return f"{last_day.year:04d}-{last_day.month:02d}"


def _when(value: Any) -> dt.datetime | None:
    """An ISO timestamp as an aware UTC datetime (naive ones are taken as UTC), else None."""
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass
class AlertCount:
    severity: str
    key: str
    count: int
    first: dt.datetime
    last: dt.datetime
    summary: str  # the latest one's


@dataclass
class StrategyMonth:
    """What one strategy's journal and release history hold for the month."""

    id: str
    name: str
    alerts: list[AlertCount] = field(default_factory=list)
    safe_states: list[tuple[dt.datetime, str]] = field(default_factory=list)
    rollbacks: list[tuple[dt.datetime, str]] = field(default_factory=list)
    releases: list[Any] = field(default_factory=list)  # qcompile.releases.Release
    problems: list[str] = field(default_factory=list)  # journal or history unreadable


def _severity_rank(severity: str) -> tuple[int, str]:
    rank = SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)
    return rank, severity


def summarise_journal(
    records: list[dict[str, Any]], start: dt.date, end: dt.date
) -> tuple[list[AlertCount], list[tuple[dt.datetime, str]], list[tuple[dt.datetime, str]]]:
    """(alerts grouped by severity and key, safe-state transitions, rollbacks) within
    [start, end), oldest first; fills and daily records carry no wall time and are skipped."""
    alerts: dict[tuple[str, str], AlertCount] = {}
    safe_states: list[tuple[dt.datetime, str]] = []
    rollbacks: list[tuple[dt.datetime, str]] = []
    for record in records:
        kind = record.get("type")
        if kind not in ("alert", "rollback"):
            continue
        when = _when(record.get("at"))
        if when is None or not start <= when.date() < end:
            continue
        if kind == "rollback":
            rollbacks.append((when, str(record.get("detail") or "")))
            continue
        key, severity = str(record.get("key")), str(record.get("severity") or "unknown")
        summary = str(record.get("summary") or "")
        if key == SAFE_STATE_KEY:
            safe_states.append((when, summary))
        found = alerts.get((severity, key))
        if found is None:
            alerts[(severity, key)] = AlertCount(severity, key, 1, when, when, summary)
            continue
        found.count += 1
        found.first = min(found.first, when)
        if when >= found.last:
            found.last, found.summary = when, summary
    ordered = sorted(alerts.values(), key=lambda a: (_severity_rank(a.severity), -a.count, a.key))
    return ordered, sorted(safe_states), sorted(rollbacks)


def collect(
    project: Project, month: str, env: Mapping[str, str] = os.environ
) -> list[StrategyMonth]:
    """Every strategy in generated/ or with a release history, with what happened in ``month``."""
    from qcompile.lifecycle.releases import RELEASES_DIR, load_history

    start, end = month_range(month)
    found: dict[str, StrategyMonth] = {}
    for strategy_id, params, _ in generated_strategies(project):
        entry = found[strategy_id] = StrategyMonth(
            strategy_id, str((params.get("strategy") or {}).get("name") or "")
        )
        try:
            records = read_store(project, strategy_id, params, "read_journal", env)
        except QcompileError as err:
            entry.problems.append(f"journal not read: {err}")
            continue
        entry.alerts, entry.safe_states, entry.rollbacks = summarise_journal(records, start, end)
    for history in sorted((project.root / RELEASES_DIR).glob("*.jsonl")):
        entry = found.setdefault(history.stem, StrategyMonth(history.stem, ""))
        try:
            releases = load_history(project, history.stem)
        except QcompileError as err:
            entry.problems.append(f"release history not read: {err}")
            continue
        entry.releases = [
            r for r in releases if (w := _when(r.released_at)) and start <= w.date() < end
        ]
    return [found[k] for k in sorted(found)]


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def render_markdown(month: str, strategies: list[StrategyMonth]) -> str:
    """The report: a summary table, then one section per strategy that has anything to say."""
    lines = [
        f"# What broke in {month}",
        "",
        "From each strategy's state-store journal (alerts, safe-state transitions, rollbacks) and "
        "`releases/<id>.jsonl`; generated by `qcompile retro`.",
        "",
        "| strategy | critical alerts | other alerts | safe states | rollbacks | releases |",
        "|---|---|---|---|---|---|",
    ]
    for s in strategies:
        critical = sum(a.count for a in s.alerts if a.severity == "critical")
        other = sum(a.count for a in s.alerts) - critical
        lines.append(
            f"| {s.id} | {critical} | {other} | {len(s.safe_states)} | {len(s.rollbacks)} | "
            f"{len(s.releases)} |"
        )
    for s in strategies:
        if not (s.alerts or s.safe_states or s.rollbacks or s.releases or s.problems):
            continue
        lines += ["", f"## {s.id}" + (f" {s.name}" if s.name else ""), ""]
        lines += [f"> **{_cell(p)}**" for p in s.problems]
        if s.alerts:
            lines += [
                "### Alerts",
                "",
                "| severity | key | count | first | last | latest summary |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {a.severity} | `{a.key}` | {a.count} | {_stamp(a.first)} | {_stamp(a.last)} "
                f"| {_cell(a.summary)} |"
                for a in s.alerts
            ]
            lines.append("")
        for title, events in (
            ("Safe-state transitions", s.safe_states),
            ("Rollbacks", s.rollbacks),
        ):
            if events:
                lines += [f"### {title}", ""]
                lines += [f"- {_stamp(when)}: {_cell(text)}" for when, text in events]
                lines.append("")
        if s.releases:
            lines += ["### Releases", ""]
            lines += [
                f"- {r.version} ({r.phase}) released {r.released_at} by {r.released_by} at "
                f"commit {r.commit[:12]}" + (f": {_cell(r.note)}" if r.note else "")
                for r in s.releases
            ]
            lines.append("")
    if not any(s.alerts or s.safe_states or s.rollbacks for s in strategies):
        lines += ["", "No alerts, safe-state transitions or rollbacks this month."]
    return "\n".join(lines).rstrip("\n") + "\n"
