"""`qcompile signoff` and `qcompile promote`: what they write, and how the gates read it."""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from qcompile.compiler.rules.gates import CHECKLIST_ITEMS, PHASES, SignedArtefact, evaluate
from qcompile.compiler.schema import SIGNOFF_ARTEFACTS, TIMESTAMP_PATTERN
from qcompile.hashing import sha256_file
from qcompile.lifecycle.signoff import ROLES, sign
from qcompile.project import Project
from tests.conftest import REPO, cli, edit, tree_digest

FILES = {
    "STR-2026-0007": "ma_trend.yaml",
    "STR-2026-0042": "earnings_gap.yaml",
    "STR-2026-0051": "breakout.yaml",
    "STR-2026-0063": "zscore_reversion.yaml",
}
FIXED = datetime(2026, 9, 1, 12, 30, 5, tzinfo=UTC)


def _strategy_file(root: Path, strategy_id: str) -> Path:
    return root / "conf/strategy" / FILES[strategy_id]


def _changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines between two texts; every other line is byte-identical."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    removed: list[str] = []
    added: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed += old[i1:i2]
            added += new[j1:j2]
    return removed, added


def _signoff(root: Path, strategy_id: str) -> dict:
    data = yaml.safe_load(_strategy_file(root, strategy_id).read_text())
    return data["strategy"]


@pytest.mark.parametrize("strategy_id", sorted(FILES))
def test_signing_changes_only_the_signed_lines_of_the_real_conf_files(
    example: Path, strategy_id: str
) -> None:
    path = _strategy_file(example, strategy_id)
    assert path.read_bytes() == (REPO / "conf/strategy" / FILES[strategy_id]).read_bytes()
    before = path.read_text()
    researcher = yaml.safe_load(before)["strategy"]["researcher"]
    had_signoffs = "\n  signoffs:\n" in before
    had_brief = "\n    brief:\n      by:" in before

    brief = sign(
        Project(example),
        strategy_id,
        researcher,
        role="researcher",
        artefact="brief",
        clock=lambda: FIXED,
    )
    after_brief = path.read_text()
    removed, added = _changes(before, after_brief)
    expected = [
        f"      by: {researcher}\n",
        '      at: "2026-09-01T12:30:05Z"\n',
        f"      sha256: {brief.record['sha256']}\n",
    ]
    if not had_brief:
        expected.insert(0, "    brief:\n")
    if not had_signoffs:
        expected.insert(0, "  signoffs:\n")
    # only the sign-off's own lines differ; an existing one is updated in place
    assert {line.strip().split(":")[0] for line in removed} <= (
        {"by", "at"} if had_brief else set()
    )
    assert set(added) <= set(expected)
    assert set(expected) - set(added) <= set(before.splitlines(keepends=True))
    record = yaml.safe_load(after_brief)["strategy"]["signoffs"]["brief"]
    assert record == {
        "by": researcher,
        "at": "2026-09-01T12:30:05Z",
        "sha256": brief.record["sha256"],
    }

    item = sign(Project(example), strategy_id, "ops@quantfund.com", item="docs.on_call")
    removed, added = _changes(after_brief, path.read_text())
    assert removed == []
    assert added == [
        "  checklist:\n",
        "    docs.on_call:\n",
        "      by: ops@quantfund.com\n",
        f'      at: "{item.record["at"]}"\n',
        "      attests: On-call contact list is posted in the operations channel\n",
    ]
    assert re.fullmatch(TIMESTAMP_PATTERN, item.record["at"])
    assert path.read_text().startswith("# @package _global_\n")  # comments kept


