"""generated/<id>/rollback.sh end to end: a temporary git repository with two releases and a
runner against the emulator; after the rollback the previous parameters are live and the
heartbeat is back. A hostile value stays inert in the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import cli_process, copy_example_project, edit

STRATEGY = "STR-2026-0051"  # the breakout example: in ideation, so a version bump needs no report
BIN = Path(sys.executable).parent


def git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Release Manager",
        "GIT_AUTHOR_EMAIL": "rm@example.com",
        "GIT_COMMITTER_NAME": "Release Manager",
        "GIT_COMMITTER_EMAIL": "rm@example.com",
    }
    result = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def qcompile(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = cli_process(root, *args, env={"PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0, f"qcompile {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def two_releases(root: Path) -> None:
    copy_example_project(root)
    qcompile(root, "build")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "rm@example.com")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first release")
    qcompile(root, "release", STRATEGY)
    strategy = root / "conf/strategy/breakout.yaml"
    edit(strategy, "version: 0.1.0", "version: 0.2.0")
    edit(strategy, "lookback: 40", "lookback: 60")
    qcompile(root, "build")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "second release")
    qcompile(root, "release", STRATEGY)


def lookback(root: Path) -> int:
    params = yaml.safe_load((root / "generated" / STRATEGY / "params.yaml").read_text())
    return params["signal"]["params"]["lookback"]


def test_rollback_restores_the_previous_release_and_the_heartbeat(tmp_path: Path) -> None:
    root = tmp_path / "desk"
    two_releases(root)
    assert lookback(root) == 60
    env = {**os.environ, "QCOMPILE_PROJECT": str(root), "QCOMPILE": str(BIN / "qcompile")}
    feed = ["--feed", "emulator", "--bars", "3000", "--speed", "40"]
    live = subprocess.Popen(
        [str(BIN / "qcompile"), "run", STRATEGY, *feed],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        beat = json.loads(qcompile(root, "heartbeat", STRATEGY, "--wait", "60").stdout)
        assert beat["strategy_version"] == "0.2.0" and beat["pid"] == live.pid

        dry = subprocess.run(
            [str(root / "generated" / STRATEGY / "rollback.sh"), "--dry-run", "--", *feed],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dry.returncode == 0, dry.stderr
        assert "+ " + str(BIN / "qcompile") + " stop STR-2026-0051" in dry.stdout
        assert "git restore --source" in dry.stdout
        assert live.poll() is None and lookback(root) == 60  # a dry run does nothing

        result = subprocess.run(
            [str(root / "generated" / STRATEGY / "rollback.sh"), "--", *feed],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert live.wait(60) == 0  # the old instance stopped cleanly
        assert lookback(root) == 40  # the previous parameters are back in generated/
        lines = result.stdout.splitlines()
        step = next(
            i for i, line in enumerate(lines) if line.startswith("+") and " heartbeat " in line
        )
        beat = json.loads(lines[step + 1])  # the heartbeat step's output
        assert beat["strategy_version"] == "0.1.0" and beat["connected"] is True
        assert beat["pid"] != live.pid  # a new runner, with the previous release's parameters
        journal = qcompile(root, "journal", STRATEGY).stdout.splitlines()
        rollbacks = [json.loads(line) for line in journal if '"rollback"' in line]
        assert len(rollbacks) == 1 and "to release previous" in rollbacks[0]["detail"]
    finally:
        if live.poll() is None:
            live.kill()
        subprocess.run([str(BIN / "qcompile"), "stop", STRATEGY], cwd=root, env=env, timeout=60)
        live.communicate(timeout=60)  # reap it and close its pipes


HOSTILE_PATH = "st ate/$(touch pwned)`touch pwned2`'; touch pwned3 #"


def test_a_hostile_value_stays_inert_in_the_script(tmp_path: Path) -> None:
    root = tmp_path / "hostile"
    copy_example_project(root)
    edit(root / "conf/deployment/paper.yaml", "path: state", f"path: {json.dumps(HOSTILE_PATH)}")
    qcompile(root, "build")
    script = root / "generated" / STRATEGY / "rollback.sh"
    from tests.integration.test_runbook import shellcheck

    checked = shellcheck(script)
    assert checked.returncode == 0, checked.stdout
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "rm@example.com")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release")
    qcompile(root, "release", STRATEGY)
    env = {**os.environ, "QCOMPILE_PROJECT": str(root), "QCOMPILE": str(BIN / "qcompile")}
    dry = subprocess.run(
        [str(script), "--dry-run", "--to", "0.1.0"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    log_line = next(line for line in dry.stdout.splitlines() if line.startswith("+ nohup"))
    # printf %q quoting: the shell reads it back as the one literal path
    shown = log_line.split(">>", 1)[1].removesuffix(" 2>&1 &")
    assert (
        subprocess.run(
            ["bash", "-c", f"printf %s {shown}"], capture_output=True, text=True, check=True
        ).stdout
        == f"{HOSTILE_PATH}/{STRATEGY}/runner.log"
    )
    assert not any(p.name.startswith("pwned") for p in tmp_path.rglob("*"))
    assert not list(Path.cwd().glob("pwned*"))
