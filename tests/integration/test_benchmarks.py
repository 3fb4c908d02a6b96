"""Every benchmark still runs: a tiny workload each, checking only that it completes and prints
its table (timings are never asserted; the figures are read by people, beside their reference)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_build_benchmark_runs_on_a_small_portfolio() -> None:
    out = _run("build_speed.py", "--strategies", "6", "--repeat", "1")
    assert "build speed, 6 strategies" in out
    for row in ("cold (fresh project)", "nothing changed", "cold after rm -rf generated/"):
        assert f"qcompile build, {row}" in out


def test_backtest_benchmark_runs_on_a_small_universe() -> None:
    out = _run("backtest_speed.py", "--symbols", "3", "--bars", "300", "--repeat", "1")
    assert "174-combination grid, 1 symbol" in out
    assert "174 x 3 symbols (522 runs)" in out


def test_sweep_benchmark_runs_with_few_jobs() -> None:
    out = _run("sweep_speed.py", "--group-jobs", "3", "--hydra-sample", "2")
    assert "MA grid, 190 jobs, command to report" in out
    assert "group sweep, 3 jobs, per job (ms)" in out


def test_runner_benchmark_runs_briefly() -> None:
    out = _run(
        "runner_speed.py",
        *("--seconds", "0.5", "--rates", "400", "--wide-rates", "800", "--symbols", "20"),
        *("--drops", "2"),
    )
    assert "reference: checkpoint of the runner's state" in out
    assert "reference: log line (one row changed)" in out
    assert "example, 4 symbols at 400 msg/s" in out
    assert "20 symbols at 800 msg/s" in out
    assert "dropped connection -> safe state (2 drops)" in out


def test_backtest_command_benchmark_runs_without_its_reference() -> None:
    out = _run("backtest_command.py", "--repeat", "1", "--no-reference")
    assert "qcompile backtest STR-2026-0007, warm (report included)" in out
    assert "qcompile backtest STR-2026-0007, cold numba cache" in out
    assert "cold / warm:" in out
