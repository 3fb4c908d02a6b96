"""The broker interface and the paper broker, the default implementation.

A broker owns the truth about positions, cash and working orders; the runner's persisted state is
its own view, reconciled against the broker at start-up. The paper broker fills a working order at
the next quote of its symbol, with the strategy's cost model: slippage in basis points against the
order's side and commission per share with an optional minimum per order — the same model the
backtest charges, by the same functions (``qcompile.execution.Costs``). Its ledger survives
restarts like a real account: the runner saves it inside its state document
(``Engine.snapshot``), in the same atomic write, so the two are never out of step.

Orders are idempotent by id, as a real broker's client order ids are: a second submit of a
working or filled order sends nothing and returns what is known (the fill). Every fill carries
a sequence number, and the recent ones stay in the ledger, so a runner killed between the
broker's fill and its own save learns the fills it missed at its restart (``fills_after``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from qcompile.execution import Costs


@dataclass(frozen=True)
class Order:
    id: str
    symbol: str
    quantity: float  # signed: positive buys, negative sells
    submitted_ms: int
    limit_price: float | None = None  # None: a market order


@dataclass(frozen=True)
class Fill:
    order_id: str
    symbol: str
    quantity: float
    price: float
    commission: float
    timestamp: int
    seq: int = 0  # the broker's fill sequence number (0: unknown)


# fills kept in the ledger, which is saved with every state, so kept short: they answer a
# repeated submit of a filled id. The paper ledger is saved in the same atomic write as the
# runner's state, so a restart never misses a fill nor decides a saved bar again; a real broker
# keeps its own history (issue 19)
RECENT_FILLS = 256


def _fill_seq(fill: dict[str, Any]) -> int:
    return int(fill.get("seq") or 0)


class BrokerError(Exception):
    """A broker call failed; the message says what the broker answered (never a credential)."""


class OrderRejected(BrokerError):
    """The broker refused an order (insufficient buying power, unknown asset, a closed market)."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached or kept refusing (rate limits): retry later, safely."""


@dataclass(frozen=True)
class OrderReport:
    """What a remote broker says of one of our orders: cumulative, so reading it twice is
    harmless. The runner keeps what it has booked of each order and books only the increase."""

    order_id: str  # the runner's id
    symbol: str
    side: int  # +1 buys, -1 sells
    filled: float  # quantity filled so far, unsigned
    cost: float  # what the filled part cost, quantity times price, unsigned
    commission: float  # fees charged so far, in the account's currency
    open: bool  # still working at the broker (False: filled, cancelled, rejected or expired)
    updated_ms: int


def order_record(order: Order) -> dict[str, Any]:
    """An order as a state keeps it; a market order has no null limit price, so a paper
    runner's states read as they did before limit orders existed."""
    return {k: v for k, v in asdict(order).items() if v is not None or k != "limit_price"}


def position_differences(
    symbols: list[str], ours: dict[str, float], theirs: dict[str, float]
) -> list[str]:
    """Where the broker's positions in ``symbols`` differ from the runner's books, one line
    each (a relative tolerance of 1e-9: the broker's decimals are not our floats)."""
    differences = []
    for symbol in symbols:
        mine, broker = ours.get(symbol, 0.0), theirs.get(symbol, 0.0)
        if abs(mine - broker) > 1e-9 * max(1.0, abs(mine), abs(broker)):
            differences.append(f"{symbol}: state {mine:g}, broker {broker:g}")
    return differences


def check_report(order: Order, report: OrderReport) -> None:
    """Refuse a report no broker should send about ``order`` (BrokerError): another symbol or
    side, amounts that are not finite or negative, more filled than ordered, a fill at a price
    of zero or less. Booking it would put a wrong position in the books: the runner fails into
    its safe state instead."""
    amounts = (report.filled, report.cost, report.commission)
    problem = ""
    if report.symbol != order.symbol or report.side != (1 if order.quantity > 0 else -1):
        problem = f"it is a {report.symbol} {'buy' if report.side > 0 else 'sell'}"
    elif not all(math.isfinite(a) and a >= 0 for a in amounts):
        problem = f"filled {report.filled!r}, cost {report.cost!r}, fees {report.commission!r}"
    elif report.filled > abs(order.quantity) * (1 + 1e-9) + 1e-12:
        problem = f"{report.filled:g} filled of {abs(order.quantity):g} ordered"
    elif report.filled > 0 and report.cost <= 0:
        problem = f"{report.filled:g} filled for {report.cost:g}"
    if problem:
        raise BrokerError(f"the broker's report of order {order.id} is impossible: {problem}")


