"""The Alpaca adapter through the real alpaca-py SDK, against the local Alpaca emulator.

The emulator's answers are parsed by the SDK's own response models (Order, Position,
TradeAccount), so a field it got wrong fails here, as it would against the real API.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position, TradeAccount
from alpaca.trading.stream import TradingStream

from qcompile.emulator.alpaca import KEY_ID, SECRET_KEY, AlpacaEmulator
from qcompile.runtime.alpaca import AlpacaBroker
from qcompile.runtime.broker import (
    BrokerError,
    Order,
    OrderRejected,
    OrderReport,
    fill_increment,
)


@pytest.fixture
def alpaca() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(cash=100_000.0) as server:
        yield server


def broker(server: AlpacaEmulator, **options) -> tuple[AlpacaBroker, list[float]]:
    waited: list[float] = []
    return AlpacaBroker(KEY_ID, SECRET_KEY, url=server.url, sleep=waited.append, **options), waited


def order(symbol: str = "MSFT", quantity: float = 10.0, bar: int = 1) -> Order:
    return Order(f"STR-2026-0007-{bar}-{symbol}-0", symbol, quantity, bar)


def test_every_answer_parses_into_the_sdks_own_models(alpaca: AlpacaEmulator) -> None:
    client = TradingClient(KEY_ID, SECRET_KEY, url_override=alpaca.url)
    alpaca.auto_fill_at["MSFT"] = 300.0
    adapter, _ = broker(alpaca)
    adapter.submit(order())
    adapter.submit(order("AAPL", 5.0))
    account = client.get_account()
    assert isinstance(account, TradeAccount) and float(account.cash) == 100_000.0 - 3_000.0
    (position,) = client.get_all_positions()
    assert isinstance(position, Position) and position.symbol == "MSFT" and position.qty == "10"
    orders = client.get_orders()
    assert [type(o) for o in orders] == [AlpacaOrder] and orders[0].symbol == "AAPL"
    found = client.get_order_by_client_id(order().id)
    assert isinstance(found, AlpacaOrder) and found.status == "filled"
    assert found.filled_avg_price == "300.0000" and isinstance(found.id, uuid.UUID)


def test_a_market_order_fills_and_the_report_is_cumulative(alpaca: AlpacaEmulator) -> None:
    adapter, _ = broker(alpaca)
    adapter.submit(order("MSFT", 10.0))
    assert [o.id for o in adapter.working_orders()] == [order().id]
    assert adapter.report(order()).open
    alpaca.fill(order().id, 4, 300.0)
    alpaca.fill(order().id, 6, 310.0)  # a partial fill, then the rest at another price
    report = adapter.report(order())
    assert (report.order_id, report.symbol, report.side, report.filled) == (
        order().id,
        "MSFT",
        1,
        10.0,
    )
    assert report.cost == pytest.approx(3_060.0) and not report.open  # 4 x 300 + 6 x 310
    assert fill_increment(report, [10.0, 3_060.0, 0.0]) is None  # booked already: nothing new
    assert adapter.positions() == {"MSFT": 10.0}
    assert adapter.cash() == pytest.approx(100_000.0 - 3_060.0)
    assert adapter.equity() == pytest.approx(100_000.0)
    assert adapter.report(order("AAPL")) is None  # never sent


def test_partial_fills_are_booked_by_their_increments(alpaca: AlpacaEmulator) -> None:
    adapter, _ = broker(alpaca)
    adapter.submit(order("MSFT", -10.0))
    alpaca.fill(order().id, 3, 200.0)
    first_report = adapter.report(order())
    first = fill_increment(first_report, [0.0, 0.0, 0.0])
    alpaca.fill(order().id, 7, 210.0)
    booked = [first_report.filled, first_report.cost, first_report.commission]
    second = fill_increment(adapter.report(order()), booked)
    assert first_report.open and first_report.side == -1
    assert (first.quantity, first.price) == (-3.0, pytest.approx(200.0))
    assert (second.quantity, second.price) == (-7.0, pytest.approx(210.0))


def test_the_same_order_is_never_sent_twice(alpaca: AlpacaEmulator) -> None:
    adapter, _ = broker(alpaca)
    adapter.submit(order())
    adapter.submit(order())  # a restart deciding the same bar again: the same client id
    assert len(alpaca.orders) == 1


def test_a_lost_answer_is_resolved_by_the_client_id_without_a_duplicate(
    alpaca: AlpacaEmulator,
) -> None:
    adapter, _ = broker(alpaca)
    alpaca.lose_next_response()  # Alpaca takes the order, the answer never arrives
    adapter.submit(order())
    assert len(alpaca.orders) == 1
    assert adapter.find(order().id) is not None
    assert ("GET", "/v2/orders:by_client_order_id") in alpaca.requests


def test_an_order_alpaca_never_saw_is_found_missing() -> None:
    with AlpacaEmulator() as server:
        adapter, _ = broker(server)
        assert adapter.find("STR-2026-0007-9-MSFT-0") is None


def test_a_refused_order_says_why(alpaca: AlpacaEmulator) -> None:
    adapter, _ = broker(alpaca)
    alpaca.reject_next("insufficient buying power")
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        adapter.submit(order())
    alpaca.tradable = {"MSFT"}
    with pytest.raises(OrderRejected, match='asset "XYZ" not found'):
        adapter.submit(order("XYZ"))
    with pytest.raises(OrderRejected, match="fractional shares are off"):
        adapter.submit(order("MSFT", 1.5))
    assert len(alpaca.orders) == 0


def test_the_rate_limit_is_waited_out_as_the_broker_says(alpaca: AlpacaEmulator) -> None:
    adapter, waited = broker(alpaca)
    alpaca.rate_limit(requests=2, retry_after=3)
    assert adapter.positions() == {}
    assert waited == [3.0, 3.0]
    alpaca.rate_limit(requests=10, retry_after=1)
    limited, _ = broker(alpaca, max_waits=2)
    with pytest.raises(BrokerError, match="rate limit"):
        limited.positions()


def test_cancel_all_cancels_the_working_orders_and_leaves_the_rest(alpaca: AlpacaEmulator) -> None:
    adapter, _ = broker(alpaca)
    alpaca.auto_fill_at["AAPL"] = 150.0
    adapter.submit(order("AAPL", 1.0))  # filled at once
    adapter.submit(order("MSFT", 10.0))  # working
    adapter.submit(order("GOOGL", 4.0))
    alpaca.fill(order("GOOGL").id, 1, 100.0)  # partially filled, still working
    cancelled = adapter.cancel_all()
    assert sorted(o.symbol for o in cancelled) == ["GOOGL", "MSFT"]
    states = {o.symbol: o.status for o in alpaca.orders.values()}
    assert states == {"AAPL": "filled", "MSFT": "canceled", "GOOGL": "canceled"}
    assert adapter.working_orders() == []


def test_wrong_credentials_are_an_error_that_does_not_repeat_them(alpaca: AlpacaEmulator) -> None:
    adapter = AlpacaBroker("PKWRONG", "wrong-secret-value", url=alpaca.url)
    with pytest.raises(BrokerError) as raised:
        adapter.positions()
    assert "401" in str(raised.value) and "wrong-secret-value" not in str(raised.value)


def test_trade_updates_stream_through_the_sdks_own_client(alpaca: AlpacaEmulator) -> None:
    """alpaca-py's TradingStream against the emulator's stream: authenticated, subscribed, and
    every update parsed by the SDK's TradeUpdate model (a wrong field would not reach us)."""
    adapter, _ = broker(alpaca)
    reports: queue.Queue[OrderReport] = queue.Queue()
    adapter.stream_reports(reports.put)
    try:
        assert wait_for(lambda: alpaca.listening == 1)
        adapter.submit(order("MSFT", 10.0))
        alpaca.fill(order().id, 4, 300.0)
        alpaca.cancel(order().id)
        seen = [reports.get(timeout=5) for _ in range(3)]
        assert [(r.filled, r.open) for r in seen] == [(0.0, True), (4.0, True), (4.0, False)]
        assert seen[1].cost == pytest.approx(1_200.0) and seen[0].order_id == order().id

        alpaca.drop_stream()  # the SDK reconnects by itself (after a second)
        assert wait_for(lambda: alpaca.listening == 0, timeout=5)
        assert wait_for(lambda: alpaca.listening == 1, timeout=10)
        adapter.submit(order("GOOGL", 2.0))
        assert reports.get(timeout=5).symbol == "GOOGL"
    finally:
        adapter.close()


