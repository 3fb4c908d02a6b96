"""report.html in a real headless Chromium: every chart drawn, nothing fetched, no script error or
policy violation, the verdict and warnings first, a trade's details on hover, zoom by drag."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qcompile.research.backtest.runner import backtest
from tests.browser import Browser
from tests.conftest import REPO

STRATEGY = "STR-2026-0007"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    backtest(REPO / f"generated/{STRATEGY}/params.yaml", REPO, output_dir=out)
    return out


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "profile")
    try:
        yield opened
    finally:
        opened.close()


def test_every_chart_draws_and_the_page_fetches_nothing(report: Path, browser: Browser) -> None:
    url = (report / "report.html").as_uri()
    browser.open(url, ready="document.documentElement.dataset.charts !== undefined")
    state = browser.evaluate(
        """(() => ({
            charts: Number(document.documentElement.dataset.charts),
            figures: document.querySelectorAll('figure[data-chart]').length,
            drawn: [...document.querySelectorAll('figure[data-chart]')]
                .filter(f => f.dataset.drawn === 'yes' && f.querySelector('canvas')).length,
            errors: document.documentElement.dataset.errors || null,
            csp: document.documentElement.dataset.csp || null,
            order: [...document.body.children].map(e => e.id || e.className).slice(0, 8),
        }))()"""
    )
    assert state["errors"] is None and state["csp"] is None, state
    # equity, drawdown, rolling Sharpe and volatility, GOOGL and MSFT trades, trade returns,
    # Monte Carlo, walk-forward (the sensitivity heatmap is inline SVG)
    assert state["figures"] == 9 and state["charts"] == state["figures"] == state["drawn"], state
    # the verdict comes right after the title, then the warnings, then the metrics
    assert state["order"][:2] == ["", "verdict"], state["order"]
    assert state["order"].index("headline") > state["order"].index("warning"), state["order"]
    assert browser.requested() == [url]  # the page itself, and nothing else
    browser.screenshot(report / "report.png")  # to look at: pytest --basetemp keeps it


def test_hovering_a_trade_shows_its_details(report: Path, browser: Browser) -> None:
    browser.open(
        (report / "report.html").as_uri(),
        ready="document.documentElement.dataset.charts !== undefined",
    )
    evidence = json.loads((report / "evidence.json").read_text())
    assert evidence["metrics"]["trade_count"] > 0
    # the first GOOGL trade of the report's trade table, read from the Markdown record
    row = next(
        line.split(" | ")
        for line in (report / "report.md").read_text().splitlines()
        if line.startswith("| GOOGL | long |")
    )
    entry_day, entry_price = row[2], float(row[3])
    browser.evaluate("document.getElementById('trades-GOOGL').scrollIntoView()")
    time.sleep(0.3)  # uPlot re-reads its position on the scroll event, a frame later
    x, y = browser.evaluate(
        """(() => {
            const u = document.getElementById('trades-GOOGL').plot;
            const box = u.over.getBoundingClientRect();
            const entry = u.data[2].findIndex(v => v !== null);
            return [box.left + u.valToPos(u.data[0][entry], 'x') + 1, box.top + box.height / 2];
        })()"""
    )
    browser.mouse("mouseMoved", x, y)
    note = browser.evaluate("document.querySelector('#trades-GOOGL .note').textContent")
    assert note.startswith("GOOGL long ") and f"in {entry_day} at {entry_price:.2f}" in note, note


def test_dragging_across_the_equity_chart_zooms_in(report: Path, browser: Browser) -> None:
    browser.open(
        (report / "report.html").as_uri(),
        ready="document.documentElement.dataset.charts !== undefined",
    )
    browser.evaluate("document.getElementById('equity').scrollIntoView()")
    time.sleep(0.3)  # uPlot re-reads its position on the scroll event, a frame later
    before, left, right, middle = browser.evaluate(
        """(() => {
            const u = document.getElementById('equity').plot;
            const box = u.over.getBoundingClientRect();
            return [u.scales.x.max - u.scales.x.min, box.left + box.width * 0.3,
                    box.left + box.width * 0.6, box.top + box.height / 2];
        })()"""
    )
    browser.mouse("mouseMoved", left, middle)
    browser.mouse("mousePressed", left, middle, "left")
    browser.mouse("mouseMoved", right, middle, "left")
    browser.mouse("mouseReleased", right, middle, "left")
    span = (
        "(() => { const u = document.getElementById('equity').plot;"
        " return u.scales.x.max - u.scales.x.min; })()"
    )
    deadline = time.monotonic() + 5
    while (after := browser.evaluate(span)) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # uPlot applies the new scale on its next frame
    assert 0.2 * before < after < 0.4 * before, (before, after)
