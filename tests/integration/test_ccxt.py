"""The ccxt adapter through the real ccxt library (its Binance implementation: signing, parsing,
error mapping) against the local Binance spot emulator."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from qcompile.emulator.binance import API_KEY, SECRET, BinanceEmulator
from qcompile.runtime.broker import (
    BrokerError,
    BrokerUnavailable,
    Order,
    OrderRejected,
    fill_increment,
)
from qcompile.runtime.exchange import CcxtBroker, client_order_id

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture
def binance() -> Iterator[BinanceEmulator]:
    with BinanceEmulator(balances={"USDT": 100_000.0, "ETH": 5.0}) as server:
        yield server


def broker(server: BinanceEmulator, **options) -> tuple[CcxtBroker, list[float]]:
    waited: list[float] = []
    adapter = CcxtBroker(
        "binance", API_KEY, SECRET, SYMBOLS, url=server.url, sleep=waited.append, **options
    )
    return adapter, waited


def order(symbol: str = "BTC/USDT", quantity: float = 0.5, bar: int = 1) -> Order:
    return Order(f"STR-2026-0099-{bar}-{symbol}-0", symbol, quantity, bar)


def test_client_ids_are_deterministic_and_fit_the_exchange() -> None:
    first = client_order_id("STR-2026-0099-1509408000000-BTC/USDT-0")
    assert first == client_order_id("STR-2026-0099-1509408000000-BTC/USDT-0")
    assert first != client_order_id("STR-2026-0099-1509408000000-BTC/USDT-1")
    assert re.fullmatch(r"[.A-Z:/a-z0-9_-]{1,36}", first)  # Binance's rule


def test_an_order_fills_and_is_booked_by_increments_with_its_price(
    binance: BinanceEmulator,
) -> None:
    adapter, _ = broker(binance)
    adapter.submit(order("BTC/USDT", 0.5))
    assert [o.id for o in adapter.working_orders()] == [order().id]
    client = client_order_id(order().id)
    binance.fill(client, 0.2, 50_000.0)
    report = adapter.report(order())
    first = fill_increment(report, [0.0, 0.0, 0.0])
    binance.fill(client, 0.3, 51_000.0)
    final = adapter.report(order())
    second = fill_increment(final, [report.filled, report.cost, report.commission])
    assert (first.order_id, first.quantity, first.price) == (order().id, 0.2, pytest.approx(50_000))
    assert (second.quantity, second.price) == (pytest.approx(0.3), pytest.approx(51_000))
    assert report.open and not final.open
    assert fill_increment(final, [final.filled, final.cost, final.commission]) is None
    assert adapter.positions() == {"BTC/USDT": pytest.approx(0.5), "ETH/USDT": 5.0}
    assert adapter.cash() == pytest.approx(100_000.0 - 0.2 * 50_000 - 0.3 * 51_000)


def test_a_sell_reduces_the_base_balance(binance: BinanceEmulator) -> None:
    binance.auto_fill_at["ETHUSDT"] = 3_000.0
    adapter, _ = broker(binance)
    adapter.submit(order("ETH/USDT", -2.0))
    fill = fill_increment(adapter.report(order("ETH/USDT", -2.0)), [0.0, 0.0, 0.0])
    assert (fill.quantity, fill.price) == (-2.0, pytest.approx(3_000.0))
    assert adapter.positions()["ETH/USDT"] == pytest.approx(3.0)


def test_the_same_order_is_never_sent_twice(binance: BinanceEmulator) -> None:
    adapter, _ = broker(binance)
    adapter.submit(order())
    adapter.submit(order())  # the same bar decided again after a restart
    assert len(binance.orders) == 1


def test_a_filled_order_is_not_sent_again_although_its_id_is_free(
    binance: BinanceEmulator,
) -> None:
    """Binance accepts a client id again once its order is filled: the adapter looks first."""
    binance.auto_fill_at["BTCUSDT"] = 50_000.0
    adapter, _ = broker(binance)
    adapter.submit(order())
    restarted, _ = broker(binance)  # a new process: it remembers nothing it sent
    restarted.submit(order())
    assert len(binance.orders) == 1


def test_a_lost_answer_is_resolved_by_the_client_id(binance: BinanceEmulator) -> None:
    adapter, _ = broker(binance)
    binance.lose_next_response()
    adapter.submit(order())
    assert len(binance.orders) == 1
    assert adapter.find(order()) is not None
    assert ("GET", "/api/v3/order") in binance.requests


def test_a_refused_order_says_why_and_nothing_is_left(binance: BinanceEmulator) -> None:
    adapter, _ = broker(binance)
    binance.reject_next()
    with pytest.raises(OrderRejected, match="insufficient balance"):
        adapter.submit(order())
    assert binance.orders == {}


def test_the_rate_limit_is_waited_out_as_the_exchange_says(binance: BinanceEmulator) -> None:
    adapter, waited = broker(binance)
    binance.rate_limit(requests=2, retry_after=4)
    assert adapter.cash() == pytest.approx(100_000.0)
    assert waited == [4.0, 4.0]
    binance.rate_limit(requests=10, retry_after=1)
    adapter.max_waits = 2
    with pytest.raises(BrokerUnavailable, match="rate limit"):
        adapter.positions()


def test_cancel_all_cancels_the_working_orders_and_leaves_the_rest(
    binance: BinanceEmulator,
) -> None:
    binance.auto_fill_at["ETHUSDT"] = 3_000.0
    adapter, _ = broker(binance)
    adapter.submit(order("ETH/USDT", 1.0))  # filled at once
    adapter.submit(order("BTC/USDT", 0.5))  # working
    adapter.submit(order("BTC/USDT", 0.1, bar=2))
    binance.fill(client_order_id(order("BTC/USDT", 0.1, bar=2).id), 0.05, 50_000.0)  # partly
    cancelled = adapter.cancel_all()
    assert sorted(o.id for o in cancelled) == sorted(
        [order("BTC/USDT").id, order("BTC/USDT", bar=2).id]
    )
    assert sorted(o.status for o in binance.orders.values()) == ["CANCELED", "CANCELED", "FILLED"]
    assert adapter.working_orders() == []


def test_a_wrong_key_is_an_error_without_the_secret(binance: BinanceEmulator) -> None:
    adapter, _ = broker(binance)
    adapter.exchange.apiKey = "not-the-key"
    with pytest.raises(BrokerError) as raised:
        adapter.cash()
    assert SECRET not in str(raised.value) and "not-the-key" not in str(raised.value)


def test_an_unknown_exchange_or_market_is_named() -> None:
    with pytest.raises(BrokerError, match="no exchange 'binanse'"):
        CcxtBroker("binanse", API_KEY, SECRET, SYMBOLS)
    with BinanceEmulator() as server, pytest.raises(BrokerError, match="no spot market DOGE/USDT"):
        CcxtBroker("binance", API_KEY, SECRET, ["DOGE/USDT"], url=server.url)


def test_cancel_all_after_the_orders_went_is_not_an_error(binance: BinanceEmulator) -> None:
    adapter, _ = broker(binance)
    adapter.submit(order())
    client = client_order_id(order().id)
    listed = adapter.working_orders()
    binance.fill(client, 0.5, 50_000.0)  # fills between the listing and the cancel
    adapter.working_orders = lambda: listed  # the listing the cancel acts on
    assert [o.id for o in adapter.cancel_all()] == [order().id]


def test_a_limit_order_rests_until_filled_and_one_order_can_be_cancelled(
    binance: BinanceEmulator,
) -> None:
    binance.auto_fill_at["BTCUSDT"] = 50_000.0  # market orders only
    adapter, _ = broker(binance)
    limit = Order("STR-2026-0099-1-BTC/USDT-entry", "BTC/USDT", 0.5, 1, limit_price=49_000.0)
    adapter.submit(limit)
    (working,) = adapter.working_orders()
    assert working.limit_price == 49_000.0 and adapter.report(limit).open
    sent = next(iter(binance.orders.values()))
    assert (sent.order_type, sent.price) == ("LIMIT", 49_000.0)
    other = Order("STR-2026-0099-1-ETH/USDT-entry", "ETH/USDT", 1.0, 1, limit_price=2_000.0)
    adapter.submit(other)
    assert adapter.cancel(other) is True
    assert adapter.cancel(other) is False  # not working any more
    binance.fill(client_order_id(limit.id), 0.5, 49_000.0)
    assert adapter.cancel(limit) is False  # filled
    assert adapter.working_orders() == []
