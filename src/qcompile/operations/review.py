"""The weekly review: live results of every production strategy against its backtest.

Glue, like research/workflows.py: it compiles the project (which strategies are in production, their
runtime parameters, the review threshold) and hands the rest to the runtime (the state store's
journal, the backtest's daily statistics, the alert sinks).

Both sides are the same four statistics computed by the same function
(``qcompile.dailystats.daily_statistics``) over daily equity closes, so they compare like for like:
win rate (share of days with a positive return, not of trades: the journal's daily equity is the
one series both sides have for every day), mean daily return, daily volatility (sample stdev)
and the max drawdown over the 20-day window (on the backtest side: the mean over every 20-day
stretch of its equity curve). Outputs are deterministic: no clock is read when ``--week`` is
given, and nothing on the pages depends on where the project lives.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qcompile.dailystats import (
    DAILY_STATISTICS,
    REVIEW_WINDOW,
    daily_statistics,
    relative_deviation,
)
from qcompile.errors import QcompileError
from qcompile.project import Project

DEFAULT_THRESHOLD = 0.2
WINDOW = REVIEW_WINDOW  # trading days, source document §6
STATISTICS = DAILY_STATISTICS  # key -> label, in page order
_WEEK = re.compile(r"(\d{4})-W(\d{2})")


@dataclass(frozen=True)
class Statistic:
    """One live statistic beside its backtest expectation."""

    key: str
    live: float | None
    expected: float | None
    deviation: float | None  # |live - expected| / |expected|; None when either is missing
    flagged: bool


@dataclass(frozen=True)
class StrategyReview:
    strategy_id: str
    name: str
    version: str
    week: str
    days: list[tuple[str, float]]  # the window's daily equity (with the day before it)
    statistics: list[Statistic]
    expectation_source: str
    markdown: Path
    html: Path
    alert_failures: list[str] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        return [s.key for s in self.statistics if s.flagged]


def parse_week(week: str) -> tuple[str, dt.date]:
    """``2026-W10`` -> (the canonical label, its Sunday): the window ends on the week's last day."""
    match = _WEEK.fullmatch(week.strip())
    if not match:
        raise QcompileError(f"--week must look like 2026-W10, was {week!r}")
    try:
        sunday = dt.date.fromisocalendar(int(match.group(1)), int(match.group(2)), 7)
    except ValueError:
        raise QcompileError(f"--week {week}: no such ISO week") from None
    return f"{match.group(1)}-W{match.group(2)}", sunday


def current_week(today: dt.date) -> str:
    year, number, _ = today.isocalendar()
    return f"{year}-W{number:02d}"


def compare(
    live: Mapping[str, Any], expected: Mapping[str, Any], threshold: float
) -> list[Statistic]:
    rows = []
    for key in STATISTICS:
        deviation = relative_deviation(live.get(key), expected.get(key))
        rows.append(
            Statistic(
                key,
                live.get(key),
                expected.get(key),
                deviation,
                deviation is not None and deviation > threshold,
            )
        )
    return rows


def live_window(
    journal: list[dict[str, Any]], end: dt.date, window: int = WINDOW
) -> list[tuple[str, float]]:
    """The last ``window`` daily equity records up to ``end``, plus the one before them (the
    first day's return needs it). A day journaled twice (a restart) counts once: the last."""
    closes: dict[str, float] = {}
    for record in journal:
        if record.get("type") == "daily" and str(record.get("date", "")) <= end.isoformat():
            closes[str(record["date"])] = float(record["equity"])
    return [(day, closes[day]) for day in sorted(closes)][-(window + 1) :]


def weekly(
    project: Project,
    week: str | None = None,
    threshold: float | None = None,
    *,
    only: list[str] | None = None,
    today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
    env: Mapping[str, str] = os.environ,
    overdue: list[Any] | None = None,
) -> list[StrategyReview]:
    """Review every production strategy for ``week`` (default: the current ISO week): write
    reports/<id>/reviews/<week>.md and .html, and send any flag to the strategy's alert sinks.
    Strategies past their one-year full review are added to ``overdue`` (as the build's
    diagnostics), so the weekly review flags them too."""
    from qcompile.compiler.build import compile_project
    from qcompile.compiler.plan import runtime_parameters

    label, end = parse_week(week or current_week(today()))
    compilation = compile_project(project, [], only)
    if overdue is not None:
        overdue.extend(w for w in compilation.warnings if w.code.startswith("ops.review_"))
    reviews = []
    for compiled in sorted(compilation.strategies, key=lambda c: c.id):
        if compiled.data["strategy"]["status"] != "production":
            continue
        operations = compiled.data.get("operations") or {}
        limit = float(
            threshold if threshold is not None else operations.get("review_threshold", 0.2)
        )
        params = runtime_parameters(compiled)
        reviews.append(_review(project, params, compiled.evidence_file, label, end, limit, env))
    return reviews