def test_report_signoff_meets_the_gate_until_the_report_changes(example: Path) -> None:
    path = _strategy_file(example, "STR-2026-0063")
    report = example / "reports/STR-2026-0063/0.2.0/report.md"
    result = cli(
        example,
        "signoff",
        "STR-2026-0063",
        "--role",
        "researcher",
        "--by",
        "s.okafor@quantfund.com",
    )
    assert result.exit_code == 0, result.output
    assert (
        "replaces the sign-off by s.okafor@quantfund.com at 2026-08-12T10:20:00Z" in result.output
    )
    record = _signoff(example, "STR-2026-0063")["signoffs"]["report"]
    assert record["sha256"] == sha256_file(report)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", record["at"])

    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    assert "stale" not in built.output
    assert record["sha256"] in (example / "generated/STR-2026-0063/passport.yaml").read_text()

    report.write_text(report.read_text() + "\nedited after signing\n")
    signed = path.read_bytes()
    stale = cli(example, "build")
    assert stale.exit_code == 2
    assert (
        f"phase 'validation' requires signoff.report: report sign-off by s.okafor@quantfund.com "
        f"at {record['at']} is stale: reports/STR-2026-0063/0.2.0/report.md changed since it "
        "was signed [gate.signoff.report]"
    ) in stale.output
    assert path.read_bytes() == signed

    again = cli(
        example,
        "signoff",
        "STR-2026-0063",
        "--role",
        "researcher",
        "--by",
        "s.okafor@quantfund.com",
    )
    assert again.exit_code == 0, again.output
    assert cli(example, "build").exit_code == 0


def test_a_stale_signoff_the_phase_does_not_need_yet_is_a_warning(example: Path) -> None:
    """STR-2026-0007 is in research; its report sign-off belongs to the validation gate."""
    assert "signoff.report" in cli(example, "list").output  # not signed yet
    signed = cli(
        example, "signoff", "STR-2026-0007", "--role", "researcher", "--by", "a.novak@quantfund.com"
    )
    assert signed.exit_code == 0, signed.output
    listed = cli(example, "list").output
    row = next(line for line in listed.splitlines() if "STR-2026-0007" in line)
    # its short sample no longer holds it back: §3.2 lets it into validation with a warning
    assert "ready" in row and "signoff.report" not in row and "minimum_sample" not in row

    report = example / "reports/STR-2026-0007/2.1.0/report.md"
    report.write_text(report.read_text() + "\n")
    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    assert "warning: strategy.signoffs.report: report sign-off by a.novak" in built.output
    assert "reports/STR-2026-0007/2.1.0/report.md changed since it was signed [signoff.stale]" in (
        built.output
    )
    assert "qcompile signoff STR-2026-0007 --role researcher --by EMAIL" in built.output
    row = next(line for line in cli(example, "list").output.splitlines() if "STR-2026-0007" in line)
    assert "signoff.report" in row
    passport = (example / "generated/STR-2026-0007/passport.yaml").read_text()
    assert "report.md changed since it was signed" in passport


def test_editing_the_alpha_thesis_makes_the_brief_signoff_stale(example: Path) -> None:
    """STR-2026-0007 is in research, whose gate needs the signed brief."""
    path = _strategy_file(example, "STR-2026-0007")
    result = cli(
        example,
        "signoff",
        "STR-2026-0007",
        "--role",
        "researcher",
        "--artefact",
        "brief",
        "--by",
        "a.novak@quantfund.com",
    )
    assert result.exit_code == 0, result.output
    assert cli(example, "validate").exit_code == 0
    edit(path, "trend over months", "trend over weeks")
    stale = cli(example, "validate")
    assert stale.exit_code == 2
    assert "requires signoff.brief: brief sign-off by a.novak@quantfund.com" in stale.output
    assert "the research brief (strategy.alpha_thesis and strategy.brief) changed" in stale.output
    edit(path, "trend over weeks", "trend over months")  # the same words again: the same hash
    assert cli(example, "validate").exit_code == 0


def test_hand_written_signoffs_stay_valid(example: Path) -> None:
    result = cli(example, "build")
    assert result.exit_code == 0, result.output
    assert "stale" not in result.output


def test_checklist_item_signoff_is_recorded_and_counted(example: Path) -> None:
    item = "monitoring.dashboard"  # a manual item: only a sign-off ticks it
    result = cli(example, "signoff", "STR-2026-0063", "--item", item, "--by", "ops@quantfund.com")
    assert result.exit_code == 0, result.output
    assert f"checklist item {item} (Dashboard shows" in result.output
    record = _signoff(example, "STR-2026-0063")["checklist"][item]
    assert set(record) == {"by", "at", "attests"} and record["by"] == "ops@quantfund.com"
    assert record["attests"] == CHECKLIST_ITEMS[item]
    assert cli(example, "build").exit_code == 0
    passport = yaml.safe_load((example / "generated/STR-2026-0063/passport.yaml").read_text())
    assert passport["checklist"][item]["by"] == "ops@quantfund.com"
    checklist = (example / "generated/STR-2026-0063/checklist.md").read_text()
    assert f"| [x] | {CHECKLIST_ITEMS[item]}" in checklist
    unticked = checklist.count("| [ ] |")
    missing = " ".join(passport["lifecycle"]["next_gate_missing"])
    assert f"{unticked} checklist item(s) not ticked" in missing
    assert item not in missing


