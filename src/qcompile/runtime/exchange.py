"""Crypto exchanges (spot) through ccxt: one adapter, the exchange named in the deployment.

ccxt (MIT) speaks each exchange's own API and keeps to its documented request weights
(``enableRateLimit``); the adapter adds what the runner needs on top:

- **Client order ids derived from the runner's order ids**, which name the strategy, decision
  bar, symbol and leg. Exchanges limit client ids (Binance: 36 characters of ``[A-Za-z0-9._:/-]``),
  so the id sent is ``q`` and 31 hex digits of the order id's SHA-256: the same order always gets
  the same client id, and an order is looked up by it before anything is sent twice.
- **Idempotent submits**: the exchange is asked for the order by its client id before it is sent
  (Binance keeps client ids unique among open orders only, so a filled order's id would be taken
  again); a repeated client id the exchange refuses, or a submit whose answer is lost (a timeout,
  a dropped connection, a kill between sending and reading), is resolved the same way; an order
  is sent again only if the exchange never saw it.
- **Rate limits**: a 429 (ccxt's ``RateLimitExceeded``/``DDoSProtection``) is waited out for as
  long as the response's Retry-After header says (else ccxt's own interval), up to ``max_waits``
  times, then ``BrokerUnavailable``. ccxt's error classes map to ours: insufficient funds, invalid
  orders and unknown symbols are ``OrderRejected``; network errors ``BrokerUnavailable``;
  anything else ``BrokerError``. No message carries the key or the secret.

Spot positions are balances: a universe symbol ``BTC/USDT`` is held as its base asset, cash is
the quote asset. Fills are read by polling the orders this adapter sent (``poll_fills``).
(The runner's use of this adapter is the next step of issue 19; see docs/brokers.md.)
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt

from qcompile.runtime.broker import (
    BrokerError,
    BrokerUnavailable,
    Fill,
    Order,
    OrderRejected,
)

T = TypeVar("T")
REJECTED = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadSymbol, ccxt.BadRequest)
# spot only: no margin, futures or currency listings (each is more requests, and keys for them)
SPOT_OPTIONS = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}


def client_order_id(order_id: str) -> str:
    """The exchange-safe client id of a runner order id: deterministic, 32 characters."""
    return "q" + hashlib.sha256(order_id.encode()).hexdigest()[:31]


class CcxtBroker:
    """The broker interface over one ccxt exchange's spot market."""

    def __init__(
        self,
        exchange: str,
        api_key: str,
        secret: str,
        symbols: Sequence[str],
        *,
        url: str | None = None,
        max_waits: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        kind = getattr(ccxt, exchange, None)
        if not isinstance(kind, type) or not issubclass(kind, ccxt.Exchange):
            raise BrokerError(f"ccxt has no exchange {exchange!r}")
        self.exchange = kind(
            {"apiKey": api_key, "secret": secret, "enableRateLimit": True, "options": SPOT_OPTIONS}
        )
        if url is not None:  # a local stand-in (tests, rehearsals): same paths, another host
            _point_at(self.exchange, url)
        self.symbols = list(symbols)
        self.max_waits = max_waits
        self.sleep = sleep
        self._sent: dict[str, Order] = {}  # client id -> the order it carries
        self._reported: dict[str, tuple[float, float]] = {}  # client id -> (qty, cost)
        self._fill_seq = 0
        self._call("markets", self.exchange.load_markets)
        unknown = [s for s in self.symbols if s not in self.exchange.markets]
        if unknown:
            raise BrokerError(f"{exchange} lists no spot market {', '.join(unknown)}")

    # -- calls ------------------------------------------------------------------------------

    def _call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(self.max_waits + 1):
            try:
                return function(*args, **kwargs)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection):
                if attempt == self.max_waits:
                    raise BrokerUnavailable(f"{what}: the exchange's rate limit held") from None
                self.sleep(self._retry_after())
            except ccxt.OrderNotFound:
                raise
            except REJECTED as error:
                raise OrderRejected(f"{what}: the exchange refused it: {_said(error)}") from None
            except ccxt.NetworkError as error:
                raise BrokerUnavailable(f"{what}: unreachable ({type(error).__name__})") from None
            except ccxt.BaseError as error:
                raise BrokerError(f"{what}: {type(error).__name__}: {_said(error)}") from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _retry_after(self) -> float:
        headers = self.exchange.last_response_headers or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            return max(0.0, float(value)) if value is not None else self.exchange.rateLimit / 1000
        except ValueError:
            return self.exchange.rateLimit / 1000

    # -- the broker interface ---------------------------------------------------------------

    def submit(self, order: Order) -> list[Fill]:
        """A market order under the order's client id; never sent twice. Fills arrive through
        ``poll_fills``."""
        client = client_order_id(order.id)
        self._sent[client] = order

        def send() -> None:
            self._call(
                f"order {order.id}",
                self.exchange.create_order,
                order.symbol,
                "market",
                "buy" if order.quantity > 0 else "sell",
                abs(order.quantity),
                None,
                {"newClientOrderId": client},
            )

        # Binance keeps client ids unique among open orders only: a filled order's id would be
        # accepted again, so an order is looked up before it is sent (orders are rare; a
        # duplicate is not)
        if self.find(order) is not None:
            return []
        try:
            send()
        except OrderRejected:
            if self.find(order) is None:  # refused, not a repeat of an order it already has
                raise
        except BrokerUnavailable:
            if self.find(order) is None:  # the answer was lost: send only if it never arrived
                send()
        return []

    def find(self, order: Order) -> dict[str, Any] | None:
        """The exchange's record of ``order`` (looked up by its client id), or None."""
        try:
            return self._call(
                f"order {order.id}",
                self.exchange.fetch_order,
                None,
                order.symbol,
                {"origClientOrderId": client_order_id(order.id)},
            )
        except ccxt.OrderNotFound:
            return None

    def working_orders(self) -> list[Order]:
        working = []
        for symbol in self.symbols:
            for found in self._call(
                f"open orders {symbol}", self.exchange.fetch_open_orders, symbol
            ):
                working.append(self._ours(found))
        return working

    def cancel_all(self) -> list[Order]:
        working = self.working_orders()
        for symbol in sorted({o.symbol for o in working}):
            # filled or cancelled since it was listed: nothing left to cancel there
            with contextlib.suppress(ccxt.OrderNotFound):
                self._call(f"cancel all {symbol}", self.exchange.cancel_all_orders, symbol)
        return working

    def _balances(self) -> dict[str, Any]:
        return self._call("balance", self.exchange.fetch_balance)

    def positions(self) -> dict[str, float]:
        totals = self._balances().get("total") or {}
        held = {}
        for symbol in self.symbols:
            amount = float(totals.get(self.exchange.markets[symbol]["base"]) or 0.0)
            if amount:
                held[symbol] = amount
        return held

    def cash(self) -> float:
        quotes = {self.exchange.markets[s]["quote"] for s in self.symbols}
        totals = self._balances().get("total") or {}
        return sum(float(totals.get(q) or 0.0) for q in sorted(quotes))

    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]:
        return []  # the exchange fills at its own market; fills are read with poll_fills

    def poll_fills(self) -> list[Fill]:
        """Fills of the orders sent since the last poll: each order's filled amount beyond what
        was reported, priced from the change in its cost (quote amount)."""
        fills = []
        for client, order in list(self._sent.items()):
            reported_qty, reported_cost = self._reported.get(client, (0.0, 0.0))
            if reported_qty >= abs(order.quantity) - 1e-12:
                continue
            found = self.find(order)
            if found is None:
                continue
            filled = float(found.get("filled") or 0.0)
            cost = float(found.get("cost") or 0.0)
            new = filled - reported_qty
            if new <= 1e-12:
                continue
            fee = (found.get("fee") or {}).get("cost")
            self._fill_seq += 1
            fills.append(
                Fill(
                    order.id,
                    order.symbol,
                    new if order.quantity > 0 else -new,
                    (cost - reported_cost) / new,
                    float(fee or 0.0),
                    int(found.get("lastTradeTimestamp") or found.get("timestamp") or 0),
                    self._fill_seq,
                )
            )
            self._reported[client] = (filled, cost)
        return fills

    def _ours(self, found: dict[str, Any]) -> Order:
        client = str(found.get("clientOrderId") or found.get("id"))
        known = self._sent.get(client)
        sign = 1.0 if found.get("side") == "buy" else -1.0
        return Order(
            known.id if known else client,
            str(found.get("symbol")),
            sign * float(found.get("amount") or 0.0),
            int(found.get("timestamp") or 0),
        )


def _point_at(exchange: Any, url: str) -> None:
    """Send every REST call of ``exchange`` to ``url``'s host, keeping each endpoint's path."""
    target = urlsplit(url)

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("http"):
            parts = urlsplit(value)
            return parts._replace(scheme=target.scheme, netloc=target.netloc).geturl()
        return value

    exchange.urls["api"] = moved(exchange.urls["api"])


def _said(error: Exception) -> str:
    """An exchange error's own words (ccxt prefixes the exchange's name and JSON body)."""
    return " ".join(str(error).split())[:300]
