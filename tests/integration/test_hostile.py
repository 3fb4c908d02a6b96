"""Hostile strings in configs come out inert: as data in YAML, escaped in Markdown, never as code."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import GOLDEN, cli, edit
from tests.integration.test_golden import _compare_with_golden

NAME = "x'; rm -rf ~ #"
THESIS = (
    "Gaps fill $(touch pwned) and `touch pwned2`\n| injected | row |\n<script>alert(1)</script>"
)


def _hostile(example: Path) -> Path:
    file = example / "conf/strategy/breakout.yaml"
    edit(file, "name: Donchian Breakout", f"name: {json.dumps(NAME)}")
    edit(
        file,
        "  alpha_thesis: >-\n    A close above the highest high of the last two months marks "
        "institutional accumulation\n    that continues for weeks.",
        f"  alpha_thesis: {json.dumps(THESIS)}",
    )
    edit(file, 'entry: "Buy', 'entry: "Buy\\n# not a comment\\nfake_key: 1 ... ')
    return file


def test_hostile_strings_round_trip_as_data(example: Path, update_golden: bool) -> None:
    _hostile(example)
    result = cli(example, "build", 'strategy.rules.exit="--x; $(id)"')
    assert result.exit_code == 0, result.output
    generated = example / "generated"
    passport = yaml.safe_load((generated / "STR-2026-0051/passport.yaml").read_text())
    assert passport["name"] == NAME
    assert passport["alpha_thesis"] == THESIS
    assert "fake_key" not in passport and passport["rules"]["entry"].startswith(
        "Buy\n# not a comment"
    )
    config = yaml.safe_load((generated / "STR-2026-0051/config.yaml").read_text())
    assert config["strategy"]["rules"]["exit"] == "--x; $(id)"
    header = (generated / "STR-2026-0051/params.yaml").read_text().splitlines()[:2]
    assert all(line.startswith("# ") for line in header)
    index = (generated / "index.md").read_text()
    row = [line for line in index.splitlines() if "STR-2026-0051" in line]
    assert len(row) == 1 and row[0].count(" | ") == 7  # still one row of eight cells
    assert "<script>" not in index
    assert not any(p.name.startswith("pwned") for p in example.rglob("*"))
    _compare_with_golden(generated, GOLDEN / "hostile", update_golden)


def test_hostile_strategy_file_name_is_refused(example: Path) -> None:
    source = example / "conf/strategy/breakout.yaml"
    source.rename(example / "conf/strategy/x;rm -rf ~.yaml")
    result = cli(example, "build")
    assert result.exit_code == 2
    assert (
        "conf/strategy/x;rm -rf ~.yaml: error: a strategy file name may only hold" in result.output
    )
