"""The vendor emulator over real loopback sockets, seen from the clients production uses.

Clients are ``websocket-client`` (the trading runner's library) and ``urllib`` through the
project's own :class:`RestClient`. Replays run with ``replay_start="manual"`` and a high rate: the
test subscribes, then starts the clock, so assertions are on content, order and counts, never on time.
"""

from __future__ import annotations

import itertools
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import websocket

from qcompile.emulator import (
    Emulator,
    Fault,
    Scenario,
    ScenarioError,
    load_bars,
    load_scenario,
    ticks_from_bars,
)
from qcompile.emulator.replay import format_decimal
from qcompile.emulator.scenario import parse_scenario
from qcompile.marketdata.rest import RestClient, TickDBError

REPO = Path(__file__).resolve().parents[2]
KEY = "emu-test-key-0123"
DAY = 86_400_000
FAST = 5_000.0  # messages per second: a 24-event replay is over in a few ms

# Two symbols x three daily bars. AAA only rises bar to bar (up bars: high before low), BBB only
# falls (down bars: low before high).
BARS = pl.DataFrame(
    {
        "symbol": ["AAA", "BBB"] * 3,
        "timestamp": [0, 0, DAY, DAY, 2 * DAY, 2 * DAY],
        "open": [10.0, 20.0, 11.0, 19.0, 12.0, 18.0],
        "high": [11.0, 21.0, 12.0, 20.0, 13.0, 19.0],
        "low": [9.0, 19.0, 10.0, 18.0, 11.0, 17.0],
        "close": [10.5, 19.5, 11.5, 18.5, 12.5, 17.5],
        "volume": [400.0, 800.0, 400.0, 800.0, 400.0, 800.0],
    }
)
EVENTS = ticks_from_bars(BARS, DAY, ".US")
SYMBOLS = ["AAA.US", "BBB.US"]
CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError)


@contextmanager
def emulator(events: list[dict[str, Any]] | None = None, **options: Any) -> Iterator[Emulator]:
    options.setdefault("bars", BARS)
    options.setdefault("messages_per_second", FAST)
    options.setdefault("replay_start", "manual")
    with Emulator(EVENTS if events is None else events, api_keys={KEY}, **options) as running:
        yield running


@contextmanager
def connect(
    emu: Emulator, query: str = f"?api_key={KEY}", path: str = "/v1/realtime"
) -> Iterator[websocket.WebSocket]:
    ws = websocket.create_connection(f"ws://{emu.host}:{emu.port}{path}{query}", timeout=2)
    try:
        yield ws
    finally:
        ws.close(timeout=0.5)


def command(ws: websocket.WebSocket, cmd: str, **data: Any) -> dict[str, Any]:
    """Send a command and return the next message (the reply, when nothing is streaming)."""
    ws.send(json.dumps({"cmd": cmd, "data": data} if data else {"cmd": cmd}))
    return json.loads(ws.recv())


def subscribe(ws: websocket.WebSocket, channel: str, symbols: list[str]) -> None:
    reply = command(ws, "subscribe", channel=channel, symbols=symbols)
    assert reply == {
        "cmd": "subscribe",
        "code": 0,
        "message": "success",
        "data": {"channel": channel, "symbols": symbols},
    }


def receive(ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv()) for _ in range(count)]


