"""Architecture rules as tests: stage boundaries and a fast CLI start-up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_process

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "qcompile"
RUNTIME_PACKAGES = (
    "qcompile.signals",
    "qcompile.backtest",
    "qcompile.marketdata",
    "qcompile.live",
    "qcompile.emulator",
)
# errors, hashing, signalsource, templating and datalayout serve both halves; workflows, sweep,
# sweepreport, status, retro, review and refresh are the glue the CLI calls
SHARED_MODULES = (
    "__init__",
    "cli",
    "datalayout",
    "errors",
    "refresh",
    "retro",
    "review",
    "status",
    "hashing",
    "signalsource",
    "sweep",
    "sweepreport",
    "templating",
    "workflows",
)
COMPILER_MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in SHARED_MODULES)


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_compiler_never_imports_the_runtime() -> None:
    for module in COMPILER_MODULES:
        for name in _imports(PACKAGE / f"{module}.py"):
            assert not _within(name, RUNTIME_PACKAGES), f"qcompile.{module} imports {name}"


def test_runtime_never_imports_the_compiler() -> None:
    compiler = (*(f"qcompile.{m}" for m in COMPILER_MODULES), "qcompile.cli")
    for package in RUNTIME_PACKAGES:
        directory = PACKAGE / package.removeprefix("qcompile.").replace(".", "/")
        for path in directory.rglob("*.py"):
            for name in _imports(path):
                assert not _within(name, compiler), f"{path.name} imports {name}"


def test_cli_start_up_imports_no_heavy_module() -> None:
    probe = (
        "import sys, qcompile.cli; "
        "print(sorted(m for m in ('hydra', 'omegaconf', 'polars', 'jinja2', 'cerberus', 'rich') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_help_works_without_a_project(tmp_path: Path) -> None:
    result = cli_process(tmp_path, "--help")
    assert result.returncode == 0 and "build" in result.stdout


def test_outside_a_project_is_a_clear_error(tmp_path: Path) -> None:
    result = cli_process(tmp_path, "build")
    assert result.returncode == 2
    assert "no conf/qcompile.yaml" in result.stderr and "Traceback" not in result.stderr
