"""The research loop: the whole `qcompile backtest` command beside a peer's single run and plot.

What a researcher waits for is the command, not the engine: interpreter start, imports, data
load, the pinned checks, the backtest, the robustness suite (Monte Carlo, parameter sensitivity,
look-ahead, walk-forward) and the complete report. This times `qcompile backtest STR-2026-0007`
(the README's example) as a child process, wall clock, in a scratch copy of the project:

- warm: numba's compiled kernels cached, as on every run after the first;
- cold: the first run, with an empty numba cache (``NUMBA_CACHE_DIR`` pointed at a new directory).

Reference measured in the same run (issue 18): backtesting.py running and plotting its
moving-average crossover on its own GOOG sample (``bt.run()`` and ``bt.plot()`` to an HTML file,
interpreter start and imports included), in a throwaway virtual environment under the user's
cache directory. backtesting.py is AGPL-licensed: it is only ever installed there, never beside
qcompile, and when it cannot be installed (no network) the reference row says so. Goals: warm
qcompile <= the reference; cold <= 3x warm.

    python benchmarks/backtest_command.py [--repeat 5] [--no-reference]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRATEGY = "STR-2026-0007"
PROJECT_PARTS = ("conf", "data", "generated", "reports")
REFERENCE_VERSION = "backtesting==0.6.6"

# The peer's run, as its users write it: a crossover of two simple moving averages of the close
# (10 and 20 bars) on the GOOG sample it ships, commission 0.2 %, then its interactive plot.
PEER_SCRIPT = """
import sys
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import GOOG, SMA


class Crossover(Strategy):
    def init(self):
        self.fast = self.I(SMA, self.data.Close, 10)
        self.slow = self.I(SMA, self.data.Close, 20)

    def next(self):
        if crossover(self.fast, self.slow):
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()


backtest = Backtest(GOOG, Crossover, commission=0.002)
backtest.run()
backtest.plot(filename=sys.argv[1], open_browser=False)
"""


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def scratch_project(into: Path) -> Path:
    """A copy of the project's inputs, so that the runs rewrite no committed report."""
    for part in PROJECT_PARTS:
        shutil.copytree(REPO / part, into / part)
    return into


def qcompile_times(project: Path, repeat: int) -> tuple[list[float], float]:
    """(warm times, the cold time) of the whole command."""
    command = [str(Path(sys.executable).parent / "qcompile"), "backtest", STRATEGY]
    cold_env = {**os.environ, "NUMBA_CACHE_DIR": str(project / "numba-cold-cache")}
    cold = _timed(command, project, cold_env)
    warm_env = {**os.environ, "NUMBA_CACHE_DIR": str(project / "numba-warm-cache")}
    _timed(command, project, warm_env)  # fills that cache: what every later run finds
    return [_timed(command, project, warm_env) for _ in range(repeat)], cold


def peer_python() -> Path | None:
    """The throwaway environment's interpreter, backtesting.py installed; None if impossible."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "qcompile-bench" / "backtesting-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import backtesting, bokeh"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", REFERENCE_VERSION],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"reference unavailable: could not install {REFERENCE_VERSION} ({error})")
        return None
    return python


def peer_times(python: Path, scratch: Path, repeat: int) -> list[float]:
    script = scratch / "peer.py"
    script.write_text(PEER_SCRIPT)
    command = [str(python), str(script), str(scratch / "peer-plot.html")]
    _timed(command, scratch)  # its first run writes bytecode: not what a user waits for
    return [_timed(command, scratch) for _ in range(repeat)]


def row(label: str, times: list[float]) -> str:
    return (
        f"{label:<58} {statistics.median(times):>7.2f} s  (min {min(times):.2f}, "
        f"max {max(times):.2f}, {len(times)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each")
    parser.add_argument("--no-reference", action="store_true", help="skip backtesting.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qcompile-bench-") as directory:
        scratch = Path(directory)
        project = scratch_project(scratch / "project")
        python = None if args.no_reference else peer_python()
        print(f"backtest command, {os.cpu_count()} cores")
        warm, cold = qcompile_times(project, args.repeat)
        peer = peer_times(python, scratch, args.repeat) if python else None
        print(row(f"qcompile backtest {STRATEGY}, warm (report included)", warm))
        print(row(f"qcompile backtest {STRATEGY}, cold numba cache", [cold]))
        if peer:
            print(row("reference: backtesting.py SmaCross on GOOG, run + plot", peer))
            print(f"warm / reference: {statistics.median(warm) / statistics.median(peer):.2f}")
        print(f"cold / warm: {cold / statistics.median(warm):.2f}")
        print("goals: warm <= reference; cold <= 3x warm")


if __name__ == "__main__":
    main()
