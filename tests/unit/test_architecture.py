"""Architecture rules as tests: which package may import which, no cycles, no private imports,
and a fast CLI start-up (docs/architecture.md draws the same rules).

Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import cli_process

SOURCE = Path(__file__).resolve().parents[2] / "src"

SHARED = (
    "qcompile",  # the package itself: __version__
    "qcompile.errors",
    "qcompile.hashing",
    "qcompile.project",
    "qcompile.templating",
    "qcompile.alertcatalog",
    "qcompile.runtimedefaults",
    "qcompile.dailystats",
    "qcompile.execution",
    "qcompile.comparison",
    "qcompile.vcs",
)
RESEARCH_LIBRARY = (
    "qcompile.research.data",
    "qcompile.research.datalayout",
    "qcompile.research.calendar",
)
RESEARCH_ENGINE = ("qcompile.research.backtest",)
RESEARCH_COMMANDS = ("qcompile.research.workflows", "qcompile.research.sweep")
# Each room: the packages its modules may import (besides the room itself and SHARED), and the
# rule's wording for a violation. The most specific room of a module applies.
ROOMS: dict[str, tuple[tuple[str, ...], str]] = {
    "qcompile.signals": ((), "the signal library imports only the shared modules"),
    "qcompile.marketdata": ((), "market data imports only the shared modules"),
    "qcompile.emulator": (("qcompile.marketdata",), "the emulator imports only market data"),
    "qcompile.research": ((), "research modules import only the shared modules"),
    "qcompile.research.data": (
        ("qcompile.research.datalayout",),
        "the data contract imports only the data layout",
    ),
    "qcompile.research.datalayout": ((), "the data layout imports only the shared modules"),
    "qcompile.research.dataimport": (
        ("qcompile.research.data", "qcompile.research.datalayout"),
        "data import imports only the data contract and layout",
    ),
    "qcompile.research.backtest": (
        ("qcompile.signals", *RESEARCH_LIBRARY),
        "the backtest engine never imports the compiler, lifecycle, runtime or operations",
    ),
    "qcompile.research.workflows": (
        (
            "qcompile.compiler",
            "qcompile.signals",
            "qcompile.marketdata",
            *RESEARCH_LIBRARY,
            *RESEARCH_ENGINE,
            "qcompile.research.dataimport",
        ),
        "research commands never import the runtime, lifecycle or operations",
    ),
    "qcompile.research.sweep": (
        ("qcompile.compiler", "qcompile.signals", *RESEARCH_LIBRARY, *RESEARCH_ENGINE),
        "research commands never import the runtime, lifecycle or operations",
    ),
    "qcompile.compiler": (
        ("qcompile.signals.source", *RESEARCH_LIBRARY),
        "the compiler never imports the runtime, research's engine, lifecycle or operations "
        "(it reads signal sources, the data layout and the data contract only, to pin them)",
    ),
    "qcompile.lifecycle": (
        ("qcompile.compiler",),
        "lifecycle commands call the compiler, never the runtime, research or operations",
    ),
    "qcompile.runtime": (
        ("qcompile.signals", "qcompile.research.data", "qcompile.emulator", "qcompile.marketdata"),
        "the runtime never imports the compiler, lifecycle, operations or research's engine",
    ),
    "qcompile.operations": (
        (
            "qcompile.compiler",
            "qcompile.lifecycle",
            "qcompile.research",
            "qcompile.runtime",
            "qcompile.signals",
            "qcompile.emulator",
            "qcompile.marketdata",
        ),
        "operations read every other room but the CLI",
    ),
    "qcompile.cli": (("qcompile",), "the CLI may import everything"),
}
SHARED_RULE = "shared modules import only each other"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _room(module: str) -> str | None:
    rooms = [r for r in ROOMS if _within(module, (r,))]
    return max(rooms, key=len) if rooms else None


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    target: str  # the imported module
    names: tuple[str, ...]  # names taken from it (from X import a, b)

    def where(self, source: Path) -> str:
        path = Path(*self.module.split(".")).with_suffix(".py")
        if not (source / path).is_file():
            path = Path(*self.module.split("."), "__init__.py")
        return f"src/{path.as_posix()}:{self.line}"


def modules(source: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((source / "qcompile").rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(source: Path) -> list[Import]:
    """Every import of a qcompile module by a qcompile module, lazy ones included."""
    known = modules(source)
    found = []
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _within(alias.name, ("qcompile",)):
                        found.append(Import(module, node.lineno, alias.name, ()))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                if not _within(base, ("qcompile",)):
                    continue
                names = tuple(alias.name for alias in node.names)
                submodules = [n for n in names if f"{base}.{n}" in known]
                for name in submodules:  # from qcompile.x import module
                    found.append(Import(module, node.lineno, f"{base}.{name}", ()))
                rest = tuple(n for n in names if n not in submodules)
                if rest or not submodules:
                    found.append(Import(module, node.lineno, base, rest))
    return found


def boundary_violations(source: Path) -> list[str]:
    problems = []
    for found in imports(source):
        if found.target == found.module or _within(found.target, ("qcompile.cli",)):
            if found.target != found.module:
                problems.append(
                    f"{found.where(source)}: {found.module} imports {found.target}: "
                    "nothing imports the CLI"
                )
            continue
        room = _room(found.module)
        if room is None:
            allowed, rule = SHARED, SHARED_RULE
            if found.module not in SHARED:
                problems.append(f"{found.where(source)}: {found.module} belongs to no room")
                continue
        else:
            extra, rule = ROOMS[room]
            allowed = (room, *extra)
        target_is_shared = found.target in SHARED
        if not (target_is_shared or _within(found.target, allowed)):
            problems.append(f"{found.where(source)}: {found.module} imports {found.target}: {rule}")
    return problems


def private_imports(source: Path) -> list[str]:
    """Imports of another module's underscore names, or of an underscore module."""
    problems = []
    for found in imports(source):
        hidden = [
            part
            for part in found.target.split(".")
            if part.startswith("_") and not part.startswith("__")
        ]
        hidden += [n for n in found.names if n.startswith("_") and not n.startswith("__")]
        if hidden and found.target != found.module:
            problems.append(
                f"{found.where(source)}: {found.module} imports {found.target} "
                f"({', '.join(hidden)}): make it a public name of its owner"
            )
    return problems


