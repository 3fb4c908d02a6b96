"""The lock: signal source hashes pin behaviour, and drift under an unchanged version is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import cli, edit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODULE = "team_signals/momentum.py"


def _pin(root: Path) -> dict:
    return yaml.safe_load((root / "generated/STR-2026-0051/passport.yaml").read_text())["pins"][
        "signal"
    ]


def test_team_signal_is_pinned_with_module_and_hash(team_project: Path) -> None:
    pin = _pin(team_project)
    assert pin["name"] == "team_momentum" and pin["module"] == "team_signals.momentum"
    assert len(pin["source_sha256"]) == 64


def test_comments_formatting_and_docstrings_do_not_count_as_changes(team_project: Path) -> None:
    before = _pin(team_project)["source_sha256"]
    edit(team_project / MODULE, '    """Long while', '    # a comment\n\n    """Now long while')
    edit(
        team_project / MODULE, "position = pl.when(", "position = pl.when(  # same logic\n        "
    )
    assert cli(team_project, "build").exit_code == 0
    assert _pin(team_project)["source_sha256"] == before


def test_unrelated_code_in_the_module_does_not_count(team_project: Path) -> None:
    before = _pin(team_project)["source_sha256"]
    edit(team_project / MODULE, "return 1", "return 2")
    assert cli(team_project, "build").exit_code == 0
    assert _pin(team_project)["source_sha256"] == before


@pytest.mark.parametrize(
    "old,new",
    [
        ("> threshold", ">= threshold"),  # the function itself
        ("max(window, LOOKBACK_FLOOR)", "max(window + 1, LOOKBACK_FLOOR)"),  # a helper it calls
        ("LOOKBACK_FLOOR = 2", "LOOKBACK_FLOOR = 3"),  # a constant the helper reads
    ],
)
def test_changed_logic_under_the_same_version_is_an_error(
    team_project: Path, old: str, new: str
) -> None:
    edit(team_project / MODULE, old, new)
    result = cli(team_project, "build")
    assert result.exit_code == 2
    assert (
        f"{MODULE}:15: error: signal team_momentum@1.0.0: source changed since it was locked"
        in result.output
    )
    assert "[lock.signal_drift]" in result.output
    assert "bump the version" in result.output


def test_bumping_the_version_moves_the_error_to_the_strategies_that_pin_it(
    team_project: Path,
) -> None:
    edit(team_project / MODULE, "> threshold", ">= threshold")
    edit(team_project / MODULE, 'version="1.0.0"', 'version="1.1.0"')
    result = cli(team_project, "build")
    assert result.exit_code == 2
    assert (
        "conf/strategy/breakout.yaml:25: error: strategy.signal.version: the library has "
        "team_momentum@1.1.0 (team_signals/momentum.py:15), the strategy pins 1.0.0"
    ) in result.output
    edit(team_project / "conf/strategy/breakout.yaml", "version: 1.0.0", "version: 1.1.0")
    assert cli(team_project, "build").exit_code == 0
    assert _pin(team_project)["version"] == "1.1.0"
    manifest = (team_project / "generated/manifest.json").read_text()
    assert '"version": "1.1.0"' in manifest


def test_missing_signal_package_is_reported(example: Path) -> None:
    edit(
        example / "conf/qcompile.yaml",
        "signal_packages: [qcompile.signals]",
        "signal_packages: [qcompile.signals, no_such_package]",
    )
    result = cli(example, "build")
    assert result.exit_code == 2
    assert (
        "conf/qcompile.yaml:8: error: project.signal_packages: package 'no_such_package' not "
        "found [lock.package_missing]"
    ) in result.output
