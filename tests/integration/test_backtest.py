"""qcompile backtest end to end on the bundled sample data: report, evidence, gates, reproducibility."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from qcompile import __version__
from tests.conftest import (
    cli,
    edit,
    tree_digest,
    without_production_example,
    write_random_walk_bars,
)


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
        "overfitting",
    }
    overfitting = evidence["robustness"]["overfitting"]
    assert overfitting["trials"] == 23 and 0 <= overfitting["pbo"] <= 1
    assert set(overfitting["chosen_params"]) == {"fast", "slow"}
    folds = evidence["robustness"]["walk_forward"]["folds"]
    assert [f["train"][0] for f in folds] == ["2009-06-01"] * 3  # anchored at the window start
    assert [f["train"][1] < f["test"][0] for f in folds] == [
        True
    ] * 3  # never tested on its training
    assert folds[-1]["test"][1] == "2017-10-31"
    assert "### Walk-forward" in (with_data / "reports/STR-2026-0007/2.1.0/report.md").read_text()
    assert evidence["robustness"]["look_ahead_bias"]["passed"] is True
    # 6 fast x 4 slow, without fast=50/slow=50 (equal windows never cross: the signal says so)
    sensitivity = evidence["robustness"]["parameter_sensitivity"]
    assert sensitivity["combinations"] == 23
    assert sensitivity["skipped"] == [
        {
            "params": {"fast": 50, "slow": 50},
            "reason": "fast (50) must be shorter than slow (50)",
        }
    ]
    assert all(row["params"]["fast"] < row["params"]["slow"] for row in sensitivity["grid"])
    benchmark = evidence["benchmark"]
    assert benchmark["choice"] == "equal_weight" and benchmark["symbols"] == ["GOOGL", "MSFT"]
    assert set(benchmark["relative"]) >= {"alpha", "beta", "correlation", "information_ratio"}
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
        "### Overfitting",
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
    missing = yaml.safe_load(passport)["lifecycle"]["next_gate_missing"]
    assert missing and not any(m.startswith("evidence.backtest") for m in missing)
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
    edit(
        example / "conf/strategy/ma_trend.yaml",
        "/universe: us_sample_stocks",
        "/universe: us_megacap",
    )
    refused = cli(example, "build")  # in research, a strategy without data is an error
    assert refused.exit_code == 2 and "qcompile download STR-2026-0007" in refused.output
    edit(example / "conf/strategy/ma_trend.yaml", "status: research", "status: ideation")
    built = cli(example, "build")
    assert built.exit_code == 0 and "warning: data.local.path: no local data" in built.output
    result = cli(example, "backtest", "ma_trend")
    assert result.exit_code == 2
    assert result.output == (
        "error: no parquet files in data/us_daily; fetch them with `qcompile download STR-2026-0007` "
        "(or copy them there), then `qcompile build`\n"
    )


def test_a_local_only_source_without_data_says_to_copy_it(example: Path) -> None:
    without_production_example(example)  # its production gate needs the sample data
    shutil.rmtree(example / "data/sample_us_daily")
    shutil.rmtree(example / "reports/STR-2026-0063")
    edit(example / "conf/strategy/zscore_reversion.yaml", "status: validation", "status: ideation")
    edit(example / "conf/strategy/ma_trend.yaml", "status: research", "status: ideation")
    assert cli(example, "build").exit_code == 0  # without data: ideation only
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
        assert "<script>alert" not in (directory / report).read_text(), report
    assert json.loads((directory / "evidence.json").read_text())["strategy_id"] == "STR-2026-0007"


def test_a_team_signal_package_in_the_project_root_backtests(team_project: Path) -> None:
    harness = team_project / "generated/STR-2026-0051/backtest.py"
    run = subprocess.run([sys.executable, str(harness)], cwd="/", capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    evidence = json.loads((team_project / "reports/STR-2026-0051/0.1.0/evidence.json").read_text())
    assert evidence["metrics"]["trade_count"] > 0


def _earnings_gap_on_sample_data(root: Path, events: str | None) -> Path:
    """The earnings-gap example pointed at the bundled sample data, with an event calendar."""
    strategy = root / "conf/strategy/earnings_gap.yaml"
    edit(strategy, "/data: tickdb_us_daily", "/data: sample_us_daily")
    edit(strategy, "/universe: us_tech", "/universe: us_sample")
    edit(strategy, 'start_date: "2021-01-01"', 'start_date: "2009-06-01"')
    edit(strategy, 'end_date: "2025-12-31"', 'end_date: "2017-10-31"')
    edit(strategy, 'start_date: "2025-01-01"', 'start_date: "2016-01-01"')
    edit(strategy, 'end_date: "2025-12-31"', 'end_date: "2017-10-31"')
    if events is not None:
        edit(
            strategy,
            "    ranges:\n      min_gap",
            f"    events: {events}\n    ranges:\n      min_gap",
        )
    return strategy


def _gap_down_days(root: Path, symbol: str, min_gap_pct: float) -> list[str]:
    """Session dates on which gap_fill's entry condition holds, computed independently."""
    import polars as pl

    bars = pl.read_parquet(root / f"data/sample_us_daily/{symbol}.parquet")
    previous = bars["close"].shift(1)
    gap = (bars["open"] / previous - 1.0) * 100.0
    chosen = bars.filter((gap <= -min_gap_pct) & (bars["close"] < previous))
    dates = pl.from_epoch(chosen["timestamp"], time_unit="ms").dt.date().cast(pl.String)
    return [d for d in dates.to_list() if "2009-06-01" <= d <= "2017-10-31"]