def _review(
    project: Project,
    params: dict[str, Any],
    evidence_file: str,
    week: str,
    end: dt.date,
    threshold: float,
    env: Mapping[str, str],
) -> StrategyReview:
    from qcompile.compiler.plan import state_directory
    from qcompile.runtime.control import read_store

    strategy = params["strategy"]
    expected, source = _expectation(project, params, evidence_file)
    journal = read_store(params, project.root, "read_journal", "weekly-review", env)
    spec = params["deployment"]["state_store"]
    days = live_window(journal, end)
    live = daily_statistics([d for d, _ in days], [e for _, e in days], window=WINDOW)
    statistics = compare(live, expected, threshold)
    directory = project.root / params["backtest"]["reports_dir"] / strategy["id"] / "reviews"
    directory.mkdir(parents=True, exist_ok=True)
    state = state_directory(spec, strategy["id"])
    where = f"{state}/journal.jsonl" if state else f"the {spec['kind']} state store"
    text = _markdown(params, week, days, statistics, threshold, source, where)
    markdown_path, html_path = directory / f"{week}.md", directory / f"{week}.html"
    _write(markdown_path, text)
    _write(html_path, _html(params, week, days, statistics, expected, text))
    review = StrategyReview(
        strategy["id"],
        strategy["name"],
        strategy["version"],
        week,
        days,
        statistics,
        source,
        markdown_path,
        html_path,
    )
    if review.flags:
        review.alert_failures.extend(_alert(params, review, threshold, project, env))
    return review


def _expectation(
    project: Project, params: dict[str, Any], evidence_file: str
) -> tuple[dict[str, Any], str]:
    """The backtest's daily statistics: from its evidence.json when that carries them, else from
    a fresh run of the pinned backtest in a scratch directory (older evidence predates them)."""
    path = project.root / evidence_file
    if path.is_file():
        daily = json.loads(path.read_text(encoding="utf-8")).get("daily")
        if daily:
            return daily, evidence_file
    from qcompile.research.backtest.runner import backtest

    with tempfile.TemporaryDirectory() as scratch:
        params_file = Path(scratch) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        report = backtest(params_file, project.root, Path(scratch) / "run", html_report=False)
        daily = json.loads(report.evidence.read_text(encoding="utf-8"))["daily"]
    return daily, f"a fresh run of the pinned backtest ({evidence_file} predates daily statistics)"


