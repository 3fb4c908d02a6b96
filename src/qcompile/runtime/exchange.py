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
the quote asset. Fills are read by asking for the runner's open orders by client id (``report``):
the exchange's cumulative filled amount, cost and fee, from which the runner books the increase.
A fee charged in the base asset (Binance's default on a buy) is taken from the quantity booked,
as the exchange takes it from the balance; a fee in the quote asset is the commission; a fee in
a third asset (BNB) is not valued, and the report says so in the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
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
    OrderReport,
)

T = TypeVar("T")
log = logging.getLogger("qcompile.live")
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

    remote = True

    def __init__(
        self,
        exchange: str,
        api_key: str,
        secret: str,
        symbols: Sequence[str],
        *,
        url: str | None = None,
        sandbox: bool = False,
        max_waits: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        kind = getattr(ccxt, exchange, None)
        if not isinstance(kind, type) or not issubclass(kind, ccxt.Exchange):
            raise BrokerError(f"ccxt has no exchange {exchange!r}")
        self.name = exchange

        def make() -> Any:
            made = kind(
                {
                    "apiKey": api_key,
                    "secret": secret,
                    "enableRateLimit": True,
                    "options": dict(SPOT_OPTIONS),
                }
            )
            if sandbox:  # the exchange's own test network (ccxt knows its address)
                made.set_sandbox_mode(True)
            if url is not None:  # a local stand-in (tests, rehearsals): same paths, other host
                _point_at(made, url)
            return made

        self._make = make
        # one exchange object per thread: ccxt's HTTP session is not safe to share, and the
        # runner's safe state (feed thread) must not wait behind the broker thread's poll
        self._local = threading.local()
        self.symbols = list(symbols)
        self.max_waits = max_waits
        self.sleep = sleep
        self._sent: dict[str, Order] = {}  # client id -> the order it carries
        self._call("markets", self.exchange.load_markets)
        self._markets = (self.exchange.markets, self.exchange.currencies)
        # a universe names markets by the exchange's id (BTCUSDT: configs allow no slash) or by
        # ccxt's unified symbol (BTC/USDT); calls use the unified one, the runner sees its own
        self._unified: dict[str, str] = {}
        for symbol in self.symbols:
            market = self.exchange.markets.get(symbol) or _by_id(self.exchange, symbol)
            if market is not None:
                self._unified[symbol] = market["symbol"]
        unknown = [s for s in self.symbols if s not in self._unified]
        if unknown:
            raise BrokerError(f"{exchange} lists no spot market {', '.join(unknown)}")
        self._ours_by_unified = {u: s for s, u in self._unified.items()}

    @property
    def exchange(self) -> Any:
        made = getattr(self._local, "exchange", None)
        if made is None:
            made = self._local.exchange = self._make()
            first = getattr(self, "_markets", None)
            if first is not None:  # listed once, by the first thread: not asked again
                made.set_markets(*first)
        return made

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
        """A market order (a limit order at its ``limit_price``) under the order's client id;
        never sent twice. Fills arrive through ``report``."""
        client = client_order_id(order.id)
        self._sent[client] = order

        def send() -> None:
            self._call(
                f"order {order.id}",
                self.exchange.create_order,
                self._unified[order.symbol],
                "market" if order.limit_price is None else "limit",
                "buy" if order.quantity > 0 else "sell",
                abs(order.quantity),
                order.limit_price,
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
                self._unified[order.symbol],
                {"origClientOrderId": client_order_id(order.id)},
            )
        except ccxt.OrderNotFound:
            return None

    def working_orders(self) -> list[Order]:
        working = []
        for symbol in self.symbols:
            for found in self._call(
                f"open orders {symbol}", self.exchange.fetch_open_orders, self._unified[symbol]
            ):
                working.append(self._ours(found))
        return working

    def cancel(self, order: Order) -> bool:
        """Cancel one order by its client id; False if it is not working (filled, cancelled,
        or never arrived)."""
        try:
            self._call(
                f"cancel {order.id}",
                self.exchange.cancel_order,
                None,
                self._unified[order.symbol],
                {"origClientOrderId": client_order_id(order.id)},
            )
        except ccxt.OrderNotFound:  # Binance: -2011, nothing working under that id
            return False
        return True

    def cancel_all(self) -> list[Order]:
        working = self.working_orders()
        for symbol in sorted({o.symbol for o in working}):
            # filled or cancelled since it was listed: nothing left to cancel there
            with contextlib.suppress(ccxt.OrderNotFound):
                self._call(
                    f"cancel all {symbol}", self.exchange.cancel_all_orders, self._unified[symbol]
                )
        return working

    def _balances(self) -> dict[str, Any]:
        return self._call("balance", self.exchange.fetch_balance)

    def positions(self) -> dict[str, float]:
        totals = self._balances().get("total") or {}
        held = {}
        for symbol in self.symbols:
            amount = float(totals.get(self._market(symbol)["base"]) or 0.0)
            if amount:
                held[symbol] = amount
        return held

    def cash(self) -> float:
        quotes = {self._market(s)["quote"] for s in self.symbols}
        totals = self._balances().get("total") or {}
        return sum(float(totals.get(q) or 0.0) for q in sorted(quotes))

    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]:
        return []  # the exchange fills at its own market; fills are read with report

    def fills_after(self, seq: int) -> list[Fill]:
        return []  # the runner asks for its own orders' reports instead

    def describe(self) -> str:
        return f"{self.name} spot through ccxt"

    def report(self, order: Order) -> OrderReport | None:
        """The exchange's account of ``order`` (cumulative), or None if it never arrived."""
        found = self.find(order)
        if found is None:
            return None
        self._sent.setdefault(client_order_id(order.id), order)
        filled = float(found.get("filled") or 0.0)
        cost = float(found.get("cost") or 0.0)
        commission = 0.0
        market = self._market(order.symbol)
        for fee in found.get("fees") or ([found["fee"]] if found.get("fee") else []):
            amount = float(fee.get("cost") or 0.0)
            if fee.get("currency") == market["quote"]:
                commission += amount
            elif fee.get("currency") == market["base"] and order.quantity > 0:
                filled -= amount  # taken from what was bought: the balance holds the rest
            elif amount:
                log.warning("%s: a fee of %g %s is not valued", order.id, amount, fee["currency"])
        return OrderReport(
            order.id,
            order.symbol,
            1 if order.quantity > 0 else -1,
            filled,
            cost,
            commission,
            found.get("status") == "open",
            int(found.get("lastTradeTimestamp") or found.get("timestamp") or 0),
        )

    def _market(self, symbol: str) -> dict[str, Any]:
        return self.exchange.markets[self._unified[symbol]]

    def _ours(self, found: dict[str, Any]) -> Order:
        client = str(found.get("clientOrderId") or found.get("id"))
        known = self._sent.get(client)
        sign = 1.0 if found.get("side") == "buy" else -1.0
        limit = found.get("price") if found.get("type") == "limit" else None
        return Order(
            known.id if known else client,
            self._ours_by_unified.get(str(found.get("symbol")), str(found.get("symbol"))),
            sign * float(found.get("amount") or 0.0),
            int(found.get("timestamp") or 0),
            None if limit is None else float(limit),
        )


def _by_id(exchange: Any, market_id: str) -> dict[str, Any] | None:
    """The spot market the exchange calls ``market_id`` (ccxt lists each id's markets)."""
    listed = (exchange.markets_by_id or {}).get(market_id) or []
    spot = [m for m in (listed if isinstance(listed, list) else [listed]) if m.get("spot")]
    return spot[0] if spot else None


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
