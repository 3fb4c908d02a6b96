"""qcompile build end to end: outputs, no-change builds, --check, narrowing, overrides, removal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import cli, cli_process, copy_example_project, edit, tree_digest

IDS = ["STR-2026-0007", "STR-2026-0042", "STR-2026-0051", "STR-2026-0063", "STR-2026-0088"]


def test_build_writes_one_folder_per_strategy(
    example: Path,
) -> None:
    result = cli(example, "build")
    assert result.exit_code == 0, result.output
    generated = example / "generated"
    assert sorted(p.name for p in generated.iterdir() if p.is_dir()) == IDS
    for strategy_id in IDS:
        assert sorted(p.name for p in (generated / strategy_id).iterdir()) == [
            "backtest.py",
            "checklist.md",
            "config.yaml",
            "params.yaml",
            "passport.yaml",
            "rollback.sh",
            "runbook.md",
            "runner.py",
        ]
    passport = yaml.safe_load((generated / "STR-2026-0042/passport.yaml").read_text())
    assert passport["strategy_id"] == "STR-2026-0042"
    assert passport["name"] == "Earnings Gap Mean-Reversion"
    assert passport["backtest"]["slippage_bps"] == 5  # filled from the costs group
    assert passport["pins"]["signal"]["name"] == "gap_fill"
    assert len(passport["pins"]["signal"]["source_sha256"]) == 64
    assert passport["pins"]["data"]["timestamp"] == {
        "unit": "ms",
        "timezone": "UTC",
        "stamping": "bar_open",
    }
    assert passport["lifecycle"]["phase"] == "ideation"  # no local data: not in research
    assert passport["lifecycle"]["next_phase"] == "research"
    assert passport["lifecycle"]["next_gate_missing"] == []  # its brief is written and signed
    index = (generated / "index.md").read_text()
    for strategy_id in IDS:
        assert f"[{strategy_id}]({strategy_id}/passport.yaml)" in index
    phases = {
        strategy_id: yaml.safe_load((generated / strategy_id / "passport.yaml").read_text())
        for strategy_id in IDS
    }
    # the example walks every phase; the production one passed every gate, checklist included
    assert {p["lifecycle"]["phase"] for p in phases.values()} == {
        "ideation",
        "research",
        "validation",
        "production",
    }
    production = phases["STR-2026-0088"]["lifecycle"]
    assert production["phase"] == "production" and production["next_gate_missing"] == []
    checklist = (generated / "STR-2026-0088/checklist.md").read_text()
    assert "22 of 22 items ticked: complete." in checklist


def test_secrets_stay_references_everywhere(example: Path) -> None:
    secret = "tk_live_8f2a9c0d1e3b4a5968776655"
    result = cli(example, "build", env={"TICKDB_API_KEY": secret, "SLACK_WEBHOOK_URL": secret})
    assert result.exit_code == 0
    for path in (example / "generated").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(), path
    params = yaml.safe_load((example / "generated/STR-2026-0042/params.yaml").read_text())
    assert params["data"]["api_key"] == "${oc.env:TICKDB_API_KEY}"
    shown = cli(example, "show", "earnings_gap", env={"TICKDB_API_KEY": secret})
    assert shown.exit_code == 0
    assert "${oc.env:TICKDB_API_KEY}" in shown.output and secret not in shown.output


def test_rebuild_with_nothing_changed_touches_nothing(example: Path) -> None:
    cli(example, "build")
    generated = example / "generated"
    before = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in generated.rglob("*") if p.is_file()
    }
    result = cli(example, "build")
    assert result.exit_code == 0
    assert "up to date" in result.output
    after = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in generated.rglob("*") if p.is_file()
    }
    assert after == before


def test_a_change_rewrites_only_the_affected_files(example: Path) -> None:
    cli(example, "build")
    generated = example / "generated"
    untouched = generated / "STR-2026-0051/passport.yaml"
    inode = untouched.stat().st_ino
    edit(example / "conf/strategy/ma_trend.yaml", "fast: 20", "fast: 30")
    result = cli(example, "build")
    assert result.exit_code == 0, result.output
    assert "update  generated/STR-2026-0007/params.yaml" in result.output
    assert "STR-2026-0051" not in result.output
    assert untouched.stat().st_ino == inode  # carried over by hard link, not rewritten
    params = yaml.safe_load((generated / "STR-2026-0007/params.yaml").read_text())
    assert params["signal"]["params"]["fast"] == 30


def test_check_reports_stale_files_and_writes_nothing(example: Path) -> None:
    cli(example, "build")
    assert cli(example, "build", "--check").exit_code == 0
    edit(example / "conf/costs/retail.yaml", "slippage_bps: 5", "slippage_bps: 6")
    before = tree_digest(example / "generated")
    result = cli_process(example, "build", "--check")
    assert result.returncode == 1
    assert "stale: generated/STR-2026-0042/passport.yaml" in result.stderr
    assert "stale: generated/STR-2026-0051/passport.yaml" not in result.stderr  # uses institutional
    assert "Traceback" not in result.stderr
    assert tree_digest(example / "generated") == before


def test_check_fails_on_a_hand_edited_artefact(example: Path) -> None:
    cli(example, "build")
    edit(example / "generated/STR-2026-0042/params.yaml", "min_gap_pct: 3.0", "min_gap_pct: 9.0")
    result = cli(example, "build", "--check")
    assert result.exit_code == 1
    assert "stale: generated/STR-2026-0042/params.yaml" in result.output


def test_removed_strategy_loses_its_folder(example: Path) -> None:
    cli(example, "build")
    (example / "conf/strategy/breakout.yaml").unlink()
    result = cli(example, "build")
    assert result.exit_code == 0
    assert "remove  generated/STR-2026-0051/passport.yaml" in result.output
    assert not (example / "generated/STR-2026-0051").exists()
    assert "STR-2026-0051" not in (example / "generated/index.md").read_text()


def test_overrides_apply_to_selected_strategies_only(example: Path) -> None:
    cli(example, "build")
    result = cli(
        example,
        "build",
        "--strategy",
        "STR-2026-0042",
        "costs=zero",
        "strategy.signal.params.min_gap_pct=4.0",
    )
    assert result.exit_code == 0, result.output
    params = yaml.safe_load((example / "generated/STR-2026-0042/params.yaml").read_text())
    assert params["costs"] == {"slippage_bps": 0, "commission_per_share": 0}
    assert params["signal"]["params"]["min_gap_pct"] == 4.0
    other = yaml.safe_load((example / "generated/STR-2026-0007/params.yaml").read_text())
    assert other["costs"]["slippage_bps"] == 5  # not selected: left as it was
    header = (example / "generated/STR-2026-0042/params.yaml").read_text().splitlines()[0]
    assert "with overrides [costs=zero, strategy.signal.params.min_gap_pct=4.0]" in header
    # a build from conf/ alone no longer matches: generated/ records the overrides
    assert cli(example, "build", "--check").exit_code == 1


def test_two_builds_with_different_hash_seeds_are_byte_identical(
    tmp_path: Path, example: Path
) -> None:
    second = copy_example_project(tmp_path / "second")
    for root, seed in ((example, "1"), (second, "4242")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "QCOMPILE_PROJECT": str(root)}
        subprocess.run(
            [sys.executable, "-m", "qcompile.cli", "build"],
            env=env,
            check=True,
            capture_output=True,
        )
    assert tree_digest(example / "generated") == tree_digest(second / "generated")
    assert str(tmp_path) not in "".join(
        (example / "generated" / p).read_text() for p in tree_digest(example / "generated")
    )


def test_failed_build_leaves_generated_exactly_as_it_was(example: Path) -> None:
    cli(example, "build")
    before = tree_digest(example / "generated")
    edit(example / "conf/strategy/ma_trend.yaml", "fast: 20", "fast: -3\n      bogus: 1")
    result = cli_process(example, "build")
    assert result.returncode == 2
    assert tree_digest(example / "generated") == before
    assert not any(p.name.startswith(".generated") for p in example.iterdir())


def test_a_write_error_is_one_line_and_changes_nothing(example: Path) -> None:
    cli(example, "build")
    before = tree_digest(example / "generated")
    edit(example / "conf/strategy/ma_trend.yaml", "fast: 20", "fast: 30")
    # a file where this process's build stages its tree: the writer cannot make its directory
    blocker = example / f".generated.staging-{os.getpid()}"
    blocker.write_text("in the way\n")
    result = cli(example, "build")
    assert result.exit_code == 2
    assert result.output == (
        f"error: cannot write {blocker.name}: File exists; generated/ is unchanged\n"
    )
    assert tree_digest(example / "generated") == before
    blocker.unlink()
    assert cli(example, "build").exit_code == 0
    assert tree_digest(example / "generated") != before


def test_validate_and_list(example: Path) -> None:
    result = cli(example, "validate")
    assert result.exit_code == 0 and "5 strategies valid" in result.output
    listing = cli(example, "list")
    assert listing.exit_code == 0
    for strategy_id in IDS:
        assert strategy_id in listing.output
    assert "gap_fill@1.0.0" in listing.output
    assert not (example / "generated").exists()  # neither command writes


def test_check_of_one_strategy_judges_only_its_folder(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    assert cli(example, "build", "--check", "-s", "STR-2026-0007").exit_code == 0
    runbook = example / "generated/STR-2026-0051/runbook.md"
    runbook.write_text(runbook.read_text() + "edited\n")
    assert cli(example, "build", "--check", "-s", "STR-2026-0007").exit_code == 0  # not its folder
    assert cli(example, "build", "--check", "-s", "STR-2026-0051").exit_code != 0
