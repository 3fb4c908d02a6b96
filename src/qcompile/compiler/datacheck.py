"""The lock's data check: the local data every strategy pins, held to its data contract.

Consumes the schema-valid strategies, their data sources' fingerprints and the stat cache;
produces diagnostics. Each data source directory is checked once with the contract the backtest
and the runner enforce (research.data): every file, every row, and every member of the
universes reading it. A problem is one diagnostic naming the file, the symbol, the row and its
time. So is a strategy whose data is missing or does not cover its backtest window.

Severity follows the phase: from research on, a strategy's evidence is computed from this data,
so its problems are errors; a strategy still in ideation gets warnings.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from qcompile.compiler.fingerprint import (
    DataFingerprint,
    FingerprintCache,
    calendar_gaps,
    contract_violations,
    data_files,
)
from qcompile.errors import Diagnostic
from qcompile.project import Project
from qcompile.research.datalayout import epoch_time, loaded_symbols

PHASES_WITH_EVIDENCE = ("research", "validation", "production")


def _severity(phases: set[str]) -> str:
    return "error" if phases & set(PHASES_WITH_EVIDENCE) else "warning"


def _source_key(data: dict[str, Any]) -> tuple[str, str, tuple[str, str, str]] | None:
    local = data["data"].get("local") or {}
    if not local.get("path"):
        return None
    stamp = data["data"]["timestamp"]
    return (
        str(local["path"]),
        str(local.get("format", "")),
        (str(stamp["unit"]), str(stamp["timezone"]), str(stamp["stamping"])),
    )


def data_diagnostics(
    project: Project,
    strategies: list[tuple[Any, dict[str, Any]]],
    fingerprints: dict[tuple[str, str], DataFingerprint | None],
    cache: FingerprintCache,
) -> list[Diagnostic]:
    """Every problem of the strategies' local data (``strategies``: composed, resolved)."""
    found: list[Diagnostic] = []
    readers: dict[tuple[str, str, tuple[str, str, str]], list[tuple[Any, dict[str, Any]]]] = {}
    for composed, data in strategies:
        key = _source_key(data)
        phase = data["strategy"]["status"]
        fingerprint = fingerprints.get(key[:2]) if key else None
        if key is None or fingerprint is None:
            found.append(_missing(composed, data, key, phase))
            continue
        readers.setdefault(key, []).append((composed, data))
        found += _window(composed, data, fingerprint, key[2][0], phase)
    for (path, file_format, convention), group in sorted(readers.items()):
        symbols = sorted({s for _, data in group for s in loaded_symbols(data["universe"])})
        phases = {data["strategy"]["status"] for _, data in group}
        ids = ", ".join(sorted(data["strategy"]["id"] for _, data in group))
        for file in data_files(project.root / path, file_format):
            if not project.contains(file):
                found.append(
                    Diagnostic(
                        f"{path}/{file.name}",
                        0,
                        "",
                        f"links to {file.resolve()}, outside the project",
                        "rule.path_outside",
                        f"read by {ids}; copy the file in instead of linking out",
                        severity=_severity(phases),
                    )
                )
        for file, violation in contract_violations(
            project.root / path, file_format, convention, symbols, cache
        ):
            found.append(_violation(project, file, violation, convention[0], phases, ids))
        found += _calendar_warnings(project, path, file_format, convention, group, cache, ids)
    return found


