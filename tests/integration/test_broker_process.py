"""`qcompile run` routing to Alpaca as a user deploys it, and killed with -9 at every moment.

The project's conf/ names an Alpaca deployment (paper endpoint, keys from the environment, the
API's address pointed at the local Alpaca server) and is built with `qcompile build`; the runner
is the real process. The crash trials kill it with SIGKILL while an order is on its way: the
broker holds each order a moment before answering, and the kill lands inside that window (or at
a random moment). Whatever the moment, no order may reach the broker twice, and after every
restart the runner's books agree with the broker's.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from qcompile.emulator import Emulator, ticks_from_bars
from qcompile.emulator import load_bars as emulator_bars
from qcompile.emulator.alpaca import KEY_ID, SECRET_KEY, AlpacaEmulator
from qcompile.emulator.binance import API_KEY as EXCHANGE_KEY
from qcompile.emulator.binance import SECRET as EXCHANGE_SECRET
from qcompile.emulator.binance import BinanceEmulator
from qcompile.runtime.state import FileStateStore
from tests.conftest import cli_process, copy_example_project, edit, without_production_example

STRATEGY = "STR-2026-0007"
PRICES = {"GOOGL": 100.0, "MSFT": 50.0}
FEED_KEY = "tk_test_0123456789abcdef01234567"
ENV = {
    "ALPACA_API_KEY_ID": KEY_ID,
    "ALPACA_API_SECRET_KEY": SECRET_KEY,
    "TICKDB_API_KEY": FEED_KEY,
}
EXCHANGE_ENV = {"EXCHANGE_KEY": EXCHANGE_KEY, "EXCHANGE_SECRET": EXCHANGE_SECRET}
DAY = 86_400_000


@pytest.fixture(scope="module")
def alpaca() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(cash=10_000_000.0, auto_fill_at=PRICES) as server:
        yield server


@pytest.fixture
def project(tmp_path: Path, alpaca: AlpacaEmulator) -> Path:
    """The example project with STR-2026-0007 deployed to Alpaca's paper endpoint, built."""
    # the production example is left out: its checklist signature covers the runtime's own
    # self-test, which a change to the runtime makes stale until it is re-signed (its own test)
    root = without_production_example(copy_example_project(tmp_path / "project"))
    (root / "conf/deployment/alpaca_rehearsal.yaml").write_text(
        "name: alpaca-rehearsal\n"
        "broker:\n"
        "  kind: alpaca\n"
        "  endpoint: paper\n"
        "  account: PA-REHEARSAL\n"
        "  api_key: ${oc.env:ALPACA_API_KEY_ID}\n"
        "  secret: ${oc.env:ALPACA_API_SECRET_KEY}\n"
        f"  url: {alpaca.url}\n"
        "  poll_interval_s: 0.05\n"
        "state_store:\n"
        "  kind: file\n"
        "  path: state\n"
        "heartbeat_interval_s: 5\n"
        "alerts:\n"
        "  - kind: log\n"
        "on_call:\n"
        "  - name: Jia Chen\n"
        "    email: j.chen@quantfund.com\n",
        encoding="utf-8",
    )
    edit(
        root / "conf/strategy/ma_trend.yaml", "/deployment: paper", "/deployment: alpaca_rehearsal"
    )
    built = cli_process(root, "build")
    assert built.returncode == 0, built.stdout + built.stderr
    alpaca.orders.clear()
    alpaca.positions.clear()
    return root


def run_process(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qcompile.cli", "run", STRATEGY, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV, "QCOMPILE_PROJECT": str(root), "PYTHONUNBUFFERED": "1"},
    )


def state_of(root: Path) -> dict[str, Any]:
    store = FileStateStore(root / "state", STRATEGY, "inspector")
    store.acquire()  # a killed runner's lease died with it
    try:
        state = store.load()
    finally:
        store.release()
        store.close()
    assert state is not None
    return state


def broker_positions(alpaca: AlpacaEmulator) -> dict[str, float]:
    return {s: q for s, (q, _) in alpaca.positions.items() if q}


