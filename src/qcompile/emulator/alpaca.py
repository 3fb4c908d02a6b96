"""A local stand-in for Alpaca's Trading API (REST v2), for tests and rehearsals on loopback.

It speaks the part of Alpaca's documented API that qcompile's broker adapter uses, field by field
as the API reference gives it (and as alpaca-py's response models parse it; a test checks every
response against them): ``GET /v2/account``, ``POST /v2/orders``, ``GET /v2/orders``,
``GET /v2/orders:by_client_order_id``, ``DELETE /v2/orders``, ``DELETE /v2/orders/{id}``,
``GET /v2/positions``. Authentication by the ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers;
errors as Alpaca sends them, a JSON body with ``code`` and ``message``.

The test drives the market: ``fill(order, qty, price)`` fills all or part of a working order (or
``auto_fill_at`` fills each new market order at once at a price), and faults act where a real
network or broker would: ``rate_limit(n, retry_after)`` answers the next n requests 429 with a
Retry-After header; ``lose_next_response()`` processes the next order and then drops the
connection before answering (the client cannot tell whether it arrived); ``reject_next(message)``
refuses the next order with 403, as an insufficient buying power does; ``restart(down_s)`` goes
away and comes back with the account as it was; ``drop_stream()`` closes the trade-updates
stream; ``answer_delay_s`` holds
each order's answer back after the order was taken (a slow broker: a process killed meanwhile
never learns of an order that exists).

An aiohttp application runs in a daemon thread with its own event loop::

    with AlpacaEmulator(cash=100_000) as alpaca:
        client = TradingClient(KEY, SECRET, url_override=alpaca.url)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from qcompile.emulator.loopback import LoopbackApi

KEY_ID, SECRET_KEY = "PKTEST0000000000", "test-secret-0000000000000000000000000000"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None):
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


@dataclass
class EmulatedOrder:
    symbol: str
    qty: float
    side: str  # buy | sell
    order_type: str  # market | limit
    time_in_force: str
    client_order_id: str
    limit_price: float | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "new"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    filled_at: str | None = None
    canceled_at: str | None = None

    @property
    def open(self) -> bool:
        return self.status in ("new", "accepted", "partially_filled", "pending_new")

    def as_json(self) -> dict[str, Any]:
        """The order object of Alpaca's API reference (numbers as strings, as Alpaca sends them)."""
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "submitted_at": self.created_at,
            "filled_at": self.filled_at,
            "expired_at": None,
            "canceled_at": self.canceled_at,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.symbol)),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": f"{self.qty:g}",
            "filled_qty": f"{self.filled_qty:g}",
            "filled_avg_price": (
                None if self.filled_avg_price is None else f"{self.filled_avg_price:.4f}"
            ),
            "order_class": "",
            "order_type": self.order_type,
            "type": self.order_type,
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else f"{self.limit_price:g}",
            "stop_price": None,
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
        }


