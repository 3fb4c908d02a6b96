"""qcompile sweep --launcher ray: a real local Ray through hydra-ray-launcher, in an environment of
its own.

hydra-ray-launcher 1.2 requires cloudpickle<3 and the joblib launcher of the test extra requires
cloudpickle>=3, so the two cannot share the test environment. This test makes a second virtual
environment holding qcompile's dependencies and its ``ray`` extra (built once per machine and
cached under ~/.cache/qcompile/test-envs, keyed by pyproject.toml, under a lock that concurrent
runs share), runs this checkout's qcompile there through Ray, and compares the files with the
local pool's run here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import cli

REPO = Path(__file__).resolve().parents[2]
SWEEP = (
    "strategy.signal.params.fast=10,20",
    "costs=zero,bogus",
    "strategy.backtest.initial_capital=100000,-5",
)


@pytest.fixture(scope="module")
def ray_python() -> Path:
    """The interpreter of an environment with qcompile's dependencies and the ray extra."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    project = tomllib.loads(pyproject.decode())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["ray"]]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(pyproject).hexdigest()[:12]
    environment = cache / "qcompile" / "test-envs" / f"ray-{digest}"
    python = environment / "bin" / "python"
    ready = environment / "installed"
    environment.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs at once (CI beside a developer's run) must not build into one folder: the
    # first to take the lock builds, the other waits for it and then finds the environment ready.
    with open(environment.parent / f"ray-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.is_file():  # not built yet, or left half-built by an interrupted run
            shutil.rmtree(environment, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True)
            install = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *requirements],
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert install.returncode == 0, install.stderr[-2000:]
            ready.touch()
    return python


def test_a_sweep_through_ray_gives_the_local_pools_table(example: Path, ray_python: Path) -> None:
    assert cli(example, "build").exit_code == 0  # a sweep runs what was built
    local = cli(example, "sweep", "ma_trend", *SWEEP, "--name", "local")
    assert local.exit_code == 1, local.output  # 6 jobs fail on purpose
    source = str(REPO / "src")
    launched = subprocess.run(
        [str(ray_python), "-m", "qcompile.cli", "sweep", "ma_trend", *SWEEP, "--name", "ray",
         "--launcher", "ray"],
        cwd=example,
        # this checkout's qcompile, for the driver and for the Ray workers it starts
        env={**os.environ, "PYTHONPATH": source, "QCOMPILE_PROJECT": str(example)},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert launched.returncode == 1, launched.stdout + launched.stderr[-3000:]
    wrote = next(line for line in local.output.splitlines() if line.startswith("wrote "))
    assert launched.stdout.splitlines()[-1] == wrote.replace("/local/", "/ray/")
    assert "8 job(s), 6 failed" in launched.stdout
    base = example / "reports/STR-2026-0007/sweeps"
    for name in ("results.csv", "statistics.json", "summary.md"):
        assert (base / "ray" / name).read_bytes() == (base / "local" / name).read_bytes(), name
    # Hydra's record of each launcher job, written by the Ray launcher
    jobs = base / "ray" / "launcher"
    assert (jobs / "0/.hydra/overrides.yaml").read_text() == "- +qcompile_task=0\n"
