"""The runner against a hostile feed and its own failures: never a silent process.

Each fault comes from the real protocol emulator over a real socket (its scenario faults
bad_field, binary_frame and unsubscribed_channel); each failure of a worker thread is a real
exception in a real thread. The assertions: bad data never reaches a bar, the state or a trade;
a failed worker ends in the safe state, a critical alert and a non-zero exit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcompile.emulator import Emulator
from qcompile.runtime.state import FileStateStore
from tests.conftest import REPO
from tests.integration.test_runner import (  # the same emulator, settings and helpers
    STARTED,
    replay_events,
    start_runner,
    wait_until,
)
from tests.integration.test_runner import emulator as emulator
from tests.integration.test_runner import project as project
from tests.integration.test_runner import sample_bars as sample_bars
from tests.integration.test_runner import (
    stop_leftover_runners as stop_leftover_runners,
)

STRATEGY = "STR-2026-0007"


def journal(root: Path) -> list[dict]:
    return FileStateStore(root / "state", STRATEGY, "reader").read_journal()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", "NaN"),
        ("quantity", float("nan")),
        ("quantity", [1]),
        ("quantity", {"a": 1}),
        ("quantity", "-5"),
        ("quantity", "1e999"),
        ("data", "not an object"),
    ],
)
def test_a_bad_field_is_dropped_before_it_reaches_a_bar(
    project: Path, emulator: Emulator, sample_bars, field: str, value: object
) -> None:
    runner = start_runner(project, emulator)
    assert wait_until(lambda: not runner.engine.state.suspended)
    emulator.inject("bad_field", field=field, value=value, count=3)
    assert emulator.wait_exhausted(30) and runner.wait_idle(10)
    counters = runner.engine.counters
    assert counters.malformed == 3
    assert counters.accepted == len(replay_events(sample_bars, 40)) - 3
    assert not runner.engine.state.suspended  # three in a minute: dropped, still trading
    summary = runner.stop()  # the state still serialises: nothing NaN reached it
    assert runner.failure is None
    saved = FileStateStore(project / "state", STRATEGY, "reader").load()
    assert saved is not None and saved["seq"] == summary.seq
    text = json.dumps(saved, allow_nan=False)  # raises on a NaN or infinity anywhere
    assert "NaN" not in text
    keys = [r.get("key") for r in journal(project)]
    assert "feed.malformed" in keys


def test_too_many_bad_pushes_in_a_minute_breach_the_contract(
    project: Path, emulator: Emulator
) -> None:
    runner = start_runner(project, emulator, max_malformed_per_minute=4)
    assert wait_until(lambda: not runner.engine.state.suspended)
    orders = runner.engine.counters.orders
    emulator.inject("bad_field", field="quantity", value="NaN", count=5)
    assert wait_until(lambda: runner.engine.counters.violations >= 1, timeout=10)
    assert runner.engine.state.suspended
    assert "5 malformed pushes within a minute" in runner.engine.state.suspended_reason
    assert runner.engine.counters.orders == orders or runner.engine.state.pending == {}
    assert wait_until(lambda: "feed.contract" in [r.get("key") for r in journal(project)])
    runner.stop()


def test_a_non_positive_price_is_a_contract_breach_at_once(
    project: Path, emulator: Emulator
) -> None:
    runner = start_runner(project, emulator)
    assert wait_until(lambda: not runner.engine.state.suspended)
    emulator.inject("bad_field", field="last_price", value="NaN", count=1)
    assert wait_until(lambda: runner.engine.counters.violations == 1, timeout=10)
    assert "is not a positive price" in runner.engine.state.suspended_reason
    runner.stop()


def test_binary_frames_are_refused(project: Path, emulator: Emulator, sample_bars) -> None:
    runner = start_runner(project, emulator)
    assert wait_until(lambda: not runner.engine.state.suspended)
    emulator.inject("binary_frame", count=4)
    assert emulator.wait_exhausted(30) and runner.wait_idle(10)
    assert runner.feed.stats.binary == 4
    assert runner.engine.counters.accepted == len(replay_events(sample_bars, 40)) - 4
    runner.stop()


def test_an_unsubscribed_channel_is_never_traded(
    project: Path, emulator: Emulator, sample_bars
) -> None:
    runner = start_runner(project, emulator)
    assert wait_until(lambda: not runner.engine.state.suspended)
    emulator.inject("unsubscribed_channel", channel="trade", count=6)
    assert emulator.wait_exhausted(30) and runner.wait_idle(10)
    counters = runner.engine.counters
    assert counters.unsubscribed == 6
    assert counters.accepted == len(replay_events(sample_bars, 40))  # each ticker once, only
    runner.stop()
    assert "feed.unsubscribed" in [r.get("key") for r in journal(project)]


# -- fail-stop: a worker that dies takes the process down, loudly and safely ------------------


def test_a_dead_decision_thread_ends_in_the_safe_state_and_an_alert(
    project: Path, emulator: Emulator
) -> None:
    runner = start_runner(project, emulator)
    assert wait_until(lambda: runner.engine.counters.decisions > 0, timeout=30)

    def broken(*args: object, **kwargs: object) -> int:
        raise ZeroDivisionError("a bug in a decision")

    runner.engine._signal_target = broken  # the next bar close raises inside the cycle
    assert wait_until(runner.failed.is_set, timeout=30)
    assert runner.failure is not None
    assert runner.failure.startswith("decisions thread failed: ZeroDivisionError")
    assert runner.engine.state.suspended and runner.engine.state.pending == {}
    assert runner.stop_requested.is_set()
    runner.stop()  # the lease is released and the alerts flushed all the same
    records = journal(project)
    failed = [r for r in records if r.get("key") == "runner.failed"]
    assert len(failed) == 1 and failed[0]["severity"] == "critical"
    assert "a bug in a decision" in failed[0]["summary"]
    safe = [r for r in records if r.get("key") == "runner.safe_state"]
    assert safe and "runner failed (decisions)" in safe[-1]["summary"]


def test_a_failing_save_stops_the_runner_instead_of_a_dead_saver(
    project: Path, emulator: Emulator
) -> None:
    runner = start_runner(project, emulator)
    assert wait_until(lambda: runner.engine.counters.accepted > 10, timeout=30)
    assert runner.store is not None

    def full_disk(state: dict) -> None:
        raise OSError(28, "No space left on device")

    runner.store.save = full_disk  # type: ignore[method-assign]
    assert wait_until(runner.failed.is_set, timeout=10)
    assert runner.failure is not None and runner.failure.startswith("saver thread failed: OSError")
    assert runner.engine.state.suspended  # orders cancelled and signals suspended regardless
    runner.stop()
    STARTED.clear()


def test_a_runner_process_whose_state_store_breaks_exits_non_zero(tmp_path: Path) -> None:
    """The whole command, as systemd runs it: the state directory disappears under it."""
    root = tmp_path / "deployed"
    for folder in ("conf", "generated", "data/sample_us_daily"):
        shutil.copytree(REPO / folder, root / folder)
    command = [sys.executable, "-m", "qcompile.cli", "run", STRATEGY, "--feed", "emulator"]
    process = subprocess.Popen(
        [*command, "--bars", "3000", "--speed", "200"],
        cwd=root,
        env={"QCOMPILE_PROJECT": str(root), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = root / "state" / STRATEGY
    try:
        assert wait_until(lambda: (state / "state.json").is_file(), timeout=60)
        time.sleep(0.5)
        state.rename(tmp_path / "moved-away")  # atomic, whatever the runner is writing
        state.write_text("not a directory any more")  # nothing can be saved here now
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert "thread failed" in stderr and "the safe state was entered" in stderr


# -- a restart knows its book -----------------------------------------------------------------


def test_a_restart_marks_its_book_at_the_saved_last_prices(
    project: Path, emulator: Emulator
) -> None:
    first = start_runner(project, emulator)
    assert emulator.wait_exhausted(30) and first.wait_idle(10)
    before = first.stop()
    assert before.positions, "the replay must leave positions open for this test to mean much"
    second = start_runner(project, emulator)  # the replay is over: no fresh price arrives
    assert second.wait_idle(5)
    with second.engine.lock:
        equity = second.engine.equity()
        marked = dict(second.engine.last_price)
    assert equity == pytest.approx(before.equity, rel=1e-12)
    assert set(marked) >= set(before.positions)
    saved = FileStateStore(project / "state", STRATEGY, "reader").load()
    assert saved is not None
    assert {s: p for s, (p, _) in saved["last_prices"].items()} == marked
    second.stop()