def test_the_stream_refuses_wrong_keys(alpaca: AlpacaEmulator) -> None:
    stream = TradingStream(
        KEY_ID, "not-the-secret", url_override=alpaca.url.replace("http", "ws") + "/stream"
    )
    updates: list[Any] = []

    async def collect(update: Any) -> None:
        updates.append(update)

    stream.subscribe_trade_updates(collect)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    adapter, _ = broker(alpaca)
    alpaca.auto_fill_at["MSFT"] = 300.0
    adapter.submit(order())
    time.sleep(0.5)
    assert alpaca.listening == 0 and updates == []
    with contextlib.suppress(Exception):
        stream.stop()


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_limit_order_rests_until_filled_and_one_order_can_be_cancelled(
    alpaca: AlpacaEmulator,
) -> None:
    alpaca.auto_fill_at["MSFT"] = 300.0  # market orders only: a limit order waits for its price
    adapter, _ = broker(alpaca)
    limit = Order("STR-2026-0007-1-MSFT-entry", "MSFT", 10.0, 1, limit_price=295.5)
    adapter.submit(limit)
    (working,) = adapter.working_orders()
    assert working.limit_price == 295.5 and adapter.report(limit).open
    sent = next(iter(alpaca.orders.values()))
    assert (sent.order_type, sent.limit_price) == ("limit", 295.5)
    other = Order("STR-2026-0007-1-GOOGL-entry", "GOOGL", 2.0, 1, limit_price=90.0)
    adapter.submit(other)
    assert adapter.cancel(other) is True
    assert adapter.cancel(other) is False  # not working any more
    assert adapter.cancel(order("AAPL")) is False  # never sent
    alpaca.fill(limit.id, 10, 295.5)
    assert adapter.cancel(limit) is False  # filled
    assert [o.id for o in adapter.working_orders()] == []
