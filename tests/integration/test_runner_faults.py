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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qcompile.emulator import Emulator, Fault, Scenario
from qcompile.runtime.state import FileStateStore
from tests.conftest import REPO
from tests.integration.test_runner import (  # the same emulator, settings and helpers
    KEY,
    STARTED,
    last_timestamps,
    replay_events,
    sample_emulator,
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


@contextmanager
def faulty_emulator(sample_bars, fault: str, **options: object) -> Iterator[Emulator]:
    """The sample replay with one fault from its 100th push on: part of the scenario, so that
    it can never land after a short replay has already ended."""
    scenario = Scenario(faults=[Fault(fault, after_messages=100, options=options)])
    with sample_emulator(sample_bars, scenario=scenario) as server:
        yield server


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
    project: Path, sample_bars, field: str, value: object
) -> None:
    with faulty_emulator(sample_bars, "bad_field", field=field, value=value, count=3) as emulator:
        runner = start_runner(project, emulator)
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


def test_too_many_bad_pushes_in_a_minute_breach_the_contract(project: Path, sample_bars) -> None:
    fault = {"field": "quantity", "value": "NaN", "count": 5}
    with faulty_emulator(sample_bars, "bad_field", **fault) as emulator:
        runner = start_runner(project, emulator, max_malformed_per_minute=4)
        assert wait_until(lambda: runner.engine.counters.violations >= 1, timeout=10)
        assert runner.engine.state.suspended
        assert "5 malformed pushes within a minute" in runner.engine.state.suspended_reason
        assert runner.engine.state.pending == {}
        assert wait_until(lambda: "feed.contract" in [r.get("key") for r in journal(project)])
        runner.stop()


def test_a_non_positive_price_is_a_contract_breach_at_once(project: Path, sample_bars) -> None:
    fault = {"field": "last_price", "value": "NaN", "count": 1}
    with faulty_emulator(sample_bars, "bad_field", **fault) as emulator:
        runner = start_runner(project, emulator)
        assert wait_until(lambda: runner.engine.counters.violations == 1, timeout=10)
        assert "is not a positive price" in runner.engine.state.suspended_reason
        runner.stop()


def test_binary_frames_are_refused(project: Path, sample_bars) -> None:
    with faulty_emulator(sample_bars, "binary_frame", count=4) as emulator:
        runner = start_runner(project, emulator)
        assert emulator.wait_exhausted(30) and runner.wait_idle(10)
        assert runner.feed.stats.binary == 4
        assert runner.engine.counters.accepted == len(replay_events(sample_bars, 40)) - 4
        runner.stop()


def test_an_unsubscribed_channel_is_never_traded(project: Path, sample_bars) -> None:
    with faulty_emulator(sample_bars, "unsubscribed_channel", channel="trade", count=6) as emulator:
        runner = start_runner(project, emulator)
        assert emulator.wait_exhausted(30) and runner.wait_idle(10)
        counters = runner.engine.counters
        assert counters.unsubscribed == 6
        assert counters.accepted == len(replay_events(sample_bars, 40))  # each ticker once
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

    runner.engine._signal_targets = broken  # the next bar close raises inside the cycle
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


def test_a_dead_alert_thread_stops_the_runner_instead_of_queueing_alerts_unseen(
    project: Path, emulator: Emulator
) -> None:
    """A sink's delivery errors are retried and recorded; a bug that kills its thread would
    leave every later alert queued where nobody reads it. It fails the runner instead."""
    runner = start_runner(project, emulator)
    assert wait_until(lambda: runner.engine.counters.accepted > 10, timeout=30)

    def broken(sink: object, alert: object) -> None:
        raise RuntimeError("a bug in delivery")

    runner.alerter._deliver = broken  # type: ignore[method-assign]
    emulator.inject("drop")  # the safe state's alert is the next one delivered
    assert wait_until(runner.failed.is_set, timeout=10)
    assert runner.failure is not None
    assert runner.failure.startswith("alerts (log) thread failed: RuntimeError: a bug in delivery")
    assert runner.engine.state.suspended and runner.stop_requested.is_set()
    runner.stop()
    failed = [r for r in journal(project) if r.get("key") == "runner.failed"]
    assert len(failed) == 1 and "alerts (log)" in failed[0]["summary"]


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


# -- Retry-After everywhere, one reconnect policy ---------------------------------------------


