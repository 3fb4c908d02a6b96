"""How a trade is sized, filled and charged: one set of rules for the backtest and the runner.

The backtest's reference loop, its compiled kernel (which mirrors these lines in numba, checked
by tests) and the production runner all size and cost a trade here, so a parity run compares
two executions of the same semantics rather than two implementations that may drift:

* Each symbol trades in its own sleeve: ``equal_weight`` gives every symbol initial_capital / N;
  ``fixed_fraction`` gives each symbol ``fraction`` of the initial capital; the rest stays idle
  cash.
* A change of target closes the position whole, then opens the new side with the whole sleeve
  cash at that moment (the close's proceeds and costs included): shares = the most whose cost plus
  commission fits, rounded down to whole shares unless fractional shares are allowed. Shares stay
  fixed for the trade.
* Fills are worse than the reference price by ``slippage_bps`` (buys higher, sells lower); each
  fill pays max(min_commission, commission_per_share x shares).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Costs:
    slippage_bps: float = 0.0
    commission_per_share: float = 0.0
    min_commission: float = 0.0

    @classmethod
    def from_config(cls, costs: Mapping[str, Any]) -> Costs:
        """From a strategy's ``costs`` block (slippage_bps, commission_per_share, min_commission)."""
        return cls(
            float(costs.get("slippage_bps") or 0.0),
            float(costs.get("commission_per_share") or 0.0),
            float(costs.get("min_commission") or 0.0),
        )

    def commission(self, shares: float) -> float:
        if shares == 0:
            return 0.0
        return max(self.min_commission, self.commission_per_share * abs(shares))

    def fill(self, price: float, buying: bool) -> float:
        slip = self.slippage_bps / 10_000.0
        return price * (1.0 + slip) if buying else price * (1.0 - slip)


def sleeve_capital(
    initial_capital: float, method: str, fraction: float | None, symbols: int
) -> float:
    """Each symbol's starting sleeve."""
    if method == "fixed_fraction":
        if fraction is None:
            raise ValueError("fixed_fraction sizing needs a fraction")
        return initial_capital * fraction
    return initial_capital / symbols


def affordable(budget: float, fill: float, costs: Costs, fractional: bool) -> float:
    """The most shares whose cost plus commission fits in ``budget``."""
    count = budget / (fill + costs.commission_per_share)
    if costs.commission(count) > costs.commission_per_share * count:  # the minimum applies
        count = (budget - costs.min_commission) / fill
    if not fractional:
        count = math.floor(count)
        while count > 0 and count * fill + costs.commission(count) > budget:
            count -= 1
    return max(count, 0.0)


@dataclass(frozen=True)
class Rebalance:
    """The orders that move a sleeve to a new target, in the order they are sent: ``exit`` (the
    position, whole) then ``entry`` (the new side); signed share quantities, 0 for none."""

    exit: float = 0.0
    entry: float = 0.0

    def orders(self) -> list[tuple[str, float]]:
        return [(leg, q) for leg, q in (("exit", self.exit), ("entry", self.entry)) if q != 0]


def rebalance(
    cash: float,
    side: int,
    shares: float,
    wanted: int,
    price: float,
    costs: Costs,
    fractional: bool,
) -> Rebalance:
    """Take a sleeve holding ``side`` x ``shares`` (with ``cash``) to ``wanted`` at reference
    ``price``: the position closed whole, then the new side opened with the whole sleeve cash
    that the exit leaves (its proceeds and costs included)."""
    if wanted == side:
        return Rebalance()
    exit_quantity = 0.0
    if side != 0 and shares > 0:
        fill = costs.fill(price, buying=side < 0)
        cash += side * shares * fill - costs.commission(shares)
        exit_quantity = -side * shares
    entry_quantity = 0.0
    if wanted != 0:
        count = affordable(cash, costs.fill(price, buying=wanted > 0), costs, fractional)
        entry_quantity = wanted * float(count) if count > 0 else 0.0
    return Rebalance(exit_quantity, entry_quantity)
