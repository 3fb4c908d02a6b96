"""`qcompile parity`: the real runner process, fed the backtest's window through the emulator,
must make the backtest's fills and equity marks; a divergence is named; the checklist reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qcompile.operations.parity import Leg, first_leg_divergence, same_quantity
from tests.conftest import cli, cli_process, edit, without_production_example

STRATEGY = "STR-2026-0007"
VERSION_DIR = "reports/STR-2026-0007/2.1.0"
DAY = 86_400_000


def checklist_row(root: Path, item: str) -> str:
    text = (root / "generated" / STRATEGY / "checklist.md").read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if f"(`{item}`)" in line)


def test_the_runner_reproduces_the_backtest_and_the_checklist_says_so(example: Path) -> None:
    without_production_example(example)  # shares the paper deployment this test changes
    (example / VERSION_DIR / "parity.json").unlink(missing_ok=True)
    assert cli(example, "build").exit_code == 0
    before = checklist_row(example, "code.signal_matches_backtest")
    assert before.startswith("| [ ] |") and "run `qcompile parity STR-2026-0007`" in before

    run = cli_process(example, "parity", STRATEGY, "--speed", "4000")
    assert run.returncode == 0, run.stderr
    assert "parity holds over 2009-06-01..2017-10-31" in run.stdout
    record = json.loads((example / VERSION_DIR / "parity.json").read_text())
    assert record["passed"] is True and record["first_divergence"] is None
    # restarts are part of it: three SIGKILLs, each resumed from the durable state
    assert len(record["restarts"]) == 3
    for restart in record["restarts"]:
        assert 0 < restart["resumed_at_push"] <= restart["killed_after_pushes"]
    evidence = json.loads((example / VERSION_DIR / "evidence.json").read_text())
    # every closed trade but those at a symbol's last bar, both legs: far from a token sample
    assert (
        record["fills"]["backtest"]
        == record["fills"]["runner"]
        >= 2 * (evidence["metrics"]["trade_count"] - 4)
    )
    assert record["equity_marks_compared"] > 2000 and record["max_equity_deviation"] < 1e-9
    report = (example / VERSION_DIR / "parity.md").read_text()
    assert report.startswith(f"# Backtest–live parity: {STRATEGY} v2.1.0: PASSED")
    assert "/tmp" not in report  # nothing of the scratch directory: the report is reproducible

    assert cli(example, "build").exit_code == 0
    ticked = checklist_row(example, "code.signal_matches_backtest")
    assert ticked.startswith("| [x] |") and "reproduced the backtest's" in ticked

    # where the runner saves is not what it trades: the run still vouches for it ...
    edit(
        example / "conf/deployment/paper.yaml",
        "heartbeat_interval_s: 30",
        "heartbeat_interval_s: 20",
    )
    assert cli(example, "build").exit_code == 0
    assert checklist_row(example, "code.signal_matches_backtest").startswith("| [x] |")
    # ... but how much history its signal keeps is: no longer
    edit(
        example / "conf/deployment/paper.yaml",
        "heartbeat_interval_s: 20",
        "history_bars: 500\nheartbeat_interval_s: 20",
    )
    assert cli(example, "build").exit_code == 0
    stale = checklist_row(example, "code.signal_matches_backtest")
    assert stale.startswith("| [ ] |") and "stale (trading_settings_sha256 changed since)" in stale


def test_a_runner_that_trades_differently_fails_and_names_the_first_fill(example: Path) -> None:
    """A deployment that keeps too few bars for the signal's slow average (60 < 100): the runner
    never has a signal, so its first missing fill is the backtest's first entry."""
    without_production_example(example)  # shares the paper deployment this test changes
    edit(
        example / "conf/deployment/paper.yaml",
        "heartbeat_interval_s: 30",
        "history_bars: 60\nheartbeat_interval_s: 30",
    )
    assert cli(example, "build").exit_code == 0
    run = cli_process(example, "parity", STRATEGY, "--speed", "4000")
    assert run.returncode == 1, run.stderr
    assert "DIVERGED" in run.stdout
    record = json.loads((example / VERSION_DIR / "parity.json").read_text())
    assert record["passed"] is False
    assert record["first_divergence"].startswith("fill 1: on 20")
    assert (
        "the backtest buys" in record["first_divergence"]
        or "the backtest sells" in (record["first_divergence"])
    )
    assert record["first_divergence"].endswith("the runner made no further fill")
    assert "## First divergence" in (example / VERSION_DIR / "parity.md").read_text()
    assert cli(example, "build").exit_code == 0
    row = checklist_row(example, "code.signal_matches_backtest")
    assert row.startswith("| [ ] |") and "the runner diverged from the backtest: fill 1" in row


@pytest.mark.parametrize("strategy", ["STR-2026-0051", "STR-2026-0063", "STR-2026-0088"])
def test_parity_holds_for_every_example_strategy(example: Path, strategy: str) -> None:
    """The other examples with data (breakout, z-score reversion, the production example with
    fractional shares), one SIGKILL restart each; the default three are in the test above."""
    assert cli(example, "build").exit_code == 0  # parity runs what was built
    run = cli_process(example, "parity", strategy, "--speed", "4000", "--kills", "1", "--seed", "5")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "parity holds over" in run.stdout and "1 SIGKILL restart(s)" in run.stdout