def replay(emu: Emulator, ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    emu.start_replay()
    return receive(ws, count)


def ticker(event: dict[str, Any]) -> dict[str, Any]:
    """The documented ticker push for a replay event."""
    data = {"symbol": event["symbol"], "last_price": format_decimal(event["price"])}
    return {"cmd": "ticker", "data": {**data, "timestamp": event["timestamp"]}}


def close_code(ws: websocket.WebSocket) -> int:
    """Read up to the server's close frame and return its status code."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()  # the close handshake is done: don't start another one
            return struct.unpack("!H", frame.data[:2])[0]


def assert_dropped(ws: websocket.WebSocket) -> None:
    """The TCP connection ended without a WebSocket close frame."""
    with pytest.raises(CLOSED):
        opcode, _ = ws.recv_data_frame(control_frame=True)
        assert opcode != websocket.ABNF.OPCODE_CLOSE, "got a close frame, not an abrupt drop"


def rest(emu: Emulator, path: str, key: str | None = KEY) -> tuple[int, dict[str, Any]]:
    headers = {"X-API-Key": key} if key is not None else {}
    request = urllib.request.Request(f"{emu.rest_url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- replay (no sockets) ------------------------------------------------------------------------


def test_each_bar_becomes_four_ticks_inside_its_interval_in_path_order() -> None:
    aaa = [e for e in EVENTS if e["symbol"] == "AAA.US"][:4]
    bbb = [e for e in EVENTS if e["symbol"] == "BBB.US"][:4]
    assert [e["price"] for e in aaa] == [10.0, 11.0, 9.0, 10.5]  # up bar: high first
    assert [e["price"] for e in bbb] == [20.0, 19.0, 21.0, 19.5]  # down bar: low first
    assert [e["timestamp"] for e in aaa] == [0, DAY // 4, DAY // 2, 3 * DAY // 4]
    assert {e["quantity"] for e in aaa} == {100.0}
    assert aaa[0] == {
        "channel": "ticker",
        "symbol": "AAA.US",
        "price": 10.0,
        "timestamp": 0,
        "quantity": 100.0,
    }
    assert len(EVENTS) == 24
    assert sorted(EVENTS, key=lambda e: (e["timestamp"], e["symbol"])) == EVENTS


def test_decimal_strings_are_fixed_point() -> None:
    assert [format_decimal(v) for v in (10.0, 0.0672, 196.946945, 1.3713e9, 1e-5, 0.0)] == [
        "10",
        "0.0672",
        "196.946945",
        "1371300000",
        "0.00001",
        "0",
    ]


def test_load_bars_reads_the_sample_folder() -> None:
    bars = load_bars(REPO / "data/sample_us_daily", None)
    assert bars.columns == ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    counts = dict(bars.group_by("symbol").len().iter_rows())
    assert counts == {"GOOGL": 2335, "IXIC": 5031, "MSFT": 7983, "SPX": 5031}
    assert bars.equals(bars.sort(["timestamp", "symbol"]))
    assert bars.schema["timestamp"] == pl.Int64
    two = load_bars(REPO / "data/sample_us_daily", ["MSFT", "SPX"])
    assert sorted(two["symbol"].unique()) == ["MSFT", "SPX"]
    with pytest.raises(FileNotFoundError, match="AAPL"):
        load_bars(REPO / "data/sample_us_daily", ["AAPL"])


# --- authentication -----------------------------------------------------------------------------


def test_websocket_refuses_a_missing_or_unknown_key() -> None:
    with emulator() as emu:
        for query, code in (("", 1002), ("?api_key=", 1002), ("?api_key=wrong", 1001)):
            with connect(emu, query) as ws:
                error = json.loads(ws.recv())
                assert (error["cmd"], error["code"]) == ("error", code)
                assert close_code(ws) == 1008
        assert emu.stats.connections_refused == 3
        assert emu.stats.connections_accepted == 0


def test_rest_refuses_a_missing_or_unknown_key() -> None:
    with emulator() as emu:
        assert rest(emu, "/v1/symbols/available", key=None) == (
            401,
            {"code": 1002, "message": "missing X-API-Key header"},
        )
        status, body = rest(emu, "/v1/symbols/available", key="wrong")
        assert (status, body["code"]) == (401, 1001)


# --- commands -----------------------------------------------------------------------------------


def test_subscribe_ping_unsubscribe_and_bad_commands() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        pong = command(ws, "ping")
        assert {k: pong[k] for k in ("cmd", "code", "message")} == {
            "cmd": "pong",
            "code": 0,
            "message": "pong",
        }
        assert isinstance(pong["data"]["timestamp"], int)
        assert pong["data"]["timestamp"] > 10**12  # milliseconds
        reply = command(ws, "unsubscribe", channel="ticker", symbols=["BBB.US"])
        assert (reply["cmd"], reply["code"], reply["data"]["symbols"]) == (
            "unsubscribe",
            0,
            ["BBB.US"],
        )
        assert command(ws, "hello")["code"] == 4001
        ws.send("{not json")
        assert json.loads(ws.recv())["code"] == 4002
        assert command(ws, "subscribe")["code"] == 4002  # no data
        assert command(ws, "subscribe", channel="kline", symbols=SYMBOLS)["code"] == 4002
        assert command(ws, "subscribe", channel="ticker", symbols=["AAA"])["code"] == 2002
        stats = emu.stats
        assert stats.subscribes == [("ticker", ("AAA.US", "BBB.US"))]
        assert stats.unsubscribes == [("ticker", ("BBB.US",))]
        assert stats.pings == 1

        # Only AAA is left: the replay sends its 12 ticks, then the ping's reply comes last.
        emu.start_replay()
        assert emu.wait_exhausted(5)
        ws.send(json.dumps({"cmd": "ping"}))
        messages = []
        while (message := json.loads(ws.recv()))["cmd"] != "pong":
            messages.append(message)
        assert messages == [ticker(e) for e in EVENTS if e["symbol"] == "AAA.US"]


def test_ticker_replay_content_and_order() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        assert replay(emu, ws, 24) == [ticker(e) for e in EVENTS]
        assert emu.wait_exhausted(5)
        stats = emu.stats
        assert (stats.sent_index, stats.messages_pushed, stats.exhausted) == (24, 24, True)


def test_replay_can_wait_for_the_first_subscriber() -> None:
    with emulator(replay_start="first_subscribe") as emu, connect(emu) as ws:
        assert command(ws, "ping")["cmd"] == "pong"
        assert emu.stats.sent_index == 0  # connected, not subscribed: the clock waits
        subscribe(ws, "ticker", SYMBOLS)  # the reply comes before the first push
        assert receive(ws, 24) == [ticker(e) for e in EVENTS]


def test_replay_advances_without_subscribers_and_can_loop() -> None:
    with emulator(replay_start="immediately", loop_replay=True) as emu:
        assert emu.wait_exhausted(5)  # nobody listened: the market did not wait
        assert emu.wait_for(lambda s: s.events_dispatched > 2 * len(EVENTS), 5)
        assert emu.stats.messages_pushed == 0


def test_trade_channel_sides_follow_price_moves() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "trade", ["AAA.US"])
        subscribe(ws, "ticker", ["AAA.US"])
        messages = replay(emu, ws, 24)
    # Each event: its ticker, then its trade.
    assert [m["cmd"] for m in messages] == ["ticker", "trade"] * 12
    trades = [m["data"] for m in messages if m["cmd"] == "trade"]
    prices = [e["price"] for e in EVENTS if e["symbol"] == "AAA.US"]
    expected_sides = ["buy"] + ["buy" if b >= a else "sell" for a, b in itertools.pairwise(prices)]
    assert [t["side"] for t in trades] == expected_sides
    assert expected_sides[:4] == ["buy", "buy", "sell", "buy"]  # 10 -> 11 -> 9 -> 10.5
    assert [t["price"] for t in trades] == [format_decimal(p) for p in prices]
    assert {t["quantity"] for t in trades} == {"100"}


def test_depth_is_a_synthetic_book_around_the_price() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "depth", ["AAA.US"])
        depth = replay(emu, ws, 1)[0]
    assert depth["cmd"] == "depth"
    data = depth["data"]
    assert (data["symbol"], data["timestamp"]) == ("AAA.US", 0)
    bids = [float(p) for p, _ in data["bids"]]
    asks = [float(p) for p, _ in data["asks"]]
    assert bids == [9.99, 9.98, 9.97, 9.96, 9.95]  # descending, strictly below 10
    assert asks == [10.01, 10.02, 10.03, 10.04, 10.05]  # ascending, strictly above
    assert all(isinstance(q, str) for _, q in data["bids"] + data["asks"])


# --- REST ---------------------------------------------------------------------------------------


def test_rest_kline_pages_through_rest_client() -> None:
    days = 250
    bars = pl.DataFrame(
        {
            "symbol": ["AAA"] * days,
            "timestamp": [i * DAY for i in range(days)],
            "open": [100.0 + i for i in range(days)],
            "high": [101.0 + i for i in range(days)],
            "low": [99.0 + i for i in range(days)],
            "close": [100.5 + i for i in range(days)],
            "volume": [1000.0] * days,
        }
    )
    with emulator(ticks_from_bars(bars, DAY, ".US"), bars=bars) as emu:
        client = RestClient(emu.rest_url, KEY)
        klines = list(client.klines("AAA.US", "1d", 0, (days - 1) * DAY, limit=100))
        assert emu.stats.rest_requests == 3  # 100 + 100 + 50
    assert [k["time"] for k in klines] == [i * DAY for i in range(days)]  # each bar once
    assert klines[7] == {
        "time": 7 * DAY,
        "open": "107",
        "high": "108",
        "low": "106",
        "close": "107.5",
        "volume": "1000",
        "quote_volume": "107500",
    }


def test_rest_errors_and_symbols() -> None:
    with emulator() as emu:
        client = RestClient(emu.rest_url, KEY)
        for symbol, start, end, limit, code in (
            ("AAA.US", 0, DAY, 1001, 2004),
            ("ZZZ.US", 0, DAY, 10, 2002),
            ("AAA", 0, DAY, 10, 2002),  # the suffix is part of the wire symbol
        ):
            with pytest.raises(TickDBError) as error:
                list(client.klines(symbol, "1d", start, end, limit=limit))
            assert error.value.code == code
        status, body = rest(
            emu, "/v1/market/kline?symbol=AAA.US&interval=1d&start_time=9&end_time=1"
        )
        assert (status, body["code"]) == (200, 2003)
        status, body = rest(emu, "/v1/market/kline?symbol=AAA.US&interval=1d")
        assert [k["time"] for k in body["data"]["klines"]] == [0, DAY, 2 * DAY]
        assert rest(emu, "/v1/symbols/available") == (
            200,
            {"code": 0, "message": "success", "data": {"symbols": SYMBOLS}},
        )
        status, body = rest(emu, "/v1/nope")
        assert (status, body["code"]) == (404, 4001)


def test_http_429_is_honoured_by_rest_client() -> None:
    with emulator() as emu:
        emu.inject("http_429", count=2, retry_after=3)
        waits: list[float] = []
        client = RestClient(emu.rest_url, KEY, sleep=waits.append)
        klines = list(client.klines("BBB.US", "1d", 0, 2 * DAY, limit=100))
        assert waits == [3.0, 3.0]
        assert [k["close"] for k in klines] == ["19.5", "18.5", "17.5"]
        assert emu.stats.rate_limited == 2


# --- faults -------------------------------------------------------------------------------------


def test_drop_ends_the_connection_without_a_close_frame() -> None:
    scenario = Scenario(faults=[Fault("drop", after_messages=5)])
    with emulator(scenario=scenario) as emu:
        with connect(emu) as ws:
            subscribe(ws, "ticker", SYMBOLS)
            assert replay(emu, ws, 5) == [ticker(e) for e in EVENTS[:5]]
            assert_dropped(ws)
        assert emu.wait_for(lambda s: s.connections_open == 0, 5)
        with connect(emu) as ws:  # reconnecting works; the subscription did not survive
            assert command(ws, "ping")["cmd"] == "pong"


def test_silence_is_half_open_then_recovers() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        emu.inject("silence", duration_s=0.4)
        ws.settimeout(0.2)
        ws.send(json.dumps({"cmd": "ping"}))
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()  # no pong
        ws.ping()
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv_data_frame(control_frame=True)  # not even a WebSocket pong
        assert ws.connected
        assert emu.stats.connections_open == 1  # the TCP connection is still there
        # Poll until the silence is over; whatever was sent meanwhile was lost.
        ws.settimeout(0.1)
        for _ in range(40):
            ws.send(json.dumps({"cmd": "ping"}))
            try:
                if json.loads(ws.recv())["cmd"] == "pong":
                    break
            except websocket.WebSocketTimeoutException:
                continue
        else:
            pytest.fail("no pong after the silence ended")


def test_silence_after_messages_lasts_until_the_client_gives_up() -> None:
    scenario = Scenario(faults=[Fault("silence", after_messages=3)])
    with emulator(scenario=scenario) as emu:
        with connect(emu) as ws:
            subscribe(ws, "ticker", SYMBOLS)
            assert replay(emu, ws, 3) == [ticker(e) for e in EVENTS[:3]]
            assert emu.wait_exhausted(5)
            ws.settimeout(0.2)
            with pytest.raises(websocket.WebSocketTimeoutException):
                ws.recv()
        assert emu.wait_for(lambda s: s.connections_open == 0, 5)  # the client's close got in


def test_rate_limit_on_the_socket_answers_3001() -> None:
    with emulator() as emu, connect(emu) as ws:
        emu.inject("rate_limit", retry_after=5)
        reply = command(ws, "subscribe", channel="ticker", symbols=SYMBOLS)
        assert reply == {
            "cmd": "subscribe",
            "code": 3001,
            "message": "rate limit exceeded",
            "data": {"retry_after": 5},
        }
        assert emu.stats.subscribes == []  # refused, not applied
        subscribe(ws, "ticker", SYMBOLS)
        assert emu.stats.rate_limited == 1


def test_error_4002_answers_the_next_commands() -> None:
    with emulator() as emu, connect(emu) as ws:
        emu.inject("error_4002", count=2)
        assert command(ws, "ping") == {
            "cmd": "ping",
            "code": 4002,
            "message": "invalid message format",
        }
        assert command(ws, "subscribe", channel="ticker", symbols=SYMBOLS)["code"] == 4002
        assert command(ws, "ping")["cmd"] == "pong"


def test_malformed_json_push() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        emu.inject("malformed_json")
        emu.start_replay()
        first = ws.recv()
        with pytest.raises(json.JSONDecodeError):
            json.loads(first)
        assert receive(ws, 2) == [ticker(e) for e in EVENTS[1:3]]


def test_duplicate_pushes() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        emu.inject("duplicate", count=2)
        e0, e1, e2 = (ticker(e) for e in EVENTS[:3])
        assert replay(emu, ws, 5) == [e0, e0, e1, e1, e2]


def test_out_of_order_swaps_pairs() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        emu.inject("out_of_order", count=2)
        e0, e1, e2, e3, e4 = (ticker(e) for e in EVENTS[:5])
        assert replay(emu, ws, 5) == [e1, e0, e3, e2, e4]


def test_timestamp_unit_switches_mid_stream() -> None:
    scenario = Scenario(faults=[Fault("timestamp_unit", after_messages=4, options={"unit": "s"})])
    with emulator(scenario=scenario) as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        stamps = [m["data"]["timestamp"] for m in replay(emu, ws, 8)]
        assert emu.wait_exhausted(5)
        pong = command(ws, "ping")
    expected = [e["timestamp"] for e in EVENTS[:8]]
    assert stamps == expected[:4] + [t // 1000 for t in expected[4:]]
    assert pong["data"]["timestamp"] < 10**11  # seconds now


def test_timestamp_unit_us_and_numeric_prices_then_clear() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", ["BBB.US"])
        emu.inject("timestamp_unit", unit="us")
        emu.inject("numeric_prices")
        first, second = replay(emu, ws, 2)
        assert emu.wait_exhausted(5)
    assert first["data"] == {"symbol": "BBB.US", "last_price": 20.0, "timestamp": 0}
    assert second["data"] == {"symbol": "BBB.US", "last_price": 19.0, "timestamp": DAY // 4 * 1000}

    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", ["BBB.US"])
        emu.inject("numeric_prices")
        emu.inject("clear")
        assert replay(emu, ws, 1) == [ticker(EVENTS[1])]


def test_slow_sends_lag_behind_the_clock_but_lose_nothing() -> None:
    with emulator() as emu, connect(emu) as ws:
        subscribe(ws, "ticker", SYMBOLS)
        emu.inject("slow", delay_ms=20)
        emu.start_replay()
        assert emu.wait_exhausted(5)
        assert emu.stats.messages_pushed < len(EVENTS)  # the clock ran ahead of the sends
        ws.settimeout(5)
        assert receive(ws, 24) == [ticker(e) for e in EVENTS]


def test_connection_limit_answers_3003_then_closes() -> None:
    with emulator() as emu:
        emu.inject("connection_limit")
        with connect(emu) as ws:
            error = json.loads(ws.recv())
            assert (error["cmd"], error["code"]) == ("error", 3003)
            assert close_code(ws) == 1013
        with connect(emu) as ws:
            assert command(ws, "ping")["cmd"] == "pong"
        stats = emu.stats
        assert (stats.connections_refused, stats.connections_accepted) == (1, 1)


def test_protocol_variant_speaks_the_articles_shape() -> None:
    with emulator() as emu:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"{emu.rest_url.replace('http', 'ws')}/v1/market/stream")
        assert refused.value.status_code == 404  # not served in the documented protocol
        emu.inject("protocol_variant", variant="article")
        with connect(emu, path="/v1/market/stream") as ws:
            ws.send(json.dumps({"cmd": "subscribe", "channels": ["ticker", "kline.1d"]}))
            assert json.loads(ws.recv())["code"] == 0
            messages = replay(emu, ws, 8)  # 4 events x (ticker, kline) for AAA and BBB
    assert all("cmd" not in m for m in messages)
    assert [m["channel"] for m in messages] == ["ticker", "kline.1d"] * 4
    assert messages[0]["data"] == {"symbol": "AAA.US", "last_price": "10", "ts": 0}
    kline = messages[7]["data"]  # BBB after its two first ticks: 20, then 19
    assert kline == {
        "symbol": "BBB.US",
        "open": "20",
        "high": "20",
        "low": "19",
        "close": "19",
        "volume": "400",
        "ts": 0,
    }


def test_protocol_variant_from_a_scenario_applies_to_documented_subscriptions() -> None:
    scenario = Scenario(faults=[Fault("protocol_variant", options={"variant": "article"})])
    with emulator(scenario=scenario) as emu, connect(emu) as ws:
        subscribe(ws, "ticker", ["AAA.US"])
        (push,) = replay(emu, ws, 1)
    assert push == {"channel": "ticker", "data": {"symbol": "AAA.US", "last_price": "10", "ts": 0}}


def test_at_s_trigger_fires_on_the_replay_clock() -> None:
    scenario = Scenario(faults=[Fault("numeric_prices", at_s=0.0)])
    with emulator(scenario=scenario, replay_start="immediately") as emu:
        assert emu.wait_for(lambda s: s.faults_applied == ["numeric_prices"], 5)


def test_stop_closes_open_connections_and_is_idempotent() -> None:
    emu = Emulator(EVENTS, api_keys={KEY}).start()
    ws = websocket.create_connection(f"{emu.ws_url}?api_key={KEY}", timeout=2)
    emu.stop()
    with pytest.raises(CLOSED):
        while True:  # a close frame (going away), then the end of the stream
            ws.recv_data_frame(control_frame=True)
    emu.stop()
    ws.close(timeout=0.1)


# --- scenarios ----------------------------------------------------------------------------------


def test_example_scenario_loads() -> None:
    scenario = load_scenario(REPO / "scenarios/faults-demo.yaml")
    assert scenario.messages_per_second == 200
    names = {fault.fault for fault in scenario.faults}
    assert {"drop", "silence", "http_429", "timestamp_unit", "clear"} <= names
    drop = next(f for f in scenario.faults if f.fault == "drop")
    assert (drop.after_messages, drop.at_s) == (40, None)
    Emulator(EVENTS, api_keys={KEY}, scenario=scenario)  # accepted as is


def test_defaults_are_filled_in() -> None:
    scenario = parse_scenario("faults:\n  - fault: rate_limit\n  - fault: silence\n")
    assert scenario.faults == [
        Fault("rate_limit", options={"count": 1, "retry_after": 2}),
        Fault("silence", options={"duration_s": None}),
    ]


def test_broken_scenario_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "messages_per_second: fast\n"  # 1
        "faults:\n"  # 2
        "  - after_messages: 10\n"  # 3
        "    fault: dorp\n"  # 4
        "  - at_s: 1\n"  # 5
        "    after_messages: 3\n"  # 6
        "    fault: silence\n"  # 7
        "    duration: 5\n"  # 8
        "  - fault: timestamp_unit\n"  # 9
        "    unit: ns\n"  # 10
        "  - fault: rate_limit\n"  # 11
        "    count: 0\n"  # 12
        "  - fault: timestamp_unit\n"  # 13
        "speed: 3\n"  # 14
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.problems == [
        f"{path}:1: messages_per_second: must be a number > 0",
        f"{path}:4: faults[0].fault: unknown fault 'dorp'; did you mean 'drop'? (known: "
        "drop, silence, rate_limit, http_429, error_4002, malformed_json, duplicate, "
        "out_of_order, timestamp_unit, numeric_prices, time_shift, live_clock, slow, "
        "connection_limit, "
        "protocol_variant, bad_field, binary_frame, oversized_frame, slow_frame, upgrade_429, "
        "error_close, "
        "unsubscribed_channel, clear)",
        f"{path}:5: faults[1]: use either after_messages or at_s, not both",
        f"{path}:8: faults[1].duration: unknown option for fault 'silence'; did you mean "
        "'duration_s'? (options: duration_s)",
        f"{path}:10: faults[2].unit: must be one of s, us",
        f"{path}:12: faults[3].count: must be an integer >= 1",
        f"{path}:13: faults[4].unit: missing (required by fault 'timestamp_unit')",
        f"{path}:14: speed: unknown key",
    ]
    assert str(path) in str(caught.value)


def test_invalid_yaml_and_bad_inject_are_scenario_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("faults:\n  - fault: drop\n   oops: [\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_scenario(path)
    emu = Emulator(EVENTS, api_keys={KEY})
    with pytest.raises(ScenarioError, match=r"inject\.count: must be an integer >= 1"):
        emu.inject("duplicate", count="two")
    with pytest.raises(ScenarioError, match="did you mean 'slow'"):
        emu.inject("slwo")
