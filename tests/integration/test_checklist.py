"""The deployment checklist: items verified from evidence or signed, and the production gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from qcompile.compiler.rules.checklist import MANUAL_ITEMS, RUNTIME_ITEMS
from tests.conftest import cli, edit, routed_to_alpaca, without_production_example

STRATEGY = "STR-2026-0063"  # the z-score example, in validation with its report signed
ENGINEER = "j.chen@quantfund.com"
PEER = "m.ruiz@quantfund.com"


def checklist(root: Path) -> str:
    return (root / "generated" / STRATEGY / "checklist.md").read_text()


def row(text: str, item: str) -> str:
    (line,) = [line for line in text.splitlines() if f"(`{item}`)" in line]
    return line


def with_coverage(root: Path, percent: float) -> None:
    without_production_example(root)
    report = {
        "files": {"src/qcompile/signals/reversion.py": {"summary": {"percent_covered": percent}}}
    }
    (root / "coverage.json").write_text(json.dumps(report))
    edit(
        root / "conf/qcompile.yaml",
        "  coverage_report: reports/coverage/signals.json",
        "  coverage_report: coverage.json",
    )


def without_evidence(root: Path) -> None:
    """No runtime self-test result and no coverage report: what a new project starts with."""
    without_production_example(root)
    shutil.rmtree(root / "reports/runtime")
    edit(root / "conf/qcompile.yaml", "  coverage_report: reports/coverage/signals.json\n", "")


def test_items_are_verified_from_evidence_or_left_open(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    text = checklist(example)
    assert row(text, "code.signal_matches_backtest").startswith("| [x] |")
    assert "the runner (zscore_reversion@1.0.0) reproduced the backtest's" in row(
        text, "code.signal_matches_backtest"
    )
    assert row(text, "data.lookback_covered").startswith("| [x] |")
    assert row(text, "monitoring.dashboard").startswith("| [ ] |")
    assert "not signed" in row(text, "monitoring.dashboard")
    # the committed evidence: the signal tests' coverage and the runtime self-test
    assert "100 % covered in reports/coverage/signals.json" in row(text, "code.signal_coverage")
    for item in RUNTIME_ITEMS:
        assert row(text, item).startswith("| [x] | ")
        assert "reports/runtime/qcompile-" in row(text, item)
    assert "15 of 22 items ticked" in text


def test_without_evidence_the_automatic_items_stay_open(example: Path) -> None:
    without_evidence(example)
    assert cli(example, "build").exit_code == 0
    text = checklist(example)
    assert "no coverage report configured" in row(text, "code.signal_coverage")
    for item in RUNTIME_ITEMS:
        assert row(text, item).startswith("| [ ] |")
        assert "no runtime test evidence" in row(text, item)
    assert "9 of 22 items ticked" in text


def test_the_coverage_report_decides_the_coverage_item(example: Path) -> None:
    with_coverage(example, 91.4)
    assert cli(example, "build").exit_code == 0
    assert "91 % covered in coverage.json" in row(checklist(example), "code.signal_coverage")
    assert row(checklist(example), "code.signal_coverage").startswith("| [x] |")
    with_coverage_value = json.loads((example / "coverage.json").read_text())
    with_coverage_value["files"]["src/qcompile/signals/reversion.py"]["summary"][
        "percent_covered"
    ] = 61.0
    (example / "coverage.json").write_text(json.dumps(with_coverage_value))
    assert cli(example, "build").exit_code == 0  # the changed report is an input of the build
    assert "needs 80 %" in row(checklist(example), "code.signal_coverage")


def test_the_production_gate_refuses_an_incomplete_checklist(example: Path) -> None:
    edit(
        example / "conf/strategy/zscore_reversion.yaml", "status: validation", "status: production"
    )
    result = cli(example, "build")
    assert result.exit_code == 2
    assert "requires checklist.complete" in result.output
    assert "monitoring.dashboard" in result.output and "docs.on_call" in result.output
    assert not (example / "generated").exists()  # nothing written


def test_a_complete_checklist_opens_the_production_gate(example: Path) -> None:
    with_coverage(example, 88.0)
    assert cli(example, "build").exit_code == 0
    assert cli(example, "signoff", STRATEGY, "--role", "peer_reviewer", "--by", PEER).exit_code == 0
    path = example / "conf/strategy/zscore_reversion.yaml"
    path.write_text(  # the alerts production promises, with their thresholds
        path.read_text()
        + "  monitoring:\n    max_drawdown_pct: 20\n"
        + "  deployment_record:\n    monitoring_alerts: [drawdown_threshold]\n"
    )
    for item in sorted(MANUAL_ITEMS):
        signed = cli(example, "signoff", STRATEGY, "--item", item, "--by", ENGINEER)
        assert signed.exit_code == 0, signed.output
    refused = cli(example, "promote", STRATEGY, "--to", "production")
    assert refused.exit_code == 2 and "signoff.checklist" in refused.output
    assert cli(example, "build").exit_code == 0
    assert "22 of 22 items ticked: complete." in checklist(example)
    engineer = cli(example, "signoff", STRATEGY, "--role", "quant_engineer", "--by", ENGINEER)
    assert engineer.exit_code == 0, engineer.output
    paper = cli(example, "promote", STRATEGY, "--to", "production")
    assert paper.exit_code == 2 and "requires deployment.real_broker" in paper.output
    routed_to_alpaca(path)
    assert cli(example, "build").exit_code == 0
    engineer = cli(example, "signoff", STRATEGY, "--role", "quant_engineer", "--by", ENGINEER)
    assert engineer.exit_code == 0, engineer.output  # the checklist now names the broker
    assert "orders go to Alpaca (paper endpoint), account PA-TEST" in checklist(example)
    promoted = cli(example, "promote", STRATEGY, "--to", "production")
    assert promoted.exit_code == 0, promoted.output
    assert cli(example, "build").exit_code == 0
    passport = (example / "generated" / STRATEGY / "passport.yaml").read_text()
    assert "phase: production" in passport


def test_a_changed_checklist_of_a_production_strategy_can_be_re_signed(example: Path) -> None:
    test_a_complete_checklist_opens_the_production_gate(example)
    with_coverage_value = json.loads((example / "coverage.json").read_text())
    with_coverage_value["files"]["src/qcompile/signals/reversion.py"]["summary"][
        "percent_covered"
    ] = 93.0  # new evidence: the checklist text changes, so its sign-off is stale
    (example / "coverage.json").write_text(json.dumps(with_coverage_value))
    refused = cli(example, "build")
    assert refused.exit_code == 2 and "signoff.checklist" in refused.output
    assert "88 % covered" in checklist(example)  # nothing written: the old checklist stays
    resigned = cli(example, "signoff", STRATEGY, "--role", "quant_engineer", "--by", ENGINEER)
    assert resigned.exit_code == 0, resigned.output
    assert "-| [x] | Unit tests cover" in resigned.output and "93 % covered" in resigned.output
    assert cli(example, "build").exit_code == 0  # the signature matches what the build writes
    assert "93 % covered" in checklist(example)


PRODUCTION = "STR-2026-0088"  # the production example: its runtime items rest on the self-test
PRODUCTION_FILE = "conf/strategy/fast_reversion.yaml"


def test_a_hand_signature_cannot_tick_a_failing_automatic_item(example: Path) -> None:
    without_evidence(example)
    before = (example / "conf/strategy/zscore_reversion.yaml").read_bytes()
    refused = cli(example, "signoff", STRATEGY, "--item", "code.safe_state", "--by", ENGINEER)
    assert refused.exit_code == 2
    assert "checked automatically" in refused.output and "waive" in refused.output
    assert "checklist.code.safe_state" in refused.output
    assert (example / "conf/strategy/zscore_reversion.yaml").read_bytes() == before
    # written by hand instead: the build says it counts for nothing, and the item stays open
    path = example / "conf/strategy/zscore_reversion.yaml"
    path.write_text(
        path.read_text()
        + "  checklist:\n    code.safe_state:\n      by: j.chen@quantfund.com\n"
        + '      at: "2026-09-01T10:00:00Z"\n'
    )
    built = cli(example, "build")
    assert built.exit_code == 0
    lines = path.read_text().splitlines()
    line = lines.index("    code.safe_state:") + 1
    assert (
        f"conf/strategy/zscore_reversion.yaml:{line}: warning: strategy.checklist.code.safe_state:"
        " is checked automatically by the build; a hand signature does not tick it"
        " [checklist.signature_ignored]"
    ) in built.output
    text = row(checklist(example), "code.safe_state")
    assert text.startswith("| [ ] |")
    assert "no runtime test evidence" in text and "cannot tick an automatic item" in text


def test_without_its_runtime_evidence_production_needs_a_waiver_that_shows(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    shutil.rmtree(example / "reports/runtime")  # the runtime self-test result is gone
    refused = cli(example, "build")
    assert refused.exit_code == 2
    assert "requires checklist.complete" in refused.output
    for item in RUNTIME_ITEMS:
        assert item in refused.output
    waivers = "".join(
        f"    - requirement: checklist.{item}\n"
        "      reason: selftest reruns after the hotfix; runner watched by hand meanwhile\n"
        "      by: r.okafor@quantfund.com\n"
        '      at: "2026-11-30T09:00:00Z"\n'
        '      until: "2099-01-31"\n'
        for item in RUNTIME_ITEMS
    )
    path = example / PRODUCTION_FILE
    edit(path, "  waivers:\n", "  waivers:\n" + waivers)  # beside its real-broker waiver
    built = cli(example, "build")
    # the checklist text changed (the waivers show in it): the engineer's sign-off must be renewed
    assert built.exit_code == 2 and "signoff.checklist" in built.output
    resigned = cli(example, "signoff", PRODUCTION, "--role", "quant_engineer", "--by", ENGINEER)
    assert resigned.exit_code == 0, resigned.output
    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    assert "requires checklist.code.safe_state" in built.output and "[gate.waived]" in built.output
    generated = example / "generated"
    text = (generated / PRODUCTION / "checklist.md").read_text()
    assert "22 of 22 items ticked" in text
    safe = row(text, "code.safe_state")
    assert "| runtime tests, WAIVED |" in safe and "no runtime test evidence" in safe
    assert "**waived by r.okafor@quantfund.com until 2099-01-31" in safe
    passport = (generated / PRODUCTION / "passport.yaml").read_text()
    assert "checklist.code.safe_state: no runtime test evidence" in passport
    assert "checklist.code.safe_state" in (generated / "index.md").read_text()
    status = json.loads(cli(example, "status", "--json").output)
    (entry,) = [s for s in status["strategies"] if s["id"] == PRODUCTION]
    assert set(entry["waived_requirements"]) == {f"checklist.{i}" for i in RUNTIME_ITEMS} | {
        "deployment.real_broker"
    }


def test_a_manual_item_is_signed_not_waived(example: Path) -> None:
    path = example / PRODUCTION_FILE
    edit(
        path,
        "  waivers:\n",
        "  waivers:\n    - requirement: checklist.docs.on_call\n      reason: later\n"
        '      by: r.okafor@quantfund.com\n      at: "2026-11-30T09:00:00Z"\n'
        '      until: "2099-01-31"\n',
    )
    refused = cli(example, "build")
    assert refused.exit_code == 2
    assert "'checklist.docs.on_call' is a manual checklist item: it is signed" in refused.output


def test_a_signature_attests_to_the_wording_it_signed(example: Path) -> None:
    path = example / PRODUCTION_FILE
    edit(
        path,
        "attests: On-call contact list is posted in the operations channel",
        "attests: On-call contact list is drafted",
    )
    refused = cli(example, "build")
    assert refused.exit_code == 2
    assert "checklist item(s) not ticked: docs.on_call" in refused.output
    edit(path, "status: production", "status: validation")  # to see the checklist it writes
    assert cli(example, "build").exit_code == 0
    text = row((example / "generated" / PRODUCTION / "checklist.md").read_text(), "docs.on_call")
    assert text.startswith("| [ ] |")
    assert "attests to &#39;On-call contact list is drafted&#39;" in text or (
        "attests to 'On-call contact list is drafted'" in text
    )


def test_signing_an_item_records_what_it_attests_to(example: Path) -> None:
    without_production_example(example)
    signed = cli(example, "signoff", STRATEGY, "--item", "docs.on_call", "--by", ENGINEER)
    assert signed.exit_code == 0, signed.output
    text = (example / "conf/strategy/zscore_reversion.yaml").read_text()
    assert "attests: On-call contact list is posted in the operations channel" in text


def test_the_alert_thresholds_item_is_ticked_by_what_the_runner_will_act_on(
    example: Path,
) -> None:
    assert cli(example, "build").exit_code == 0
    text = row(
        (example / "generated" / PRODUCTION / "checklist.md").read_text(),
        "monitoring.alert_thresholds",
    )
    assert text.startswith("| [x] |") and "| auto |" in text
    assert (
        "the runner alerts on drawdown_threshold at 15 %; winrate_streak at 6; "
        "backtest_deviation at 20 %" in text
    )
    path = example / PRODUCTION_FILE
    edit(path, "    max_drawdown_pct: 15\n", "")
    refused = cli(example, "build")
    assert refused.exit_code == 2
    line = (
        path.read_text()
        .splitlines()
        .index(
            "    monitoring_alerts: [drawdown_threshold, winrate_streak, backtest_deviation, "
            "data_feed_heartbeat]"
        )
        + 1
    )
    assert (
        f"conf/strategy/fast_reversion.yaml:{line}: error: strategy.deployment_record."
        "monitoring_alerts: promises drawdown_threshold, but strategy.monitoring.max_drawdown_pct "
        "is not set" in refused.output
    ), refused.output
    edit(path, "[drawdown_threshold, winrate_streak", "[sharpe_drop, winrate_streak")
    unknown = cli(example, "build")
    assert unknown.exit_code == 2 and "was 'sharpe_drop' [schema.allowed]" in unknown.output


def test_the_deviation_alert_is_not_ticked_without_the_backtests_daily_statistics() -> None:
    """The runner compares the live days with the evidence's daily statistics: evidence without
    them (from before they existed) leaves it nothing to act on, and the item says so."""
    from qcompile.compiler.rules.checklist import _alert_thresholds

    strategy = {
        "monitoring": {"max_backtest_deviation_pct": 20},
        "deployment_record": {"monitoring_alerts": ["backtest_deviation"]},
    }
    daily = {"win_rate": 0.5, "mean_return": 0.001, "volatility": 0.01, "max_drawdown": -0.02}
    assert _alert_thresholds(strategy, {"daily": daily}) == (
        True,
        "the runner alerts on backtest_deviation at 20 %",
    )
    for evidence in (None, {}, {"daily": {**daily, "volatility": None}}):
        ticked, detail = _alert_thresholds(strategy, evidence)
        assert not ticked and "carries no daily statistics" in detail