def test_gap_fill_trades_only_on_the_pinned_event_calendar(example: Path) -> None:
    gaps = _gap_down_days(example, "MSFT", 3.0)
    assert len(gaps) >= 4
    events = example / "data/events/earnings.csv"
    events.parent.mkdir(parents=True)
    # two gap days are "earnings", plus one quiet day that must not trade
    events.write_text(f"symbol,date\nMSFT,{gaps[0]}\nMSFT,{gaps[2]}\nMSFT,2012-03-06\n")
    _earnings_gap_on_sample_data(example, "data/events/earnings.csv")
    assert cli(example, "build").exit_code == 0
    passport = (example / "generated/STR-2026-0042/passport.yaml").read_text()
    assert "path: data/events/earnings.csv" in passport
    result = cli(example, "backtest", "STR-2026-0042")
    assert result.exit_code == 0, result.output
    evidence = json.loads((example / "reports/STR-2026-0042/1.3.2/evidence.json").read_text())
    assert evidence["metrics"]["trade_count"] == 2  # only the calendar's gap days, not all gaps
    assert len(evidence["inputs"]["events_sha256"]) == 64

    events.write_text(f"symbol,date\nMSFT,{gaps[0]}\n")  # the calendar changes
    warned = cli(example, "build")
    assert "report is stale: config_sha256" not in warned.output
    assert "events_sha256 changed since it ran" in warned.output


def test_a_missing_event_calendar_is_refused_with_its_path(example: Path) -> None:
    _earnings_gap_on_sample_data(example, "data/events/earnings.csv")
    assert cli(example, "build").exit_code == 0
    result = cli(example, "backtest", "STR-2026-0042")
    assert result.exit_code == 2
    assert result.output == (
        "error: events file data/events/earnings.csv not found; create it, then `qcompile build`\n"
    )


def test_an_event_calendar_on_a_signal_without_events_is_an_error(example: Path) -> None:
    edit(
        example / "conf/strategy/ma_trend.yaml",
        "    ranges:\n      fast",
        "    events: data/events/earnings.csv\n    ranges:\n      fast",
    )
    result = cli(example, "build")
    assert result.exit_code == 2
    assert (
        "conf/strategy/ma_trend.yaml:30: error: strategy.signal.events: ma_crossover takes no "
        "events input [lock.signal_events]"
    ) in result.output


# -- the pinned backtest runs what was built ------------------------------------------------------


