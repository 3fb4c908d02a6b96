"""Sweep speed: `qcompile sweep` beside Hydra's own multirun, measured in the same run.

Workloads (issue 4), on the example project and its bundled sample data:

- the moving-average grid (fast 5..50 by 5 x slow 20..200 by 10, 190 jobs of which 174 have
  fast < slow), `qcompile sweep` from command start to report written (goal <= 2 s);
- a group sweep that cannot batch into one engine grid (initial capital x costs, 498 jobs: three
  group selections, each compiled once, and 166 capitals applied to each), per-job cost from
  command start to report written, with both cores busy (goal <= 15 ms/job).

Each qcompile figure is the best of ``--repeat`` runs: on a shared machine the others' load only
ever adds time.

The reference is Hydra's multirun with its basic launcher on the same conf/: a @hydra.main app
whose task does nothing but compose, run over a sample of the same jobs and reported per job (its
full run would take minutes). It does not backtest, so the comparison flatters Hydra.

    python benchmarks/sweep_speed.py [--group-jobs 500] [--hydra-sample 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = [
    "strategy.signal.params.fast=range(5,55,5)",
    "strategy.signal.params.slow=range(20,210,10)",
]
HYDRA_APP = """
import hydra

@hydra.main(config_path="conf", config_name="qcompile", version_base="1.3")
def task(config):
    return None

if __name__ == "__main__":
    task()
"""


def project(root: Path) -> Path:
    for name in ("conf", "data/sample_us_daily"):
        shutil.copytree(REPO / name, root / name)
    shutil.copytree(REPO / "reports", root / "reports", ignore=shutil.ignore_patterns("sweeps"))
    (root / "app.py").write_text(HYDRA_APP)
    subprocess.run([sys.executable, "-m", "qcompile.cli", "build"], cwd=root, check=True,
                   capture_output=True)  # fmt: skip
    return root


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-jobs", type=int, default=500)
    parser.add_argument("--hydra-sample", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    qcompile = [sys.executable, "-m", "qcompile.cli", "sweep", "STR-2026-0007"]
    capitals = ",".join(str(100_000 + 1_000 * i) for i in range(max(1, args.group_jobs // 3)))
    group = [f"strategy.backtest.initial_capital={capitals}", "costs=glob(*)"]
    sample = ",".join(str(100_000 + 1_000 * i) for i in range(args.hydra_sample))
    hydra = [sys.executable, "app.py", "-m", "+strategy=ma_trend"]
    with tempfile.TemporaryDirectory() as tmp:
        root = project(Path(tmp))
        timed([*qcompile, *GRID, "--name", "warm"], root)  # first run loads the compiled kernels
        runs = range(max(1, args.repeat))
        grid = min(timed([*qcompile, *GRID, "--name", "grid"], root) for _ in runs)
        jobs = 3 * max(1, args.group_jobs // 3)
        grouped = min(timed([*qcompile, *group, "--name", "group"], root) for _ in runs)
        hydra_per_job = (
            timed([*hydra, f"strategy.backtest.initial_capital={sample}"], root) / args.hydra_sample
        )
    print("sweep speed (seconds; Hydra multirun measured on a sample and reported per job)")
    print(f"{'workload':<52}{'qcompile':>10}{'Hydra':>10}{'ratio':>8}")
    hydra_grid = hydra_per_job * 190
    print(
        f"{'MA grid, 190 jobs, command to report':<52}{grid:>10.2f}{hydra_grid:>10.1f}"
        f"{hydra_grid / grid:>7.0f}x  (goal <= 2 s)"
    )
    print(
        f"{f'group sweep, {jobs} jobs, per job (ms)':<52}{grouped / jobs * 1000:>10.1f}"
        f"{hydra_per_job * 1000:>10.1f}{hydra_per_job * jobs / grouped:>7.1f}x  (goal <= 15 ms)"
    )


if __name__ == "__main__":
    main()
