"""Reconnect delays: 1, 2, 4, 8 … s capped at 60 s, each with ±10 % jitter, reset once stable.

The source document's example incremented its attempt counter before computing the delay, so its
first wait was 2 s; here the delay of attempt ``n`` (counting from 0) is ``initial × 2**n``. The
cap applies to that nominal delay; jitter then spreads it by ``±jitter`` so that many runners
dropped by the same outage do not reconnect in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.1
    stable_s: float = 30.0  # a connection up this long resets the schedule
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0

    def nominal(self, attempt: int) -> float:
        """The delay before reconnect attempt ``attempt`` without jitter."""
        if self.initial_s * 2.0 ** min(attempt, 64) >= self.cap_s:
            return self.cap_s
        return self.initial_s * 2.0**attempt

    def next_delay(self) -> float:
        """The wait before the next attempt; advances the schedule."""
        delay = self.nominal(self.attempt) * (1.0 + self.rng.uniform(-self.jitter, self.jitter))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