def fill_increment(report: OrderReport, booked: list[float]) -> Fill | None:
    """The fill ``report`` adds to what was ``booked`` of its order ([filled, cost, commission],
    all cumulative): the new quantity, priced from the change in cost, with the new fees; None
    if nothing was filled since. A report never takes back a fill it once showed."""
    filled, cost, commission = booked
    new = report.filled - filled
    if new <= 1e-12:
        return None
    return Fill(
        report.order_id,
        report.symbol,
        report.side * new,
        (report.cost - cost) / new,
        max(0.0, report.commission - commission),
        report.updated_ms,
    )


class Broker(Protocol):
    """What the engine needs of any broker. A broker whose books live elsewhere (``remote``)
    also answers ``report`` for the orders the runner sent; fills then come from those reports
    (the runner polls them), not from ``on_quote``."""

    remote: bool

    def submit(self, order: Order) -> list[Fill]: ...
    def fills_after(self, seq: int) -> list[Fill]: ...
    def cancel(self, order: Order) -> bool: ...
    def cancel_all(self) -> list[Order]: ...
    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]: ...
    def positions(self) -> dict[str, float]: ...
    def cash(self) -> float: ...
    def working_orders(self) -> list[Order]: ...


class RemoteBroker(Broker, Protocol):
    def report(self, order: Order) -> OrderReport | None: ...
    def equity(self) -> float: ...
    def describe(self) -> str: ...


class PaperBroker:
    """Fills at the next quote with the cost model; its ledger is saved with the state."""

    remote = False

    def __init__(
        self, costs: dict[str, Any], initial_cash: float, ledger: dict[str, Any] | None = None
    ):
        self.costs = Costs.from_config(costs)
        ledger = ledger or {}
        self._cash = float(ledger.get("cash", initial_cash))
        self._positions: dict[str, float] = dict(ledger.get("positions", {}))
        self._working: dict[str, Order] = {
            o["id"]: Order(**o) for o in ledger.get("working_orders", [])
        }
        self.fills = int(ledger.get("fills", 0))
        recent = ledger.get("recent_fills") or {}  # by order id; a list in older states
        fills = sorted(recent.values() if isinstance(recent, dict) else recent, key=_fill_seq)
        self._recent: dict[str, dict[str, Any]] = {  # order id -> its fill, the last ones
            f["order_id"]: dict(f) for f in fills[-RECENT_FILLS:]
        }

    def ledger(self) -> dict[str, Any]:
        return {
            "cash": self._cash,
            "positions": dict(sorted(self._positions.items())),
            "working_orders": [order_record(o) for o in self._working.values()],
            "fills": self.fills,
            # by order id, each record never changed once made: a save's log line holds the
            # new fills only (a list would be written whole whenever one is added)
            "recent_fills": dict(self._recent),
        }

    def submit(self, order: Order) -> list[Fill]:
        """Accept ``order``; an id already working or filled is not sent again (its fill, if
        any, is returned)."""
        if order.id in self._recent:
            return [Fill(**self._recent[order.id])]
        self._working.setdefault(order.id, order)
        return []

    def fills_after(self, seq: int) -> list[Fill]:
        """The recent fills with a sequence number above ``seq``, in order."""
        return [Fill(**f) for f in self._recent.values() if f["seq"] > seq]

    def cancel(self, order: Order) -> bool:
        """Cancel one working order; False if it is not working (filled, or never sent)."""
        return self._working.pop(order.id, None) is not None

    def cancel_all(self) -> list[Order]:
        cancelled = list(self._working.values())
        self._working.clear()
        return cancelled

    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]:
        if not self._working:  # the usual case: called for every push
            return []
        due = [
            o
            for o in self._working.values()
            if o.symbol == symbol
            # a limit order fills once the quote reaches its limit, at the quote
            and (o.limit_price is None or (price - o.limit_price) * o.quantity <= 0)
        ]
        fills = []
        for order in due:
            del self._working[order.id]
            fill_price = self.costs.fill(price, buying=order.quantity > 0)
            commission = self.costs.commission(order.quantity)
            self._cash -= order.quantity * fill_price + commission
            held = self._positions.get(symbol, 0.0) + order.quantity
            if held:
                self._positions[symbol] = held
            else:
                self._positions.pop(symbol, None)
            self.fills += 1
            fill = Fill(
                order.id, symbol, order.quantity, fill_price, commission, timestamp, self.fills
            )
            self._recent[order.id] = asdict(fill)
            if len(self._recent) > RECENT_FILLS:
                del self._recent[next(iter(self._recent))]
            fills.append(fill)
        return fills

    def positions(self) -> dict[str, float]:
        return dict(self._positions)

    def cash(self) -> float:
        return self._cash

    def working_orders(self) -> list[Order]:
        return list(self._working.values())

    def describe(self) -> str:
        return "paper broker"