class AlpacaEmulator(LoopbackApi):
    """Alpaca's trading REST API on 127.0.0.1, one account, in a thread of its own."""

    name = "alpaca-emulator"

    def __init__(
        self,
        cash: float = 100_000.0,
        key_id: str = KEY_ID,
        secret_key: str = SECRET_KEY,
        auto_fill_at: dict[str, float] | None = None,
        tradable: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.cash = cash
        self.key_id, self.secret_key = key_id, secret_key
        self.auto_fill_at = dict(auto_fill_at or {})
        self.tradable = tradable  # None: every symbol
        self.orders: dict[str, EmulatedOrder] = {}
        self.positions: dict[str, tuple[float, float]] = {}  # symbol -> (qty, average price)
        self.account_id = str(uuid.uuid4())
        self._reject_next: str | None = None
        # seconds between taking an order and answering: the window in which a runner killed
        # between submit and acknowledgement leaves an order it never heard back about
        self.answer_delay_s = 0.0
        self._sockets: set[web.WebSocketResponse] = set()  # stream connections
        self._listeners: set[web.WebSocketResponse] = set()  # those subscribed to trade_updates

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/account", self._account)
        app.router.add_post("/v2/orders", self._submit)
        app.router.add_get("/v2/orders", self._list)
        app.router.add_get("/v2/orders:by_client_order_id", self._by_client_id)
        app.router.add_delete("/v2/orders", self._cancel_all)
        app.router.add_delete("/v2/orders/{order_id}", self._cancel)
        app.router.add_get("/v2/positions", self._positions)
        app.router.add_get("/stream", self._stream)

    # -- what a test drives -----------------------------------------------------------------

    def reject_next(self, message: str = "insufficient buying power") -> None:
        with self._lock:
            self._reject_next = message

    def fill(self, order_id: str, qty: float, price: float) -> None:
        """Fill ``qty`` of a working order (by Alpaca id or client id) at ``price``."""
        with self._lock:
            order = self._find(order_id)
            if order is None or not order.open:
                raise ValueError(f"no working order {order_id}")
            self._fill(order, min(qty, order.qty - order.filled_qty), price)

    def cancel(self, order_id: str) -> None:
        """Cancel a working order (by Alpaca id or client id), as its owner would by hand."""
        with self._lock:
            order = self._find(order_id)
            if order is None or not order.open:
                raise ValueError(f"no working order {order_id}")
            self._cancel_one(order)

    @property
    def listening(self) -> int:
        """Trade-updates connections subscribed now."""
        with self._lock:
            return len(self._listeners)

    def drop_stream(self) -> None:
        """Close every trade-updates connection (as a network fault or Alpaca's restart would):
        the updates until the client is back are not sent again."""
        loop = self._loop
        if loop is None:
            return
        for socket in list(self._sockets):
            asyncio.run_coroutine_threadsafe(socket.close(), loop).result(5)

    def __exit__(self, *exc: Any) -> None:
        self.drop_stream()  # the server's shutdown waits for open connections to end
        super().__exit__(*exc)

    async def _stopping(self) -> None:
        for socket in list(self._sockets):
            await socket.close()

    def _update(self, order: EmulatedOrder, event: str, **fill: float) -> None:
        """(Under the lock.) A trade update to every listener, as Alpaca's stream sends it."""
        if not self._listeners or self._loop is None:
            return
        data: dict[str, Any] = {
            "event": event,
            "execution_id": str(uuid.uuid4()),
            "order": order.as_json(),
            "timestamp": order.updated_at,
        }
        if "price" in fill:  # fill and partial_fill carry the execution and the new position
            held, _ = self.positions.get(order.symbol, (0.0, 0.0))
            data |= {"price": str(fill["price"]), "qty": str(fill["qty"])}
            data["position_qty"] = str(held)
        message = json.dumps({"stream": "trade_updates", "data": data}).encode()
        for socket in list(self._listeners):  # binary frames, as Alpaca sends them
            self._loop.call_soon_threadsafe(asyncio.ensure_future, socket.send_bytes(message))

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        """Alpaca's trading stream: authenticate, listen to trade_updates, then the updates."""
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.add(socket)
        async for message in socket:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            try:
                command = json.loads(message.data)
                action, data = command.get("action"), command.get("data") or {}
            except (ValueError, AttributeError):
                await socket.close()
                break
            if action in ("auth", "authenticate"):
                authorized = (data.get("key_id"), data.get("secret_key")) == (
                    self.key_id,
                    self.secret_key,
                )
                status = "authorized" if authorized else "unauthorized"
                reply = {"stream": "authorization", "data": {"status": status, "action": action}}
                await socket.send_bytes(json.dumps(reply).encode())
                if not authorized:
                    await socket.close()
                    break
            elif action == "listen":
                streams = [s for s in data.get("streams") or [] if s == "trade_updates"]
                with self._lock:
                    if streams:
                        self._listeners.add(socket)
                    else:
                        self._listeners.discard(socket)
                reply = {"stream": "listening", "data": {"streams": streams}}
                await socket.send_bytes(json.dumps(reply).encode())
        with self._lock:
            self._listeners.discard(socket)
        self._sockets.discard(socket)
        return socket

    def _find(self, order_id: str) -> EmulatedOrder | None:
        return self.orders.get(order_id) or next(
            (o for o in self.orders.values() if o.client_order_id == order_id), None
        )

    def _fill(self, order: EmulatedOrder, qty: float, price: float) -> None:
        before = order.filled_qty
        order.filled_qty = before + qty
        paid = (order.filled_avg_price or 0.0) * before + price * qty
        order.filled_avg_price = paid / order.filled_qty
        order.status = "filled" if order.filled_qty >= order.qty else "partially_filled"
        order.updated_at = _now()
        if order.status == "filled":
            order.filled_at = order.updated_at
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        held, average = self.positions.get(order.symbol, (0.0, 0.0))
        after = held + signed
        if abs(after) < 1e-12:
            self.positions.pop(order.symbol, None)
        else:
            growing = held == 0 or (held > 0) == (signed > 0)
            cost = (held * average + signed * price) / after if growing else average
            self.positions[order.symbol] = (after, cost)
        event = "fill" if order.status == "filled" else "partial_fill"
        self._update(order, event, price=price, qty=qty)

    # -- the API ----------------------------------------------------------------------------

    def rate_limited(self, retry_after: int) -> web.Response:
        return _error(
            429, 42910000, "rate limit exceeded", headers={"Retry-After": str(retry_after)}
        )

    def refused(self, request: web.Request) -> web.Response | None:
        if request.path == "/stream":  # the stream authenticates in its first message
            return None
        if (
            request.headers.get("APCA-API-KEY-ID") != self.key_id
            or request.headers.get("APCA-API-SECRET-KEY") != self.secret_key
        ):
            return _error(401, 40110000, "request is not authorized")
        return None

    async def _account(self, _: web.Request) -> web.Response:
        with self._lock:
            value = sum(qty * price for qty, price in self.positions.values())
            equity = self.cash + value
            return web.json_response(
                {
                    "id": self.account_id,
                    "account_number": "PA3EMULATOR1",
                    "status": "ACTIVE",
                    "crypto_status": "INACTIVE",
                    "currency": "USD",
                    "buying_power": f"{max(self.cash, 0.0):.2f}",
                    "regt_buying_power": f"{max(self.cash, 0.0):.2f}",
                    "daytrading_buying_power": "0",
                    "non_marginable_buying_power": f"{max(self.cash, 0.0):.2f}",
                    "cash": f"{self.cash:.2f}",
                    "accrued_fees": "0",
                    "portfolio_value": f"{equity:.2f}",
                    "pattern_day_trader": False,
                    "trading_blocked": False,
                    "transfers_blocked": False,
                    "account_blocked": False,
                    "created_at": "2026-01-02T14:30:00Z",
                    "trade_suspended_by_user": False,
                    "multiplier": "1",
                    "shorting_enabled": False,
                    "equity": f"{equity:.2f}",
                    "last_equity": f"{equity:.2f}",
                    "long_market_value": f"{value:.2f}",
                    "short_market_value": "0",
                    "initial_margin": "0",
                    "maintenance_margin": "0",
                    "last_maintenance_margin": "0",
                    "sma": "0",
                    "daytrade_count": 0,
                }
            )

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            client_id = str(body.get("client_order_id") or uuid.uuid4())
            if any(o.client_order_id == client_id for o in self.orders.values()):
                return _error(422, 40010001, "client_order_id must be unique")
            symbol = str(body.get("symbol", ""))
            if self.tradable is not None and symbol not in self.tradable:
                return _error(422, 40010001, f'asset "{symbol}" not found')
            if self._reject_next is not None:
                message, self._reject_next = self._reject_next, None
                return _error(403, 40310000, message)
            order = EmulatedOrder(
                symbol=symbol,
                qty=float(body["qty"]),
                side=str(body["side"]),
                order_type=str(body.get("type", "market")),
                time_in_force=str(body.get("time_in_force", "day")),
                client_order_id=client_id,
                limit_price=float(body["limit_price"]) if body.get("limit_price") else None,
                status="accepted",
            )
            self.orders[order.id] = order
            self._update(order, "new")
            price = self.auto_fill_at.get(symbol)
            if price is not None and order.order_type == "market":
                self._fill(order, order.qty, price)
            lose = self._take_lost()
            answer = order.as_json()
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        if lose:  # processed, and the answer never arrives
            self._drop(request)
        return web.json_response(answer)

    async def _list(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "open")
        symbols = set(filter(None, request.query.get("symbols", "").split(",")))
        with self._lock:
            chosen = [
                o.as_json()
                for o in self.orders.values()
                if (status == "all" or (status == "open") == o.open)
                and (not symbols or o.symbol in symbols)
            ]
        return web.json_response(chosen)

    async def _by_client_id(self, request: web.Request) -> web.Response:
        client_id = request.query.get("client_order_id", "")
        with self._lock:
            order = next((o for o in self.orders.values() if o.client_order_id == client_id), None)
            if order is None:
                return _error(404, 40410000, "order not found")
            return web.json_response(order.as_json())

    def _cancel_one(self, order: EmulatedOrder) -> None:
        order.status = "canceled"
        order.canceled_at = order.updated_at = _now()
        self._update(order, "canceled")

    async def _cancel_all(self, _: web.Request) -> web.Response:
        with self._lock:
            results = []
            for order in [o for o in self.orders.values() if o.open]:
                self._cancel_one(order)
                results.append({"id": order.id, "status": 200, "body": order.as_json()})
        return web.json_response(results, status=207)

    async def _cancel(self, request: web.Request) -> web.Response:
        with self._lock:
            order = self.orders.get(request.match_info["order_id"])
            if order is None:
                return _error(404, 40410000, "order not found")
            if not order.open:
                return _error(422, 42210000, f'order is already in "{order.status}" state')
            self._cancel_one(order)
        return web.Response(status=204)

    async def _positions(self, _: web.Request) -> web.Response:
        with self._lock:
            listed = []
            for symbol, (qty, average) in sorted(self.positions.items()):
                listed.append(
                    {
                        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
                        "symbol": symbol,
                        "exchange": "NASDAQ",
                        "asset_class": "us_equity",
                        "asset_marginable": True,
                        "avg_entry_price": f"{average:.4f}",
                        "qty": f"{qty:g}",
                        "side": "long" if qty > 0 else "short",
                        "market_value": f"{qty * average:.2f}",
                        "cost_basis": f"{qty * average:.2f}",
                        "unrealized_pl": "0",
                        "unrealized_plpc": "0",
                        "unrealized_intraday_pl": "0",
                        "unrealized_intraday_plpc": "0",
                        "current_price": f"{average:.4f}",
                        "lastday_price": f"{average:.4f}",
                        "change_today": "0",
                        "qty_available": f"{qty:g}",
                    }
                )
        return web.json_response(listed)
