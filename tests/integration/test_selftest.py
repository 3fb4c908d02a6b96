"""`qcompile selftest` runs the runner's safety checks for real and ticks the checklist items
they prove, for exactly the runtime source that ran them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qcompile.compiler.rules.checklist import RUNTIME_ITEMS
from qcompile.hashing import runtime_sha256
from tests.conftest import cli, cli_process, without_production_example

STRATEGY = "STR-2026-0063"


@pytest.fixture(scope="module")
def selftest_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("selftest")
    (root / "conf").mkdir()  # a project root for the CLI; the checks need nothing from it
    (root / "conf/qcompile.yaml").write_text("project:\n  name: t\n")
    output = root / "result.json"
    result = cli_process(root, "selftest", "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("heartbeat", "safe_state", "reconnect", "rate_limits", "state_recovery"):
        assert f"ok   {check}:" in result.stdout
    assert "ALERT" not in result.stderr  # the alerts the checks trip are expected, not shown
    return json.loads(output.read_text())


def test_every_check_passes_against_the_real_emulator(selftest_result: dict) -> None:
    assert selftest_result["passed"] is True
    assert selftest_result["runtime_sha256"] == runtime_sha256()
    assert (
        "kill -9 lost no acknowledged save" in selftest_result["checks"]["state_recovery"]["detail"]
    )


def test_the_result_ticks_the_runtime_items(example: Path, selftest_result: dict) -> None:
    without_production_example(example)
    target = example / "reports/runtime/qcompile-0.1.0.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(selftest_result))
    assert cli(example, "build").exit_code == 0
    checklist = (example / "generated" / STRATEGY / "checklist.md").read_text()
    for item in RUNTIME_ITEMS:
        (line,) = [row for row in checklist.splitlines() if f"(`{item}`)" in row]
        assert line.startswith("| [x] |") and "reports/runtime/qcompile-0.1.0.json" in line

    other = {**selftest_result, "runtime_sha256": "0" * 64}  # a result of another runtime
    target.write_text(json.dumps(other))
    assert cli(example, "build").exit_code == 0  # the evidence file is an input of the build
    checklist = (example / "generated" / STRATEGY / "checklist.md").read_text()
    assert "tested another runtime source" in checklist
