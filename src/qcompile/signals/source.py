"""Find signal functions by reading source, never by importing it (shared with the runtime).

Consumes the ``project.signal_packages`` list; produces a :class:`SignalSource` per ``@signal``
function: its name, declared version, parameters, file and line, and a hash of its source. The
compiler must not execute a team's code (nor pay polars' import time) to pin a version.

The hash covers the function's normalised syntax tree plus every module-level function, class and
constant it references, transitively, so that editing a helper counts as a change while comments,
formatting and docstrings do not.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

from qcompile.errors import QcompileError
from qcompile.hashing import sha256_text


@dataclass(frozen=True)
class SignalSource:
    name: str
    version: str
    module: str
    file: str  # the module as a path (team_signals/momentum.py), the same however it is installed
    line: int
    function: str
    required_params: tuple[str, ...]
    optional_params: tuple[str, ...]
    source_sha256: str
    param_types: tuple[tuple[str, str], ...] = ()  # (name, int|float|bool|str) where annotated
    docstring: str = ""
    defaults: tuple[tuple[str, str], ...] = ()  # (name, default as written) of optional ones
    companions: tuple[str, ...] = ()  # keywords of @signal naming one: grid, arrays, valid


def locate_package(name: str, search: list[Path]) -> list[Path]:
    """Directories of package ``name`` found on ``search`` then sys.path, without importing it."""
    paths = [str(p) for p in search] + sys.path
    locations: list[str] | None = paths
    for part in name.split("."):
        spec = PathFinder.find_spec(part, locations)
        if spec is None or spec.submodule_search_locations is None:
            return []
        locations = list(spec.submodule_search_locations)
    return [Path(p) for p in locations or []]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _normalised(node: ast.AST) -> str:
    return ast.dump(_strip_docstrings(ast.parse(ast.unparse(node))), include_attributes=False)


def _module_definitions(tree: ast.Module) -> dict[str, ast.stmt]:
    definitions: dict[str, ast.stmt] = {}
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[statement.name] = statement
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    definitions[target.id] = statement
    return definitions


def _closure(root: ast.stmt, definitions: dict[str, ast.stmt]) -> list[ast.stmt]:
    """``root`` and the module-level definitions it reaches, in a stable order."""
    seen: dict[int, ast.stmt] = {id(root): root}
    pending = [root]
    while pending:
        node = pending.pop()
        for name in sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)}):
            target = definitions.get(name)
            if target is not None and id(target) not in seen:
                seen[id(target)] = target
                pending.append(target)
    return sorted(seen.values(), key=lambda s: s.lineno)


def _decorator_args(decorator: ast.expr) -> tuple[str, str] | None:
    """(name, version) from ``@signal("name", version="x")`` or ``@registry.signal(...)``."""
    if not isinstance(decorator, ast.Call):
        return None
    func = decorator.func
    called = (
        func.id
        if isinstance(func, ast.Name)
        else func.attr
        if isinstance(func, ast.Attribute)
        else ""
    )
    if called != "signal":
        return None
    values = [a.value for a in decorator.args if isinstance(a, ast.Constant)]
    keywords = {
        k.arg: k.value.value for k in decorator.keywords if isinstance(k.value, ast.Constant)
    }
    name = keywords.get("name", values[0] if values else None)
    version = keywords.get("version", values[1] if len(values) > 1 else None)
    if isinstance(name, str) and isinstance(version, str):
        return name, version
    return None


def _parameters(function: ast.FunctionDef) -> tuple[tuple[str, ...], tuple[str, ...]]:
    args = function.args
    required, optional = [], []
    positional = args.posonlyargs + args.args
    defaults_start = len(positional) - len(args.defaults)
    for index, arg in enumerate(positional[1:], start=1):  # the first argument is the bars frame
        (optional if index >= defaults_start else required).append(arg.arg)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        (required if default is None else optional).append(arg.arg)
    return tuple(required), tuple(optional)


SCALAR_TYPES = ("int", "float", "bool", "str")


def _parameter_types(function: ast.FunctionDef) -> tuple[tuple[str, str], ...]:
    """The scalar type each parameter is annotated with (``fast: int``), read from the source."""
    args = function.args
    found = []
    for arg in [*(args.posonlyargs + args.args)[1:], *args.kwonlyargs]:
        note = arg.annotation
        name = note.id if isinstance(note, ast.Name) else getattr(note, "value", None)
        if name in SCALAR_TYPES:
            found.append((arg.arg, str(name)))
    return tuple(found)


def _defaults(function: ast.FunctionDef) -> tuple[tuple[str, str], ...]:
    args = function.args
    positional = (args.posonlyargs + args.args)[1:]
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
    return tuple((arg.arg, ast.unparse(default)) for arg, default in pairs)


def _companions(decorator: ast.expr) -> tuple[str, ...]:
    keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
    return tuple(k.arg for k in keywords if k.arg in ("grid", "arrays", "valid"))


def _hash_function(statement: ast.FunctionDef, definitions: dict[str, ast.stmt]) -> str:
    return sha256_text("\n".join(_normalised(node) for node in _closure(statement, definitions)))


def function_sha256(path: Path, function: str) -> str | None:
    """The pinned hash of ``function`` in the module at ``path``: what the runtime checks before it
    runs a signal, so the code that runs is the code that was locked."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    definitions = _module_definitions(tree)
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == function:
            return _hash_function(statement, definitions)
    return None


class SignalSourceError(QcompileError):
    """A signal package's module that cannot be read as Python source."""


def scan_file(path: Path, module: str, display: str) -> list[SignalSource]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=display)
    except UnicodeDecodeError as error:
        raise SignalSourceError(f"{display}: not UTF-8 text ({error.reason})") from None
    except SyntaxError as error:
        raise SignalSourceError(
            f"{display}:{error.lineno or 0}: does not parse as Python: {error.msg}"
        ) from None
    definitions = _module_definitions(tree)
    found = []
    for statement in tree.body:
        if not isinstance(statement, ast.FunctionDef):
            continue
        for decorator in statement.decorator_list:
            declared = _decorator_args(decorator)
            if declared is None:
                continue
            required, optional = _parameters(statement)
            found.append(
                SignalSource(
                    declared[0],
                    declared[1],
                    module,
                    display,
                    statement.lineno,
                    statement.name,
                    required,
                    optional,
                    _hash_function(statement, definitions),
                    _parameter_types(statement),
                    ast.get_docstring(statement) or "",
                    _defaults(statement),
                    _companions(decorator),
                )
            )
    return found


def scan_packages(packages: list[str], root: Path) -> tuple[dict[str, SignalSource], list[str]]:
    """All signals in ``packages`` by name (first definition wins) and the packages not found."""
    signals: dict[str, SignalSource] = {}
    missing = []
    for package in packages:
        directories = locate_package(package, [root, root / "src"])
        if not directories:
            missing.append(package)
            continue
        for directory in directories:
            for path in sorted(directory.rglob("*.py")):
                relative = path.relative_to(directory).with_suffix("")
                module = ".".join([package, *relative.parts]).removesuffix(".__init__")
                # named by module, not by location, so installs (editable or not) pin alike
                display = module.replace(".", "/") + (
                    "/__init__.py" if path.name == "__init__.py" else ".py"
                )
                for source in scan_file(path, module, display):
                    signals.setdefault(source.name, source)
    return signals, missing


def package_files(packages: list[str], root: Path) -> list[Path]:
    """Every source file of the signal packages, for the build's input digest."""
    files: list[Path] = []
    for package in packages:
        for directory in locate_package(package, [root, root / "src"]):
            files.extend(sorted(directory.rglob("*.py")))
    return files
