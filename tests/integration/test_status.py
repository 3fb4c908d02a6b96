"""`qcompile status` and the one-year rule: review dates, version mismatches, runner liveness."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

from qcompile.operations.status import _mark_mismatches, liveness
from tests.conftest import cli, edit, signed_into_production

ZSCORE = "STR-2026-0063"
TREND = "STR-2026-0007"  # paper deployment: a file state store under state/


def _in_production(root: Path, last_review: str) -> None:
    """Z-score reversion in production (every sign-off it needs written by hand: the rule under
    test is the review, not the gate), reviewed on ``last_review``."""
    strategy = root / "conf/strategy/zscore_reversion.yaml"
    signed_into_production(strategy)
    edit(
        strategy,
        "  deployment_record:\n",
        "  deployment_record:\n"
        '    deployment_date: "2026-09-01"\n'
        f'    last_review_date: "{last_review}"\n',
    )


def test_a_review_13_months_old_warns_on_build_and_fails_check(example: Path) -> None:
    _in_production(example, "2026-09-15")
    today = {"QCOMPILE_TODAY": "2027-10-20"}
    built = cli(example, "build", env=today)
    assert built.exit_code == 0, built.output
    line = next(n for n, t in enumerate(_lines(example), 1) if "last_review_date" in t)
    warning = (
        f"conf/strategy/zscore_reversion.yaml:{line}: warning: "
        "strategy.deployment_record.last_review_date: "
        f"{ZSCORE} needs its mandatory full review: last reviewed 2026-09-15"
    )
    assert warning in built.output and "[ops.review_overdue]" in built.output
    # generated/ is now up to date: the rule is not an input of the build, so it still runs
    again = cli(example, "build", env=today)
    assert "nothing to do" in again.output and warning in again.output
    checked = cli(example, "build", "--check", env=today)
    assert checked.exit_code == 2
    assert warning.replace("warning:", "error:") in checked.output
    assert "due by 2027-09-15, today is 2027-10-20" in checked.output

    status = json.loads(cli(example, "status", "--json", env=today).output)
    row = next(r for r in status["strategies"] if r["id"] == ZSCORE)
    assert row["phase"] == "production" and row["review_overdue"] is True
    assert (row["last_review"], row["next_review"]) == ("2026-09-15", "2027-09-15")
    assert "overdue" in cli(example, "status", env=today).output
    reviewed = cli(example, "review", "weekly", "--week", "2027-W42", env=today)
    assert "[ops.review_overdue]" in reviewed.output  # the weekly review flags it too
    # the full compile (generated/ stale) fails on the rule before reporting staleness
    (example / "generated/manifest.json").unlink()
    assert cli(example, "build", "--check", env=today).exit_code == 2


def test_a_review_11_months_old_passes(example: Path) -> None:
    _in_production(example, "2026-09-15")
    today = {"QCOMPILE_TODAY": "2027-08-20"}
    built = cli(example, "build", env=today)
    assert built.exit_code == 0 and "ops.review" not in built.output, built.output
    checked = cli(example, "build", "--check", env=today)
    assert checked.exit_code == 0, checked.output
    status = json.loads(cli(example, "status", "--json", env=today).output)
    row = next(r for r in status["strategies"] if r["id"] == ZSCORE)
    assert row["review_overdue"] is False and row["next_review"] == "2027-09-15"


def test_a_malformed_today_is_an_error(example: Path) -> None:
    result = cli(example, "status", env={"QCOMPILE_TODAY": "20.10.2027"})
    assert result.exit_code == 2 and "QCOMPILE_TODAY must be a date" in result.output


def test_status_marks_a_runner_running_another_signal_version(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    state = example / "state" / TREND
    state.mkdir(parents=True)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    (state / "heartbeat.json").write_text(
        json.dumps(
            {
                "at": at.isoformat(timespec="milliseconds"),
                "instance": "paper-1",
                "host": "elsewhere",
                "pid": 1234,
                "connected": True,
                "suspended": False,
                "seq": 7,
                "strategy_version": "2.1.0",
                "signal": "ma_crossover@1.0.0",  # generated/ pins 1.4.0: a stale deployment
            }
        )
    )
    status = json.loads(cli(example, "status", "--json").output)
    rows = {r["id"]: r for r in status["strategies"]}
    assert rows[TREND]["liveness"]["state"] == "up"
    assert rows[TREND]["liveness"]["text"].startswith("up ")
    assert rows[TREND]["mismatch"] == ["signal"]
    assert rows["STR-2026-0042"]["mismatch"] == []
    assert rows["STR-2026-0042"]["liveness"]["state"] == "never"
    (note,) = status["mismatches"]
    assert note.startswith(f"{TREND}: the runner reports signal ma_crossover@1.0.0")
    assert "pins ma_crossover@1.4.0" in note
    table = cli(example, "status").output
    assert "ma_crossover@1.4.0 *" in table and f"* {TREND}: the runner reports" in table


def test_two_strategies_pinning_different_signal_versions_are_marked() -> None:
    rows = [
        {"id": i, "signal": s, "version": "1.0.0", "running": None, "mismatch": []}
        for i, s in (("A", "gap_fill@1.0.0"), ("B", "gap_fill@1.1.0"), ("C", "breakout@1.0.0"))
    ]
    notes = _mark_mismatches(rows)
    assert notes == ["signal gap_fill is pinned at different versions: 1.0.0 by A; 1.1.0 by B"]
    assert [r["mismatch"] for r in rows] == [["signal"], ["signal"], []]


def test_liveness_from_heartbeat_times() -> None:
    now = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)

    def beat(seconds_ago: float, **extra: object) -> dict[str, object]:
        at = (now - dt.timedelta(seconds=seconds_ago)).isoformat()
        return {"at": at, "host": "elsewhere", "pid": 1, "connected": True, **extra}

    assert liveness(None, 30, now)["text"] == "never"
    assert liveness(beat(12), 30, now) == {"state": "up", "age_s": 12.0, "text": "up 12s ago"}
    assert liveness(beat(50, connected=False), 30, now)["text"] == "up 50s ago, disconnected"
    assert liveness(beat(180), 30, now) == {"state": "stale", "age_s": 180.0, "text": "stale 3m"}
    assert liveness(beat(2 * 86_400), 30, now)["text"] == "down (last seen 2d)"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = beat(180, host=socket.gethostname(), pid=int(gone.stdout))
    assert liveness(dead, 30, now)["state"] == "down"  # its process no longer exists


def _lines(root: Path) -> list[str]:
    return (root / "conf/strategy/zscore_reversion.yaml").read_text().splitlines()


def test_status_shows_a_waived_requirement(example: Path) -> None:
    strategy = example / "conf/strategy/ma_trend.yaml"
    edit(strategy, "status: research", "status: validation")
    edit(
        strategy,
        "  signoffs:\n",
        "  waivers:\n"
        "    - requirement: signoff.report\n"
        "      reason: reviewed by the head of research\n"
        "      by: head.research@quantfund.com\n"
        '      at: "2026-03-02T09:00:00Z"\n'
        '      until: "2099-12-31"\n'
        "  signoffs:\n",
    )
    assert cli(example, "build").exit_code == 0
    document = json.loads(cli(example, "status", "--json").output)
    row = next(r for r in document["strategies"] if r["id"] == TREND)
    (waived,) = row["waived"]
    assert waived.startswith("signoff.report: no report sign-off with a timestamp; waived by")
    table = cli(example, "status").output
    assert "validation (waived: signoff.report)" in table
    assert f"{TREND}: signoff.report: no report sign-off" in table
