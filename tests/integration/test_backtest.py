"""qcompile backtest end to end on the bundled sample data: report, evidence, gates, reproducibility."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, edit, write_random_walk_bars


@pytest.fixture
def with_data(example: Path) -> Path:
    """The example project with its sample data, minus the committed MA-trend report."""
    shutil.rmtree(example / "reports/STR-2026-0007")
    assert cli(example, "build").exit_code == 0
    return example


def test_backtest_writes_report_and_evidence(with_data: Path) -> None:
    result = cli(with_data, "backtest", "STR-2026-0007")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "wrote reports/STR-2026-0007/2.1.0/report.md, report.html and evidence.json"
    )
    directory = with_data / "reports/STR-2026-0007/2.1.0"
    evidence = json.loads((directory / "evidence.json").read_text())
    assert evidence["strategy_id"] == "STR-2026-0007" and evidence["seed"] == 7
    assert set(evidence["robustness"]) == {
        "parameter_sensitivity",
        "monte_carlo",
        "look_ahead_bias",
        "survivorship_bias",
        "walk_forward",
    }
    folds = evidence["robustness"]["walk_forward"]["folds"]
    assert [f["train"][0] for f in folds] == ["2009-06-01"] * 3  # anchored at the window start
    assert [f["train"][1] < f["test"][0] for f in folds] == [
        True
    ] * 3  # never tested on its training
    assert folds[-1]["test"][1] == "2017-10-31"
    assert "### Walk-forward" in (with_data / "reports/STR-2026-0007/2.1.0/report.md").read_text()
    assert evidence["robustness"]["look_ahead_bias"]["passed"] is True
    assert evidence["robustness"]["parameter_sensitivity"]["combinations"] == 24  # 6 fast x 4 slow
    assert evidence["out_of_sample"]["trade_count"] >= 0
    assert evidence["minimum_sample"]["required_trades"] == 200
    report = (directory / "report.md").read_text()
    for section in (
        "## Reproducibility",
        "## Data provenance",
        "## Universe",
        "## Signal",
        "## Performance",
        "## Sensitivity and robustness",
        "### Out-of-sample",
        "### Parameter sensitivity",
        "### Monte Carlo",
        "## Trades",
    ):
        assert section in report
    assert f"`{evidence['inputs']['data_sha256']}`" in report
    if not evidence["minimum_sample"]["met"]:
        assert "**WARNING: the sample is insufficient" in report.split("## Reproducibility")[0]


def test_running_again_gives_identical_bytes(with_data: Path) -> None:
    cli(with_data, "backtest", "ma_trend")
    directory = with_data / "reports/STR-2026-0007/2.1.0"
    first = {p.name: p.read_bytes() for p in directory.iterdir()}
    harness = with_data / "generated/STR-2026-0007/backtest.py"
    run = subprocess.run(
        [sys.executable, str(harness)], cwd=with_data, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == first


def test_evidence_feeds_the_gates_and_goes_stale(with_data: Path) -> None:
    cli(with_data, "backtest", "ma_trend")
    result = cli(with_data, "build")
    assert "update  generated/STR-2026-0007/passport.yaml" in result.output
    passport = (with_data / "generated/STR-2026-0007/passport.yaml").read_text()
    assert "evidence: reports/STR-2026-0007/2.1.0/evidence.json" in passport
    assert "evidence.backtest" not in passport.split("next_gate_missing:")[1].split("phase:")[0]
    edit(with_data / "conf/costs/retail.yaml", "slippage_bps: 5", "slippage_bps: 7")
    warned = cli(with_data, "build")
    assert warned.exit_code == 0
    assert (
        "reports/STR-2026-0007/2.1.0/evidence.json: warning: report is stale: config_sha256 changed "
        "since it ran; re-run `qcompile backtest STR-2026-0007` [report.stale]"
    ) in warned.output
    edit(with_data / "conf/strategy/ma_trend.yaml", "status: research", "status: validation")
    result = cli(with_data, "build")
    assert result.exit_code == 2
    assert (
        "phase 'validation' requires evidence.fresh: evidence is stale: config_sha256 changed since "
        "the report ran [gate.evidence.fresh]"
    ) in result.output


def test_experiments_with_overrides_do_not_replace_the_evidence(with_data: Path) -> None:
    result = cli(with_data, "backtest", "ma_trend", "costs=zero")
    assert result.exit_code == 0, result.output
    assert "reports/STR-2026-0007/2.1.0/runs/" in result.output
    assert not (with_data / "reports/STR-2026-0007/2.1.0/evidence.json").exists()


def test_changed_data_refuses_to_run_until_rebuilt(with_data: Path) -> None:
    write_random_walk_bars(with_data, ["MSFT"], seed=99, folder="data/sample_us_daily")
    harness = with_data / "generated/STR-2026-0007/backtest.py"
    run = subprocess.run(
        [sys.executable, str(harness)], cwd=with_data, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert (
        "the data in data/sample_us_daily changed since it was pinned; run `qcompile build`"
        in run.stderr
    )
    assert "Traceback" not in run.stderr


def test_without_local_data_the_error_says_how_to_get_it(example: Path) -> None:
    edit(
        example / "conf/strategy/ma_trend.yaml", "/data: sample_us_daily", "/data: tickdb_us_daily"
    )
    edit(example / "conf/strategy/ma_trend.yaml", "/universe: us_sample", "/universe: us_megacap")
    assert cli(example, "build").exit_code == 0
    result = cli(example, "backtest", "ma_trend")
    assert result.exit_code == 2
    assert result.output == (
        "error: no parquet files in data/us_daily; fetch them with `qcompile download STR-2026-0007` "
        "(or copy them there), then `qcompile build`\n"
    )


def test_a_local_only_source_without_data_says_to_copy_it(example: Path) -> None:
    shutil.rmtree(example / "data/sample_us_daily")
    shutil.rmtree(example / "reports/STR-2026-0063")
    edit(example / "conf/strategy/zscore_reversion.yaml", "status: validation", "status: research")
    assert cli(example, "build").exit_code == 0
    result = cli(example, "backtest", "ma_trend")
    assert result.exit_code == 2
    assert result.output == (
        "error: no parquet files in data/sample_us_daily; copy them there, then `qcompile build`\n"
    )


def test_hostile_names_are_escaped_in_both_reports(with_data: Path) -> None:
    name = "<script>alert(1)</script> | x"
    edit(
        with_data / "conf/strategy/ma_trend.yaml",
        "name: Mega-cap MA Trend",
        f"name: {json.dumps(name)}",
    )
    assert cli(with_data, "build").exit_code == 0
    assert cli(with_data, "backtest", "ma_trend").exit_code == 0
    directory = with_data / "reports/STR-2026-0007/2.1.0"
    for report in ("report.md", "report.html"):
        assert "<script>" not in (directory / report).read_text(), report
    assert json.loads((directory / "evidence.json").read_text())["strategy_id"] == "STR-2026-0007"


def test_a_team_signal_package_in_the_project_root_backtests(team_project: Path) -> None:
    harness = team_project / "generated/STR-2026-0051/backtest.py"
    run = subprocess.run([sys.executable, str(harness)], cwd="/", capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    evidence = json.loads((team_project / "reports/STR-2026-0051/0.1.0/evidence.json").read_text())
    assert evidence["metrics"]["trade_count"] > 0
