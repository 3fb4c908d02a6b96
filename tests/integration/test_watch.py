"""`qcompile watch` and `qcompile alert test`: a dead runner is alerted by something outside it.

Real processes throughout: a runner replaying the sample through the emulator, killed with
SIGKILL; the watchdog as a separate long-running `qcompile watch` process; the alerts delivered
to a real HTTP webhook receiver on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, cli, cli_process
from tests.integration.conftest import HttpReceiver

STRATEGY = "STR-2026-0007"
INTERVAL_S = 1.0


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """A checkout as production has it, its generated deployment set to beat every second and
    to alert a webhook (the values a built deployment would carry; the test edits them to keep
    its run short)."""
    root = tmp_path / "deployed"
    for folder in ("conf", "generated", "data/sample_us_daily"):
        shutil.copytree(REPO / folder, root / folder)
    params_file = root / "generated" / STRATEGY / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["deployment"]["heartbeat_interval_s"] = INTERVAL_S
    params["deployment"]["alerts"] = [
        {"kind": "log"},
        {"kind": "webhook", "url": "${oc.env:WATCH_WEBHOOK_URL}"},
    ]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def alerts(receiver: HttpReceiver) -> list[str]:
    return [str(body) for body in receiver.bodies]


def test_a_killed_runner_is_alerted_within_two_intervals_and_its_return(
    deployed: Path, http_receiver: HttpReceiver
) -> None:
    env = {**os.environ, "QCOMPILE_PROJECT": str(deployed), "WATCH_WEBHOOK_URL": http_receiver.url}

    def start_runner() -> subprocess.Popen:
        """The runner replaying the sample, slowly enough to outlive the test."""
        replay = ("--feed", "emulator", "--bars", "3000", "--speed", "40")
        return subprocess.Popen(
            [sys.executable, "-m", "qcompile.cli", "run", STRATEGY, *replay],
            cwd=deployed,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    runner = start_runner()
    watch = None
    restarted = None
    try:
        heartbeat = deployed / "state" / STRATEGY / "heartbeat.json"
        assert wait_until(heartbeat.is_file, timeout=60)
        watch = subprocess.Popen(
            [sys.executable, "-m", "qcompile.cli", "watch", "--strategy", STRATEGY],
            cwd=deployed,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3 * INTERVAL_S)  # beating: the watchdog has nothing to say
        assert not any("runner.down" in a for a in alerts(http_receiver))
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        killed = time.monotonic()
        assert wait_until(
            lambda: any("runner.down" in a for a in alerts(http_receiver)), timeout=10
        )
        # two missed intervals, plus the last beat's age at the kill and half an interval's poll
        assert time.monotonic() - killed <= 3.5 * INTERVAL_S + 1.0
        time.sleep(3 * INTERVAL_S)
        downs = [a for a in alerts(http_receiver) if "runner.down" in a]
        assert len(downs) == 1, downs  # once per incident
        restarted = start_runner()
        assert wait_until(
            lambda: any("runner.recovered" in a for a in alerts(http_receiver)), timeout=60
        )
    finally:
        for process in (runner, restarted, watch):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    assert watch is not None
    out, err = watch.communicate()
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    assert f"{STRATEGY}: down:" in out and f"{STRATEGY}: recovered:" in out


def test_watch_once_reports_and_remembers_an_outage(
    deployed: Path, http_receiver: HttpReceiver
) -> None:
    """For cron: one pass, exit 1 while a watched runner is not alive, alerting only once."""
    env = {"WATCH_WEBHOOK_URL": http_receiver.url}
    first = cli_process(deployed, "watch", "--strategy", STRATEGY, "--once", env=env)
    assert first.returncode == 1, first.stderr
    assert f"{STRATEGY}: down: runner not alive: never" in first.stdout
    second = cli_process(deployed, "watch", "--strategy", STRATEGY, "--once", env=env)
    assert second.returncode == 1
    assert f"{STRATEGY}: down:" not in second.stdout
    assert f"{STRATEGY}: still down" in second.stdout
    assert len([a for a in alerts(http_receiver) if "runner.down" in a]) == 1


def test_watch_refuses_an_unknown_strategy(deployed: Path) -> None:
    result = cli(deployed, "watch", "--strategy", "STR-1999-0001", "--once")
    assert result.exit_code == 2 and "not in generated/: STR-1999-0001" in result.output


def test_alert_test_reaches_every_sink(deployed: Path, http_receiver: HttpReceiver) -> None:
    result = cli(deployed, "alert", "test", STRATEGY, env={"WATCH_WEBHOOK_URL": http_receiver.url})
    assert result.exit_code == 0, result.output
    assert "log: sent" in result.output and "webhook: sent" in result.output
    assert any("alert.test" in a for a in alerts(http_receiver))
    http_receiver.statuses_to_return.extend([500, 500, 500])
    failed = cli(deployed, "alert", "test", STRATEGY, env={"WATCH_WEBHOOK_URL": http_receiver.url})
    assert failed.exit_code == 2 and "webhook: failed" in failed.output
