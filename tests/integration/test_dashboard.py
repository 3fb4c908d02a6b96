"""`qcompile dashboard` in a real headless Chromium, against a real runner fed by the emulator.

The runner is frozen with SIGSTOP once it holds positions: alive, holding its lease, but no
longer writing, so what the page shows can be compared exactly with what the store holds (a
running replay changes the daily PnL every few milliseconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from qcompile.operations.dashboard import DashboardError, DashboardServer, make_server
from qcompile.runtime.state import FileStateStore
from tests.browser import dump_dom
from tests.conftest import REPO, cli_process

STRATEGY = "STR-2026-0007"
REDIS_STRATEGY = "STR-2026-0063"  # its store URL comes from an environment variable
REPLAY = ("--feed", "emulator", "--bars", "300", "--speed", "300")
INITIAL_CAPITAL = 500_000.0  # backtest.initial_capital of STR-2026-0007


class Panels(HTMLParser):
    """The dumped page's ``data-field`` texts, keyed by (strategy, symbol or None, field)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.fields: dict[tuple[str | None, str | None, str], str] = {}
        self._strategy: str | None = None
        self._symbol: str | None = None
        self._open: tuple[str, tuple[str | None, str | None, str]] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self._strategy = attributes.get("data-strategy")
        if tag == "tr":
            self._symbol = attributes.get("data-symbol")
        if attributes.get("data-field"):
            key = (self._strategy, self._symbol, str(attributes["data-field"]))
            self._open = (tag, key)
            self.fields[key] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[0] == tag:
            self._open = None
        if tag == "tr":
            self._symbol = None
        if tag == "section":
            self._strategy = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.fields[self._open[1]] += data

    def field(self, name: str, symbol: str | None = None, strategy: str = STRATEGY) -> str:
        key = (strategy, symbol, name)
        assert key in self.fields, f"{key} not on the page; fields: {sorted(self.fields)}"
        return self.fields[key].strip()


def number(text: str) -> float:
    return float(text.replace(",", "").removesuffix(" s"))