def _calendar_warnings(
    project: Project,
    path: str,
    file_format: str,
    convention: tuple[str, str, str],
    group: list[tuple[Any, dict[str, Any]]],
    cache: FingerprintCache,
    ids: str,
) -> list[Diagnostic]:
    """Sessions of the market's calendar with no bar, and bars on days it was closed, inside
    the backtest windows of the strategies reading the data: warnings, one per file."""
    from qcompile.compiler.rules.review_due import today
    from qcompile.research.calendar import calendar_for

    name = calendar_for(list(group[0][1]["data"].get("markets") or []))
    if name is None:
        return []  # markets of several calendars, or one qcompile does not know: not judged
    epoch = dt.date(1970, 1, 1)
    windows = sorted(
        {
            tuple(
                (dt.date.fromisoformat(str(data["strategy"]["backtest"][k])) - epoch).days
                for k in ("start_date", "end_date")
            )
            for _, data in group
        }
    )

    def inside(first: int, last: int) -> bool:
        return any(first <= end and last >= start for start, end in windows)

    def day(number: int) -> str:
        return (epoch + dt.timedelta(days=number)).isoformat()

    found = []
    shown_windows = ", ".join(f"{day(a)}..{day(b)}" for a, b in windows)
    for file, symbol, gaps, closed in calendar_gaps(
        project.root / path, file_format, convention, name, cache, (today() - epoch).days
    ):
        gaps = [g for g in gaps if inside(g[0], g[1])]
        closed = [c for c in closed if inside(c, c)]
        if not gaps and not closed:
            continue
        parts = []
        if gaps:
            missing = sum(g[2] for g in gaps)
            largest = sorted(gaps, key=lambda g: (-g[2], g[0]))[:5]
            listed = ", ".join(
                (day(a) if a == b else f"{day(a)}..{day(b)}") + f" ({n} session{'s' * (n > 1)})"
                for a, b, n in sorted(largest)
            )
            parts.append(
                f"{missing} {name} session{'s' * (missing > 1)} without a bar in {len(gaps)} "
                f"gap{'s' * (len(gaps) > 1)}"
                + (f", the largest: {listed}" if len(gaps) > len(largest) else f": {listed}")
            )
        if closed:
            shown = ", ".join(day(c) for c in closed[:5]) + (", ..." if len(closed) > 5 else "")
            parts.append(
                f"bars on {len(closed)} day{'s' * (len(closed) > 1)} {name} was closed: {shown}"
            )
        found.append(
            Diagnostic(
                project.rel(file),
                0,
                "",
                f"{symbol}: "
                + "; ".join(parts)
                + f" (inside the backtest windows {shown_windows})",
                "data.calendar_gap",
                f"read by {ids}; the calendar knows holidays and closures, so these are missing "
                "or misdated bars: check the vendor's file, or re-import it (docs/data.md)",
                severity="warning",
            )
        )
    return found


def _missing(composed: Any, data: dict[str, Any], key: tuple | None, phase: str) -> Diagnostic:
    strategy = data["strategy"]["id"]
    where = f"no local data in {key[0]}" if key else "no local copy of the data (data.local)"
    file, line = composed.locate("data.local.path" if key else "data")
    return Diagnostic(
        file,
        line,
        "data.local.path" if key else "data.local",
        f"{where} for {strategy}, which is in {phase}",
        "data.missing",
        f"`qcompile download {strategy}` fetches it from the vendor (docs/data.md); in "
        "ideation this is a warning, from research on an error",
        severity=_severity({phase}),
    )


def _window(
    composed: Any, data: dict[str, Any], fingerprint: DataFingerprint, unit: str, phase: str
) -> list[Diagnostic]:
    """The backtest window against the data's time range (in the declared unit)."""
    if fingerprint.first_timestamp is None or fingerprint.last_timestamp is None:
        return []  # no readable timestamps: the contract check says why
    span = [epoch_time(s, unit) for s in (fingerprint.first_timestamp, fingerprint.last_timestamp)]
    if span[0] is None or span[1] is None:
        return []  # not timestamps in the declared unit: the contract check says so
    first, last = span[0].date(), span[1].date()
    backtest = data["strategy"]["backtest"]
    start = dt.date.fromisoformat(str(backtest["start_date"]))
    end = dt.date.fromisoformat(str(backtest["end_date"]))
    problems = []
    for key, uncovered, text in (
        ("strategy.backtest.start_date", start < first, f"starts {start}, the data {first}"),
        ("strategy.backtest.end_date", end > last, f"ends {end}, the data {last}"),
    ):
        if uncovered:
            file, line = composed.locate(key)
            problems.append(
                Diagnostic(
                    file,
                    line,
                    key,
                    f"the backtest window is not covered by the local data: it {text}",
                    "data.window",
                    "move the window inside the data, or fetch the missing history",
                    severity=_severity({phase}),
                )
            )
    return problems


def _violation(
    project: Project,
    file: Path,
    violation: dict[str, Any],
    unit: str,
    phases: set[str],
    ids: str,
) -> Diagnostic:
    from qcompile.research.data import Violation

    try:
        where = project.rel(file)
    except ValueError:  # a data folder outside the project (containment is checked elsewhere)
        where = file.as_posix()
    return Diagnostic(
        where,
        0,
        "",
        Violation(**violation).message(unit),
        "data.contract",
        f"read by {ids}; fix or replace the file (docs/data.md)",
        severity=_severity(phases),
    )
