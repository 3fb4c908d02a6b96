"""qcompile sweep: Hydra's sweep grammar, batching, failure isolation, resume, determinism."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import cli, tree_digest

FAST = "strategy.signal.params.fast"
SLOW = "strategy.signal.params.slow"
STALE = (
    "error: generated/STR-2026-0007/params.yaml is not what conf/ compiles to now (conf/, the "
    "signal code or the data changed since the last build): qcompile runs only what was built; "
    "run `qcompile build`, review generated/'s diff, then run again"
)


@pytest.fixture(autouse=True)
def _built(example: Path) -> None:
    """A sweep runs what was built, as a backtest does: each test starts from a built copy."""
    assert cli(example, "build").exit_code == 0


def _dry(root: Path, *overrides: str) -> list[str]:
    result = cli(root, "sweep", "ma_trend", "--dry-run", *overrides)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


@pytest.mark.parametrize(
    ("overrides", "jobs", "batches"),
    [
        ((f"{FAST}=10,20,30",), 3, 1),  # list
        ((f"{FAST}=range(5,50,5)",), 9, 1),  # range, end exclusive
        ((f"{FAST}=choice(5,15)", f"{SLOW}=50,100"), 4, 1),  # choice x list
        (("costs=glob(*)",), 3, 3),  # glob over a config group: every option
        ((f"{FAST}=10,20", "costs=retail,zero"), 4, 2),  # group sweep: one batch per option
        (("strategy.backtest.initial_capital=100000,200000",), 2, 2),  # other leaves: own compose
    ],
)
def test_hydra_sweep_grammar_expands_into_jobs_and_batches(
    example: Path, overrides: tuple[str, ...], jobs: int, batches: int
) -> None:
    lines = _dry(example, *overrides)
    assert lines[-1] == f"{jobs} job(s) in {batches} batch(es); nothing was run."
    assert sum(1 for line in lines if line.startswith("  job ")) == jobs


def test_glob_lists_the_group_options_in_order(example: Path) -> None:
    lines = _dry(example, "costs=glob(*)")
    assert [line for line in lines if line.startswith("batch")] == [
        "batch 0: costs=institutional",
        "batch 1: costs=retail",
        "batch 2: costs=zero",
    ]


def test_each_job_has_the_metrics_of_its_own_backtest(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    result = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "costs=retail,zero", "--name", "t")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "wrote reports/STR-2026-0007/sweeps/t/summary.md, results.csv and results.parquet: "
        "4 job(s), 0 failed\n"
    )
    page = (example / "reports/STR-2026-0007/sweeps/t/summary.html").read_text()
    assert (
        page.count("<svg") == 1 and "Mean Sharpe by strategy.signal.params.fast and costs" in page
    )
    table = pl.read_parquet(example / "reports/STR-2026-0007/sweeps/t/results.parquet")
    assert table.columns[:4] == ["job", "overrides", FAST, "costs"]
    row = table.filter(pl.col("overrides") == f"{FAST}=10 costs=zero").row(0, named=True)
    alone = cli(example, "backtest", "ma_trend", "costs=zero", f"{FAST}=10")
    assert alone.exit_code == 0, alone.output
    (run,) = (example / "reports/STR-2026-0007/2.1.0/runs").iterdir()
    metrics = json.loads((run / "evidence.json").read_text())["metrics"]
    assert row["trade_count"] == metrics["trade_count"] > 0
    assert row["sharpe"] == pytest.approx(metrics["sharpe"], rel=1e-9)
    assert row["total_return"] == pytest.approx(metrics["total_return"], rel=1e-9)


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(example: Path) -> None:
    result = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "costs=retail,bogus", "--name", "f")
    assert result.exit_code == 1, result.output  # the table is written, the run is not clean
    assert "4 job(s), 2 failed" in result.output
    assert (
        "error: 2 of 4 job(s) failed; each one's error is in the error column of "
        "reports/STR-2026-0007/sweeps/f/results.csv"
    ) in result.output
    directory = example / "reports/STR-2026-0007/sweeps/f"
    table = pl.read_csv(directory / "results.csv")
    failed = table.filter(pl.col("error").is_not_null())
    assert failed["costs"].to_list() == ["bogus", "bogus"]
    assert failed["error"].to_list() == ["costs=bogus: no option 'bogus' in group 'costs'"] * 2
    summary = (directory / "summary.md").read_text()
    assert "| failed | 2 |" in summary and "## Failed jobs" in summary


def test_resume_reuses_finished_jobs_and_reruns_failed_ones(example: Path) -> None:
    args = ("sweep", "ma_trend", f"{FAST}=10,20", "costs=retail,bogus", "--name", "r")
    assert cli(example, *args).exit_code == 1  # two jobs fail
    directory = example / "reports/STR-2026-0007/sweeps/r"
    first = (directory / "results.csv").read_bytes()
    resumed = cli(example, *args, "--resume")
    assert resumed.exit_code == 1, resumed.output
    assert "4 job(s), 2 failed, 2 reused" in resumed.output
    assert (directory / "results.csv").read_bytes() == first


def test_the_same_sweep_gives_the_same_bytes(example: Path) -> None:
    args = ("sweep", "ma_trend", f"{FAST}=range(5,30,5)", f"{SLOW}=50,100", "--name", "d")
    directory = example / "reports/STR-2026-0007/sweeps/d"
    assert cli(example, *args).exit_code == 0
    first = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert cli(example, *args).exit_code == 0
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == first
    summary = first["summary.md"].decode()
    assert "No job reached 200 trades" in summary or "Best by Sharpe" in summary


def test_a_bad_sweep_expression_is_a_clear_error(example: Path) -> None:
    result = cli(example, "sweep", "ma_trend", "--dry-run", f"{FAST}=range(5,")
    assert result.exit_code == 2
    assert result.output.startswith("error: sweep overrides: ")
    assert "Traceback" not in result.output


def test_overfitting_statistics_cover_every_job_and_survive_a_resume(example: Path) -> None:
    args = ("sweep", "ma_trend", f"{FAST}=5,10,20", f"{SLOW}=50,100", "--name", "s")
    assert cli(example, *args).exit_code == 0
    directory = example / "reports/STR-2026-0007/sweeps/s"
    statistics = json.loads((directory / "statistics.json").read_text())
    assert statistics["computed"] and statistics["trials"] == 6
    assert 0.0 <= statistics["pbo"] <= 1.0 and 0.0 <= statistics["deflated_sharpe"] <= 1.0
    assert statistics["chosen_eligible"] is False  # the sample has no 200-trade job here
    summary = (directory / "summary.md").read_text()
    assert "| probability of backtest overfitting |" in summary
    first = (directory / "statistics.json").read_bytes()
    resumed = cli(example, *args, "--resume")
    assert "6 reused" in resumed.output
    assert (directory / "statistics.json").read_bytes() == first


def test_statistics_are_computed_only_for_sweeps_of_signal_parameters(example: Path) -> None:
    """The deflated Sharpe and PBO measure a search over signals: a sweep of windows or costs
    leaves them out, says why, and keeps saying it on a resumed run."""
    args = ("sweep", "ma_trend", 'strategy.backtest.start_date="2009-06-01","2010-06-01"')
    result = cli(example, *args, "--name", "w")
    assert result.exit_code == 0, result.output
    assert "2 job(s), 0 failed" in result.output
    summary = (example / "reports/STR-2026-0007/sweeps/w/summary.md").read_text()
    reason = "Not computed: the sweep varies strategy.backtest.start_date, not only signal"
    assert reason in " ".join(summary.split())
    assert "2 reused" in cli(example, *args, "--name", "w", "--resume").output
    summary = (example / "reports/STR-2026-0007/sweeps/w/summary.md").read_text()
    assert reason in " ".join(summary.split())
    costs = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "costs=retail,zero", "--name", "c")
    assert costs.exit_code == 0, costs.output
    statistics = json.loads(
        (example / "reports/STR-2026-0007/sweeps/c/statistics.json").read_text()
    )
    assert statistics["computed"] is False and "varies costs" in statistics["reason"]


def test_the_process_pool_gives_what_running_serially_gives(example: Path) -> None:
    sweep = ("sweep", "ma_trend", f"{FAST}=10,20", "costs=glob(*)")
    pooled = cli(example, *sweep, "--name", "pool")
    serial = cli(example, *sweep, "--name", "serial", "--launcher", "serial")
    assert pooled.exit_code == serial.exit_code == 0, pooled.output + serial.output
    base = example / "reports/STR-2026-0007/sweeps"
    for name in ("results.csv", "statistics.json", "summary.md"):
        assert (base / "pool" / name).read_bytes() == (base / "serial" / name).read_bytes()


def test_the_generated_harness_takes_the_same_sweep_arguments(example: Path) -> None:
    import subprocess
    import sys

    assert cli(example, "build").exit_code == 0
    harness = example / "generated/STR-2026-0007/backtest.py"
    run = subprocess.run(
        [sys.executable, str(harness), f"{FAST}=10,20", "--name", "h"],
        cwd="/",
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "QCOMPILE_PROJECT"},
    )
    assert run.returncode == 0, run.stderr
    assert "2 job(s), 0 failed" in run.stdout
    assert (example / "reports/STR-2026-0007/sweeps/h/results.csv").is_file()


def test_leaf_values_applied_to_a_compiled_group_give_what_composing_gives(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qcompile.research.sweep import run as sweeps

    sweep = (
        "sweep",
        "ma_trend",
        f"{FAST}=10,20",
        "costs=glob(*)",
        "strategy.backtest.initial_capital=100000,-5,250000",
        'strategy.backtest.start_date="2009-06-01","2030-01-01"',
        "--launcher",
        "serial",
    )
    patched = cli(example, *sweep, "--name", "patched")
    monkeypatch.setattr(sweeps, "PATCHABLE", ())  # every batch composed on its own
    composed = cli(example, *sweep, "--name", "composed")
    assert patched.exit_code == composed.exit_code == 1, (
        patched.output + composed.output
    )  # some fail
    base = example / "reports/STR-2026-0007/sweeps"
    patched_table = pl.read_csv(base / "patched/results.csv")
    composed_table = pl.read_csv(base / "composed/results.csv")
    # the same metrics, and a refused value refused for the same reason (composing one batch
    # reports every problem of its overrides; checking leaf values stops at the schema's)
    assert patched_table.drop("error").equals(composed_table.drop("error"))
    for mine, theirs in zip(patched_table["error"], composed_table["error"], strict=True):
        assert (mine is None) == (theirs is None)
        assert mine is None or mine.split(" (+")[0] == theirs.split(" (+")[0]
    errors = set(patched_table["error"].drop_nulls())
    assert "strategy.backtest.initial_capital: must be >= 1, was -5" in errors
    assert any(error.startswith("strategy.backtest.end_date: must be after") for error in errors)
    assert patched_table.filter(pl.col("error").is_null()).height == 2 * 3 * 2


def test_gates_do_not_stop_a_sweep(example: Path) -> None:
    """zscore_reversion is in validation: its evidence was produced with its configured costs, so
    compiling it with other costs fails the evidence.fresh gate. A sweep is an experiment."""
    result = cli(example, "sweep", "zscore_reversion", "costs=retail,zero", "--name", "g")
    assert result.exit_code == 0, result.output
    assert "2 job(s), 0 failed" in result.output


def test_a_signal_sweep_reads_the_built_parameters_only_while_they_are_current(
    example: Path,
) -> None:
    from qcompile.compiler.build import compile_project
    from qcompile.compiler.plan import runtime_parameters
    from qcompile.project import Project
    from qcompile.research.sweep.run import _built_params

    project = Project(example)
    shutil.rmtree(example / "generated")
    assert _built_params(project, "ma_trend") is None  # nothing built yet
    assert cli(example, "build").exit_code == 0
    for strategy in ("ma_trend", "STR-2026-0007", "zscore_reversion"):
        (compiled,) = compile_project(project, [], [strategy], enforce_gates=False).strategies
        assert _built_params(project, strategy) == runtime_parameters(compiled)
    costs = example / "conf/costs/retail.yaml"
    costs.write_text(costs.read_text() + "\n# changed\n")
    assert _built_params(project, "ma_trend") is None  # conf/ changed since the build


def test_a_sweep_tries_values_outside_the_tested_list(example: Path) -> None:
    """The tested list is what the committed strategy's evidence covers; a sweep exists to try
    others, so rule.param_untested does not apply to its jobs (a backtest refuses them)."""
    refused = cli(example, "backtest", "ma_trend", f"{FAST}=15")
    assert refused.exit_code == 2 and "is not one of its tested values" in refused.output
    result = cli(example, "sweep", "ma_trend", f"{FAST}=15,25", "--name", "untested")
    assert result.exit_code == 0, result.output
    assert "2 job(s), 0 failed" in result.output


def test_a_sweep_says_what_configuration_it_varied(example: Path) -> None:
    assert cli(example, "sweep", "ma_trend", f"{FAST}=10,20", "--name", "built").exit_code == 0
    summary = (example / "reports/STR-2026-0007/sweeps/built/summary.md").read_text()
    assert "| applied to | generated/STR-2026-0007/params.yaml, as built |" in summary


@pytest.mark.parametrize(
    "sweep",
    [
        (f"{SLOW}=100,150",),  # signal parameters: the built parameters, when current
        (f"{SLOW}=100,150", "costs=retail,zero"),  # a group sweep: compiled
    ],
)
def test_a_sweep_stops_when_generated_is_stale_for_its_strategy(
    example: Path, sweep: tuple[str, ...]
) -> None:
    """A sweep runs what was built, as a backtest does: when conf/ no longer compiles to
    generated/<id>/params.yaml it runs nothing, in the backtest's words."""
    path = example / "conf/strategy/ma_trend.yaml"
    path.write_text(path.read_text().replace("      slow: 100", "      slow: 150", 1))
    before = tree_digest(example / "reports")
    result = cli(example, "sweep", "STR-2026-0007", *sweep, "--name", "edited")
    assert result.exit_code == 2, result.output
    assert result.output == STALE + "\n"
    backtest = cli(example, "backtest", "STR-2026-0007")
    assert backtest.exit_code == 2 and STALE in backtest.output  # the same words
    dry = cli(example, "sweep", "STR-2026-0007", *sweep, "--dry-run")
    assert dry.exit_code == 2, dry.output
    lines = dry.output.splitlines()
    assert lines[-2].endswith("; nothing was run.") and lines[-1] == STALE
    assert tree_digest(example / "reports") == before  # no sweep folder
    assert cli(example, "build").exit_code == 0
    assert cli(example, "sweep", "STR-2026-0007", *sweep, "--name", "rebuilt").exit_code == 0


