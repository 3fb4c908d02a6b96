"""The runner as a user runs it: a real process, killed with -9, interrupted with Ctrl-C.

The crash test kills the runner at random moments many times. Every state the runner acknowledged
(it appends ``seq sha256`` to an acks file only after the save returned) must survive: the state
found after the kill is the last acknowledged one, or the one after it whose save completed just
before the kill landed. Never an older one, never a torn one.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcompile.runtime.runner import state_digest
from qcompile.runtime.state import FileStateStore
from tests.conftest import REPO, cli_process

STRATEGY = "STR-2026-0007"


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """A checkout as production has it: conf/, the committed generated/ and the local data."""
    root = tmp_path / "deployed"
    for folder in ("conf", "generated", "data/sample_us_daily"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def runner_process(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(root / "generated" / STRATEGY / "runner.py"), *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def acked(acks: Path) -> list[tuple[int, str]]:
    if not acks.exists():
        return []
    lines = [line.split() for line in acks.read_text().splitlines()]
    return [(int(seq), digest) for seq, digest in lines if digest]  # a torn last line is not an ack


def wait_for_acks(acks: Path, more_than: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(acked(acks)) > more_than:
            return True
        time.sleep(0.02)
    return False


def test_kill_9_at_random_moments_loses_nothing_acknowledged(deployed: Path) -> None:
    acks = deployed / "acks.txt"
    rng = random.Random(20261124)
    store_dir = deployed / "state"
    previous_seq = 0
    for kill in range(8):
        before = len(acked(acks))
        process = runner_process(
            deployed, "--feed", "emulator", "--bars", "1000", "--speed", "1500", "--acks", str(acks)
        )
        with process:  # closes its pipes on the way out
            try:  # each restart replays the same bars: the runner skips what its cursor has seen
                assert wait_for_acks(acks, before), process.stderr and process.stderr.read()
                time.sleep(rng.uniform(0.0, 0.3))
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(30)
        history = acked(acks)
        last_seq, last_digest = history[-1]
        store = FileStateStore(store_dir, STRATEGY, f"inspector-{kill}")
        store.acquire()  # the dead runner's lease died with it
        state = store.load()
        store.release()
        store.close()
        assert state is not None
        if state["seq"] == last_seq:
            assert state_digest(state) == last_digest
        else:  # saved, killed before the ack line was written
            assert state["seq"] == last_seq + 1, (state["seq"], last_seq)
        assert state["seq"] > previous_seq  # every restart resumed and went on
        previous_seq = state["seq"]
        for seq, _ in history[before:]:
            assert seq > (history[before - 1][0] if before else 0)  # resumed, not restarted


def test_ctrl_c_stops_cleanly_in_the_safe_state(deployed: Path) -> None:
    acks = deployed / "acks.txt"
    process = runner_process(
        deployed, "--feed", "emulator", "--bars", "400", "--speed", "300", "--acks", str(acks)
    )
    assert wait_for_acks(acks, 5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert f"{STRATEGY}:" in out and "state seq" in out
    store = FileStateStore(deployed / "state", STRATEGY, "inspector")
    store.acquire()
    state = store.load()
    assert state["suspended_reason"] == "runner stopped" and state["pending_orders"] == []
    assert state["seq"] == acked(acks)[-1][0]  # the final state was saved and acknowledged


def test_qcompile_run_replays_the_sample_end_to_end(deployed: Path) -> None:
    result = cli_process(
        deployed, "run", STRATEGY, "--feed", "emulator", "--bars", "30", "--speed", "3000"
    )
    assert result.returncode == 0, result.stderr
    assert "240 messages" in result.stdout  # 30 bars x 2 symbols x 4 ticks, every one decided
    assert "Traceback" not in result.stderr
    assert (deployed / "state" / STRATEGY / "state.json").is_file()


def test_a_scenario_scripts_the_emulators_faults(deployed: Path) -> None:
    scenario = deployed / "drop.yaml"
    scenario.write_text("faults:\n  - after_messages: 100\n    fault: drop\n")
    result = cli_process(
        deployed,
        "run",
        STRATEGY,
        "--feed",
        "emulator",
        "--bars",
        "30",
        "--speed",
        "100",  # slow enough that the replay outlasts the 1 s wait before the reconnect
        "--scenario",
        str(scenario),
    )
    assert result.returncode == 0, result.stderr
    assert "1 safe states, 1 reconnects" in result.stdout
    assert "SAFE STATE (connection lost" in result.stderr


def test_a_broken_scenario_is_a_clear_error(deployed: Path) -> None:
    scenario = deployed / "broken.yaml"
    scenario.write_text(
        "faults:\n  - after_messages: 10\n    fault: dorp\n  - fault: silence\n    duration_s: -1\n"
    )
    result = cli_process(
        deployed, "run", STRATEGY, "--feed", "emulator", "--scenario", str(scenario)
    )
    assert result.returncode == 2
    assert "broken.yaml:3" in result.stderr and "dorp" in result.stderr
    assert "duration_s" in result.stderr  # every problem at once
    assert "Traceback" not in result.stderr
    assert not (deployed / "state").exists()  # nothing started, nothing written


def test_heartbeat_check_state_and_stop_from_outside(deployed: Path) -> None:
    import json
    from datetime import UTC, datetime

    process = runner_process(deployed, "--feed", "emulator", "--bars", "2000", "--speed", "50")
    try:
        beat = cli_process(deployed, "heartbeat", STRATEGY, "--wait", "60")
        assert beat.returncode == 0, beat.stderr + process.stderr.read() if process.poll() else ""
        record = json.loads(beat.stdout)
        assert record["connected"] is True and record["pid"] == process.pid
        assert record["strategy_version"] == "2.1.0"
        check = cli_process(deployed, "run", STRATEGY, "--check-state")
        assert check.returncode == 0 and "is compatible" in check.stdout, check.stderr
        stopped = cli_process(deployed, "stop", STRATEGY, "--timeout", "30")
        assert stopped.returncode == 0 and f"stopped (pid {process.pid})" in stopped.stdout
        assert process.wait(30) == 0  # it stopped cleanly: safe state, final save, exit 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)  # reap it and close its pipes
    after = datetime.now(UTC).isoformat()
    none = cli_process(deployed, "heartbeat", STRATEGY, "--since", after)
    assert none.returncode == 2 and "no heartbeat from a connected runner" in none.stderr
    again = cli_process(deployed, "stop", STRATEGY)
    assert again.returncode == 0 and "not running" in again.stdout


# -- the operator's feed override ---------------------------------------------------------------


def test_a_feed_override_runs_against_another_feed_and_says_so(deployed: Path) -> None:
    """A staging feed (here a local emulator with its own key) instead of the data source's."""
    import yaml

    from qcompile.emulator import Emulator, ticks_from_bars
    from qcompile.emulator import load_bars as emulator_bars

    params_file = deployed / "generated" / STRATEGY / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["data"]["api_key"] = "${oc.env:STAGING_KEY}"  # what a vendor source declares
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    bars = emulator_bars(deployed / "data/sample_us_daily", ["GOOGL", "IXIC", "MSFT", "SPX"])
    recent = bars.filter(bars["timestamp"] >= bars["timestamp"].max() - 20 * 86_400_000)
    with Emulator(
        ticks_from_bars(recent, 86_400_000),
        api_keys=["staging-key-1"],
        messages_per_second=400,
        bars=bars,
        replay_start="first_subscribe",
    ) as staging:
        result = cli_process(
            deployed,
            "run",
            STRATEGY,
            "--ws-url",
            f"ws://127.0.0.1:{staging.port}",
            "--rest-url",
            staging.rest_url,
            "--duration",
            "3",
            env={"STAGING_KEY": "staging-key-1"},
        )
    assert result.returncode == 0, result.stderr
    assert f"running on ws://127.0.0.1:{staging.port}/v1/realtime" in result.stderr
    journal = FileStateStore(deployed / "state", STRATEGY, "reader").read_journal()
    (override,) = [r for r in journal if r.get("key") == "runner.feed_override"]
    assert f"feed ws://127.0.0.1:{staging.port} instead of None" in override["summary"]
    assert "staging-key-1" not in result.stderr + result.stdout  # the key is never printed


def test_a_feed_override_on_a_production_strategy_needs_confirmation(deployed: Path) -> None:
    refused = cli_process(deployed, "run", "STR-2026-0088", "--ws-url", "ws://127.0.0.1:9")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "STR-2026-0088 is in production" in refused.stderr and "--i-know" in refused.stderr
    assert not (deployed / "state").exists()
    mixed = cli_process(deployed, "run", STRATEGY, "--feed", "emulator", "--ws-url", "ws://x")
    assert mixed.returncode == 2 and "not with the emulator" in mixed.stderr
    # the clock check is only ever off for a feed that replays history, never the vendor's
    vendor = cli_process(deployed, "run", STRATEGY, "--history-replay")
    assert vendor.returncode == 2 and "--history-replay needs --ws-url" in vendor.stderr
    assert not (deployed / "state").exists()
