"""qcompile sweep through Hydra's launcher plugins: real runs through submitit's local executor and
joblib give the local pool's table; a missing plugin is a one-line error naming the extra.

A real Slurm is in test_sweep_slurm.py, a real Ray (in an environment of its own) in
test_sweep_ray.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import cli

FAST = "strategy.signal.params.fast"
CAPITAL = "strategy.backtest.initial_capital"
# a group sweep with a failing option, a leaf value the schema refuses and a signal parameter
SWEEP = (f"{FAST}=10,20", "costs=zero,bogus", f"{CAPITAL}=100000,-5")
COMPARED = ("results.csv", "statistics.json", "summary.md")


@pytest.fixture(autouse=True)
def _built(example: Path) -> None:
    """A sweep runs what was built: each test starts from a built copy."""
    assert cli(example, "build").exit_code == 0


def _files(root: Path, name: str) -> dict[str, bytes]:
    directory = root / "reports/STR-2026-0007/sweeps" / name
    return {file: (directory / file).read_bytes() for file in COMPARED}


@pytest.mark.parametrize(
    ("launcher", "extra"),
    [("submitit_local", ()), ("joblib", ("--tasks", "1"))],
)
def test_a_hydra_launcher_gives_the_local_pools_table(
    example: Path, launcher: str, extra: tuple[str, ...]
) -> None:
    local = cli(example, "sweep", "ma_trend", *SWEEP, "--name", "local")
    assert local.exit_code == 1, local.output  # 6 jobs fail on purpose
    assert "8 job(s), 6 failed" in local.output
    launched = cli(
        example, "sweep", "ma_trend", *SWEEP, "--name", launcher, "--launcher", launcher, *extra
    )
    assert launched.exit_code == 1, launched.output
    assert launched.output == local.output.replace("/local/", f"/{launcher}/")
    assert _files(example, launcher) == _files(example, "local")
    table = (example / f"reports/STR-2026-0007/sweeps/{launcher}/results.csv").read_text()
    assert "strategy.backtest.initial_capital: must be >= 1, was -5" in table
    assert "costs=bogus: no option 'bogus' in group 'costs'" in table
    # Hydra's own job folders: one per launcher job (one per batch, or --tasks of them)
    jobs = example / f"reports/STR-2026-0007/sweeps/{launcher}/launcher"
    folders = sorted(p.name for p in jobs.iterdir() if p.is_dir() and p.name.isdigit())
    assert folders == (["0"] if extra else ["0", "1", "2", "3"])
    assert (jobs / "0/.hydra/overrides.yaml").read_text() == "- +qcompile_task=0\n"


def test_resume_through_a_launcher_reuses_finished_jobs(example: Path) -> None:
    args = ("sweep", "ma_trend", *SWEEP, "--name", "r", "--launcher", "joblib")
    assert cli(example, *args).exit_code == 1
    first = _files(example, "r")
    resumed = cli(example, *args, "--resume")
    assert resumed.exit_code == 1, resumed.output
    assert "8 job(s), 6 failed, 2 reused" in resumed.output
    again = _files(example, "r")
    assert again.pop("summary.md") != first.pop("summary.md")  # it counts the reused jobs
    assert again == first


def test_launcher_settings_come_from_conf_and_the_command_line(example: Path) -> None:
    slurm = (example / "conf/hydra/launcher/slurm.yaml").read_text()
    assert "- submitit_slurm" in slurm
    ok = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "--name", "n", "--launcher", "joblib",
             "hydra.launcher.n_jobs=1")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    bad = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "--launcher", "joblib",
              "hydra.launcher.no_such_setting=1")  # fmt: skip
    assert bad.exit_code == 2
    assert bad.output.startswith("error: --launcher joblib: ")
    assert "Traceback" not in bad.output
    local = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "hydra.launcher.n_jobs=1")
    assert local.exit_code == 2
    assert "hydra.* overrides configure a Hydra launcher" in local.output
    tasks = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "--tasks", "2")
    assert tasks.exit_code == 2
    assert "--tasks counts a Hydra launcher's jobs" in tasks.output


@pytest.mark.parametrize(
    ("launcher", "extra"),
    [("slurm", "slurm"), ("submitit_local", "slurm"), ("joblib", "joblib"), ("ray", "ray")],
)
def test_a_missing_plugin_names_the_extra_to_install(
    example: Path, monkeypatch: pytest.MonkeyPatch, launcher: str, extra: str
) -> None:
    find_spec = importlib.util.find_spec

    def without_plugins(name: str, *args: object) -> object:
        return None if name.startswith("hydra_plugins.") else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_plugins)
    args = ("sweep", "ma_trend", f"{FAST}=10,20", "--name", "m", "--launcher", launcher)
    result = cli(example, *args)
    assert result.exit_code == 2
    assert result.output == f"error: --launcher {launcher} needs: pip install 'qcompile[{extra}]'\n"
    assert not (example / "reports/STR-2026-0007/sweeps/m").exists()  # nothing ran


def test_an_unknown_launcher_lists_the_choices(example: Path) -> None:
    result = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "--launcher", "slurmm")
    assert result.exit_code == 2
    assert result.output.startswith("error: --launcher slurmm: not a launcher; choose from ")
    assert "slurm, submitit_local, submitit_slurm" in result.output
