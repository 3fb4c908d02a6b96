"""The runner trading through a real broker's SDK: alpaca-py and ccxt against their local servers.

Each runner here is the production runner (feed, decision, saver and broker threads, the TickDB
emulator's replay of the sample on a real socket) with ``deployment.broker`` naming a real broker
whose API is served on loopback by qcompile's emulators; the adapters talk to it through the
brokers' own SDKs. What the issue asks is checked from outside: the orders the broker received,
its positions against the runner's books, the journal, the alerts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from qcompile.emulator import Emulator
from qcompile.emulator import load_bars as emulator_bars
from qcompile.emulator.alpaca import KEY_ID, SECRET_KEY, AlpacaEmulator
from qcompile.emulator.binance import API_KEY, SECRET, BinanceEmulator
from qcompile.runtime.broker import Order
from qcompile.runtime.control import ControlError, reconcile
from qcompile.runtime.exchange import client_order_id
from qcompile.runtime.runner import Runner, RunnerError, Session
from qcompile.runtime.state import FileStateStore
from tests.conftest import REPO
from tests.integration.test_runner import (
    DAY,
    KEY,
    PARAMS,
    SYMBOLS,
    replay_events,
    sample_emulator,
    settings,
    wait_until,
)

ENV = {"ALPACA_KEY": KEY_ID, "ALPACA_SECRET": SECRET_KEY, "EX_KEY": API_KEY, "EX_SECRET": SECRET}
STRATEGY = "STR-2026-0007"
PRICES = {"GOOGL": 100.0, "MSFT": 50.0}


def alpaca_settings(server: AlpacaEmulator) -> dict[str, Any]:
    return {
        "kind": "alpaca",
        "endpoint": "paper",
        "account": "PA-TEST",
        "api_key": "${oc.env:ALPACA_KEY}",
        "secret": "${oc.env:ALPACA_SECRET}",
        "url": server.url,
        "poll_interval_s": 0.05,
    }


@pytest.fixture(scope="module")
def sample_bars() -> pl.DataFrame:
    return emulator_bars(REPO / "data/sample_us_daily", SYMBOLS)


@pytest.fixture
def alpaca() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(cash=1_000_000.0, auto_fill_at=PRICES) as server:
        yield server


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        if not runner.stopped:
            runner.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


def start(
    runners: list[Runner],
    root: Path,
    feed: Any,
    broker: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> Runner:
    session = Session(
        ws_base=f"ws://127.0.0.1:{feed.port}",
        rest_base=feed.rest_url,
        api_key=KEY,
        settings=settings(root, broker=broker),
        replay=True,
    )
    runner = Runner(params or yaml.safe_load(PARAMS.read_text()), root, session, ENV)
    runner.start()
    runners.append(runner)
    return runner


def feed_of(events: list[dict[str, Any]], bars: pl.DataFrame) -> Emulator:
    return Emulator(
        events, api_keys=[KEY], bars=bars, replay_start="first_subscribe", messages_per_second=400
    )


def quiet_feed(bars: pl.DataFrame) -> Emulator:
    """A connected feed that closes no bar (one bar's ticks per symbol): the runner decides
    nothing, so the only orders are the test's own."""
    return feed_of(replay_events(bars, 1), bars)


@contextlib.contextmanager
def quiet_runner(
    root: Path, runners: list[Runner], bars: pl.DataFrame
) -> Iterator[tuple[AlpacaEmulator, Emulator, Runner]]:
    """A runner connected to a quiet feed, trading through a fresh Alpaca server that fills
    nothing by itself: the test's orders are the only ones, and the test fills them."""
    with AlpacaEmulator(cash=1_000_000.0) as broker, quiet_feed(bars) as feed:
        runner = start(runners, root, feed, alpaca_settings(broker))
        assert wait_until(lambda: runner.feed.connected.is_set())
        yield broker, feed, runner


def books_settled(runner: Runner) -> bool:
    return not runner.engine.pending_orders()


def journal(root: Path) -> list[dict[str, Any]]:
    return FileStateStore(root / "state", STRATEGY, "reader").read_journal()


def test_a_replay_trades_through_alpaca_and_the_books_agree(
    project: Path,
    alpaca: AlpacaEmulator,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with sample_emulator(sample_bars) as feed:
        runner = start(runners, project, feed, alpaca_settings(alpaca))
        assert feed.wait_exhausted(30)
        assert runner.wait_idle(10)
        assert wait_until(lambda: books_settled(runner), timeout=10)
        summary = runner.stop()
    sent = list(alpaca.orders.values())
    assert sent and summary.orders == len(sent)
    assert all(o.client_order_id.startswith(f"{STRATEGY}-") for o in sent)
    assert len({o.client_order_id for o in sent}) == len(sent)
    assert all(o.status == "filled" for o in sent)
    # the runner's books are the broker's: positions, and every fill once, at the broker's price
    broker_positions = {s: q for s, (q, _) in alpaca.positions.items() if q}
    assert summary.positions == broker_positions
    fills = [r for r in journal(project) if r["type"] == "fill"]
    assert sorted(f["order_id"] for f in fills) == sorted(o.client_order_id for o in sent)
    assert all(f["price"] == PRICES[f["symbol"]] for f in fills)
    assert any(
        r["type"] == "alert" and r["key"] == "runner.broker_override" and alpaca.url in r["summary"]
        for r in journal(project)
    )
    assert SECRET_KEY not in caplog.text and KEY_ID not in caplog.text


def test_the_same_replay_sends_the_paper_brokers_orders(
    tmp_path: Path,
    alpaca: AlpacaEmulator,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
) -> None:
    """Routing changes where orders go, not what is decided: the ids (strategy, bar, symbol,
    leg) and sides of a paper run and an Alpaca run of the same replay are the same."""
    decided: dict[str, list[tuple[str, bool]]] = {}
    for name, broker in (("paper", "paper"), ("alpaca", alpaca_settings(alpaca))):
        root = tmp_path / name
        root.mkdir()
        with sample_emulator(sample_bars) as feed:
            runner = start(runners, root, feed, broker)
            assert feed.wait_exhausted(30) and runner.wait_idle(10)
            assert wait_until(lambda r=runner: books_settled(r), timeout=10)
            runner.stop()
        decided[name] = sorted(
            (r["order_id"], r["quantity"] > 0) for r in journal(root) if r["type"] == "fill"
        )
    assert decided["paper"] and decided["paper"] == decided["alpaca"]


def test_the_safe_state_cancels_working_orders_at_the_broker_within_a_second(
    project: Path,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
) -> None:
    with quiet_runner(project, runners, sample_bars) as (broker, feed, runner):
        orders = [Order(f"manual-{n}", "MSFT", 10.0 + n, 0) for n in range(4)]
        with runner.engine.lock:
            runner.engine.send_orders(orders)
        # orders in every state: working, partly filled, filled, cancelled by hand
        broker.fill("manual-1", 4, 300.0)
        broker.fill("manual-2", 12, 301.0)
        broker.cancel("manual-3")
        assert wait_until(lambda: "manual-2" not in runner.engine.state.pending, timeout=5)
        before = runner.engine.counters.safe_states
        feed.inject("silence", duration_s=2.0)
        assert wait_until(lambda: runner.engine.counters.safe_states > before, timeout=5)
        elapsed_ms = runner.engine.safe_state_ms[-1]
        assert elapsed_ms < 1000.0, elapsed_ms  # from the confirmed disconnection, broker call in
        assert [o for o in broker.orders.values() if o.open] == []
        assert {o.client_order_id: o.status for o in broker.orders.values()} == {
            "manual-0": "canceled",
            "manual-1": "canceled",
            "manual-2": "filled",
            "manual-3": "canceled",
        }
        # the cancelled orders' last reports are booked: the partial fill once, nothing else
        assert wait_until(lambda: books_settled(runner), timeout=5)
        assert runner.engine.state.positions == {"MSFT": 16.0}
        assert runner.engine.state.positions == {s: q for s, (q, _) in broker.positions.items()}


def test_fills_made_while_the_broker_could_not_be_reached_are_booked_once(
    project: Path,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
) -> None:
    """An order filled across a disconnection from the broker: part before, the rest while the
    stream is down and every request refused, booked once the broker answers again."""
    with quiet_runner(project, runners, sample_bars) as (broker, _, runner):
        with runner.engine.lock:
            runner.engine.send_orders([Order("across", "GOOGL", 20.0, 0)])
        broker.fill("across", 5, 200.0)
        assert wait_until(lambda: runner.engine.state.positions == {"GOOGL": 5.0}, timeout=5)
        broker.rate_limit(requests=40, retry_after=0)  # every request refused for a while
        broker.drop_stream()
        broker.fill("across", 15, 202.0)  # the rest fills meanwhile
        assert wait_until(lambda: books_settled(runner), timeout=10)
        assert runner.engine.state.positions == {"GOOGL": 20.0}
        fills = [r for r in journal(project) if r["type"] == "fill"]
        assert [f["quantity"] for f in fills] == [5.0, 15.0]
        assert fills[1]["price"] == pytest.approx(202.0)
        alerts = [r["key"] for r in journal(project) if r["type"] == "alert"]
        assert "broker.unreachable" in alerts
        # after a feed reconnect, positions are compared with the broker's and agree: no hold
        runner.feed.reconnect("test")
        assert wait_until(
            lambda: runner.feed.connected.is_set() and not runner.engine.recheck_positions,
            timeout=10,
        )
        assert runner.engine.state.hold == ""


def test_fills_arrive_by_the_trade_updates_stream_without_waiting_for_a_poll(
    project: Path, runners: list[Runner], sample_bars: pl.DataFrame
) -> None:
    with (
        AlpacaEmulator(cash=1_000_000.0) as broker,
        quiet_feed(sample_bars) as feed,
    ):
        slow_polls = {**alpaca_settings(broker), "poll_interval_s": 60.0}
        runner = start(runners, project, feed, slow_polls)
        assert wait_until(lambda: broker.listening == 1)
        with runner.engine.lock:
            runner.engine.send_orders([Order("streamed", "MSFT", 10.0, 0)])
        broker.fill("streamed", 4, 300.0)
        assert wait_until(lambda: runner.engine.state.positions == {"MSFT": 4.0}, timeout=3)
        broker.drop_stream()  # the SDK reconnects by itself; what it missed comes cumulatively
        broker.fill("streamed", 3, 301.0)  # sent to no one
        assert wait_until(lambda: broker.listening == 1, timeout=10)
        broker.fill("streamed", 3, 302.0)
        assert wait_until(lambda: books_settled(runner), timeout=3)
        assert runner.engine.state.positions == {"MSFT": 10.0}
        fills = [r for r in journal(project) if r["type"] == "fill"]
        assert [f["quantity"] for f in fills] == [4.0, 6.0]  # the missed fill in the next one
        assert fills[1]["price"] == pytest.approx((3 * 301 + 3 * 302) / 6)
        runner.stop()
        assert wait_until(lambda: broker.listening == 0, timeout=10)  # the stream was closed


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("filled_qty", 15.0, "15 filled of 10 ordered"),
        ("filled_qty", -3.0, "filled -3.0"),
        ("filled_avg_price", float("nan"), "cost nan"),
        ("filled_avg_price", -300.0, "cost -1200.0"),
        ("filled_avg_price", 0.0, "4 filled for 0"),
        ("side", "sell", "it is a MSFT sell"),
        ("symbol", "AAPL", "it is a AAPL buy"),
    ],
)
def test_an_impossible_report_from_the_broker_fails_the_runner_into_its_safe_state(
    project: Path,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
    field: str,
    value: Any,
    said: str,
) -> None:
    """A broker answering garbage about an order (a bug at the broker, a proxy in between):
    nothing of it reaches the books; the runner fails loudly (safe state, runner.failed, a
    non-zero exit for its manager), never trades on a wrong position."""
    with quiet_runner(project, runners, sample_bars) as (broker, _, runner):
        with runner.engine.lock:
            runner.engine.send_orders([Order("garbled", "MSFT", 10.0, 0)])
        broker.fill("garbled", 4, 300.0)
        assert wait_until(lambda: runner.engine.state.positions == {"MSFT": 4.0}, timeout=5)
        with broker._lock:  # the broker's record of the working order, garbled
            emulated = next(iter(broker.orders.values()))
            setattr(emulated, field, value)
        assert wait_until(runner.failed.is_set, timeout=5)
        assert said in (runner.failure or "") and "impossible" in (runner.failure or "")
        assert runner.engine.state.positions == {"MSFT": 4.0}  # as before it was garbled
        alerts = {r["key"] for r in journal(project) if r["type"] == "alert"}
        assert {"runner.failed", "runner.safe_state"} <= alerts


