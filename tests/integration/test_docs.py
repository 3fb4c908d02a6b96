"""Docs cannot go stale: tutorial commands run, references match the code, README matches CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

from qcompile.compiler.reference import (
    config_reference,
    project_signal_reference,
    project_signals,
)
from qcompile.project import Project
from tests.conftest import GOLDEN, REPO, cli, copy_example_project

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
    # the tutorial leaves no warning behind it does not explain
    final = subprocess.run(
        ["qcompile", "validate"], cwd=project, env=env, capture_output=True, text=True
    )
    warned = set(re.findall(r"\[([a-z_.]+)\]", final.stdout + final.stderr))
    assert warned == {"data.missing", "report.stale", "gate.waived"}, final.stdout + final.stderr


def test_tutorial_shows_real_output() -> None:
    text = (REPO / "docs/tutorial.md").read_text()
    shown = (GOLDEN / "diagnostics").glob("*.txt")  # the diagnostics format it describes
    assert any(shown)
    assert "<command line>: error: costs.slippage_bps: must be >= 0, was -2 [schema.min]" in text


def test_config_reference_is_generated_from_the_schemas() -> None:
    assert (REPO / "docs/config-reference.md").read_text() == config_reference()


def test_signal_library_reference_is_generated_from_the_signal_source() -> None:
    text = (REPO / "docs/signals.md").read_text()
    assert text == project_signal_reference(Project(REPO))
    assert "## `ma_crossover` 1.4.0" in text and "companions: grid, arrays, valid." in text
    assert "| `allow_short` | bool | `False` |" in text


def test_a_teams_own_signals_are_listed_with_their_parameters(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/qcompile.yaml").write_text(
        "project:\n  signal_packages: [qcompile.signals, desk_signals]\n"
    )
    (tmp_path / "desk_signals").mkdir()
    (tmp_path / "desk_signals/__init__.py").write_text("")
    (tmp_path / "desk_signals/carry.py").write_text(
        "from qcompile.signals import signal\n\n\n"
        '@signal("carry", version="0.3.0")\n'
        "def carry(bars, *, lookback: int, threshold: float = 0.5):\n"
        '    """Long while the carry over ``lookback`` bars beats ``threshold``."""\n'
        "    return bars\n"
    )
    text = project_signal_reference(Project(tmp_path))
    assert "(qcompile.signals, desk_signals)" in text.splitlines()[0]
    section = text[text.index("## `carry` 0.3.0") :]
    assert "`desk_signals/carry.py:5` (`desk_signals.carry.carry`); companions: none." in section
    assert "Long while the carry over ``lookback`` bars beats ``threshold``." in section
    assert "| `lookback` | int | required |" in section
    assert "| `threshold` | float | `0.5` |" in section


def test_the_stateful_signal_example_holds_from_entry_to_exit() -> None:
    text = (REPO / "docs/signals.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    exec(code, namespace)  # registers channel_reversal, as a team's module would
    # lows and highs 0.5 around the close: bar 2 closes under the prior two lows (enter), bar 4
    # over the prior two highs (leave), bar 8 under the prior lows again; bar 3 meets neither,
    # so the position is held
    closes = [10, 9, 8, 9, 10, 11, 12, 13, 11]
    bars = pl.DataFrame(
        {
            "symbol": ["A"] * len(closes),
            "timestamp": list(range(len(closes))),
            "high": [c + 0.5 for c in closes],
            "low": [c - 0.5 for c in closes],
            "close": [float(c) for c in closes],
        }
    )
    held = namespace["channel_reversal"](bars, window=2)["signal"].to_list()
    assert held == [0, 0, 1, 1, 0, 0, 0, 0, 1]


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


def test_qcompile_signals_lists_every_signal_and_shows_one(tmp_path: Path) -> None:
    listing = cli(REPO, "signals")
    assert listing.exit_code == 0, listing.output
    signals, _ = project_signals(Project(REPO))
    rows = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if "│" in line}
    for name, source in signals.items():
        assert source.version in rows[name], name
    assert "fast: int, slow: int, allow_short: bool = False" in rows["ma_crossover"]
    page = cli(REPO, "signals", "ma_crossover")
    assert page.exit_code == 0 and "companions: grid, arrays, valid" in " ".join(
        page.output.split()
    )
    wrong = cli(REPO, "signals", "ma_cross")
    assert wrong.exit_code != 0 and "did you mean ma_crossover?" in wrong.output


def test_tables_fit_an_80_column_terminal(example: Path) -> None:
    for command in (("list",), ("signals",)):
        shown = cli(example, *command, env={"COLUMNS": "80"})
        assert shown.exit_code == 0, shown.output
        widths = [len(line) for line in shown.output.splitlines()]
        assert max(widths) <= 80, (command, max(widths))
        assert "…" not in shown.output, shown.output  # columns go whole, no cell is cut short
    narrow = cli(example, "list", env={"COLUMNS": "80"}).output
    for strategy_id in ("STR-2026-0007", "STR-2026-0042", "STR-2026-0088"):
        assert f"│ {strategy_id} │" in narrow, narrow
    assert "left out to fit 80 columns" in narrow
    piped = cli(example, "list")  # no terminal, no COLUMNS: one line per row, for grep
    assert any(len(line) > 80 for line in piped.output.splitlines())
