"""A local stand-in for Binance's spot REST API (v3), the exchange the ccxt adapter is tested on.

It serves what ccxt's Binance implementation calls for spot trading, with the fields of Binance's
API reference: ``GET /api/v3/exchangeInfo`` (symbols with their PRICE_FILTER, LOT_SIZE and
NOTIONAL filters), ``GET /api/v3/time``, and the signed endpoints ``GET /api/v3/account``,
``POST /api/v3/order``, ``GET /api/v3/order``, ``DELETE /api/v3/order``,
``GET /api/v3/openOrders``, ``DELETE /api/v3/openOrders``. Signed requests carry the key in
``X-MBX-APIKEY`` and an HMAC-SHA256 ``signature`` of the other parameters, checked as Binance
checks it; errors are Binance's ``{"code": -2010, "msg": ...}`` bodies with their HTTP statuses.

Tests drive the market (``fill``; ``auto_fill_at`` fills market orders at once) and the faults:
``rate_limit(n, retry_after)`` answers 429 with Retry-After and code -1003; ``lose_next_response``
processes the next order and drops the connection unanswered; ``reject_next`` refuses the next
order for insufficient balance (-2010).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from qcompile.emulator.loopback import LoopbackApi

API_KEY = "emulated-binance-key-000000000000000000000000000000000000000000000000000000000000000"
SECRET = "emulated-binance-secret-0000000000000000000000000000000000000000000000000000000000"


def _ms() -> int:
    return int(time.time() * 1000)


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None):
    return web.json_response({"code": code, "msg": message}, status=status, headers=headers)


@dataclass
class SpotOrder:
    order_id: int
    symbol: str
    side: str  # BUY | SELL
    order_type: str  # MARKET | LIMIT
    quantity: float
    client_order_id: str
    price: float = 0.0
    status: str = "NEW"
    executed: float = 0.0
    quote: float = 0.0  # cumulative quote quantity
    time: int = 0
    update_time: int = 0

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def as_json(self) -> dict[str, Any]:
        """The order object of Binance's ``GET /api/v3/order`` (quantities as strings)."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": f"{self.price:.8f}",
            "origQty": f"{self.quantity:.8f}",
            "executedQty": f"{self.executed:.8f}",
            "cummulativeQuoteQty": f"{self.quote:.8f}",
            "status": self.status,
            "timeInForce": "GTC",
            "type": self.order_type,
            "side": self.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