def _value(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    digits = 3 if key == "mean_return" else 2
    return f"{value * 100:.{digits}f} %"


def _deviation(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value * 100:.1f} %"


def _markdown(
    params: dict[str, Any],
    week: str,
    days: list[tuple[str, float]],
    statistics: list[Statistic],
    threshold: float,
    source: str,
    journal: str,
) -> str:
    strategy, backtest = params["strategy"], params["backtest"]
    returns = len(days) - 1 if days else 0
    lines = [
        f"# Weekly review {week}: {strategy['name']} ({strategy['id']} v{strategy['version']})",
        "",
        f"- Live window: {returns} trading day(s)"
        + (f", {days[1][0]} to {days[-1][0]}" if returns > 0 else "")
        + f" (daily equity from {journal}); the review looks at the last {WINDOW}.",
        f"- Backtest expectation: {backtest['start_date']} to {backtest['end_date']}, daily "
        f"statistics from {source}.",
        f"- Threshold: a statistic is flagged when it deviates from its expectation by more than "
        f"{threshold * 100:g} % of the expectation's magnitude.",
        "- Win rate is the share of days with a positive return; the expected drawdown is the "
        f"mean max drawdown over every {WINDOW}-day stretch of the backtest.",
        "",
        "| statistic | live | backtest | deviation | flag |",
        "|---|---:|---:|---:|---|",
    ]
    for row in statistics:
        lines.append(
            f"| {STATISTICS[row.key]} | {_value(row.key, row.live)} | "
            f"{_value(row.key, row.expected)} | {_deviation(row.deviation)} | "
            f"{'**FLAGGED**' if row.flagged else ''} |"
        )
    flagged = [STATISTICS[s.key] for s in statistics if s.flagged]
    lines.append("")
    if returns < WINDOW:
        lines.append(f"Only {returns} of {WINDOW} live days are available so far.")
        lines.append("")
    if flagged:
        lines.append(
            f"**{len(flagged)} statistic(s) deviate by more than {threshold * 100:g} %: "
            f"{', '.join(flagged)}.** The flags were sent to the strategy's alert sinks."
        )
    else:
        lines.append(f"No statistic deviates by more than {threshold * 100:g} %.")
    lines += ["", "## Live daily equity", "", "| date | equity | return |", "|---|---:|---:|"]
    for index, (day, equity) in enumerate(days):
        change = "" if index == 0 else f"{(equity / days[index - 1][1] - 1) * 100:.3f} %"
        lines.append(f"| {day} | {equity:.2f} | {change} |")
    return "\n".join(lines) + "\n"


def _html(
    params: dict[str, Any],
    week: str,
    days: list[tuple[str, float]],
    statistics: list[Statistic],
    expected: Mapping[str, Any],
    text: str,
) -> str:
    from qcompile.research.backtest.report import page

    strategy = params["strategy"]
    title = f"Weekly review {week}: {strategy['name']} ({strategy['id']} v{strategy['version']})"
    figures = [_statistics_chart(statistics)]
    if len(days) >= 2 and expected.get("mean_return") is not None:
        figures.insert(0, _band_chart(days, expected["mean_return"], expected["volatility"]))
    return page(title, figures, text)


def _band_chart(days: list[tuple[str, float]], mean: float, volatility: float) -> str:
    """The live equity over the window against the path the backtest implies: its mean daily
    return compounded, with a two-sigma band widening with the square root of time."""
    from qcompile.operations.charts import figure_svg, plt

    start = days[0][1]
    steps = range(len(days))
    centre = [start * (1 + mean) ** t for t in steps]
    upper = [c * (1 + 2 * volatility * math.sqrt(t)) for c, t in zip(centre, steps, strict=True)]
    lower = [c * (1 - 2 * volatility * math.sqrt(t)) for c, t in zip(centre, steps, strict=True)]
    labels = [day for day, _ in days]
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.fill_between(steps, lower, upper, alpha=0.25, label="backtest: 2-sigma band")
    axes.plot(steps, centre, linewidth=1, linestyle="--", label="backtest: mean path")
    axes.plot(steps, [e for _, e in days], linewidth=1.5, label="live")
    axes.set_xticks(list(steps)[:: max(1, len(days) // 6)], labels[:: max(1, len(days) // 6)])
    axes.legend(loc="upper left")
    axes.set_title("Live equity against the backtest's expectation")
    return str(figure_svg(figure))


def _statistics_chart(statistics: list[Statistic]) -> str:
    """Live and backtest side by side, one panel per statistic (their scales differ)."""
    from qcompile.operations.charts import figure_svg, plt

    figure, panels = plt.subplots(1, len(statistics), figsize=(10, 2.6))
    for axes, row in zip(panels, statistics, strict=True):
        values = [(row.expected or 0.0) * 100, (row.live or 0.0) * 100]
        bars = axes.bar(["backtest", "live"], values)
        if row.flagged:
            bars[1].set_color("tab:red")
        axes.set_title(STATISTICS[row.key] + " (%)", fontsize=8)
    return str(figure_svg(figure))


def _alert(
    params: dict[str, Any],
    review: StrategyReview,
    threshold: float,
    project: Project,
    env: Mapping[str, str],
) -> list[str]:
    """Send one warning listing the flags; returns the deliveries that failed (sink: error)."""
    from qcompile.runtime.alerts import Alert, Alerter, build_sinks

    names = ", ".join(STATISTICS[key] for key in review.flags)
    details = {
        "week": review.week,
        "review": project.rel(review.markdown),
        **{
            s.key: {"live": s.live, "backtest": s.expected, "deviation": s.deviation}
            for s in review.statistics
            if s.flagged
        },
    }
    alerter = Alerter(build_sinks(params["deployment"]["alerts"], env))
    try:
        alerter.send(
            Alert(
                key="review.deviation",
                severity="warning",
                summary=f"weekly review {review.week}: {names} deviate more than "
                f"{threshold * 100:g} % from the backtest",
                strategy_id=review.strategy_id,
                details=details,
            )
        )
        if not alerter.flush(timeout=15.0):
            return ["alert delivery timed out"]
        return [f"{sink}: {error}" for sink, _, error in alerter.failures]
    finally:
        alerter.close()


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
