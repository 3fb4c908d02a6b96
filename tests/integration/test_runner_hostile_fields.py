"""Every numeric field of every channel the runner trades on, given every wrong type and value.

The emulator's ``bad_field`` fault replaces one field of one push (the 100th) on the wire; the
runner subscribes to ``ticker`` (its default) or ``trade``. Each case has one expected outcome:

- ``malformed``: dropped before it reaches a bar, counted, a ``feed.malformed`` warning; trading
  goes on (one in a minute is under the threshold).
- ``contract``: the push breaks the pinned convention (prices as decimal strings, integer
  milliseconds): safe state, ``feed.contract``, reconnect, then trading resumes on fresh data.
- ``ignored``: a symbol outside the universe is not the strategy's business.

In every case the process stays healthy (no failed worker), nothing NaN or infinite reaches the
durable state, and the bad push is never accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qcompile.runtime.state import FileStateStore
from tests.integration.test_runner import (
    project as project,
)
from tests.integration.test_runner import (
    replay_events,
    start_runner,
    wait_until,
)
from tests.integration.test_runner import sample_bars as sample_bars
from tests.integration.test_runner import (
    stop_leftover_runners as stop_leftover_runners,
)
from tests.integration.test_runner_faults import STRATEGY, faulty_emulator, journal

NAN = float("nan")
WRONG_PRICES = [
    ("NaN", "contract"),
    (NAN, "contract"),
    ("abc", "contract"),
    (None, "contract"),
    ([1], "contract"),
    ({"a": 1}, "contract"),
    (True, "contract"),
    (101.5, "contract"),  # a JSON number: the protocol sends decimal strings
    ("-5", "contract"),
    ("0", "contract"),
    ("1e999", "contract"),
]
WRONG_TIMESTAMPS = [
    ("NaN", "contract"),
    (NAN, "contract"),
    (None, "contract"),
    ("1508522400000", "contract"),
    (1.5, "contract"),
    ([1], "contract"),
    (True, "contract"),
    (-1, "contract"),
    (10**20, "contract"),
]
WRONG_QUANTITIES = [
    ("NaN", "malformed"),
    (NAN, "malformed"),
    ("abc", "malformed"),
    ([1], "malformed"),
    ({"a": 1}, "malformed"),
    (True, "malformed"),
    ("-5", "malformed"),
    ("1e999", "malformed"),
]
WRONG_SYMBOLS = [(None, "ignored"), (5, "ignored"), ([1], "ignored"), ("", "ignored")]

CASES = [
    *[("ticker", "last_price", v, o) for v, o in WRONG_PRICES],
    *[("ticker", "timestamp", v, o) for v, o in WRONG_TIMESTAMPS],
    *[("ticker", "symbol", v, o) for v, o in WRONG_SYMBOLS],
    *[("ticker", "data", v, "malformed") for v in ("text", [1], None, 5)],
    *[("trade", "price", v, o) for v, o in WRONG_PRICES],
    *[("trade", "quantity", v, o) for v, o in WRONG_QUANTITIES],
    *[("trade", "timestamp", v, o) for v, o in WRONG_TIMESTAMPS[:4]],
]


@pytest.mark.parametrize(
    ("channel", "field", "value", "outcome"),
    CASES,
    ids=[f"{c}.{f}={v!r}" for c, f, v, _ in CASES],
)
def test_a_wrong_field_never_reaches_a_bar_or_the_state(
    project: Path, sample_bars, channel: str, field: str, value: object, outcome: str
) -> None:
    total = len(replay_events(sample_bars, 40))
    with faulty_emulator(sample_bars, "bad_field", field=field, value=value) as emulator:
        runner = start_runner(project, emulator, channel=channel)
        assert emulator.wait_exhausted(30) and runner.wait_idle(10)
        counters = runner.engine.counters
        if outcome == "contract":
            assert counters.violations == 1 and counters.malformed == 0
            assert wait_until(lambda: runner.feed.stats.ready >= 2)  # reconnected
            assert counters.accepted < total  # the bad push, and its connection's rest, refused
        elif outcome == "malformed":
            assert counters.malformed == 1 and counters.violations == 0
            assert counters.accepted == total - 1
            assert not runner.engine.state.suspended
        else:
            assert counters.malformed == 0 and counters.violations == 0
            assert counters.accepted == total - 1
        summary = runner.stop()
    assert runner.failure is None  # every worker alive to the end
    saved = FileStateStore(project / "state", STRATEGY, "reader").load()
    assert saved is not None and saved["seq"] == summary.seq
    json.dumps(saved, allow_nan=False)  # raises on a NaN or an infinity anywhere in it
    keys = {record.get("key") for record in journal(project)}
    expected_alert = {"contract": "feed.contract", "malformed": "feed.malformed"}.get(outcome)
    if expected_alert:
        assert expected_alert in keys
    else:
        assert not keys & {"feed.contract", "feed.malformed"}
