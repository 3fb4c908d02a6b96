"""Shared fixtures: throwaway projects built from the example conf/ or from scratch.

Tests never edit the repository's own conf/ or generated/: each copies what it needs into a
temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite golden files from the current output (review the diff!).",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the repository's example project (conf/ only; generated/ is built fresh)."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "conf", root / "conf")
    return root


def tree_digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with its content hash: equal digests mean untouched trees."""
    if not directory.exists():
        return {}
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the qcompile CLI in-process with ``root`` as the project."""
    from qcompile.cli import main

    runner = CliRunner()
    return runner.invoke(
        main, list(args), env={"QCOMPILE_PROJECT": str(root), **(env or {})}, catch_exceptions=False
    )


def cli_process(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``qcompile`` as a real process, as a user would."""
    full_env = {**os.environ, "QCOMPILE_PROJECT": str(root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qcompile.cli", *args],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
