"""The gates' floor through the CLI: a project cannot weaken the source document's requirements by
editing conf/qcompile.yaml, and §3.2 applies exactly (a short sample enters validation, not
production)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import cli, edit

VALIDATION_EXAMPLE = "conf/strategy/zscore_reversion.yaml"  # STR-2026-0063


def test_deleting_requirements_from_the_gates_does_not_open_production(example: Path) -> None:
    """The reported case: three requirements deleted, STR-2026-0063 declared in production."""
    for requirement in ("signoff.validation", "checklist.complete", "signoff.checklist"):
        edit(example / "conf/qcompile.yaml", f"    - {requirement}\n", "")
    edit(example / VALIDATION_EXAMPLE, "status: validation", "status: production")
    result = cli(example, "build")
    assert result.exit_code == 2
    for requirement in ("signoff.validation", "checklist.complete", "signoff.checklist"):
        assert f"phase 'production' requires {requirement}" in result.output
        assert f"does not ask for {requirement}: the source document requires it" in result.output
    assert "[gate.floor]" in result.output and "Traceback" not in result.output
    assert not (example / "generated").exists()  # nothing written


def test_a_weakened_gate_list_is_said_on_every_build_and_changes_no_gate(example: Path) -> None:
    built = cli(example, "build")
    assert built.exit_code == 0 and "gate.floor" not in built.output
    before = (example / "generated/STR-2026-0007/passport.yaml").read_text()
    edit(example / "conf/qcompile.yaml", "    - evidence.fresh\n", "")
    weakened = cli(example, "build")
    assert weakened.exit_code == 0
    assert "conf/qcompile.yaml:" in weakened.output
    assert "gates.validation: does not ask for evidence.fresh" in weakened.output
    assert (example / "generated/STR-2026-0007/passport.yaml").read_text() == before


def test_an_added_requirement_shows_in_the_passport_and_the_index(example: Path) -> None:
    edit(
        example / "conf/qcompile.yaml",
        "    - evidence.no_critical_failures\n    - signoff.report\n",
        "    - evidence.no_critical_failures\n    - signoff.report\n    - evidence.out_of_sample\n",
    )
    assert cli(example, "build").exit_code == 0
    passport = yaml.safe_load((example / "generated/STR-2026-0007/passport.yaml").read_text())
    lifecycle = passport["lifecycle"]
    assert "evidence.out_of_sample" in lifecycle["gates"]["validation"]
    assert lifecycle["beyond_the_floor"] == ["validation: evidence.out_of_sample"]
    index = (example / "generated/index.md").read_text()
    assert "beyond them validation: evidence.out_of_sample" in index


def test_a_short_sample_enters_validation_but_not_production(example: Path) -> None:
    """STR-2026-0007: 29 trades where a daily strategy needs 200 (§3.2)."""
    assert cli(example, "build").exit_code == 0
    signed = cli(
        example, "signoff", "STR-2026-0007", "--role", "researcher", "--by", "a.novak@quantfund.com"
    )
    assert signed.exit_code == 0, signed.output
    promoted = cli(example, "promote", "STR-2026-0007", "--to", "validation")
    assert promoted.exit_code == 0, promoted.output
    assert cli(example, "build").exit_code == 0
    passport = yaml.safe_load((example / "generated/STR-2026-0007/passport.yaml").read_text())
    missing = passport["lifecycle"]["next_gate_missing"]
    assert missing[0].startswith("evidence.minimum_sample: sample too small: 29 trades")
    refused = cli(example, "promote", "STR-2026-0007", "--to", "production")
    assert refused.exit_code != 0 and "evidence.minimum_sample" in refused.output


WAIVER = """  waivers:
    - requirement: signoff.report
      reason: the researcher is on leave; the head of research reviewed the report
      by: head.research@quantfund.com
      at: "2026-03-02T09:00:00Z"
      until: "{until}"
"""


def _waive_report_signoff(root: Path, until: str) -> None:
    strategy = root / "conf/strategy/ma_trend.yaml"
    edit(strategy, "status: research", "status: validation")
    edit(strategy, "  signoffs:\n", WAIVER.format(until=until) + "  signoffs:\n")


def test_a_waiver_passes_a_gate_and_shows_wherever_the_strategy_is(example: Path) -> None:
    _waive_report_signoff(example, "2099-12-31")
    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    assert (
        "warning: strategy.waivers: phase 'validation' requires signoff.report (no report "
        "sign-off with a timestamp); waived by head.research@quantfund.com until 2099-12-31: "
        "the researcher is on leave" in built.output
    )
    assert "[gate.waived]" in built.output
    passport = yaml.safe_load((example / "generated/STR-2026-0007/passport.yaml").read_text())
    (waived,) = passport["lifecycle"]["waived"]
    assert waived.startswith("signoff.report: no report sign-off with a timestamp; waived by")
    index = (example / "generated/index.md").read_text()
    assert "| validation (waived: signoff.report) |" in index


def test_an_expired_waiver_waives_nothing(example: Path) -> None:
    _waive_report_signoff(example, "2020-01-31")
    built = cli(example, "build")
    assert built.exit_code == 2
    assert "phase 'validation' requires signoff.report" in built.output
    assert "expired, it waives nothing: signoff.report: waived by" in built.output
    assert "[gate.waiver_expired]" in built.output