class BinanceEmulator(LoopbackApi):
    """Binance spot on 127.0.0.1: one account, the ``markets`` given as (base, quote) pairs."""

    name = "binance-emulator"

    def __init__(
        self,
        balances: dict[str, float] | None = None,
        markets: dict[str, tuple[str, str]] | None = None,
        auto_fill_at: dict[str, float] | None = None,
        api_key: str = API_KEY,
        secret: str = SECRET,
    ) -> None:
        super().__init__()
        self.balances = dict(balances or {"USDT": 100_000.0})
        self.markets = dict(markets or {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")})
        self.auto_fill_at = dict(auto_fill_at or {})
        self.api_key, self.secret = api_key, secret
        self.orders: dict[int, SpotOrder] = {}
        self._next_id = 1000
        self._reject_next = False

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/account", self._account)
        app.router.add_post("/api/v3/order", self._submit)
        app.router.add_get("/api/v3/order", self._query)
        app.router.add_delete("/api/v3/order", self._cancel)
        app.router.add_get("/api/v3/openOrders", self._open)
        app.router.add_delete("/api/v3/openOrders", self._cancel_open)

    # -- what a test drives -----------------------------------------------------------------

    def reject_next(self) -> None:
        with self._lock:
            self._reject_next = True

    def fill(self, client_order_id: str, quantity: float, price: float) -> None:
        with self._lock:
            order = next(
                (o for o in self.orders.values() if o.client_order_id == client_order_id), None
            )
            if order is None or not order.open:
                raise ValueError(f"no working order {client_order_id}")
            self._fill(order, min(quantity, order.quantity - order.executed), price)

    def _fill(self, order: SpotOrder, quantity: float, price: float) -> None:
        base, quote = self.markets[order.symbol]
        sign = 1.0 if order.side == "BUY" else -1.0
        order.executed += quantity
        order.quote += quantity * price
        order.status = "FILLED" if order.executed >= order.quantity - 1e-12 else "PARTIALLY_FILLED"
        order.update_time = _ms()
        self.balances[base] = self.balances.get(base, 0.0) + sign * quantity
        self.balances[quote] = self.balances.get(quote, 0.0) - sign * quantity * price

    # -- the API ----------------------------------------------------------------------------

    def rate_limited(self, retry_after: int) -> web.Response:
        return _error(
            429,
            -1003,
            "Too many requests; current limit of IP is 6000 requests per minute.",
            headers={"Retry-After": str(retry_after)},
        )

    async def _signed(self, request: web.Request) -> dict[str, str] | web.Response:
        """The request's parameters after Binance's checks: key, signature (HMAC-SHA256 of the
        query string and body, without the signature itself) and timestamp."""
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        body = (await request.text()) if request.can_read_body else ""
        query = request.query_string
        total = query + body if query and body else query or body
        pairs = parse_qsl(total, keep_blank_values=True)
        params = dict(pairs)
        signature = params.pop("signature", "")
        signed = "&".join(part for part in total.split("&") if not part.startswith("signature="))
        expected = hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return _error(400, -1022, "Signature for this request is not valid.")
        if "timestamp" not in params:
            return _error(400, -1102, "Mandatory parameter 'timestamp' was not sent.")
        return params

    async def _exchange_info(self, _: web.Request) -> web.Response:
        symbols = []
        for symbol, (base, quote) in sorted(self.markets.items()):
            symbols.append(
                {
                    "symbol": symbol,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01000000",
                            "maxPrice": "1000000.00000000",
                            "tickSize": "0.01000000",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00001000",
                            "maxQty": "9000.00000000",
                            "stepSize": "0.00001000",
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": "5.00000000",
                            "applyMinToMarket": True,
                            "maxNotional": "9000000.00000000",
                            "applyMaxToMarket": False,
                            "avgPriceMins": 5,
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER"],
                }
            )
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": _ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            }
        )

    async def _time(self, _: web.Request) -> web.Response:
        return web.json_response({"serverTime": _ms()})

    async def _account(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        if isinstance(params, web.Response):
            return params
        with self._lock:
            locked: dict[str, float] = {}
            for order in self.orders.values():
                if order.open and order.side == "SELL":
                    base = self.markets[order.symbol][0]
                    locked[base] = locked.get(base, 0.0) + order.quantity - order.executed
            balances = [
                {
                    "asset": asset,
                    "free": f"{amount - locked.get(asset, 0.0):.8f}",
                    "locked": f"{locked.get(asset, 0.0):.8f}",
                }
                for asset, amount in sorted(self.balances.items())
            ]
        return web.json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": "0.00100000",
                    "taker": "0.00100000",
                    "buyer": "0.00000000",
                    "seller": "0.00000000",
                },
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": _ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": 354937868,
            }
        )

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        params = await self._signed(request)
        if isinstance(params, web.Response):
            return params
        with self._lock:
            symbol = params.get("symbol", "")
            if symbol not in self.markets:
                return _error(400, -1121, "Invalid symbol.")
            client_id = params.get("newClientOrderId") or f"emulated{self._next_id}"
            if any(o.client_order_id == client_id and o.open for o in self.orders.values()):
                return _error(400, -2010, "Duplicate order sent.")
            if self._reject_next:
                self._reject_next = False
                return _error(400, -2010, "Account has insufficient balance for requested action.")
            self._next_id += 1
            now = _ms()
            order = SpotOrder(
                order_id=self._next_id,
                symbol=symbol,
                side=params.get("side", "BUY"),
                order_type=params.get("type", "MARKET"),
                quantity=float(params.get("quantity", "0")),
                client_order_id=client_id,
                price=float(params.get("price", "0") or 0),
                time=now,
                update_time=now,
            )
            self.orders[order.order_id] = order
            price = self.auto_fill_at.get(symbol)
            if price is not None and order.order_type == "MARKET":
                self._fill(order, order.quantity, price)
            lose = self._take_lost()
            answer = {
                key: value
                for key, value in order.as_json().items()
                if key not in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty")
            } | {"transactTime": now, "fills": []}
        if lose:  # processed, and the answer never arrives
            self._drop(request)
        return web.json_response(answer)

    def _lookup(self, params: dict[str, str]) -> SpotOrder | None:
        if params.get("orderId"):
            return self.orders.get(int(params["orderId"]))
        client_id = params.get("origClientOrderId")
        return next(
            (
                o
                for o in sorted(self.orders.values(), key=lambda o: -o.order_id)
                if o.client_order_id == client_id and o.symbol == params.get("symbol")
            ),
            None,
        )

    async def _query(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        if isinstance(params, web.Response):
            return params
        with self._lock:
            order = self._lookup(params)
            if order is None:
                return _error(400, -2013, "Order does not exist.")
            return web.json_response(order.as_json())

    def _cancelled(self, order: SpotOrder) -> dict[str, Any]:
        order.status = "CANCELED"
        order.update_time = _ms()
        return order.as_json() | {"origClientOrderId": order.client_order_id}

    async def _cancel(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        if isinstance(params, web.Response):
            return params
        with self._lock:
            order = self._lookup(params)
            if order is None or not order.open:
                return _error(400, -2011, "Unknown order sent.")
            return web.json_response(self._cancelled(order))

    async def _open(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        if isinstance(params, web.Response):
            return params
        symbol = params.get("symbol")
        with self._lock:
            listed = [
                o.as_json()
                for o in self.orders.values()
                if o.open and (symbol is None or o.symbol == symbol)
            ]
        return web.json_response(listed)

    async def _cancel_open(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        if isinstance(params, web.Response):
            return params
        with self._lock:
            due = [o for o in self.orders.values() if o.open and o.symbol == params.get("symbol")]
            if not due:
                return _error(400, -2011, "Unknown order sent.")
            return web.json_response([self._cancelled(o) for o in due])
