"""Alpaca (US equities) through Alpaca's own SDK, alpaca-py: the first real order route.

Orders carry the runner's deterministic ids as Alpaca client order ids (strategy, decision bar,
symbol and leg: ``Engine`` makes them), so submitting is idempotent however often it is tried:
Alpaca refuses a second order with the same client id, and the adapter then reads the first one
back instead of sending anything. A submit whose answer is lost (a timeout, a dropped connection,
a process killed between sending and reading) is resolved the same way: the adapter asks Alpaca
for the order by its client id and only sends again if Alpaca never saw it.

Alpaca's rate limit answers 429 with a Retry-After header: the adapter waits as told (the SDK's
own retry waits a fixed 3 s and ignores it, so it is switched off), up to ``max_waits`` times,
then gives up with ``BrokerUnavailable``. Alpaca's error bodies become ``OrderRejected`` (the
broker said no) or ``BrokerError``; credentials appear in no message.

Fills come from Alpaca's trade-updates stream as they happen (``stream_reports``) and from asking
for the runner's open orders by client id (``report``), the backstop: Alpaca's cumulative filled
quantity and average price either way, from which the runner books the increase (it keeps what it
booked of each order in its durable state, so a restart books nothing twice and misses nothing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from alpaca.trading.stream import TradingStream

from qcompile.runtime.broker import (
    BrokerError,
    BrokerUnavailable,
    Fill,
    Order,
    OrderRejected,
    OrderReport,
)

T = TypeVar("T")
DUPLICATE_CLIENT_ID = "client_order_id must be unique"
# an order in any other state may still fill (new, accepted, partially filled, pending cancel...)
CLOSED = {
    OrderStatus.FILLED,
    OrderStatus.CANCELED,
    OrderStatus.EXPIRED,
    OrderStatus.REJECTED,
    OrderStatus.REPLACED,
    OrderStatus.DONE_FOR_DAY,
}


def _ms(moment: dt.datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)


class AlpacaBroker:
    """The broker interface over Alpaca's trading API (paper or live endpoint)."""

    remote = True

    def __init__(
        self,
        key_id: str,
        secret_key: str,
        *,
        paper: bool = True,
        url: str | None = None,
        fractional: bool = False,
        max_waits: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.paper = paper
        self._credentials = (key_id, secret_key, url)
        # one client per thread: the SDK's HTTP session is not safe to share, and the runner's
        # safe state (feed thread) must not wait behind the broker thread's poll
        self._local = threading.local()
        self.fractional = fractional
        self.max_waits = max_waits
        self.sleep = sleep

    @property
    def client(self) -> TradingClient:
        client = getattr(self._local, "client", None)
        if client is None:
            key_id, secret_key, url = self._credentials
            client = TradingClient(key_id, secret_key, paper=self.paper, url_override=url)
            # the SDK retries a 429 after a fixed wait, ignoring Retry-After: we wait as told
            client._retry_codes = []
            self._local.client = client
        return client

    # -- calls ------------------------------------------------------------------------------

    def _call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        for attempt in range(self.max_waits + 1):
            try:
                return function(*args)
            except APIError as error:
                if error.status_code == 429 and attempt < self.max_waits:
                    self.sleep(_retry_after(error))
                    continue
                raise _mapped(what, error) from None
            except requests.exceptions.RequestException as error:
                raise BrokerUnavailable(
                    f"{what}: Alpaca unreachable ({type(error).__name__})"
                ) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- the broker interface ---------------------------------------------------------------

    def submit(self, order: Order) -> list[Fill]:
        """Send ``order`` (market, or limit at its ``limit_price``) for the day under its id as
        client order id; an id Alpaca already has is read back, never sent twice. Returns
        nothing: fills arrive through ``report``."""
        quantity = abs(order.quantity)
        if not self.fractional and not math.isclose(quantity, round(quantity)):
            raise OrderRejected(f"{order.id}: {quantity:g} shares; fractional shares are off")
        fields = {
            "symbol": order.symbol,
            "qty": quantity,
            "side": OrderSide.BUY if order.quantity > 0 else OrderSide.SELL,
            "time_in_force": TimeInForce.DAY,
            "client_order_id": order.id,
        }
        request = (
            MarketOrderRequest(**fields)
            if order.limit_price is None
            else LimitOrderRequest(**fields, limit_price=order.limit_price)
        )
        try:
            self._call(f"order {order.id}", self.client.submit_order, request)
        except OrderRejected as error:
            if DUPLICATE_CLIENT_ID not in str(error):
                raise
        except BrokerUnavailable:
            # the answer was lost: did Alpaca take it? Only if not is it sent again
            if self.find(order.id) is None:
                self._call(f"order {order.id}", self.client.submit_order, request)
        return []

    def _lookup(self, client_id: str) -> Any | None:
        """Alpaca's order under ``client_id``, working or not; None if it never arrived."""
        try:
            return self._call(f"order {client_id}", self.client.get_order_by_client_id, client_id)
        except BrokerError as error:
            if "order not found" in str(error):
                return None
            raise

    def find(self, client_id: str) -> Order | None:
        """The order Alpaca knows under ``client_id``, working or not; None if it never arrived."""
        found = self._lookup(client_id)
        return None if found is None else _ours(found)

    def report(self, order: Order) -> OrderReport | None:
        """Alpaca's account of ``order`` (cumulative fills), or None if it never arrived."""
        found = self._lookup(order.id)
        return None if found is None else _report(found)

    def stream_reports(self, on_report: Callable[[OrderReport], None]) -> None:
        """Alpaca's trade-updates stream, through the SDK's own client on a thread of its own:
        each update's order, as a report, to ``on_report`` at once (the SDK reconnects a dropped
        stream; updates sent meanwhile are not repeated, so polling stays the backstop)."""
        key_id, secret_key, url = self._credentials
        stream_url = None if url is None else url.replace("http", "ws", 1) + "/stream"
        self._stream = TradingStream(key_id, secret_key, paper=self.paper, url_override=stream_url)

        async def handle(update: TradeUpdate) -> None:
            if update.order.client_order_id:
                on_report(_report(update.order))

        self._stream.subscribe_trade_updates(handle)
        # its reconnect waits start at a second (the SDK's own schedule)
        threading.Thread(target=self._stream.run, name="alpaca-trade-updates", daemon=True).start()

    def close(self) -> None:
        """Stop the trade-updates stream, if one runs."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to stop
                stream.stop()

    def working_orders(self) -> list[Order]:
        listed = self._call(
            "open orders",
            self.client.get_orders,
            GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500),
        )
        return [_ours(o) for o in listed]

    def cancel(self, order: Order) -> bool:
        """Cancel one order by its client id; False if it is not working (filled, cancelled,
        or never arrived)."""
        found = self._lookup(order.id)
        if found is None or found.status in CLOSED:
            return False
        try:
            self._call(f"cancel {order.id}", self.client.cancel_order_by_id, found.id)
        except OrderRejected:  # 422: filled or done meanwhile
            return False
        return True

    def cancel_all(self) -> list[Order]:
        """Cancel every working order of the account; returns the orders that were working."""
        working = self.working_orders()
        self._call("cancel all", self.client.cancel_orders)
        return working

    def positions(self) -> dict[str, float]:
        held = self._call("positions", self.client.get_all_positions)
        return {p.symbol: _number(p.qty) for p in held if _number(p.qty) != 0.0}

    def cash(self) -> float:
        return _number(self._call("account", self.client.get_account).cash)

    def equity(self) -> float:
        return _number(self._call("account", self.client.get_account).equity)

    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]:
        return []  # Alpaca fills at its own market; fills are read with report

    def fills_after(self, seq: int) -> list[Fill]:
        return []  # the runner asks for its own orders' reports instead

    def describe(self) -> str:
        return f"Alpaca ({'paper' if self.paper else 'live'} endpoint)"


def _report(found: Any) -> OrderReport:
    filled = _number(found.filled_qty)
    return OrderReport(
        str(found.client_order_id),
        str(found.symbol),
        1 if found.side == OrderSide.BUY else -1,
        filled,
        filled * _number(found.filled_avg_price),
        0.0,  # Alpaca charges no commission on US equities
        found.status not in CLOSED,
        _ms(found.filled_at or found.updated_at),
    )


def _ours(order: Any) -> Order:
    sign = 1.0 if order.side == OrderSide.BUY else -1.0
    limit = None if order.limit_price is None else _number(order.limit_price)
    return Order(
        order.client_order_id,
        str(order.symbol),
        sign * _number(order.qty),
        _ms(order.submitted_at),
        limit,
    )


def _retry_after(error: APIError) -> float:
    response = error.response
    header = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(header)) if header is not None else 1.0
    except ValueError:
        return 1.0


def _mapped(what: str, error: APIError) -> BrokerError:
    """Alpaca's error as ours: its message, never the request (which holds the key headers)."""
    try:
        message = str(error.message)
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {error.status_code}"
    if error.status_code in (403, 422):
        return OrderRejected(f"{what}: Alpaca refused it: {message}")
    if error.status_code == 429:
        return BrokerUnavailable(f"{what}: Alpaca's rate limit held after retries: {message}")
    return BrokerError(f"{what}: Alpaca answered {error.status_code}: {message}")
