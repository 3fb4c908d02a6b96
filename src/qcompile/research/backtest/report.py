"""The standard backtest report (source document §3.1) as diffable Markdown.

Consumes the parameters, the evidence and the engine result; produces Markdown whose every
mandatory section is present, with the exact formulas beside the metrics. No clock is read:
running the same inputs again gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from qcompile import templating
from qcompile.research.backtest.benchmark import RELATIVE_FORMULAS
from qcompile.research.backtest.engine import Result

TEMPLATES = Path(__file__).parent / "templates"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@cache
def _environment() -> jinja2.Environment:
    return templating.environment(TEMPLATES, {"percent": percent, "number": number})


def markdown(
    params: dict[str, Any],
    evidence: dict[str, Any],
    result: Result,
    bars: pl.DataFrame,
    formulas: dict[str, str],
    date: Callable[[int], str],
    origin: str | None = None,
    overrides: tuple[str, ...] = (),
) -> str:
    """The report; ``origin`` says what it ran from (default: the strategy's built params)."""
    metrics = evidence["metrics"]
    equity = result.equity
    timestamps = equity["timestamp"].to_list()
    drawdown = {
        "depth": metrics["max_drawdown"],
        "peak": date(timestamps[metrics["drawdown_peak_index"]]) if timestamps else "n/a",
        "trough": date(timestamps[metrics["drawdown_trough_index"]]) if timestamps else "n/a",
    }
    coverage = bars.group_by("symbol").agg(
        pl.col("timestamp").min().alias("first"),
        pl.col("timestamp").max().alias("last"),
        pl.len().alias("bars"),
    )
    context = {
        "p": params,
        "e": evidence,
        "origin": origin or f"generated/{params['strategy']['id']}/params.yaml",
        # inside an HTML comment: "--" would end it early
        "origin_overrides": "".join(" " + o.replace("--", "- -") for o in overrides),
        "formulas": formulas,
        "relative_formulas": RELATIVE_FORMULAS,
        "drawdown": drawdown,
        "coverage": [
            {
                "symbol": r["symbol"],
                "first": date(r["first"]),
                "last": date(r["last"]),
                "bars": r["bars"],
            }
            for r in coverage.sort("symbol").iter_rows(named=True)
        ],
        "window": {
            "first": date(timestamps[0]) if timestamps else "n/a",
            "last": date(timestamps[-1]) if timestamps else "n/a",
        },
        "trades": [
            {
                "symbol": t.symbol,
                "side": "long" if t.side > 0 else "short",
                "entry": date(t.entry_time),
                "entry_price": t.entry_price,
                "exit": date(t.exit_time),
                "exit_price": t.exit_price,
                "shares": t.shares,
                "pnl": t.pnl,
                "return": t.return_pct,
                "costs": t.costs,
            }
            for t in result.trades
        ],
        "date": date,
    }
    return _environment().get_template("report.md.j2").render(**context)


def page(title: str, charts: list[str], markdown_text: str) -> str:
    """One self-contained HTML page (the sweep summary, the reviews): inline SVG charts, then
    the Markdown rendered."""
    from markdown_it import MarkdownIt

    # the Markdown was written by us with every value escaped for table cells; raw HTML stays off
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    return (
        _environment().get_template("report.html.j2").render(title=title, charts=charts, body=body)
    )
