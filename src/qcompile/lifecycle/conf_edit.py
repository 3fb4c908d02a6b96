"""Edits to a strategy's own YAML file that keep the team's comments and layout.

Sign-offs, promotions and the quarterly refresh write to conf/ through ``write_key``: ruamel.yaml
in round-trip mode, the file's own indentation found by reproducing it byte for byte, the result
checked to mean exactly the old document plus the one change, and the file replaced atomically
(unless someone else changed it meanwhile). A review diff shows only the lines that changed.
"""

from __future__ import annotations

import copy
import difflib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from qcompile.errors import DiagnosticsError, QcompileError
from qcompile.project import Project

# ruamel cannot tell us a file's indentation reliably (comments throw its guess off), so each
# layout is tried until one reproduces the file byte for byte; conf/'s own style comes first.
_LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 6, 2), (4, 4, 0), (3, 5, 2), (4, 4, 2))


def load_strategy(project: Project, strategy: str) -> tuple[Any, dict[str, Any]]:
    """The strategy's composition (which knows its source file) and its resolved config.

    Only compose, resolve and schema: signing must work while the strategy fails its gate (a
    stale sign-off is exactly such a failure), and needs no lock.
    """
    from qcompile.compiler.compose import compose_strategies, read_conf_tree
    from qcompile.compiler.validate import resolve, schema_diagnostics

    tree = read_conf_tree(project)
    found = compose_strategies(project, tree, [], {strategy})
    if len(found) != 1:
        raise QcompileError(f"{strategy!r} names {len(found)} strategies; give its id")
    (composed,) = found
    config, problems = resolve(composed)
    problems += schema_diagnostics(composed, config)
    if any(p.severity == "error" for p in problems):
        raise DiagnosticsError(problems)
    return composed, config


def write_key(project: Project, source: Any, keys: tuple[str, ...], value: Any) -> None:
    """Set ``keys`` (a composed key path) to ``value`` in the strategy's file, atomically.

    ``source`` is the strategy's ConfigFile; its ``package`` says where its keys land in the
    composed config. Only the lines holding the value change.
    """
    import yaml as pyyaml

    path = project.root / source.path
    original = path.read_bytes()
    text = original.decode("utf-8")
    crlf = "\r\n" in text
    if crlf:
        text = text.replace("\r\n", "\n")
    package = [p for p in source.package.split(".") if p]
    if list(keys[: len(package)]) != package:
        raise QcompileError(f"{source.path} is placed at {source.package}; cannot set {keys}")
    local = keys[len(package) :]

    document, layout = _round_trip(text, source.path)
    _set(document, local, value, source.path)
    new_text = _dump(document, layout)

    # The result must mean exactly the old document plus this change, whatever ruamel did.
    expected = pyyaml.safe_load(text) or {}
    _set_plain(expected, list(local), value)
    if pyyaml.safe_load(new_text) != expected:
        raise QcompileError(f"could not rewrite {source.path} faithfully; edit it by hand")
    if crlf:
        new_text = new_text.replace("\n", "\r\n")
    _replace(path, original, new_text.encode("utf-8"))


def _yaml(layout: tuple[int, int, int]) -> Any:
    from ruamel.yaml import YAML

    handler = YAML(typ="rt")
    handler.preserve_quotes = True
    handler.width = 4096  # never re-wrap a long line
    mapping, sequence, offset = layout
    handler.indent(mapping=mapping, sequence=sequence, offset=offset)
    return handler


def _round_trip(text: str, name: str) -> tuple[Any, tuple[int, int, int]]:
    """The parsed document and the layout that reproduces ``text`` best (exactly, normally)."""
    from ruamel.yaml.error import YAMLError

    try:
        document = _yaml(_LAYOUTS[0]).load(text)
    except YAMLError as exc:
        raise QcompileError(f"{name} is not valid YAML: {exc}") from None
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(document, CommentedMap):
        raise QcompileError(f"{name} does not hold a mapping")
    best, fewest = _LAYOUTS[0], None
    for layout in _LAYOUTS:
        dumped = _dump(document, layout)
        if dumped == text:
            return document, layout
        changed = sum(
            1 for line in difflib.ndiff(text.splitlines(), dumped.splitlines()) if line[:1] in "+-"
        )
        if fewest is None or changed < fewest:
            best, fewest = layout, changed
    return document, best  # unusual layout: comments survive, some indentation is normalised


def _dump(document: Any, layout: tuple[int, int, int]) -> str:
    stream = io.StringIO()
    _yaml(layout).dump(document, stream)
    return stream.getvalue()


def _set(document: Any, keys: tuple[str, ...], value: Any, name: str) -> None:
    """Set a key path in a round-trip document, creating missing mappings at the end of their
    parent and updating an existing mapping in place (its comments stay)."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    node = document
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = CommentedMap()
            node[key] = child
        elif not isinstance(child, CommentedMap):
            dotted = ".".join(keys[: depth + 1])
            raise QcompileError(f"{name}: {dotted} is not a mapping; cannot set {keys[-1]} in it")
        node = child
    last = keys[-1]
    if not isinstance(value, dict):
        node[last] = value
        return
    # timestamps are quoted as conf/ writes them: unquoted, YAML would load a datetime
    fresh = {k: DoubleQuotedScalarString(v) if k == "at" else v for k, v in value.items()}
    existing = node.get(last)
    if isinstance(existing, CommentedMap):
        for key in [k for k in existing if k not in fresh]:
            del existing[key]
        for key, item in fresh.items():
            existing[key] = item
    else:
        node[last] = CommentedMap(fresh)


def _set_plain(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[keys[-1]] = copy.deepcopy(value)


def _replace(path: Path, original: bytes, content: bytes) -> None:
    """Write ``content`` over ``path`` atomically, unless someone changed the file meanwhile."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        if path.read_bytes() != original:
            raise QcompileError(f"{path.name} changed while it was being edited; run again")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