def test_qcompile_run_trades_through_alpaca_with_the_built_deployment(
    project: Path, alpaca: AlpacaEmulator
) -> None:
    passport = (project / f"generated/{STRATEGY}/runbook.md").read_text(encoding="utf-8")
    assert "PA-REHEARSAL" in passport and SECRET_KEY not in passport
    process = run_process(project, "--feed", "emulator", "--bars", "60", "--speed", "2000")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "Traceback" not in err and SECRET_KEY not in err + out
    assert alpaca.orders, "the replay decided trades: they went to the broker"
    state = state_of(project)
    assert state["positions"] == broker_positions(alpaca)
    assert "hold" not in state and state["pending_orders"] == []

    # qcompile reconcile, as the runbook has an operator run it
    agreed = cli_process(project, "reconcile", STRATEGY, env=ENV)
    assert agreed.returncode == 0 and "positions agree" in agreed.stdout, agreed.stderr
    alpaca.positions["MSFT"] = (broker_positions(alpaca).get("MSFT", 0.0) + 3.0, 50.0)
    differs = cli_process(project, "reconcile", STRATEGY, env=ENV)
    assert differs.returncode == 1 and "MSFT: state" in differs.stdout
    assert "--accept-broker adopts the broker's positions" in differs.stderr
    anonymous = cli_process(project, "reconcile", STRATEGY, "--accept-broker", env=ENV)
    assert anonymous.returncode == 2 and "needs --by" in anonymous.stderr
    accepted = cli_process(
        project, "reconcile", STRATEGY, "--accept-broker", "--by", "j.chen@quantfund.com", env=ENV
    )
    assert accepted.returncode == 0, accepted.stderr
    assert state_of(project)["positions"] == broker_positions(alpaca)
    no_key = cli_process(project, "reconcile", STRATEGY)
    assert no_key.returncode == 2 and "ALPACA_API_KEY_ID is not set" in no_key.stderr
    assert "Traceback" not in no_key.stderr + anonymous.stderr + differs.stderr

    # --paper rehearses the same deployment on the paper broker: nothing reaches Alpaca
    sent = len(alpaca.orders)
    shutil.rmtree(project / "state")
    process = run_process(project, "--paper", "--feed", "emulator", "--bars", "60")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert len(alpaca.orders) == sent and state_of(project)["paper_ledger"]["fills"] > 0


def test_kill_9_between_decision_and_acknowledgement_never_duplicates_an_order(
    project: Path, alpaca: AlpacaEmulator
) -> None:
    """The feed is a live one (it goes on while the runner is down, as a market does): one
    emulator replaying the sample for the whole test, each runner process connecting to it."""
    rng = random.Random(20261203)
    edit(  # the feed wants a key: the sample's source declares one for this test
        project / "conf/data/sample_us_daily.yaml",
        "lookback_years: 8",
        "lookback_years: 8\napi_key: ${oc.env:TICKDB_API_KEY}",
    )
    assert cli_process(project, "build").returncode == 0
    bars = emulator_bars(project / "data/sample_us_daily", list(PRICES))
    feed = Emulator(
        ticks_from_bars(bars.filter(pl.col("timestamp") >= bars["timestamp"].sort()[-4000]), DAY),
        api_keys=[FEED_KEY],
        bars=bars,
        replay_start="first_subscribe",
        messages_per_second=250,
    )
    alpaca.answer_delay_s = 0.15  # each order is taken, then answered 150 ms later
    inside_window = kills = 0
    with feed:
        args = (
            f"--ws-url=ws://127.0.0.1:{feed.port}",
            f"--rest-url={feed.rest_url}",
            "--history-replay",
        )
        for trial in range(12):
            before = len(alpaca.orders)
            process = run_process(project, *args)
            with process:
                try:
                    deadline = time.monotonic() + 60
                    while len(alpaca.orders) == before and process.poll() is None:
                        assert time.monotonic() < deadline, "no order within a minute"
                        time.sleep(0.002)
                    if trial % 3 != 2:  # mostly inside the window: taken, not yet answered
                        time.sleep(rng.uniform(0.0, 0.12))
                        inside_window += 1
                    else:  # now and then anywhere after it
                        time.sleep(rng.uniform(0.0, 0.5))
                finally:
                    process.send_signal(signal.SIGKILL)
                    process.wait(30)
            assert process.returncode == -signal.SIGKILL, process.stderr and process.stderr.read()
            kills += 1
        alpaca.answer_delay_s = 0.0
        final = run_process(project, *args, "--duration", "4")  # then an orderly stop
        _, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    assert kills == 12 and inside_window >= 8

    orders = sorted(alpaca.orders.values(), key=lambda o: o.client_order_id)
    ids = [o.client_order_id for o in orders]
    assert len(ids) == len(set(ids)) >= 12  # no id twice (the server would refuse it anyway) ...
    # ... and no order twice under another id: per symbol, in decision order, a position is
    # only ever opened from flat and closed to flat (a duplicate entry would double it)
    for symbol in PRICES:
        held = 0.0
        legs = sorted(  # a bar's exit goes before its entry (a flip)
            (int(o.client_order_id.split("-")[3]), o.client_order_id.endswith("-entry"), o)
            for o in orders
            if o.symbol == symbol
        )
        for _, entry, order in legs:
            if entry:
                assert held == 0.0, f"{symbol}: an entry on top of a position: {order}"
            held += order.filled_qty * (1 if order.side == "buy" else -1)
            if not entry:
                assert held == 0.0, f"{symbol}: an exit that did not flatten: {order}"
    state = state_of(project)
    assert "hold" not in state, state.get("hold")  # every restart's books agreed
    assert state["positions"] == broker_positions(alpaca)