def test_a_conf_change_without_a_build_is_not_back_tested(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    reports = tree_digest(example / "reports")
    edit(example / "conf/strategy/ma_trend.yaml", "      fast: 20", "      fast: 10")
    refused = cli(example, "backtest", "STR-2026-0007")
    assert refused.exit_code == 2
    assert refused.output == (
        "error: generated/STR-2026-0007/params.yaml is not what conf/ compiles to now (conf/, "
        "the signal code or the data changed since the last build): qcompile runs only what "
        "was built; run `qcompile build`, review generated/'s diff, then run again\n"
    )
    assert tree_digest(example / "reports") == reports  # the committed report is untouched


def test_without_generated_the_pinned_backtest_does_not_run(example: Path) -> None:
    refused = cli(example, "backtest", "STR-2026-0007")
    assert refused.exit_code == 2
    assert "generated/STR-2026-0007/params.yaml does not exist" in refused.output


def test_an_experiment_says_what_it_ran_from(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    assert cli(example, "backtest", "STR-2026-0007", "costs=zero").exit_code == 0
    (report,) = (example / "reports/STR-2026-0007/2.1.0/runs").glob("*/report.md")
    assert report.read_text().splitlines()[0] == (
        f"<!-- Generated by qcompile {__version__} from conf/ as compiled with overrides, not "
        "generated/STR-2026-0007/params.yaml. Re-run: qcompile backtest STR-2026-0007 "
        "costs=zero -->"
    )
    committed = (example / "reports/STR-2026-0007/2.1.0/report.md").read_text().splitlines()[0]
    assert "from generated/STR-2026-0007/params.yaml." in committed


def test_a_hostile_name_loads_nothing_and_hides_nothing(with_data: Path) -> None:
    """A strategy name with an image, a NUL and an ESC: the generated Markdown shows it as text
    (git still diffs it as text), and report.html loads nothing remote (and says so in a CSP)."""
    name = "Trend ![t](https://evil.example/b.png) \\0 \\e[31m"
    edit(with_data / "conf/strategy/ma_trend.yaml", "name: Mega-cap MA Trend", f'name: "{name}"')
    assert cli(with_data, "build").exit_code == 0
    assert cli(with_data, "backtest", "ma_trend").exit_code == 0
    pages = [
        with_data / "generated/STR-2026-0007/runbook.md",
        with_data / "generated/STR-2026-0007/checklist.md",
        with_data / "generated/index.md",
        with_data / "reports/STR-2026-0007/2.1.0/report.md",
    ]
    for page in pages:
        data = page.read_bytes()
        assert b"\x00" not in data and b"\x1b" not in data, page
        assert b"](https://evil.example" not in data.replace(b"\\](", b""), page
    html = (with_data / "reports/STR-2026-0007/2.1.0/report.html").read_text()
    assert "<img" not in html and "evil.example/b.png" in html  # shown, not loaded
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_a_benchmark_symbol_is_bought_and_held(with_data: Path) -> None:
    edit(
        with_data / "conf/strategy/ma_trend.yaml", "    seed: 7", "    benchmark: SPX\n    seed: 7"
    )
    assert cli(with_data, "build").exit_code == 0
    assert cli(with_data, "backtest", "STR-2026-0007").exit_code == 0
    evidence = json.loads((with_data / "reports/STR-2026-0007/2.1.0/evidence.json").read_text())
    assert evidence["benchmark"]["symbols"] == ["SPX"]
    spx = pl.read_parquet(with_data / "data/sample_us_daily/SPX.parquet").sort("timestamp")
    start, end = 1243814400000, 1509494399999  # 2009-06-01 .. 2017-10-31, inclusive
    window = spx.filter(pl.col("timestamp").is_between(start, end))["close"]
    held = window[-1] / window[0] - 1
    assert evidence["benchmark"]["metrics"]["total_return"] == pytest.approx(held, rel=1e-12)
    report = (with_data / "reports/STR-2026-0007/2.1.0/report.md").read_text()
    assert "buy-and-hold of SPX (`strategy.backtest.benchmark`: SPX)" in report


def test_a_benchmark_outside_the_universe_or_traded_is_refused(with_data: Path) -> None:
    strategy = with_data / "conf/strategy/ma_trend.yaml"
    edit(strategy, "    seed: 7", "    benchmark: AAPL\n    seed: 7")
    edit(with_data / "conf/universe/us_sample_stocks.yaml", "[IXIC, SPX]", "[IXIC, SPX, MSFT]")
    result = cli(with_data, "validate")
    assert result.exit_code == 2
    line = strategy.read_text().splitlines().index("    benchmark: AAPL") + 1
    assert (
        f"conf/strategy/ma_trend.yaml:{line}: error: strategy.backtest.benchmark: AAPL is neither"
        in result.output
    )
    assert "[rule.benchmark_symbol]" in result.output
    assert "universe.benchmarks: MSFT also traded" in result.output
    assert "[rule.benchmark_traded]" in result.output


def test_a_first_run_compiles_beside_and_reports_the_same_numbers(
    with_data: Path, tmp_path: Path
) -> None:
    """With numba's cache empty, the grid's kernels compile in a second process while the
    command compiles the rest; the report is byte for byte the warm one's."""
    assert cli(with_data, "backtest", "STR-2026-0007").exit_code == 0
    directory = with_data / "reports/STR-2026-0007/2.1.0"
    warm = {name: (directory / name).read_bytes() for name in ("evidence.json", "report.md")}
    for name in warm:
        (directory / name).unlink()
    cold = subprocess.run(
        [sys.executable, "-m", "qcompile.cli", "backtest", "STR-2026-0007"],
        cwd=with_data,
        env={
            **os.environ,
            "NUMBA_CACHE_DIR": str(tmp_path / "empty-cache"),
            "QCOMPILE_PROJECT": str(with_data),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cold.returncode == 0, cold.stderr
    assert "Traceback" not in cold.stderr
    assert {name: (directory / name).read_bytes() for name in warm} == warm
    cached = {p.name.split("-")[0] for p in (tmp_path / "empty-cache").rglob("*.nbi")}
    # the report's small grid runs on one thread: the parallel kernels were never compiled
    assert {"kernel.grid_accumulate_serial", "kernel.grid_finish"} <= cached, cached
    assert "kernel.grid_accumulate" not in cached and "trend._rolling_sums_parallel" not in cached


def test_an_empty_benchmark_is_one_diagnostic(with_data: Path) -> None:
    result = cli(with_data, "validate", "+strategy.backtest.benchmark=''")
    assert result.exit_code == 2
    assert "strategy.backtest.benchmark: must not be empty [schema.empty]" in result.output
    assert "rule.benchmark_symbol" not in result.output  # not blamed twice