@pytest.mark.parametrize("fault", ["upgrade_429", "error_close"])
def test_a_reconnect_waits_for_the_servers_retry_after(
    project: Path, emulator: Emulator, fault: str
) -> None:
    """Retry-After of 1 s where the schedule would wait 0.05 s: the next attempt comes no earlier
    than 1 s (measured) and not much later (the jitter, 10 %), then the schedule goes on."""
    emulator.inject(fault, retry_after=1, count=1)
    started = time.monotonic()
    runner = start_runner(project, emulator)
    assert wait_until(runner.feed.connected.is_set, timeout=10)
    assert runner.feed.stats.retry_after == [1.0]
    first_wait = runner.feed.stats.delays[0]  # measured from the refusal to the next attempt
    assert 1.0 <= first_wait <= 1.6, runner.feed.stats.delays  # 10 % jitter, scheduling slack
    assert time.monotonic() - started >= 1.0
    assert runner.feed.backoff.attempt == 0  # the server's wait did not advance the schedule
    runner.stop()


def test_production_reads_the_source_documents_reconnect_schedule() -> None:
    """What the runner builds its Feed with when a deployment sets nothing: 1 s doubling to a
    60 s cap, ±10 % jitter, reset after 30 s (source document, requirement 3)."""
    from qcompile.runtime.backoff import Backoff

    backoff = Backoff.for_deployment({})
    assert (backoff.initial_s, backoff.cap_s, backoff.jitter, backoff.stable_s) == (
        1.0,
        60.0,
        0.1,
        30.0,
    )
    assert [backoff.nominal(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    configured = Backoff.for_deployment({"reconnect": {"cap_s": 30}})
    assert (configured.initial_s, configured.cap_s) == (1.0, 30.0)


def test_the_runner_feeds_its_backoff_from_the_deployment(
    project: Path, emulator: Emulator
) -> None:
    runner = start_runner(project, emulator)
    backoff = runner.feed.backoff
    assert (backoff.initial_s, backoff.cap_s, backoff.jitter) == (0.05, 0.4, 0.1)  # settings()
    runner.stop()


# -- time is part of the data contract --------------------------------------------------------


def _midweek_bar(events: list[dict]) -> int:
    """Index of the first push of a Tuesday-to-Friday bar, past half-way, once all symbols ran."""
    seen: set[str] = set()
    for index, event in enumerate(events):
        day = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
        midnight = (day.hour, day.minute) == (0, 0)
        if (
            index > len(events) // 2
            and event["symbol"] in seen
            and midnight
            and day.weekday() in (1, 2, 3, 4)
        ):
            return index
        seen.add(event["symbol"])
    raise AssertionError("no mid-week bar in the replay")


@pytest.mark.parametrize(
    ("shift_s", "reason"),
    [
        (-86_400, "the feed's clock went back"),  # a day replayed
    ],
)
def test_time_going_the_wrong_way_breaks_the_contract(
    project: Path, sample_bars, shift_s: int, reason: str
) -> None:
    # The shift is part of the scenario: injected from the test once decisions began, it could
    # land after the (finite) replay had ended. It starts at a bar whose day before was a
    # session, every symbol already seen: a day back after a weekend lands on the Sunday, still
    # in order, which only the wall clock (live runs, tested below) can tell.
    events = replay_events(sample_bars, 40)
    shift = Fault("time_shift", after_messages=_midweek_bar(events), options={"shift_s": shift_s})
    with sample_emulator(sample_bars, scenario=Scenario(faults=[shift])) as emulator:
        runner = start_runner(project, emulator)
        assert wait_until(lambda: runner.engine.counters.violations >= 1, timeout=30)
        assert runner.engine.counters.decisions > 0  # it was trading before the shift
        state = runner.engine.state
        assert state.suspended and reason in state.suspended_reason
        assert state.pending == {}
        assert wait_until(lambda: "feed.contract" in [r.get("key") for r in journal(project)])
        runner.stop()


@pytest.fixture
def live_emulator(sample_bars) -> Iterator[Emulator]:
    """A feed that never runs out, stamping pushes with the time they are sent."""
    with sample_emulator(sample_bars, messages_per_second=200, loop_replay=True) as server:
        server.inject("live_clock")
        yield server


def test_a_feed_off_the_clock_is_refused_until_it_agrees_again(
    project: Path, live_emulator: Emulator
) -> None:
    """A live session, then -5 h: UTC became New York time. Shifted pushes are never accepted,
    whatever their order; nothing resumes until the feed agrees with the clock again."""
    emulator = live_emulator
    runner = start_runner(project, emulator, replay=False)
    assert wait_until(lambda: runner.engine.counters.accepted > 20, timeout=30)
    assert not runner.engine.state.suspended
    emulator.inject("time_shift", shift_s=-5 * 3600)
    assert wait_until(lambda: runner.engine.counters.violations >= 1, timeout=10)
    reason = runner.engine.state.suspended_reason
    assert "-18000 s from this host's clock (tolerance 300 s)" in reason, reason
    accepted = runner.engine.counters.accepted
    time.sleep(1.5)  # reconnected, the shifted pushes keep coming: none is accepted
    assert runner.engine.counters.accepted == accepted and runner.engine.state.suspended
    emulator.inject("time_shift", shift_s=0)
    assert wait_until(lambda: not runner.engine.state.suspended, timeout=10)  # agrees again
    runner.stop()


# -- the alerts the passport promises ----------------------------------------------------------


def test_the_runner_reads_the_thresholds_the_passport_promises() -> None:
    """The checklist ticks "alert thresholds configured" from conf/; the runner reads params.yaml.
    The build must carry each threshold across, or the promise is hollow."""
    import yaml

    from qcompile.runtime.broker import PaperBroker
    from qcompile.runtime.runner import Runner, Session

    conf = yaml.safe_load((REPO / "conf/strategy/fast_reversion.yaml").read_text())
    promised = conf["strategy"]["monitoring"]
    params = yaml.safe_load((REPO / "generated/STR-2026-0088/params.yaml").read_text())
    assert params["monitoring"]["thresholds"] == promised
    assert set(params["monitoring"]["backtest_daily"]) >= {"win_rate", "mean_return"}
    session = Session(ws_base="ws://127.0.0.1:9", api_key=KEY, replay=True)
    runner = Runner(params, REPO, session)
    capital = float(params["backtest"]["initial_capital"])
    engine = runner._engine(None, PaperBroker(params["costs"], capital))
    assert engine.monitor.thresholds == {k: float(v) for k, v in promised.items()}
    assert engine.monitor.expected == params["monitoring"]["backtest_daily"]


def test_the_promised_alerts_fire_against_the_emulator(
    project: Path, emulator: Emulator, sample_bars
) -> None:
    """Thresholds tight enough that the sample's replay breaches them: each alert fires with its
    figures, and once per breach, never once per push."""
    import yaml

    from tests.integration.test_runner import PARAMS

    params = yaml.safe_load(PARAMS.read_text())
    # the build hands the runner the backtest's daily statistics from the committed evidence
    evidence = json.loads((REPO / params["monitoring"]["backtest_evidence"]).read_text())
    assert params["monitoring"]["backtest_daily"]["mean_return"] == evidence["daily"]["mean_return"]
    params["monitoring"]["thresholds"] = {
        "max_drawdown_pct": 0.01,
        "max_exposure_pct": 10,
        "max_losing_streak": 1,
        "max_daily_loss_pct": 0.01,
        "max_backtest_deviation_pct": 1,
    }
    runner = start_runner(project, emulator, params)
    assert emulator.wait_exhausted(30) and runner.wait_idle(10)
    accepted = runner.engine.counters.accepted
    runner.stop()
    records = [r for r in journal(project) if str(r.get("key", "")).startswith("strategy.")]
    by_key: dict[str, list[dict]] = {}
    for record in records:
        by_key.setdefault(record["key"], []).append(record)
    assert {
        "strategy.drawdown",
        "strategy.exposure",
        "strategy.daily_loss",
        "strategy.backtest_deviation",
    } <= set(by_key)
    # judged only once 20 daily returns were journaled, and against the backtest's figures
    records = journal(project)
    first = next(i for i, r in enumerate(records) if r.get("key") == "strategy.backtest_deviation")
    assert sum(r.get("type") == "daily" for r in records[:first]) >= 21
    assert "live vs backtest over the last 20 days" in records[first]["summary"]
    assert "from the equity peak" in by_key["strategy.drawdown"][0]["summary"]
    assert "of equity" in by_key["strategy.exposure"][0]["summary"]
    for key, fired in by_key.items():
        if key != "strategy.daily_loss":
            assert len(fired) < accepted / 10, (key, len(fired))  # per breach, not per push
    days = {event["timestamp"] // 86_400_000 for event in replay_events(sample_bars, 40)}
    assert len(by_key["strategy.daily_loss"]) <= len(days)  # at most once a day
    saved = FileStateStore(project / "state", STRATEGY, "reader").load()
    assert saved is not None and saved["monitor"]["peak_equity"] > 0


# -- a frame that is too large, or a feed thread that is stuck --------------------------------


def test_an_oversized_frame_is_refused_from_its_header_unread(project: Path, sample_bars) -> None:
    """A 300 kB push that trickles in at 100 kB/s: read, it would hold the feed thread 3 s (the
    watchdog would call it stalled at 0.625 s). Refused from its header, the connection closes
    with 1009 at once: safe state, a critical alert, a reconnect, then trading resumes."""
    scenario = Scenario(
        faults=[
            Fault("oversized_frame", after_messages=100, options={"size_bytes": 300_000}),
            Fault("slow_frame", after_messages=100, options={"bytes_per_s": 100_000}),
        ]
    )
    with sample_emulator(sample_bars, scenario=scenario) as server:
        runner = start_runner(project, server, max_frame_bytes=100_000)
        assert server.wait_exhausted(30) and runner.wait_idle(10)
        stats = runner.feed.stats
        assert stats.oversized == 1
        refused = [r for r in stats.disconnects if r.startswith("frame too big")]
        assert len(refused) == 1 and "100,000-byte limit (closed 1009 unread)" in refused[0]
        assert int(refused[0].split()[3].replace(",", "")) > 300_000  # the announced length
        assert runner.engine.counters.safe_states >= 1 and stats.ready >= 2
        keys = [record.get("key") for record in journal(project)]
        assert "feed.malformed" in keys and "feed.stalled" not in keys
        assert runner.engine.counters.accepted > 100  # before the refusal and after reconnect
        assert not runner.engine.state.suspended
        runner.stop()


def test_a_frame_that_trickles_in_is_caught_by_the_runners_own_clock(
    project: Path, sample_bars
) -> None:
    """A push written 20 bytes a second holds the feed thread inside one read, where its own
    silence check cannot run: the runner's watchdog ends it within 2.5 intervals (0.625 s)."""
    with faulty_emulator(sample_bars, "slow_frame", bytes_per_s=20) as server:
        runner = start_runner(project, server)
        assert wait_until(lambda: runner.engine.counters.safe_states >= 1, timeout=10)
        assert runner.broker.working_orders() == []
        assert wait_until(lambda: runner.feed.stats.ready >= 2, timeout=10)  # reconnected
        assert runner.feed.stats.disconnects[0].startswith("feed stalled: nothing read for")
        keys = [record.get("key") for record in journal(project)]
        assert "feed.stalled" in keys
        runner.stop()


def test_a_stuck_feed_thread_is_caught_by_the_runners_own_clock(
    project: Path, emulator: Emulator
) -> None:
    """The feed thread blocks for 3 s inside one push (as a frame that trickles in would block
    it): its own silence check cannot run, the runner's watchdog must act within 2.5 intervals
    (0.625 s here) instead."""
    runner = start_runner(project, emulator)
    assert wait_until(lambda: not runner.engine.state.suspended)
    deliver, stuck = runner.feed.on_push, []

    def slow(epoch: int, push: dict) -> None:
        if not stuck:
            stuck.append(time.perf_counter())
            time.sleep(3.0)
        deliver(epoch, push)

    runner.feed.on_push = slow
    assert wait_until(lambda: runner.engine.counters.safe_states >= 1, timeout=5)
    reacted = time.perf_counter() - stuck[0]
    assert reacted < 2.5 * 0.25 + 0.5, reacted  # well before the thread came back at 3 s
    assert "feed stalled" in runner.engine.state.suspended_reason
    assert wait_until(lambda: "feed.stalled" in [r.get("key") for r in journal(project)])
    runner.stop()


# -- overload: a bounded queue, coalescing, one alert an episode -----------------------------


def test_a_runner_that_falls_behind_coalesces_says_so_and_loses_no_push(
    project: Path, sample_bars
) -> None:
    events = replay_events(sample_bars, 400)
    with Emulator(  # 400 bars a symbol, as fast as the emulator pushes them
        events,
        api_keys=[KEY],
        bars=sample_bars,
        replay_start="first_subscribe",
        messages_per_second=20_000,
    ) as emulator:
        runner = start_runner(project, emulator, max_queued_pushes=10)
        assert emulator.wait_exhausted(60) and runner.wait_idle(30)
        summary = runner.stop()
    assert runner.failure is None
    assert summary.coalesced > 0 and summary.accepted == len(events)  # folded, none dropped
    assert runner.engine.state.cursor == {
        symbol: stamp for symbol, stamp in last_timestamps(events).items()
    }
    lagging = [r for r in journal(project) if r.get("key") == "runner.lagging"]
    assert lagging and all("coalesced into the bar being built" in r["summary"] for r in lagging)
