"""The deployment checklist: items verified from evidence or signed, and the production gate."""

from __future__ import annotations

import json
from pathlib import Path

from qcompile.compiler.rules.checklist import MANUAL_ITEMS, RUNTIME_ITEMS
from tests.conftest import cli, edit, without_production_example

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
        "  reports_dir:",
        "  coverage_report: coverage.json\n  reports_dir:",
    )


def test_items_are_verified_from_evidence_or_left_open(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    text = checklist(example)
    assert row(text, "code.signal_matches_backtest").startswith("| [x] |")
    assert "source 0f5a982dfe7a" in row(text, "code.signal_matches_backtest")
    assert row(text, "data.lookback_covered").startswith("| [x] |")
    assert row(text, "monitoring.dashboard").startswith("| [ ] |")
    assert "not signed" in row(text, "monitoring.dashboard")
    assert "no coverage report configured" in row(text, "code.signal_coverage")
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
    assert "monitoring.dashboard" in result.output and "code.signal_coverage" in result.output
    assert not (example / "generated").exists()  # nothing written


def test_a_complete_checklist_opens_the_production_gate(example: Path) -> None:
    with_coverage(example, 88.0)
    assert cli(example, "build").exit_code == 0
    assert cli(example, "signoff", STRATEGY, "--role", "peer_reviewer", "--by", PEER).exit_code == 0
    for item in sorted(MANUAL_ITEMS | set(RUNTIME_ITEMS)):
        signed = cli(example, "signoff", STRATEGY, "--item", item, "--by", ENGINEER)
        assert signed.exit_code == 0, signed.output
    refused = cli(example, "promote", STRATEGY, "--to", "production")
    assert refused.exit_code == 2 and "signoff.checklist" in refused.output
    assert cli(example, "build").exit_code == 0
    assert "22 of 22 items ticked: complete." in checklist(example)
    engineer = cli(example, "signoff", STRATEGY, "--role", "quant_engineer", "--by", ENGINEER)
    assert engineer.exit_code == 0, engineer.output
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