def last_day_change(journal: list[dict[str, Any]]) -> tuple[str, float]:
    """The test's own reading of the journal: (last date, its equity change)."""
    closing: dict[str, float] = {}
    for record in journal:
        if record.get("type") == "daily":
            closing[record["date"]] = record["equity"]
    dates = sorted(closing)
    previous = closing[dates[-2]] if len(dates) > 1 else INITIAL_CAPITAL
    return dates[-1], closing[dates[-1]] - previous


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture(scope="module")
def frozen_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A deployed checkout whose runner traded on the emulator, then was frozen (SIGSTOP)."""
    root = tmp_path_factory.mktemp("dashboard") / "deployed"
    for folder in ("conf", "generated", "data/sample_us_daily"):
        shutil.copytree(REPO / folder, root / folder)
    process = subprocess.Popen(
        [sys.executable, str(root / "generated" / STRATEGY / "runner.py"), *REPLAY],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        store = FileStateStore(root / "state", STRATEGY, "test-reader")  # reads; no lease
        deadline = time.monotonic() + 30
        while True:
            state = store.load()
            if state and state["positions"] and store.read_heartbeat() and store.read_journal():
                break
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the runner held no positions within 30 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGSTOP)
        while not stopped(process.pid):
            time.sleep(0.01)
        yield root, process.pid
    finally:
        process.send_signal(signal.SIGCONT)
        # A SIGINT sent while the process is stopped or resuming can be taken by a non-main
        # thread: the main thread, asleep in Event.wait, then only notices it when the replay
        # ends (~13 s here). Once the process runs again, Ctrl-C stops it at once.
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        assert process.returncode == 0, err[-2000:]


@pytest.fixture
def server(frozen_runner: tuple[Path, int]) -> Iterator[DashboardServer]:
    root, _ = frozen_runner
    env = {k: v for k, v in os.environ.items() if k != "QCOMPILE_REDIS_URL"}
    dashboard = make_server(root, port=0, env=env)
    thread = threading.Thread(target=dashboard.serve_forever, daemon=True)
    thread.start()
    yield dashboard
    dashboard.shutdown()
    dashboard.server_close()
    thread.join(5)


def persisted(root: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    store = FileStateStore(root / "state", STRATEGY, "test-reader")
    state, beat = store.load(), store.read_heartbeat()
    assert state is not None and beat is not None
    return state, beat, store.read_journal()


def test_the_page_in_chromium_shows_what_the_runner_persisted(
    server: DashboardServer, frozen_runner: tuple[Path, int], tmp_path: Path
) -> None:
    root, _ = frozen_runner
    page = Panels(dump_dom(server.url, tmp_path / "profile"))
    state, beat, journal = persisted(root)

    assert page.field("seq") == str(state["seq"])  # the very state read here
    shown = {s for s, _, f in page.fields if s} - {None}
    assert STRATEGY in shown and REDIS_STRATEGY in shown
    for symbol, quantity in state["positions"].items():
        assert number(page.field("quantity", symbol)) == quantity, symbol
    held = {sym for s, sym, f in page.fields if s == STRATEGY and f == "quantity"}
    assert held == set(state["positions"])
    date, change = last_day_change(journal)
    assert page.field("pnl-date") == date
    assert number(page.field("pnl-day")) == pytest.approx(change, abs=0.005)
    assert page.field("open-orders") == str(len(state["pending_orders"]))
    for symbol, ms in state["cursor"].items():
        assert page.field("cursor", symbol) == utc(ms)
    age = number(page.field("heartbeat-age"))
    expected_age = (datetime.now(UTC) - datetime.fromisoformat(beat["at"])).total_seconds()
    assert 0 <= age <= expected_age + 0.5
    assert page.field("status") == "up"
    # a strategy whose store cannot be opened is shown with why, not hidden or fatal
    assert "QCOMPILE_REDIS_URL" in page.field("error", strategy=REDIS_STRATEGY)
    assert page.field("status", strategy=REDIS_STRATEGY) == "down"


def get(url: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_api_reports_the_store_and_never_takes_the_lease(
    server: DashboardServer, frozen_runner: tuple[Path, int]
) -> None:
    root, pid = frozen_runner
    status, _, body = get(server.url + "api/strategies")
    assert status == 200
    panels = {s["id"]: s for s in json.loads(body)["strategies"]}
    state, beat, journal = persisted(root)

    assert sorted(panels) == sorted(p.name for p in (root / "generated").glob("STR-*"))
    mine = panels[STRATEGY]
    assert mine["seq"] == state["seq"] and mine["cash"] == state["cash"]
    assert {p["symbol"]: p["quantity"] for p in mine["positions"]} == state["positions"]
    marks = {s: bar[4] for s, bar in state["building"].items()}
    value = sum(q * marks[s] for s, q in state["positions"].items())
    assert mine["equity"] == pytest.approx(state["cash"] + value)
    assert [o["id"] for o in mine["pending_orders"]] == [o["id"] for o in state["pending_orders"]]
    assert {c["symbol"]: c["ms"] for c in mine["cursor"]} == state["cursor"]
    assert mine["suspended"] == state["suspended"]
    date, change = last_day_change(journal)
    assert mine["pnl"]["date"] == date and mine["pnl"]["change"] == pytest.approx(change)
    assert 1 <= len(mine["pnl"]["history"]) <= 10
    heartbeat = mine["heartbeat"]
    assert heartbeat["pid"] == pid == beat["pid"] and heartbeat["status"] == "up"
    assert heartbeat["interval_s"] == 30.0 and heartbeat["age_s"] >= 0
    # strategies that never ran are down, with no state and no error
    assert panels["STR-2026-0042"]["heartbeat"]["status"] == "down"
    assert panels["STR-2026-0042"]["has_state"] is False and not panels["STR-2026-0042"]["error"]
    # read-only: the frozen runner still holds its lease
    holder = json.loads((root / "state" / STRATEGY / "lease").read_text())
    assert holder["pid"] == pid


def test_the_page_is_self_contained_and_answers_loopback_names_only(
    server: DashboardServer,
) -> None:
    status, headers, body = get(server.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert not re.search(rb"""(src|href)=|https?://|innerHTML""", body)  # no assets, no CDN
    assert get(server.url, host="attacker.example:80")[0] == 403  # DNS rebinding
    assert get(server.url + "api/strategies", host=f"localhost:{server.server_port}")[0] == 200
    assert get(server.url + "nothing")[0] == 404


def test_an_unknown_strategy_is_a_clear_error(tmp_path: Path) -> None:
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copytree(REPO / "generated", tmp_path / "generated")
    with pytest.raises(DashboardError, match="STR-9999"):
        make_server(tmp_path, port=0, only=["STR-9999"])
    result = cli_process(tmp_path, "dashboard", "--strategy", "STR-9999", "--port", "0")
    assert result.returncode == 2 and "STR-9999" in result.stderr
    assert "Traceback" not in result.stderr