def test_a_broker_restart_is_ridden_out_and_what_filled_meanwhile_is_booked_once(
    project: Path, runners: list[Runner], sample_bars: pl.DataFrame
) -> None:
    with quiet_runner(project, runners, sample_bars) as (broker, _, runner):
        with runner.engine.lock:
            runner.engine.send_orders([Order("restart", "MSFT", 10.0, 0)])
        bounce = threading.Thread(target=broker.restart, args=(1.5,))
        bounce.start()
        time.sleep(0.5)
        broker.fill("restart", 10, 300.0)  # while the broker is away: no stream, no answers
        bounce.join(15)
        assert wait_until(lambda: books_settled(runner), timeout=10)
        assert runner.engine.state.positions == {"MSFT": 10.0} and not runner.failed.is_set()
        fills = [r for r in journal(project) if r["type"] == "fill"]
        assert [(f["quantity"], f["price"]) for f in fills] == [(10.0, 300.0)]
        alerts = [r["key"] for r in journal(project) if r["type"] == "alert"]
        assert "broker.unreachable" in alerts
        assert wait_until(lambda: broker.listening == 1, timeout=15)  # the stream is back too


def test_a_position_check_that_an_order_raced_is_not_a_mismatch(
    project: Path, runners: list[Runner], sample_bars: pl.DataFrame
) -> None:
    """After a reconnect the broker thread compares positions when nothing is working; an order
    the decision thread sends and the broker fills while the broker's positions are on their
    way must not read as a difference (it held a ccxt runner once, in CI)."""
    with quiet_runner(project, runners, sample_bars) as (broker, _, runner):
        engine = runner.engine

        def positions_while_an_order_fills() -> dict[str, float]:
            def decide() -> None:
                with engine.lock:
                    engine.send_orders([Order("racing", "MSFT", 10.0, 0)])

            deciding = threading.Thread(target=decide)
            deciding.start()
            deciding.join(5)
            broker.fill("racing", 10, 300.0)
            return {s: q for s, (q, _) in broker.positions.items()}

        assert engine.positions_check(positions_while_an_order_fills) is None  # try again
        assert wait_until(lambda: books_settled(runner), timeout=5)
        assert engine.positions_check(lambda: {"MSFT": 10.0}) == []
        assert engine.positions_check(lambda: {"MSFT": 7.0}) == ["MSFT: state 10, broker 7"]
        assert engine.state.hold == ""


