"""The reconnect schedule: 1, 2, 4, 8 … s capped at 60 s, ±10 % jitter, reset when stable."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from qcompile.runtime.backoff import Backoff


def test_first_wait_is_one_second_not_two() -> None:
    # The source document's handler incremented before computing: its first wait was 2 s.
    backoff = Backoff(jitter=0.0)
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    attempts=st.integers(min_value=1, max_value=200),
    initial=st.floats(min_value=0.01, max_value=10),
    cap=st.floats(min_value=10, max_value=600),
    jitter=st.floats(min_value=0, max_value=0.5),
)
def test_every_delay_is_the_capped_doubling_within_the_jitter(
    seed: int, attempts: int, initial: float, cap: float, jitter: float
) -> None:
    backoff = Backoff(initial_s=initial, cap_s=cap, jitter=jitter, rng=random.Random(seed))
    for attempt in range(attempts):
        nominal = min(cap, initial * 2.0**attempt)
        delay = backoff.next_delay()
        assert nominal * (1 - jitter) - 1e-9 <= delay <= nominal * (1 + jitter) + 1e-9
    assert backoff.attempt == attempts


@given(seed=st.integers(min_value=0, max_value=2**32 - 1), before=st.integers(1, 50))
def test_reset_restarts_the_schedule(seed: int, before: int) -> None:
    backoff = Backoff(rng=random.Random(seed))
    for _ in range(before):
        backoff.next_delay()
    backoff.reset()
    assert 0.9 <= backoff.next_delay() <= 1.1


def test_jitter_spreads_runners_that_failed_together() -> None:
    delays = {round(Backoff(rng=random.Random(seed)).next_delay(), 6) for seed in range(50)}
    assert len(delays) > 40  # not lockstep
    assert min(delays) >= 0.9 and max(delays) <= 1.1