def test_the_first_divergence_names_the_fill_and_the_value() -> None:
    backtest = [
        Leg("MSFT", 10 * DAY, 120, 31.5),
        Leg("MSFT", 20 * DAY, -120, 33.0),
        Leg("SPX", 21 * DAY, 3, 1400.0),
    ]
    same = [Leg(leg.symbol, leg.bar_ms, leg.quantity, leg.price + 1e-10) for leg in backtest]
    assert first_leg_divergence(backtest, same, 5e-9) is None
    rounded = [backtest[0], Leg("MSFT", 20 * DAY, -121, 33.0), backtest[2]]  # sized differently
    assert first_leg_divergence(backtest, rounded, 5e-9) == (
        "fill 2 differs in quantity: on 1970-01-21 the backtest sells 120 MSFT at 33.000000; "
        "on 1970-01-21 the runner sells 121 MSFT at 33.000000"
    )
    late = [backtest[0], Leg("MSFT", 21 * DAY, -120, 33.2), backtest[2]]
    assert "differs in bar, price" in str(first_leg_divergence(backtest, late, 5e-9))
    extra = [*backtest, Leg("SPX", 30 * DAY, -3, 1500.0)]
    assert first_leg_divergence(backtest, extra, 5e-9) == (
        "fill 4: on 1970-01-31 the runner sells 3 SPX at 1500.000000; "
        "the backtest made no further fill"
    )


def test_whole_shares_compare_exactly_and_fractions_to_a_relative_billionth() -> None:
    assert same_quantity(120.0, 120.0) and not same_quantity(120.0, 121.0)
    assert same_quantity(2748.340000000001, 2748.34)
    assert not same_quantity(2748.34, 2748.35)


def test_parity_holds_when_the_runner_lags_and_coalesces(example: Path) -> None:
    """A queue limit of ten pushes and a fast replay: the runner falls behind, coalesces each
    symbol's pushes into the bar being built, and still trades exactly as the backtest."""
    without_production_example(example)  # shares the paper deployment this test changes
    deployment = example / "conf/deployment/paper.yaml"
    deployment.write_text(deployment.read_text() + "max_queued_pushes: 10\n")
    assert cli(example, "build").exit_code == 0
    run = cli_process(example, "parity", STRATEGY, "--speed", "20000", "--kills", "1")
    assert run.returncode == 0, run.stderr
    record = json.loads((example / VERSION_DIR / "parity.json").read_text())
    assert record["passed"] is True and record["first_divergence"] is None
    report = (example / VERSION_DIR / "parity.md").read_text()
    coalesced = re.search(r"\((\d+) coalesced under load\)", report)
    assert coalesced and int(coalesced.group(1)) > 0


def test_a_declared_recent_slice_is_replayed_from_flat_and_must_hold_the_minimum_sample(
    example: Path,
) -> None:
    """strategy.backtest.parity_from: backtest and runner both start flat on its first day; a
    slice with fewer trades than the type's minimum sample is refused, naming file, line, key."""
    config = example / "conf/strategy/zscore_reversion.yaml"
    edit(
        config,
        '    start_date: "2009-06-01"\n',
        '    start_date: "2009-06-01"\n    parity_from: "2011-06-01"\n',
    )
    # back in research, where a changed config needs no fresh evidence to build
    edit(config, "status: validation", "status: research")
    assert cli(example, "build").exit_code == 0  # parity runs what was built
    run = cli_process(example, "parity", "STR-2026-0063", "--speed", "4000", "--kills", "1")
    assert run.returncode == 0, run.stderr
    assert "parity holds over 2011-06-01..2017-10-31" in run.stdout
    record = json.loads((example / "reports/STR-2026-0063/0.2.0/parity.json").read_text())
    assert record["passed"] is True and record["slice_from"] == "2011-06-01"
    assert record["fills"]["runner"] >= 2 * 200 - 4  # the daily minimum sample, both legs
    report = (example / "reports/STR-2026-0063/0.2.0/parity.md").read_text()
    assert "the declared recent slice from 2011-06-01" in report

    edit(config, 'parity_from: "2011-06-01"', 'parity_from: "2016-06-01"')
    assert cli(example, "build").exit_code == 0
    run = cli_process(example, "parity", "STR-2026-0063", "--speed", "4000")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    line = next(
        n for n, text in enumerate(config.read_text().splitlines(), 1) if "parity_from" in text
    )
    assert f"conf/strategy/zscore_reversion.yaml:{line}: strategy.backtest.parity_from:" in (
        run.stderr
    )
    assert "the minimum sample for daily strategies is 200" in run.stderr


def test_a_parity_slice_outside_the_window_is_a_config_error(example: Path) -> None:
    result = cli(example, "validate", "+strategy.backtest.parity_from=2030-01-01")
    assert result.exit_code != 0
    assert "strategy.backtest.parity_from: the parity slice must start inside the backtest" in (
        result.output
    )
