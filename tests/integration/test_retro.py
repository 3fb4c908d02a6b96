"""`qcompile retro`: what broke in a month, from a runner's journal and the release history."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli

TREND = "STR-2026-0007"  # paper deployment: journal in state/STR-2026-0007/journal.jsonl


def _alert(at: str, key: str, severity: str, summary: str) -> dict[str, object]:
    return {"type": "alert", "at": at, "key": key, "severity": severity, "summary": summary}


JOURNAL = [
    _alert("2026-08-31T23:59:59.000+00:00", "feed.silent", "critical", "august: not this month"),
    {
        "type": "fill",
        "bar_ms": 1788000000000,
        "order_id": "o1",
        "symbol": "MSFT",
        "quantity": 10,
        "price": 410.5,
        "commission": 1.0,
    },
    _alert("2026-09-02T14:00:00.000+00:00", "feed.malformed", "warning", "bad json | dropped"),
    _alert("2026-09-03T10:00:00.000+00:00", "feed.silent", "critical", "silent 60s"),
    _alert("2026-09-03T10:00:00.400+00:00", "runner.safe_state", "critical", "safe state in 4 ms"),
    _alert("2026-09-21T08:15:00.000+00:00", "feed.silent", "critical", "silent 75s"),
    {"type": "rollback", "at": "2026-09-21T09:00:00.000+00:00", "detail": "2.1.0 -> 2.0.0"},
    {
        "type": "daily",
        "bar_ms": 1788000000000,
        "date": "2026-09-21",
        "equity": 1.0,
        "cash": 1.0,
        "positions": {},
    },
    {"type": "rollback", "at": "2026-10-01T00:00:00.000+00:00", "detail": "october: not this"},
]


def _release(version: str, at: str, previous: str | None) -> dict[str, object]:
    return {
        "format": 1,
        "strategy_id": TREND,
        "version": version,
        "phase": "research",
        "pins": {},
        "artefacts": {},
        "commit": ("a" if previous else "b") * 40,
        "released_at": at,
        "released_by": "j.chen@quantfund.com",
        "note": f"release {version}",
        "previous": previous,
    }


def _fixture(root: Path) -> None:
    assert cli(root, "build").exit_code == 0
    state = root / "state" / TREND
    state.mkdir(parents=True)
    (state / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in JOURNAL))
    (root / "releases").mkdir()
    (root / "releases" / f"{TREND}.jsonl").write_text(
        json.dumps(_release("2.0.0", "2026-08-10T12:00:00Z", None))
        + "\n"
        + json.dumps(_release("2.1.0", "2026-09-15T12:00:00Z", "2.0.0"))
        + "\n"
    )


def test_retro_lists_what_broke_in_the_month(example: Path, tmp_path: Path) -> None:
    _fixture(example)
    output = tmp_path / "retro.md"
    result = cli(example, "retro", "--month", "2026-09", "--output", str(output))
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert text in result.output and text.startswith("# What broke in 2026-09\n")
    assert f"| {TREND} | 3 | 1 | 1 | 1 | 1 |" in text
    critical = text.index("| critical | `feed.silent` | 2 | 2026-09-03 10:00:00Z | 2026-09-21")
    assert critical < text.index("| critical | `runner.safe_state` | 1 |")
    assert text.index("| critical | `runner.safe_state`") < text.index("| warning |")
    assert "| silent 75s |" in text and "bad json \\| dropped" in text
    assert "### Safe-state transitions\n\n- 2026-09-03 10:00:00Z: safe state in 4 ms\n" in text
    assert "### Rollbacks\n\n- 2026-09-21 09:00:00Z: 2.1.0 -> 2.0.0\n" in text
    assert "- 2.1.0 (research) released 2026-09-15T12:00:00Z" in text
    assert "august" not in text and "october" not in text and "2.0.0 (research)" not in text


def test_retro_defaults_to_the_previous_month(example: Path) -> None:
    _fixture(example)
    explicit = cli(example, "retro", "--month", "2026-09").output
    default = cli(example, "retro", env={"QCOMPILE_TODAY": "2026-10-03"})
    assert default.exit_code == 0 and default.output == explicit
    quiet = cli(example, "retro", env={"QCOMPILE_TODAY": "2026-12-01"}).output
    assert "# What broke in 2026-11" in quiet
    assert "No alerts, safe-state transitions or rollbacks this month." in quiet


def test_retro_refuses_a_malformed_month(example: Path) -> None:
    result = cli(example, "retro", "--month", "2026-13")
    assert result.exit_code == 2 and "error: --month must be YYYY-MM" in result.output
