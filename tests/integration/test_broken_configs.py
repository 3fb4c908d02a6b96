"""A corpus of broken configs: each gives exactly these diagnostics, exit 2, and writes nothing.

Every case starts from a built copy of the example project, breaks it one way, and checks the
complete diagnostic output (file, line, key, message, code), that generated/ is untouched and
that no traceback escapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import GOLDEN, cli, cli_process, edit, tree_digest

S = "conf/strategy"


@dataclass
class Case:
    name: str
    breaks: Callable[[Path], None]
    args: tuple[str, ...] = ()

    @property
    def golden(self) -> Path:
        return GOLDEN / "diagnostics" / (self.name.replace(" ", "_") + ".txt")


def _edit(file: str, old: str, new: str) -> Callable[[Path], None]:
    return lambda root: edit(root / file, old, new)


def _write(file: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / file).write_text(text, encoding="utf-8")


def _copy_strategy(root: Path) -> None:
    text = (root / S / "breakout.yaml").read_text()
    (root / S / "breakout_copy.yaml").write_text(
        text.replace("name: Donchian Breakout", "name: Copy")
    )


def _waiver_at(at: str) -> Callable[[Path], None]:
    """ma_trend with a waiver granted at ``at``."""

    def breaks(root: Path) -> None:
        with (root / S / "ma_trend.yaml").open("a", encoding="utf-8") as file:
            file.write(
                "  waivers:\n"
                "    - requirement: evidence.robustness\n"
                "      reason: a test\n"
                "      by: r.head@quantfund.com\n"
                f'      at: "{at}"\n'
                "      until: 2027-01-01\n"
            )

    return breaks


CASES = [
    Case(
        "bad timestamp",
        _edit(f"{S}/ma_trend.yaml", 'at: "2026-02-05T09:30:00Z"', 'at: "2026-99-99T99:99:99Z"'),
    ),
    Case("bad waiver timestamp", _waiver_at("2026-02-30T10:00:00Z")),
    Case(
        "wrong type",
        _edit(f"{S}/ma_trend.yaml", "initial_capital: 500000", 'initial_capital: "lots"'),
    ),
    Case("negative cost", _edit("conf/costs/retail.yaml", "slippage_bps: 5", "slippage_bps: -2")),
    Case("unknown key", _edit(f"{S}/breakout.yaml", "hypothesis_date:", "hypothesis_dat:")),
    Case("missing field", _edit(f"{S}/zscore_reversion.yaml", "  type: daily\n", "")),
    Case(
        "bad interpolation",
        _edit(
            "conf/universe/us_tech.yaml", "name: US large-cap tech sample", "name: ${universe.nmae}"
        ),
    ),
    Case(
        "yaml syntax", _edit("conf/costs/institutional.yaml", "slippage_bps: 2", "slippage_bps: [2")
    ),
    Case(
        "duplicate yaml key",
        _edit("conf/costs/zero.yaml", "slippage_bps: 0", "slippage_bps: 0\nslippage_bps: 1"),
    ),
    Case("gate violation", _edit(f"{S}/ma_trend.yaml", "status: research", "status: validation")),
    Case("ideation gate", _edit(f"{S}/breakout.yaml", "status: ideation", "status: research")),
    Case("duplicate id", _copy_strategy),
    Case(
        "literal secret",
        _edit(
            "conf/data/tickdb_us_daily.yaml",
            "api_key: ${oc.env:TICKDB_API_KEY}",
            "api_key: tk_live_8f2a9c0d1e3b4a59",
        ),
    ),
    Case(
        "token in url",
        _edit(
            "conf/deployment/live_redis.yaml",
            "url: ${oc.env:SLACK_WEBHOOK_URL}",
            "url: https://hooks.slack.com/services/T000/B000/XXXX",
        ),
    ),
    Case("unknown option", _edit(f"{S}/ma_trend.yaml", "/costs: retail", "/costs: retial")),
    Case(
        "bad overrides",
        lambda root: None,
        (
            "costs=zeroo",
            "strategy.signal.params.fats=3",
            "strategy.version=range(1,3)",
            "+strategy.id=X",
            "a=b=[",
        ),
    ),
    Case("unknown signal param", _edit(f"{S}/ma_trend.yaml", "fast: 20", "fats: 20")),
    Case("signal version", _edit(f"{S}/ma_trend.yaml", "version: 1.4.0", "version: 1.5.0")),
    Case("unknown signal", _edit(f"{S}/breakout.yaml", "name: breakout", "name: brekout")),
    Case(
        "unknown gate requirement", _edit("conf/qcompile.yaml", "- signoff.brief", "- signoff.brif")
    ),
    Case(
        "window order",
        _edit(
            f"{S}/zscore_reversion.yaml",
            'end_date: "2017-10-31"\n    out',
            'end_date: "2008-12-31"\n    out',
        ),
    ),
    Case(
        "universe not in data",
        _edit("conf/universe/us_tech.yaml", "[AAPL, GOOG, MSFT]", "[AAPL, GOOG, NVDA]"),
    ),
    Case(
        "peer is researcher",
        _edit(
            f"{S}/ma_trend.yaml",
            "  signoffs:\n",
            "  signoffs:\n    validation:\n      by: a.novak@quantfund.com\n"
            '      at: "2026-03-01T10:00:00Z"\n',
        ),
    ),
    Case("bad date", _edit(f"{S}/ma_trend.yaml", '"2026-02-03"', '"2026-02-30"')),
    Case("date format", _edit(f"{S}/ma_trend.yaml", '"2026-02-03"', '"2026-2-3"')),
    Case(
        "bad id and version",
        _edit(f"{S}/breakout.yaml", "id: STR-2026-0051", "id: STR-26-51"),
        ("strategy.version=v0.1",),
    ),
    Case("missing strategy header", _edit(f"{S}/breakout.yaml", "# @package _global_\n", "")),
    Case("unknown strategy", lambda root: None, ("--strategy", "ma_trnd")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_config_reports_every_problem_and_writes_nothing(
    example: Path, case: Case, update_golden: bool
) -> None:
    assert cli(example, "build").exit_code == 0
    before = tree_digest(example / "generated")
    case.breaks(example)
    result = cli(example, "build", *case.args)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1].endswith("nothing was written.")
    assert tree_digest(example / "generated") == before
    if update_golden:
        case.golden.parent.mkdir(parents=True, exist_ok=True)
        case.golden.write_text(result.output)
    assert result.output == case.golden.read_text()


def test_a_real_process_prints_no_traceback(example: Path) -> None:
    edit(example / "conf/costs/retail.yaml", "slippage_bps: 5", "slippage_bps: [5")
    edit(example / "conf/strategy/ma_trend.yaml", "fast: 20", "fast: -1")
    result = cli_process(example, "build")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "conf/costs/retail.yaml:4: error: YAML syntax error" in result.stderr
    assert not (example / "generated").exists()