def cycles(source: Path) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a cycle of imports."""
    graph: dict[str, set[str]] = {m: set() for m in modules(source)}
    for found in imports(source):
        if found.target in graph and found.target != found.module:
            graph[found.module].add(found.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_import_crosses_only_allowed_boundaries() -> None:
    problems = boundary_violations(SOURCE)
    assert not problems, "\n".join(problems)


def test_no_module_imports_another_modules_private_names() -> None:
    problems = private_imports(SOURCE)
    assert not problems, "\n".join(problems)


def test_there_are_no_import_cycles() -> None:
    found = cycles(SOURCE)
    assert not found, "\n".join(" <-> ".join(group) for group in found)


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for module, path in modules(SOURCE).items():
        if path.name != "__init__.py":
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring, f"{module} has no docstring"
        if module.count(".") == 1 and module in ROOMS:  # a room of its own
            assert "import" in docstring, f"{module}'s docstring says nothing of its imports"


def test_every_module_belongs_to_a_room_or_is_shared() -> None:
    for module in modules(SOURCE):
        assert _room(module) is not None or module in SHARED, f"{module} belongs to no room"


@pytest.fixture
def violating_tree(tmp_path: Path) -> Path:
    """A small qcompile tree with one of every violation, to show each rule fails when broken."""
    files = {
        "qcompile/__init__.py": '"""Root."""\n',
        "qcompile/errors.py": "",
        "qcompile/cli.py": "from qcompile.compiler import plan\n",
        "qcompile/compiler/__init__.py": '"""The compiler. May import shared modules."""\n',
        "qcompile/compiler/plan.py": "from qcompile.runtime.engine import decide\n",
        "qcompile/compiler/build.py": (
            "def f():\n    from qcompile.compiler.write import commit\n"
        ),
        "qcompile/compiler/write.py": "from qcompile.compiler.build import f\n",
        "qcompile/runtime/__init__.py": '"""The runtime. May import signals."""\n',
        "qcompile/runtime/engine.py": (
            "from qcompile.errors import Diagnostic\nfrom qcompile.compiler.plan import _context\n"
        ),
        "qcompile/operations/__init__.py": '"""Operations. May import anything."""\n',
        "qcompile/operations/status.py": "import qcompile.cli\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_rules_name_each_offending_import(violating_tree: Path) -> None:
    problems = "\n".join(boundary_violations(violating_tree))
    assert (
        "src/qcompile/compiler/plan.py:1: qcompile.compiler.plan imports qcompile.runtime.engine"
        in problems
    )
    assert "qcompile.runtime.engine imports qcompile.compiler.plan" in problems
    assert "qcompile.operations.status imports qcompile.cli: nothing imports the CLI" in problems
    assert "qcompile.cli imports" not in problems  # the CLI may import everything
    assert "imports qcompile.errors" not in problems  # shared
    private = "\n".join(private_imports(violating_tree))
    assert "src/qcompile/runtime/engine.py:2" in private and "(_context)" in private
    assert sorted(cycles(violating_tree)) == [
        ["qcompile.compiler.build", "qcompile.compiler.write"],
        ["qcompile.compiler.plan", "qcompile.runtime.engine"],
    ]


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