def test_qcompile_run_trades_through_ccxt_on_an_exchanges_spot_market(tmp_path: Path) -> None:
    """A strategy whose universe is two Binance spot markets (by the exchange's ids), deployed
    to ccxt's Binance client, built and run as a user does; the sample's two stock series stand
    in for their prices."""
    root = without_production_example(copy_example_project(tmp_path / "project"))
    sample, data = root / "data/sample_us_daily", root / "data/crypto_sample"
    data.mkdir()
    shutil.copy(sample / "GOOGL.parquet", data / "BTCUSDT.parquet")
    shutil.copy(sample / "MSFT.parquet", data / "ETHUSDT.parquet")
    source = (root / "conf/data/sample_us_daily.yaml").read_text(encoding="utf-8")
    source = source.replace("symbols: [GOOGL, IXIC, MSFT, SPX]", "symbols: [BTCUSDT, ETHUSDT]")
    source = source.replace("path: data/sample_us_daily", "path: data/crypto_sample")
    (root / "conf/data/crypto_sample.yaml").write_text(source, encoding="utf-8")
    (root / "conf/universe/crypto_spot.yaml").write_text(
        'name: Two spot markets\nas_of: "2009-06-01"\nsymbols: [BTCUSDT, ETHUSDT]\n'
        "benchmarks: []\nfilters:\n  availability: the two largest markets\nrebalance: none\n"
        "survivorship: survivors_only\n",
        encoding="utf-8",
    )
    strategy = root / "conf/strategy/ma_trend.yaml"
    edit(strategy, "/universe: us_sample_stocks", "/universe: crypto_spot")
    edit(strategy, "/data: sample_us_daily", "/data: crypto_sample")
    fills = {"BTCUSDT": 100.0, "ETHUSDT": 50.0}
    replay = ("--feed", "emulator", "--bars", "120", "--speed", "3000")
    with BinanceEmulator(balances={"USDT": 10_000_000.0}, auto_fill_at=fills) as exchange:
        with strategy.open("a", encoding="utf-8") as out:
            out.write(
                "deployment:\n  broker:\n    kind: ccxt\n    exchange: binance\n"
                "    account: spot-test\n    api_key: ${oc.env:EXCHANGE_KEY}\n"
                f"    secret: ${{oc.env:EXCHANGE_SECRET}}\n    url: {exchange.url}\n"
                "    poll_interval_s: 0.05\n"
            )
        built = cli_process(root, "build")
        assert built.returncode == 0, built.stderr
        runbook = (root / f"generated/{STRATEGY}/runbook.md").read_text(encoding="utf-8")
        assert "binance spot through ccxt, account spot-test" in runbook
        process = subprocess.run(
            [sys.executable, "-m", "qcompile.cli", "run", STRATEGY, *replay],
            cwd=root,
            env={**os.environ, "QCOMPILE_PROJECT": str(root), **EXCHANGE_ENV},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert process.returncode == 0, process.stderr
        assert EXCHANGE_SECRET not in process.stderr + process.stdout
        sent = list(exchange.orders.values())
        held = {s: exchange.balances.get(s.removesuffix("USDT"), 0.0) for s in fills}
    assert sent, "the replay decided trades: they went to the exchange"
    assert all(o.status == "FILLED" for o in sent)
    state = state_of(root)
    assert state["positions"] == {s: q for s, q in held.items() if q}
    assert "hold" not in state and state["pending_orders"] == []
