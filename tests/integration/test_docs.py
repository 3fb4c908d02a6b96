"""Docs cannot go stale: tutorial commands run, references match the code, README matches CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from qcompile.compiler.reference import config_reference
from tests.conftest import GOLDEN, REPO, copy_example_project

EXIT = re.compile(r"#\s*exits (\d+)\s*$")


def tutorial_commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for every `$ ` line of the tutorial's console blocks."""
    commands: list[tuple[str, int]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            line = lines[index]
            index += 1
            if not line.startswith("$ "):
                continue  # output shown for the reader
            command = line[2:]
            heredoc = re.search(r"<<'(\w+)'\s*$", command)
            if heredoc:
                body = []
                while lines[index] != heredoc.group(1):
                    body.append(lines[index])
                    index += 1
                index += 1
                command = "\n".join([command, *body, heredoc.group(1)])
            expected = EXIT.search(command)
            commands.append(
                (EXIT.sub("", command).rstrip(), int(expected.group(1)) if expected else 0)
            )
    return commands


def test_every_tutorial_command_runs_as_written(tmp_path: Path) -> None:
    project = copy_example_project(tmp_path / "project")
    shutil.copytree(REPO / "generated", project / "generated")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("QCOMPILE_PROJECT", None)
    subprocess.run(
        "git init -q && git add -A && git commit -qm init",
        shell=True,
        cwd=project,
        env=env,
        check=True,
    )
    commands = tutorial_commands((REPO / "docs/tutorial.md").read_text())
    assert len(commands) >= 15
    for command, expected in commands:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == expected, f"{command!r}: {result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr, command
    passport = (project / "generated/STR-2026-0051/passport.yaml").read_text()
    assert "name: momentum\n  version: 1.1.0" in passport


def test_tutorial_shows_real_output() -> None:
    text = (REPO / "docs/tutorial.md").read_text()
    shown = (GOLDEN / "diagnostics").glob("*.txt")  # the diagnostics format it describes
    assert any(shown)
    assert "<command line>: error: costs.slippage_bps: must be >= 0, was -2 [schema.min]" in text


def test_config_reference_is_generated_from_the_schemas() -> None:
    assert (REPO / "docs/config-reference.md").read_text() == config_reference()


def test_every_diagnostic_code_is_documented() -> None:
    documented = (REPO / "docs/errors.md").read_text()
    codes = set()
    for golden in (GOLDEN / "diagnostics").glob("*.txt"):
        codes.update(re.findall(r"\[([a-z_]+\.[a-z_.]+)\]$", golden.read_text(), flags=re.M))
    source = "".join(p.read_text() for p in (REPO / "src/qcompile").rglob("*.py"))
    codes.update(
        re.findall(
            r'"((?:schema|rule|lock|secret|yaml|override|defaults|conf|config|cli|compose|report)'
            r'\.[a-z_]+)"',
            source,
        )
    )
    codes = {
        c for c in codes if c.rsplit(".", 1)[1] not in ("md", "html", "json", "yaml", "py", "j2")
    }
    assert len(codes) > 30
    for code in sorted(codes):
        if code.startswith("gate."):
            continue  # one row documents gate.<requirement>
        assert f"`{code}`" in documented, code


def test_readme_starts_with_two_commands_and_ci_runs_the_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, flags=re.S)
    assert first_block and readme.index("```sh") < 20
    setup_and_build, setup_and_test = first_block.group(1).strip().splitlines()
    assert setup_and_build.endswith("qcompile build && .venv/bin/qcompile backtest STR-2026-0007")
    assert setup_and_test in (REPO / ".ci/run").read_text()