def test_a_rejected_order_is_alerted_and_not_booked(
    project: Path,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
) -> None:
    with quiet_runner(project, runners, sample_bars) as (broker, _, runner):
        broker.reject_next("insufficient buying power")
        with runner.engine.lock:
            runner.engine.send_orders([Order("refused", "MSFT", 1e6, 0)])
        assert "refused" not in runner.engine.state.pending
        alerts = [r for r in journal(project) if r["type"] == "alert"]
        (rejected,) = [a for a in alerts if a["key"] == "broker.rejected"]
        assert (
            rejected["severity"] == "critical"
            and "insufficient buying power" in rejected["summary"]
        )
        assert runner.engine.state.positions == {}


def test_a_mismatch_at_start_holds_the_runner_until_an_operator_reconciles(
    project: Path,
    runners: list[Runner],
    sample_bars: pl.DataFrame,
) -> None:
    params = yaml.safe_load(PARAMS.read_text())
    events = replay_events(sample_bars, 40)
    cut = sorted({e["timestamp"] // DAY for e in events})[20] * DAY
    earlier = [e for e in events if e["timestamp"] < cut]
    later = [e for e in events if e["timestamp"] >= cut]
    with AlpacaEmulator(cash=1_000_000.0, auto_fill_at=PRICES) as broker:
        broker.positions["MSFT"] = (7.0, 300.0)  # someone traded in the account by hand
        deployment = {**params["deployment"], **settings(project, broker=alpaca_settings(broker))}
        held_params = {**params, "deployment": deployment}
        with feed_of(earlier, sample_bars) as feed:
            runner = start(runners, project, feed, alpaca_settings(broker), held_params)
            assert feed.wait_exhausted(30) and runner.wait_idle(10)
            state = runner.engine.state
            assert state.hold.startswith("at start-up: MSFT: state 0, broker 7")
            assert state.suspended and runner.engine.counters.decisions == 0  # fresh data: held
            runner.stop()
        alerts = [r for r in journal(project) if r["type"] == "alert"]
        assert any(a["key"] == "broker.mismatch" and a["severity"] == "critical" for a in alerts)
        assert broker.orders == {}  # nothing was sent while held

        lines, agree = reconcile(held_params, project, False, "", ENV)
        assert not agree and "MSFT: state 0, broker 7" in lines
        with pytest.raises(ControlError, match="paper"):
            reconcile(params | {"deployment": {**deployment, "broker": "paper"}}, project, True, "")
        lines, agree = reconcile(held_params, project, True, "j.chen@quantfund.com", ENV)
        assert agree and lines[-1].startswith("accepted the broker's positions")
        (record,) = [r for r in journal(project) if r["type"] == "reconciled"]
        assert record["by"] == "j.chen@quantfund.com"

        with feed_of(later, sample_bars) as feed:  # the next start trades again
            runner = start(runners, project, feed, alpaca_settings(broker), held_params)
            assert runner.engine.state.hold == "" and runner.engine.state.positions == {"MSFT": 7}
            assert feed.wait_exhausted(30) and runner.wait_idle(10)
            assert runner.engine.counters.decisions > 0
            runner.stop()


def test_a_broker_that_cannot_be_reached_at_start_is_a_clear_error(
    project: Path, runners: list[Runner], sample_bars: pl.DataFrame
) -> None:
    with sample_emulator(sample_bars) as feed:
        unreachable = {**alpaca_settings_for("http://127.0.0.1:9"), "poll_interval_s": 0.05}
        with pytest.raises(RunnerError, match="reconciling with the broker at start-up"):
            start(runners, project, feed, unreachable)
        missing = {**unreachable, "secret": "${oc.env:NOT_SET_ANYWHERE}"}
        with pytest.raises(RunnerError, match="NOT_SET_ANYWHERE is not set"):
            start(runners, project, feed, missing)


def alpaca_settings_for(url: str) -> dict[str, Any]:
    return {
        "kind": "alpaca",
        "api_key": "${oc.env:ALPACA_KEY}",
        "secret": "${oc.env:ALPACA_SECRET}",
        "url": url,
    }


def test_a_replay_trades_through_ccxt_on_an_exchanges_spot_market(
    project: Path, runners: list[Runner], sample_bars: pl.DataFrame
) -> None:
    """The sample's two series replayed as BTCUSDT and ETHUSDT (a universe names the exchange's
    market ids); the runner trades them through ccxt's Binance client."""
    renamed = {"GOOGL": "BTCUSDT", "MSFT": "ETHUSDT"}
    bars = sample_bars.with_columns(pl.col("symbol").replace(renamed))
    params = yaml.safe_load(PARAMS.read_text())
    params["universe"]["symbols"] = list(renamed.values())
    params["data"]["local"] = None  # history from the feed's REST, under the new names
    exchange_settings = {
        "kind": "ccxt",
        "exchange": "binance",
        "api_key": "${oc.env:EX_KEY}",
        "secret": "${oc.env:EX_SECRET}",
        "poll_interval_s": 0.05,
    }
    fill_at = {"BTCUSDT": 100.0, "ETHUSDT": 50.0}
    with (
        BinanceEmulator(balances={"USDT": 1_000_000.0}, auto_fill_at=fill_at) as exchange,
        sample_emulator(bars) as feed,
    ):
        exchange_settings["url"] = exchange.url
        runner = start(runners, project, feed, exchange_settings, params)
        assert feed.wait_exhausted(30) and runner.wait_idle(10)
        assert wait_until(lambda: books_settled(runner), timeout=10)
        summary = runner.stop()
        sent = list(exchange.orders.values())
        assert sent and summary.orders == len(sent)
        fills = [r for r in journal(project) if r["type"] == "fill"]
        assert sorted(client_order_id(f["order_id"]) for f in fills) == sorted(
            o.client_order_id for o in sent
        )
        held = {s: exchange.balances.get(s[:3], 0.0) for s in renamed.values()}
        assert summary.positions == {s: q for s, q in held.items() if q}


def test_a_research_install_without_the_sdk_is_told_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pip install -e .` leaves the brokers' SDKs out; a deployment naming one says which
    extra brings it, in one line (a module set to None in sys.modules fails to import)."""
    import sys

    from qcompile.runtime.broker import BrokerError
    from qcompile.runtime.routing import open_remote_broker

    params = yaml.safe_load(PARAMS.read_text())
    for kind, sdk, runtime_module in (
        ("alpaca", "alpaca.trading.client", "qcompile.runtime.alpaca"),
        ("ccxt", "ccxt", "qcompile.runtime.exchange"),
    ):
        monkeypatch.setitem(sys.modules, sdk, None)
        monkeypatch.delitem(sys.modules, runtime_module, raising=False)
        deployment = {"broker": {**alpaca_settings_for("http://127.0.0.1:9"), "kind": kind}}
        deployment["broker"]["exchange"] = "binance"
        with pytest.raises(BrokerError, match=rf"pip install 'qcompile\[{kind}\]'"):
            open_remote_broker(params, deployment, ENV)
