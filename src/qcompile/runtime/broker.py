"""The broker interface and the paper broker, the default implementation.

A broker owns the truth about positions, cash and working orders; the runner's persisted state is
its own view, reconciled against the broker at start-up. The paper broker fills a working order at
the next quote of its symbol, with the strategy's cost model: slippage in basis points against the
order's side and commission per share with an optional minimum per order — the same model the
backtest charges. Its ledger is persisted after every change through ``persist`` (the runner
passes an atomic, fsynced writer), so a paper account survives restarts like a real one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Order:
    id: str
    symbol: str
    quantity: float  # signed: positive buys, negative sells
    submitted_ms: int


@dataclass(frozen=True)
class Fill:
    order_id: str
    symbol: str
    quantity: float
    price: float
    commission: float
    timestamp: int


class Broker(Protocol):
    def submit(self, order: Order) -> None: ...
    def cancel_all(self) -> list[Order]: ...
    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]: ...
    def positions(self) -> dict[str, float]: ...
    def cash(self) -> float: ...
    def working_orders(self) -> list[Order]: ...


class PaperBroker:
    """Fills at the next quote with the cost model; keeps a persisted ledger."""

    def __init__(
        self,
        costs: dict[str, Any],
        initial_cash: float,
        ledger: dict[str, Any] | None = None,
        persist: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.slippage = float(costs.get("slippage_bps", 0.0)) / 10_000.0
        self.per_share = float(costs.get("commission_per_share", 0.0))
        self.minimum = float(costs.get("min_commission") or 0.0)
        self._persist = persist
        ledger = ledger or {}
        self._cash = float(ledger.get("cash", initial_cash))
        self._positions: dict[str, float] = dict(ledger.get("positions", {}))
        self._working: dict[str, Order] = {
            o["id"]: Order(**o) for o in ledger.get("working_orders", [])
        }
        self.fills = int(ledger.get("fills", 0))

    def ledger(self) -> dict[str, Any]:
        return {
            "cash": self._cash,
            "positions": dict(sorted(self._positions.items())),
            "working_orders": [asdict(o) for o in self._working.values()],
            "fills": self.fills,
        }

    def _changed(self) -> None:
        if self._persist is not None:
            self._persist(self.ledger())

    def submit(self, order: Order) -> None:
        self._working[order.id] = order
        self._changed()

    def cancel_all(self) -> list[Order]:
        cancelled = list(self._working.values())
        self._working.clear()
        if cancelled:
            self._changed()
        return cancelled

    def commission(self, quantity: float) -> float:
        return max(self.minimum, abs(quantity) * self.per_share) if quantity else 0.0

    def on_quote(self, symbol: str, price: float, timestamp: int) -> list[Fill]:
        due = [o for o in self._working.values() if o.symbol == symbol]
        fills = []
        for order in due:
            del self._working[order.id]
            fill_price = price * (1.0 + math.copysign(self.slippage, order.quantity))
            commission = self.commission(order.quantity)
            self._cash -= order.quantity * fill_price + commission
            held = self._positions.get(symbol, 0.0) + order.quantity
            if held:
                self._positions[symbol] = held
            else:
                self._positions.pop(symbol, None)
            self.fills += 1
            fills.append(Fill(order.id, symbol, order.quantity, fill_price, commission, timestamp))
        if fills:
            self._changed()
        return fills

    def positions(self) -> dict[str, float]:
        return dict(self._positions)

    def cash(self) -> float:
        return self._cash

    def working_orders(self) -> list[Order]:
        return list(self._working.values())
