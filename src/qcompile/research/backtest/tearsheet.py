"""report.html: the backtest as a page designed to be read, pictures first.

Consumes the evidence, the engine result and the series only the page needs (the benchmark's
equity, the Monte Carlo fan, the walk-forward folds); produces one self-contained HTML file: the
verdict and every warning at the top, the headline metrics beside the benchmark's, interactive
charts drawn in the browser by uPlot (vendored, MIT; see vendor/uplot/README.md) from data
embedded in the page, then report.md rendered as the record. Nothing is loaded from anywhere:
the scripts and styles are inline and named by hash in a Content-Security-Policy that forbids
everything else. Python only prepares numbers, so a report costs milliseconds, not a plotting
library's import; the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qcompile import templating
from qcompile.comparison import input_changes, metric_changes
from qcompile.dailystats import bar_returns
from qcompile.research.backtest.benchmark import RELATIVE_FORMULAS
from qcompile.research.backtest.engine import Result

TEMPLATES = Path(__file__).parent / "templates"
VENDOR = Path(__file__).parent / "vendor" / "uplot"
STRATEGY_COLOUR, BENCHMARK_COLOUR = "#1f5fbf", "#8a8f99"
MONTH_STEPS = (0.01, 0.03, 0.06)  # colour steps of a month's return; a year's are three times


@dataclass(frozen=True)
class Series:
    """What only the page draws: not evidence, so not in evidence.json."""

    bars: pl.DataFrame  # the traded symbols' bars in the window
    benchmark: np.ndarray  # the benchmark's equity on the strategy's timestamps
    monte_carlo_fan: dict[str, Any] | None  # bar indices and percentile paths (growth of 1)
    walk_forward: list[tuple[list[int], list[float]]]  # per fold: timestamps, growth of 1
    baseline: tuple[str, dict[str, Any], dict[str, Any]] | None = None  # label, evidence, params


@cache
def _assets() -> tuple[str, str, str, str]:
    return (
        (VENDOR / "uPlot.iife.min.js").read_text(encoding="utf-8"),
        (VENDOR / "uPlot.min.css").read_text(encoding="utf-8"),
        (TEMPLATES / "tearsheet.js").read_text(encoding="utf-8"),
        (TEMPLATES / "tearsheet.css").read_text(encoding="utf-8"),
    )


@cache
def _environment() -> Any:
    return templating.environment(TEMPLATES, {})


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def policy(scripts: Sequence[str], styles: Sequence[str]) -> str:
    """Only these inline scripts and styles run; nothing is fetched, submitted or framed."""
    return (
        "default-src 'none'; "
        f"script-src {' '.join(_hash(s) for s in scripts)}; "
        f"style-src {' '.join(_hash(s) for s in styles)}; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _values(values: Any, digits: int) -> list[float | None]:
    """JSON numbers rounded for the page (it draws, it does not recompute); NaN and inf as null."""
    return [
        None if v is None or not math.isfinite(v) else round(float(v), digits)
        for v in np.asarray(values, dtype=float).tolist()
    ]


def _seconds(timestamps: Sequence[int]) -> list[int]:
    return [int(t) // 1000 for t in timestamps]


def _drawdown(equity: np.ndarray) -> np.ndarray:
    peaks = np.maximum.accumulate(equity)
    return np.where(peaks > 0, equity / np.where(peaks > 0, peaks, 1.0) - 1.0, np.nan)


def rolling(equity: np.ndarray, window: int, ppy: float) -> tuple[np.ndarray, np.ndarray]:
    """Annualised Sharpe and volatility of the last ``window`` bar returns at each bar (NaN
    before a full window, and where equity is gone); sample standard deviation."""
    sharpe, volatility = np.full(len(equity), np.nan), np.full(len(equity), np.nan)
    if len(equity) <= window:
        return sharpe, volatility
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = equity[1:] / equity[:-1] - 1.0
        views = np.lib.stride_tricks.sliding_window_view(returns, window)
        deviation = views.std(axis=1, ddof=1)
        mean = views.mean(axis=1)
        volatility[window:] = deviation * math.sqrt(ppy)
        sharpe[window:] = np.where(deviation > 0, mean / deviation * math.sqrt(ppy), np.nan)
    return sharpe, volatility


def _month_class(value: float, scale: float) -> str:
    steps = [s * scale for s in MONTH_STEPS]
    level = sum(abs(value) >= s for s in steps)
    return "m-0" if level == 0 else f"m-{'p' if value > 0 else 'n'}{level}"


def monthly_returns(timestamps: Sequence[int], equity: Sequence[float]) -> list[dict[str, Any]]:
    """Per year: each month's return (equity at its last bar against the previous month's last
    bar; the first month against the first bar) and the year's, as text with a colour class."""
    if not len(timestamps):
        return []
    months = np.asarray(timestamps, dtype="datetime64[ms]").astype("datetime64[M]").astype(int)
    values = np.asarray(equity, dtype=float)
    last = np.flatnonzero(np.append(months[1:] != months[:-1], True))
    ends = values[last]
    starts = np.concatenate([[values[0]], ends[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(starts > 0, ends / starts - 1.0, np.nan)
    table: dict[int, dict[str, Any]] = {}
    for month, value, start, end in zip(months[last], returns, starts, ends, strict=True):
        year = 1970 + int(month) // 12
        row = table.setdefault(year, {"year": year, "cells": {}, "start": start, "end": end})
        row["cells"][int(month) % 12] = value
        row["end"] = end
    rows = []
    for year, row in sorted(table.items()):
        cells = []
        for month in range(12):
            value = row["cells"].get(month)
            cells.append(
                {"text": "", "class": ""}
                if value is None or not math.isfinite(value)
                else {"text": f"{value * 100:.1f}", "class": _month_class(value, 1.0)}
            )
        total = row["end"] / row["start"] - 1.0 if row["start"] > 0 else math.nan
        rows.append(
            {
                "year": year,
                "months": cells,
                "total": {"text": f"{total * 100:.1f}", "class": _month_class(total, 3.0)}
                if math.isfinite(total)
                else {"text": "", "class": ""},
            }
        )
    return rows


def _figure(identifier: str, title: str, spec: dict[str, Any] | None, **extra: Any) -> dict:
    return {
        "id": identifier,
        "title": title,
        "spec": spec,
        "svg": extra.get("svg"),
        "note": extra.get("note"),
        "caption": extra.get("caption", ""),
        "group": extra.get("group", False),
    }


def _line(label: str, colour: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, "color": colour, **extra}


def _price_chart(
    symbol: str, bars: pl.DataFrame, result: Result, date: Callable[[int], str]
) -> dict[str, Any]:
    """A symbol's closes with its trades: entries and exits as markers, and the trade open at
    the hovered bar described under the chart."""
    own = bars.filter(pl.col("symbol") == symbol).sort("timestamp")
    stamps = own["timestamp"].to_list()
    where = {t: i for i, t in enumerate(stamps)}
    closes = own["close"].to_numpy()
    entries, exits = [None] * len(stamps), [None] * len(stamps)
    trades = []
    for trade in (t for t in result.trades if t.symbol == symbol):
        first, last = where.get(trade.entry_time), where.get(trade.exit_time)
        if first is None or last is None:
            continue
        entries[first] = round(float(trade.entry_price), 4)
        exits[last] = round(float(trade.exit_price), 4)
        side = "long" if trade.side > 0 else "short"
        trades.append(
            {
                "entry": first,
                "exit": last,
                "text": (
                    f"{symbol} {side} {trade.shares:g} shares: in {date(trade.entry_time)} at "
                    f"{trade.entry_price:.2f}, out {date(trade.exit_time)} at "
                    f"{trade.exit_price:.2f}; PnL {trade.pnl:,.2f} ({trade.return_pct * 100:.2f} %)"
                    f", costs {trade.costs:,.2f}"
                ),
            }
        )
    return {
        "x": "time",
        "y": {"format": "number"},
        "height": 260,
        "data": [_seconds(stamps), _values(closes, 4), entries, exits],
        "series": [
            _line(f"{symbol} close", "#3d4250", width=1),
            _line("entry", "#1a9850", kind="markers"),
            _line("exit", "#d73027", kind="markers"),
        ],
        "trades": trades,
        "note": f"{len(trades)} trades; hover the chart for the trade open at a bar, drag to zoom, "
        "double-click to zoom out.",
    }


def _histogram(returns: Sequence[float]) -> dict[str, Any] | None:
    if not returns:
        return None
    values = np.asarray(returns, dtype=float) * 100
    bins = int(min(40, max(8, math.ceil(math.sqrt(len(values))))))
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    return {
        "x": "number",
        "xLabel": "trade return %",
        "y": {"format": "count"},
        "height": 240,
        "data": [_values(centres, 3), counts.tolist()],
        "series": [_line("trades", "#5b7fc7", kind="bars")],
    }


def _sensitivity(grid: list[dict[str, Any]], minimum_trades: int) -> dict[str, Any] | None:
    if len(grid) < 2:
        return None
    names = list(grid[0]["params"])
    if len(names) >= 2:
        from qcompile.research.backtest.svgheatmap import heatmap

        svg = heatmap(grid, names[0], names[1], "Sharpe by parameters", minimum_trades)
        return {"svg": svg}
    name = names[0]
    points = sorted(
        (row["params"][name], row["sharpe"])
        for row in grid
        if isinstance(row["params"][name], int | float)
    )
    if len(points) < 2:
        return None
    return {
        "spec": {
            "x": "number",
            "xLabel": name,
            "y": {"format": "number"},
            "height": 240,
            "data": [[p[0] for p in points], _values([p[1] or math.nan for p in points], 4)],
            "series": [_line("Sharpe", STRATEGY_COLOUR, width=2)],
        }
    }


def _monte_carlo(fan: dict[str, Any] | None, timestamps: Sequence[int], equity: np.ndarray):
    if not fan:
        return None
    index = fan["index"]
    paths = fan["percentiles"]
    realised = equity[index] / equity[0]
    return {
        "x": "time",
        "y": {"format": "growth"},
        "height": 300,
        "data": [
            [int(timestamps[i]) // 1000 for i in index],
            *(_values(paths[p], 4) for p in ("p95", "p75", "p50", "p25", "p5")),
            _values(realised, 4),
        ],
        "series": [
            _line("p95", "#9db4dd", width=1),
            _line("p75", "#6f8fcc", width=1),
            _line("median", "#3d64b0", width=1, dash=[4, 3]),
            _line("p25", "#6f8fcc", width=1),
            _line("p5", "#9db4dd", width=1),
            _line("realised", "#111111", width=2),
        ],
        "bands": [[1, 5, "rgba(61,100,176,0.10)"], [2, 4, "rgba(61,100,176,0.18)"]],
    }


def _walk_forward(folds: list[tuple[list[int], list[float]]]) -> dict[str, Any] | None:
    if not folds:
        return None
    stamps = [t for fold, _ in folds for t in fold]
    data: list[list[Any]] = [_seconds(stamps)]
    series = []
    growth, offset = 1.0, 0
    colours = ("#1f5fbf", "#d08a00")
    for number, (fold_stamps, values) in enumerate(folds):
        column: list[float | None] = [None] * len(stamps)
        for i, value in enumerate(values):
            column[offset + i] = round(growth * value, 4)
        growth *= values[-1] if values else 1.0
        offset += len(fold_stamps)
        data.append(column)
        series.append(_line(f"fold {number + 1}", colours[number % 2], width=2))
    return {"x": "time", "y": {"format": "growth"}, "height": 260, "data": data, "series": series}


def _headline(evidence: dict[str, Any], volatility: tuple[float | None, float | None]) -> list:
    mine, theirs = evidence["metrics"], evidence["benchmark"]["metrics"]

    def percent(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 100:.2f} %"

    def number(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    rows = []
    for key, label, show, higher_is_better in (
        ("total_return", "total return", percent, True),
        ("annualised_return", "annualised return", percent, True),
        ("sharpe", "Sharpe ratio", number, True),
        ("sortino", "Sortino ratio", number, True),
        ("max_drawdown", "max drawdown", percent, True),
    ):
        a, b = mine.get(key), theirs.get(key)
        verdict = ""
        if a is not None and b is not None and a != b:
            verdict = "better" if (a > b) == higher_is_better else "worse"
        rows.append(
            {
                "key": key,
                "label": label,
                "strategy": show(a),
                "benchmark": show(b),
                "verdict": verdict,
            }
        )
    rows += [
        {
            "key": "volatility",
            "label": "volatility (annualised)",
            "strategy": percent(volatility[0]),
            "benchmark": percent(volatility[1]),
            "verdict": "",
        },
        {
            "key": "exposure",
            "label": "exposure",
            "strategy": percent(mine["exposure"]),
            "benchmark": "100.00 %",
            "verdict": "",
        },
        {
            "key": "trade_count",
            "label": "trades",
            "strategy": str(mine["trade_count"]),
            "benchmark": "–",
            "verdict": "",
        },
    ]
    return rows


def _relative(evidence: dict[str, Any]) -> list[dict[str, str]]:
    stats = evidence["benchmark"]["relative"]
    shown = {
        "alpha": ("alpha (annualised)", lambda v: f"{v * 100:.2f} %"),
        "beta": ("beta", lambda v: f"{v:.3f}"),
        "correlation": ("correlation", lambda v: f"{v:.3f}"),
        "tracking_error": ("tracking error", lambda v: f"{v * 100:.2f} %"),
        "information_ratio": ("information ratio", lambda v: f"{v:.3f}"),
    }
    return [
        {
            "key": key,
            "label": label,
            "value": "n/a" if stats.get(key) is None else show(stats[key]),
            "formula": RELATIVE_FORMULAS[key],
        }
        for key, (label, show) in shown.items()
    ]


def _volatility(equity: np.ndarray, ppy: float) -> float | None:
    returns = bar_returns(equity.tolist())  # the metrics' own bar returns
    return float(np.std(returns, ddof=1) * math.sqrt(ppy)) if len(returns) >= 2 else None


def verdict_and_warnings(evidence: dict[str, Any], params: dict[str, Any]) -> tuple[dict, list]:
    """What keeps the strategy from production (the verdict's reasons: the report's blocking
    findings) and what a reader must know besides (warnings)."""
    sample = evidence["minimum_sample"]
    strategy_type = params["strategy"]["type"]
    reasons, warnings = [], []
    if not sample["met"]:
        text = (
            f"The sample is insufficient for statistical significance: {sample['trades']} trades "
            f"over {sample['years']} years; a {strategy_type} strategy needs "
            f"{sample['required_trades']} trades over {sample['required_years']} years. It may "
            "proceed to validation, not to production."
        )
        reasons.append(text)
    reasons += [f"Critical: {failure}" for failure in evidence["critical_failures"]]
    survivorship = evidence["robustness"]["survivorship_bias"].get("warning")
    if survivorship:
        warnings.append({"key": "survivorship", "text": f"Survivorship: {survivorship}"})
    mine = evidence["metrics"]["total_return"]
    theirs = evidence["benchmark"]["metrics"]["total_return"]
    if theirs > mine:
        warnings.append(
            {
                "key": "benchmark",
                "text": (
                    f"The benchmark ({evidence['benchmark']['description']}) returned "
                    f"{theirs * 100:.2f} % over the window; the strategy {mine * 100:.2f} %."
                ),
            }
        )
    overfitting = evidence["robustness"].get("overfitting")
    if overfitting and overfitting.get("pbo") is not None and overfitting["pbo"] > 0.5:
        warnings.append(
            {
                "key": "overfitting",
                "text": (
                    f"Probability of backtest overfitting {overfitting['pbo']:.2f}: in most "
                    "in-sample/out-of-sample splits the best in-sample parameters rank in the "
                    "bottom half out of sample."
                ),
            }
        )
    eligible = evidence["eligible_for_production"]
    headline = "Eligible for production." if eligible else "Not eligible for production."
    return {"eligible": eligible, "headline": headline, "reasons": reasons}, warnings


_RECORD_HEAD = re.compile(r"\A<!--.*?-->\n+# [^\n]*\n", re.DOTALL)


def record(markdown_text: str) -> str:
    """report.md rendered, without its generated-by comment and its title (the page has both)."""
    from markdown_it import MarkdownIt

    body = _RECORD_HEAD.sub("", markdown_text, count=1)
    # the Markdown was written by us with every value escaped for table cells; raw HTML stays off
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(body)


def _json(value: Any) -> str:
    """JSON that cannot end its <script> element early."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(
    params: dict[str, Any],
    evidence: dict[str, Any],
    result: Result,
    series: Series,
    markdown_text: str,
    date: Callable[[int], str],
    origin: str,
) -> str:
    strategy = params["strategy"]
    ppy = evidence["conventions"]["periods_per_year"]
    stamps = result.equity["timestamp"].to_list()
    equity = result.equity["equity"].to_numpy().astype(float)
    benchmark = series.benchmark
    window = max(2, round(ppy / 2))
    mine_sharpe, mine_vol = rolling(equity, window, ppy)
    their_sharpe, their_vol = rolling(benchmark, window, ppy)
    seconds = _seconds(stamps)
    time_axis = {"x": "time", "height": 300}
    figures = [
        _figure(
            "equity",
            "Equity against the benchmark",
            {
                **time_axis,
                "y": {"format": "money", "log": bool(equity.min() > 0 and benchmark.min() > 0)},
                "data": [seconds, _values(equity, 2), _values(benchmark, 2)],
                "series": [
                    _line("strategy", STRATEGY_COLOUR, width=2),
                    _line(f"benchmark: {evidence['benchmark']['description']}", BENCHMARK_COLOUR),
                ],
            },
            caption="Logarithmic scale: equal slopes are equal growth rates. Drag to zoom, "
            "double-click to zoom out.",
        ),
        _figure(
            "drawdown",
            "Drawdown (underwater)",
            {
                **time_axis,
                "height": 220,
                "y": {"format": "percent"},
                "data": [seconds, _values(_drawdown(equity), 5), _values(_drawdown(benchmark), 5)],
                "series": [
                    _line("strategy", "#c0392b", width=1, fill="rgba(192,57,43,0.18)"),
                    _line("benchmark", BENCHMARK_COLOUR, width=1, dash=[4, 3]),
                ],
            },
        ),
    ]
    for key, title, unit, digits, mine, theirs in (
        ("rolling-sharpe", "Rolling Sharpe ratio", "number", 3, mine_sharpe, their_sharpe),
        ("rolling-volatility", "Rolling volatility, annualised", "percent", 4, mine_vol, their_vol),
    ):
        rolled = {
            **time_axis,
            "height": 220,
            "y": {"format": unit},
            "data": [seconds, _values(mine, digits), _values(theirs, digits)],
            "series": [
                _line("strategy", STRATEGY_COLOUR),
                _line("benchmark", BENCHMARK_COLOUR, dash=[4, 3]),
            ],
        }
        figures.append(_figure(key, f"{title} ({window} bars)", rolled, group=True))
    for symbol in params["universe"]["symbols"]:
        spec = _price_chart(symbol, series.bars, result, date)
        figures.append(
            _figure(f"trades-{symbol}", f"{symbol}: trades on the price", spec, note=spec["note"])
        )
    histogram = _histogram([t.return_pct for t in result.trades])
    if histogram:
        figures.append(
            _figure(
                "trade-returns",
                "Distribution of trade returns",
                histogram,
                caption="Net of costs, as a share of the sleeve committed at entry.",
                group=True,
            )
        )
    minimum = evidence["minimum_sample"]["required_trades"]
    sensitivity = _sensitivity(evidence["robustness"]["parameter_sensitivity"]["grid"], minimum)
    if sensitivity:
        figures.append(
            _figure(
                "sensitivity",
                "Parameter sensitivity: Sharpe",
                sensitivity.get("spec"),
                svg=sensitivity.get("svg"),
                caption="Each cell a backtest of the window with those parameters; a plateau of "
                "similar values is robust, a lone peak is fitted. * : fewer than "
                f"{minimum} trades, not ranked.",
                group=True,
            )
        )
    fan = _monte_carlo(series.monte_carlo_fan, stamps, equity)
    if fan:
        mc = evidence["robustness"]["monte_carlo"]
        figures.append(
            _figure(
                "monte-carlo",
                "Monte Carlo: resampled equity paths",
                fan,
                caption=f"{mc['samples']} stationary-bootstrap paths of the portfolio's bar "
                f"returns (mean block {mc['mean_block_bars']} bars, seed {mc['seed']}): the "
                "bands hold the middle 50 % and 90 % of paths at each bar.",
            )
        )
    walk = _walk_forward(series.walk_forward)
    if walk:
        figures.append(
            _figure(
                "walk-forward",
                "Walk-forward: out-of-sample equity, fold by fold",
                walk,
                caption="Each fold traded with the parameters chosen on everything before it; "
                "growth compounds across folds.",
            )
        )
    grouped, specs = [], []
    for i, figure in enumerate(figures):
        previous = figures[i - 1]["group"] if i else False
        following = figures[i + 1]["group"] if i + 1 < len(figures) else False
        chart = None
        if figure["spec"] is not None:
            chart = len(specs)
            specs.append({k: v for k, v in figure["spec"].items() if k != "note"})
        grouped.append(
            {
                **figure,
                "chart": chart,
                "group_start": figure["group"] and not previous,
                "group_end": figure["group"] and not following,
            }
        )
    timelines: dict[str, list[int]] = {}
    for spec in specs:  # one copy of each time axis: most charts share the equity's
        if spec["x"] == "time":
            key = next((k for k, v in timelines.items() if v == spec["data"][0]), None)
            if key is None:
                key = f"t{len(timelines)}"
                timelines[key] = spec["data"][0]
            spec["data"] = [key, *spec["data"][1:]]
    uplot_js, uplot_css, own_js, own_css = _assets()
    scripts, styles = [own_js, uplot_js], [uplot_css, own_css]
    verdict, warnings = verdict_and_warnings(evidence, params)
    since = None
    if series.baseline is not None:
        label, old_evidence, old_params = series.baseline
        rows = metric_changes(old_evidence, evidence)
        since = {
            "label": label,
            "rows": rows,
            "changed": any(row["change"] for row in rows),
            "inputs": input_changes(old_params, params),
        }
    signal = params["signal"]
    return (
        _environment()
        .get_template("tearsheet.html.j2")
        .render(
            title=f"{strategy['name']} ({strategy['id']} v{strategy['version']})",
            subtitle=[
                f"Backtest {date(stamps[0])} to {date(stamps[-1])} · signal {signal['name']}@"
                f"{signal['version']} · {', '.join(params['universe']['symbols'])} · "
                f"{params['data']['vendor']}",
            ],
            verdict=verdict,
            warnings=warnings,
            headline=_headline(evidence, (_volatility(equity, ppy), _volatility(benchmark, ppy))),
            relative=_relative(evidence),
            since=since,
            benchmark=evidence["benchmark"]["description"],
            figures=grouped,
            monthly=monthly_returns(stamps, equity),
            origin=origin,
            record=record(markdown_text),
            data=_json({"charts": specs, "timelines": timelines}),
            scripts=scripts,
            styles=styles,
            csp=policy(scripts, styles),
        )
    )