def test_a_sweep_of_a_strategy_never_built_says_to_build(example: Path) -> None:
    shutil.rmtree(example / "generated/STR-2026-0007")
    for extra in ((), ("--dry-run",)):
        result = cli(example, "sweep", "ma_trend", f"{FAST}=10,20", *extra)
        assert result.exit_code == 2, result.output
        assert result.output.endswith(
            "error: generated/STR-2026-0007/params.yaml does not exist: qcompile runs only what "
            "was built; run `qcompile build` first\n"
        )
    assert not (example / "reports/STR-2026-0007/sweeps").exists()


def test_min_trades_sets_what_a_job_needs_to_be_ranked(example: Path) -> None:
    args = ("sweep", "ma_trend", f"{FAST}=10,20", f"{SLOW}=50,100", "--launcher", "serial")
    default = cli(example, *args, "--name", "default")
    lowered = cli(example, *args, "--name", "low", "--min-trades", "20")
    assert default.exit_code == lowered.exit_code == 0, default.output + lowered.output
    base = example / "reports/STR-2026-0007/sweeps"
    summary = (base / "default/summary.md").read_text()
    assert "| minimum trades to be ranked | 200 (the daily minimum sample) |" in summary
    assert "No job reached 200 trades" in summary
    summary = (base / "low/summary.md").read_text()
    assert "| minimum trades to be ranked | 20 (--min-trades) |" in summary
    assert "Best by Sharpe among eligible jobs:" in summary
    assert "not ranked" in (base / "default/summary.html").read_text()
    assert json.loads((base / "low/statistics.json").read_text())["chosen_eligible"] is True