def test_several_items_are_signed_at_once_or_none_is(example: Path) -> None:
    strategy_file = example / "conf/strategy/zscore_reversion.yaml"
    before = strategy_file.read_bytes()
    items = ["monitoring.dashboard", "docs.on_call", "data.api_permissions"]
    wrong = ["--item", "monitoring.dashbord", "--item", "code.safe_state"]
    refused = cli(
        example, "signoff", "STR-2026-0063", "--item", items[0], *wrong, "--by", "a@quantfund.com"
    )
    assert refused.exit_code == 2
    assert "unknown checklist item 'monitoring.dashbord'" in refused.output
    assert "code.safe_state" in refused.output and "nothing was signed" in refused.output
    assert strategy_file.read_bytes() == before
    flags = [part for item in items for part in ("--item", item)]
    signed = cli(example, "signoff", "STR-2026-0063", *flags, "--by", "ops@quantfund.com")
    assert signed.exit_code == 0, signed.output
    records = _signoff(example, "STR-2026-0063")["checklist"]
    assert [records[item]["by"] for item in items] == ["ops@quantfund.com"] * 3
    assert len({records[item]["at"] for item in items}) == 1  # one moment for the batch
    both = cli(
        example, "signoff", "STR-2026-0063", *flags, "--role", "researcher", "--by", "a@b.com"
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_the_quant_engineer_signs_the_generated_checklist(example: Path) -> None:
    missing = cli(
        example, "signoff", "STR-2026-0063", "--role", "quant_engineer", "--by", "eng@quantfund.com"
    )
    assert missing.exit_code == 2
    assert "generated/STR-2026-0063/checklist.md does not exist; run `qcompile build` first" in (
        missing.output
    )
    assert cli(example, "build").exit_code == 0
    checklist = example / "generated/STR-2026-0063/checklist.md"
    signed = cli(
        example, "signoff", "STR-2026-0063", "--role", "quant_engineer", "--by", "eng@quantfund.com"
    )
    assert signed.exit_code == 0, signed.output
    assert _signoff(example, "STR-2026-0063")["signoffs"]["checklist"]["sha256"] == sha256_file(
        checklist
    )
    # new evidence changes what the checklist says: the signature no longer covers it
    (example / "coverage.json").write_text(
        '{"files": {"src/qcompile/signals/reversion.py": {"summary": {"percent_covered": 90}}}}'
    )
    edit(
        example / "conf/qcompile.yaml",
        "  coverage_report: reports/coverage/signals.json",
        "  coverage_report: coverage.json",
    )
    # the production example's checklist changed too: in production that fails the build
    refused = cli(example, "validate")
    assert refused.exit_code == 2, refused.output
    assert (
        "fast_reversion.yaml:15: error: strategy.status: phase 'production' requires "
        "signoff.checklist: checklist sign-off by j.chen@quantfund.com" in refused.output
    )
    assert "generated/STR-2026-0088/checklist.md changed since it was signed" in refused.output
    # its engineer re-signs what the next build will write; in validation the stale sign-off
    # is only reported
    resigned = cli(
        example,
        "signoff",
        "STR-2026-0088",
        "--role",
        "quant_engineer",
        "--by",
        "j.chen@quantfund.com",
    )
    assert resigned.exit_code == 0, resigned.output
    validated = cli(example, "validate")
    assert validated.exit_code == 0, validated.output
    assert "checklist sign-off by eng@quantfund.com" in validated.output
    assert "generated/STR-2026-0063/checklist.md changed since it was signed" in validated.output
    assert cli(example, "build").exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--item", "docs.runbok", "--by", "o@q.com"], "did you mean 'docs.runbook'?"),
        (["--role", "researcher", "--by", "not-an-email"], "--by must be an email address"),
        (
            ["--role", "peer_reviewer", "--artefact", "report", "--by", "p@q.com"],
            "the report is signed by the researcher, not the peer_reviewer",
        ),
        (
            ["--role", "researcher", "--artefact", "checklist", "--by", "s.okafor@quantfund.com"],
            "the checklist is signed by the quant_engineer, not the researcher",
        ),
        (["--role", "researcher", "--by", "x@q.com"], "signed by the strategy's researcher"),
        (
            ["--role", "peer_reviewer", "--by", "s.okafor@quantfund.com"],
            "the peer reviewer must not be the strategy's researcher",
        ),
        (["--role", "researcher", "--item", "docs.runbook", "--by", "o@q.com"], "not both"),
        (["--by", "o@q.com"], "give --role"),
    ],
)
def test_refused_signoffs_leave_the_file_unchanged(
    example: Path, args: list[str], message: str
) -> None:
    before = tree_digest(example / "conf")
    result = cli(example, "signoff", "STR-2026-0063", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert tree_digest(example / "conf") == before


REPORT_DIR = "reports/STR-2026-0063/0.2.0"


@pytest.mark.parametrize(
    ("role", "file", "content", "expected"),
    [
        (
            "peer_reviewer",
            "evidence.json",
            b"\xff\xfe{}",
            "evidence.json:1: error: not UTF-8 text: byte 0xff at offset 0 [evidence.malformed]",
        ),
        (
            "peer_reviewer",
            "evidence.json",
            b"",
            "evidence.json: error: empty: expected a JSON object [evidence.malformed]",
        ),
        (
            "peer_reviewer",
            "evidence.json",
            b"[1, 2]",
            "evidence.json: error: expected a mapping at the top, got a list [evidence.malformed]",
        ),
        (
            "peer_reviewer",
            "evidence.json",
            b'{"minimum_sample": [1]}',
            "evidence.json: error: minimum_sample: expected a mapping, got a list",
        ),
        (
            "researcher",
            "report.md",
            b"# Report\ncaf\xe9\n",
            "report.md:2: error: not UTF-8 text: byte 0xe9 at offset 12 [signoff.artefact]",
        ),
        ("researcher", "report.md", b"", "report.md: error: empty: nothing to sign"),
        ("researcher", "report.md", b" \n\n", "report.md: error: empty: nothing to sign"),
    ],
)
def test_a_corrupt_artefact_is_not_signed(
    example: Path, role: str, file: str, content: bytes, expected: str
) -> None:
    """A sign-off records the hash of what was reviewed: of garbage it would vouch for nothing."""
    (example / REPORT_DIR / file).write_bytes(content)
    before = tree_digest(example / "conf")
    by = "s.okafor@quantfund.com" if role == "researcher" else "p@quantfund.com"
    result = cli(example, "signoff", "STR-2026-0063", "--role", role, "--by", by)
    assert result.exit_code == 2, result.output
    assert f"{REPORT_DIR}/{expected}" in result.output
    assert "written by `qcompile backtest STR-2026-0063`: run it again" in result.output
    assert "nothing was written" in result.output and "Traceback" not in result.output
    assert tree_digest(example / "conf") == before


def test_a_checklist_that_is_not_utf8_is_not_signed(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    checklist = example / "generated/STR-2026-0063/checklist.md"
    checklist.write_bytes(checklist.read_bytes() + b"caf\xe9\n")
    line = checklist.read_bytes().count(b"\n")
    before = tree_digest(example / "conf")
    result = cli(
        example, "signoff", "STR-2026-0063", "--role", "quant_engineer", "--by", "e@quantfund.com"
    )
    assert result.exit_code == 2, result.output
    assert (
        f"generated/STR-2026-0063/checklist.md:{line}: error: not UTF-8 text: byte 0xe9"
    ) in result.output
    assert "[signoff.artefact]" in result.output and "Traceback" not in result.output
    assert "written by `qcompile build`: run it again, review the result, then sign" in (
        result.output
    )
    assert tree_digest(example / "conf") == before


def test_no_report_yet_says_to_run_the_backtest(example: Path) -> None:
    before = tree_digest(example / "conf")
    result = cli(
        example, "signoff", "STR-2026-0042", "--role", "researcher", "--by", "j.chen@quantfund.com"
    )
    assert result.exit_code == 2
    assert "reports/STR-2026-0042/1.3.2/report.md does not exist; " in result.output
    assert "run `qcompile backtest STR-2026-0042` first" in result.output
    assert tree_digest(example / "conf") == before


def test_promote_refuses_listing_the_unmet_requirements(example: Path) -> None:
    before = tree_digest(example / "conf")
    result = cli(example, "promote", "STR-2026-0051", "--to", "research")
    assert result.exit_code == 2
    assert "cannot move STR-2026-0051 from ideation to research: 2 unmet requirement(s)" in (
        result.output
    )
    assert (
        "conf/strategy/breakout.yaml:14: error: strategy.status: phase 'research' requires "
        "brief.data_requirements" in result.output
    )
    assert "requires signoff.brief: no brief sign-off with a timestamp" in result.output
    skipped = cli(example, "promote", "STR-2026-0051", "--to", "validation")
    assert skipped.exit_code == 2 and "promote one phase at a time (--to research)" in (
        skipped.output
    )
    sample = cli(example, "promote", "STR-2026-0007", "--to", "validation")
    assert sample.exit_code == 2 and "requires signoff.report" in sample.output
    assert "minimum_sample" not in sample.output  # §3.2: a short sample may enter validation
    same = cli(example, "promote", "STR-2026-0007", "--to", "research")
    assert same.exit_code == 2 and "already in research" in same.output
    assert tree_digest(example / "conf") == before


def test_promote_moves_a_strategy_whose_gate_is_met(example: Path) -> None:
    path = _strategy_file(example, "STR-2026-0051")
    edit(
        path,
        '    expected_signal: "Rare entries',
        '    data_requirements: "Ten years of daily bars."\n    expected_signal: "Rare entries',
    )
    signed = cli(
        example,
        "signoff",
        "STR-2026-0051",
        "--role",
        "researcher",
        "--artefact",
        "brief",
        "--by",
        "m.ruiz@quantfund.com",
    )
    assert signed.exit_code == 0, signed.output
    before = path.read_text()
    result = cli(example, "promote", "STR-2026-0051", "--to", "research")
    assert result.exit_code == 0, result.output
    assert "promoted STR-2026-0051: ideation -> research in conf/strategy/breakout.yaml" in (
        result.output
    )
    assert _changes(before, path.read_text()) == (
        ["  status: ideation\n"],
        ["  status: research\n"],
    )
    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    passport = yaml.safe_load((example / "generated/STR-2026-0051/passport.yaml").read_text())
    assert passport["status"] == "research"


def test_demotion_needs_only_the_lower_gate(example: Path) -> None:
    path = _strategy_file(example, "STR-2026-0063")
    before = path.read_text()
    result = cli(example, "promote", "STR-2026-0063", "--to", "ideation")
    assert result.exit_code == 0, result.output
    assert "demoted STR-2026-0063: validation -> ideation" in result.output
    assert _changes(before, path.read_text()) == (
        ["  status: validation\n"],
        ["  status: ideation\n"],
    )
    assert cli(example, "validate").exit_code == 0


def test_cli_choices_match_the_schema() -> None:
    from qcompile.cli import promote, signoff

    choices = {p.name: getattr(p.type, "choices", None) for p in signoff.params}
    assert tuple(choices["role"]) == ROLES
    assert tuple(choices["artefact"]) == SIGNOFF_ARTEFACTS
    assert tuple(next(p for p in promote.params if p.name == "to_phase").type.choices) == PHASES


def test_the_gate_compares_a_recorded_hash_with_the_current_one() -> None:
    gates = {"research": ["signoff.brief"]}
    record = {"by": "a@x.com", "at": "2026-01-01T00:00:00Z", "sha256": "a" * 64}
    strategy = {"signoffs": {"brief": record}}

    def unmet(current: SignedArtefact | None) -> list[str]:
        artefacts = {"brief": current} if current else None
        return [
            u.detail for u in evaluate("research", gates, strategy, {}, None, "", {}, artefacts)
        ]

    assert unmet(None) == []  # nothing to compare with: as before
    assert unmet(SignedArtefact("brief.md", "a" * 64)) == []
    assert unmet(SignedArtefact("brief.md", "b" * 64)) == [
        "brief sign-off by a@x.com at 2026-01-01T00:00:00Z is stale: brief.md changed since it "
        "was signed"
    ]
    assert unmet(SignedArtefact("brief.md", None))[0].endswith("brief.md no longer exists")
    del record["sha256"]  # hand-written: never stale
    assert unmet(SignedArtefact("brief.md", "b" * 64)) == []
