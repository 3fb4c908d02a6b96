"""Reconnect delays: 1, 2, 4, 8 … s capped at 60 s, each with ±10 % jitter, reset once stable.

The source document's example incremented its attempt counter before computing the delay, so its
first wait was 2 s; here the delay of attempt ``n`` (counting from 0) is ``initial × 2**n``. The
cap applies to that nominal delay; jitter then spreads it by ``±jitter`` so that many runners
dropped by the same outage do not reconnect in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qcompile.runtimedefaults import RECONNECT, reconnect_policy


@dataclass
class Backoff:
    initial_s: float = RECONNECT["initial_s"]
    cap_s: float = RECONNECT["cap_s"]
    jitter: float = RECONNECT["jitter"]
    stable_s: float = RECONNECT["stable_s"]  # a connection up this long resets the schedule
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0

    @classmethod
    def for_deployment(cls, deployment: Mapping[str, Any]) -> Backoff:
        """The schedule a deployment runs (runtimedefaults: its values over the defaults)."""
        return cls(**reconnect_policy(deployment))

    def after_retry_after(self, seconds: float) -> float:
        """The wait when the server said when to come back: not before ``seconds``, and not
        later than ``seconds`` plus the jitter; the schedule then goes on as it was."""
        return seconds * (1.0 + self.rng.uniform(0.0, self.jitter))

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
