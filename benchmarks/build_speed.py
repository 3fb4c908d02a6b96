"""Build speed on a synthetic portfolio of 100 strategies.

Times, in the same run on the same machine:
  * naive     - one Hydra compose from scratch per strategy (initialise + compose) in a fresh
                process: the loop a team writes first (it neither validates nor renders);
  * cold      - `qcompile build` in a fresh process, in a fresh copy of the project (no
                generated/, no cache), as after `git clone`;
  * no-change - `qcompile build` again with nothing changed;
  * cold after rm -rf generated/ - a cold build right after deleting the previous one's files
                (shown for the record: the file system then creates files more slowly).
Goals (issue 2): cold >= 10x faster than naive; no-change <= 0.3 s.

    python benchmarks/build_speed.py [--strategies 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIVERSES = ["us_megacap", "us_tech"]
COSTS = ["retail", "institutional", "zero"]
DEPLOYMENTS = ["paper", "live_redis"]
SIGNALS = [  # (name, version (None: as the MA-trend example pins it), params, ranges)
    ("ma_crossover", None, "fast: {a}\n      slow: {b}", "fast: [{a}]\n      slow: [{b}]"),
    (
        "zscore_reversion",
        "1.0.0",
        "window: {a}\n      entry_z: 2.0\n      exit_z: 0.5",
        "window: [{a}]",
    ),
    ("breakout", "1.0.0", "lookback: {b}\n      exit_lookback: {a}", "lookback: [{b}]"),
]


def make_project(root: Path, count: int) -> None:
    shutil.copytree(REPO / "conf", root / "conf")
    template = (REPO / "conf/strategy/ma_trend.yaml").read_text()
    for old in (root / "conf/strategy").glob("*.yaml"):
        old.unlink()
    for index in range(count):
        name, version, params, ranges = SIGNALS[index % len(SIGNALS)]
        a, b = 5 + index % 20, 60 + index % 50
        text = template.replace("STR-2026-0007", f"STR-2027-{index:04d}")
        text = text.replace("/universe: us_sample_stocks\n", f"/universe: {UNIVERSES[index % 2]}\n")
        text = text.replace("/data: sample_us_daily", "/data: tickdb_us_daily")
        # in ideation: the synthetic portfolio has no local data, which research would refuse
        text = text.replace("status: research", "status: ideation")
        text = text.replace("/costs: retail", f"/costs: {COSTS[index % 3]}")
        text = text.replace("/deployment: paper", f"/deployment: {DEPLOYMENTS[index % 2]}")
        pinned = re.search(r"name: ma_crossover\n    version: (\S+)", template)
        assert pinned, "conf/strategy/ma_trend.yaml no longer pins ma_crossover"
        text = text.replace(
            pinned.group(0), f"name: {name}\n    version: {version or pinned.group(1)}"
        )
        text = text.replace("fast: 20\n      slow: 100", params.format(a=a, b=b))
        text = text.replace(
            "fast: [5, 10, 20, 30, 40, 50]\n      slow: [50, 100, 150, 200]",
            ranges.format(a=a, b=b),
        )
        text = text.replace("name: Mega-cap MA Trend", f"name: Synthetic {index}")
        (root / f"conf/strategy/s{index:04d}.yaml").write_text(text)


NAIVE = """
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

root = Path(sys.argv[1])
for name in sorted(p.stem for p in (root / "conf/strategy").glob("*.yaml")):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        compose(config_name="qcompile", overrides=[f"+strategy={name}"])
"""


# Both sides run as a user's machine runs them: with Python's bytecode cache (a sandbox that sets
# PYTHONDONTWRITEBYTECODE would make every process recompile qcompile's editable sources) and
# qcompile's compiled-template cache (~/.cache/qcompile/jinja) warm. "Cold" means no generated/
# and no project cache (.qcompile/: data fingerprints), i.e. a fresh clone's first build.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def naive_loop(root: Path) -> float:
    """A fresh process that composes each strategy from scratch: compose only, no validation,
    no rendering, so the comparison flatters the naive loop."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", NAIVE, str(root)], check=True, capture_output=True, env=ENV
    )
    return time.perf_counter() - start


def qcompile_build(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "qcompile.cli", "build"],
        cwd=root,
        check=True,
        capture_output=True,
        env=ENV,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    naive, cold, unchanged, redone = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        make_project(warm, args.strategies)
        naive_loop(warm)  # warm the file and bytecode caches for both
        qcompile_build(warm)
        # Each cold build runs in a fresh copy made beforehand, as a fresh clone's first build
        # does: ext4 skips inodes freed in the last ~30 s when it creates files, so a build that
        # follows the deletion of the previous run's 800 files also pays for that deletion. That
        # case is measured apart ("after rm -rf generated/").
        projects = [Path(tmp) / f"project{i}" for i in range(args.repeat)]
        for root in projects:
            shutil.copytree(warm / "conf", root / "conf")
        for root in projects:
            naive.append(naive_loop(root))
            cold.append(qcompile_build(root))
            unchanged.append(qcompile_build(root))
        for root in projects:
            shutil.rmtree(root / "generated")
            shutil.rmtree(root / ".qcompile", ignore_errors=True)
            redone.append(qcompile_build(root))
    n, c, u, r = (statistics.median(x) for x in (naive, cold, unchanged, redone))
    print(f"build speed, {args.strategies} strategies, median of {args.repeat} runs")
    print(f"{'measurement':<52}{'seconds':>10}{'vs naive':>10}")
    rows = [
        ("naive loop: one Hydra compose per strategy", n),
        ("qcompile build, cold (fresh project)", c),
        ("qcompile build, nothing changed", u),
        ("qcompile build, cold after rm -rf generated/", r),
    ]
    for label, seconds in rows:
        print(f"{label:<52}{seconds:>10.3f}{n / seconds:>9.1f}x")
    print(
        f"goals: cold >= 10x faster than naive: {'met' if n / c >= 10 else 'NOT met'}; "
        f"no-change <= 0.3 s: {'met' if u <= 0.3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
