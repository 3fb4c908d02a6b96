"""Stage 0 (read): parse every YAML file under conf/ once, remembering where each key lives.

Consumes the project's ``conf/`` tree; produces :class:`ConfigFile` records holding the parsed
data, the ``# @package`` placement, the defaults list with line numbers, and a map from each
composed key path to its line. Hydra's composed config forgets lines; this map is how every
diagnostic gets its ``file:line``. Syntax errors and duplicate keys become diagnostics here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from qcompile.errors import Diagnostic

try:  # the C loader is ~10x faster; line numbers do not depend on which loader runs
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)\s*$")
# A config file is a page of settings: these bounds refuse a hostile one (a "billion laughs" of
# nested aliases, a deep or huge document) in milliseconds, before anything expands it.
MAX_BYTES = 1 << 20
MAX_NODES = 100_000  # values as they would be after expanding every alias
MAX_DEPTH = 64


@dataclass(frozen=True)
class DefaultsEntry:
    """One entry of a config's defaults list: ``/costs: retail`` or ``_self_``."""

    group: str  # "costs"; "" for a plain config name or _self_
    option: str  # "retail", "_self_", or a config name
    line: int
    absolute: bool
    override: bool


@dataclass
class ConfigFile:
    """A parsed YAML file with its placement in the composed config."""

    path: str  # relative to the project root, e.g. conf/strategy/x.yaml
    group: str  # "strategy"; "" for the primary config
    name: str  # "x"
    package: str  # dotted prefix its keys land under; "" for _global_
    text: str
    lines: dict[str, int] = field(default_factory=dict)
    defaults: list[DefaultsEntry] = field(default_factory=list)
    valid: bool = True
    data: dict[str, Any] | None = field(default=None, repr=False)
    node: yaml.MappingNode | None = field(default=None, repr=False)

    def line_of(self, key: str) -> int:
        """Line of ``key`` or of its nearest ancestor defined in this file, else 0."""
        probe = key
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = parent_key(probe)
        return 0


def parent_key(key: str) -> str:
    """``a.b[2]`` -> ``a.b``; ``a.b`` -> ``a``; ``a`` -> ``""``."""
    if key.endswith("]"):
        return key[: key.rindex("[")]
    return key.rpartition(".")[0]


def join_key(prefix: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{prefix}[{part}]"
    return f"{prefix}.{part}" if prefix else str(part)


def _package_of(text: str, group: str) -> str:
    for raw in text.splitlines()[:5]:
        match = _PACKAGE_HEADER.match(raw.strip())
        if match:
            package = match.group(1)
            if package == "_global_":
                return ""
            return package.removeprefix("_global_.")
    return group.replace("/", ".")


def _walk(node: yaml.Node, prefix: str, lines: dict[str, int], problems: list[tuple[int, str]]):
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    (line, f"duplicate key '{key}' (first defined on line {seen[key]})")
                )
                continue
            seen[key] = line
            path = join_key(prefix, key)
            lines[path] = line
            _walk(value_node, path, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = join_key(prefix, index)
            lines[path] = item.start_mark.line + 1
            _walk(item, path, lines, problems)


def _defaults_entries(node: yaml.Node) -> list[DefaultsEntry]:
    entries: list[DefaultsEntry] = []
    if not isinstance(node, yaml.SequenceNode):
        return entries
    for item in node.value:
        line = item.start_mark.line + 1
        if isinstance(item, yaml.ScalarNode):
            entries.append(DefaultsEntry("", str(item.value), line, False, False))
        elif isinstance(item, yaml.MappingNode) and len(item.value) == 1:
            key_node, value_node = item.value[0]
            key = str(key_node.value)
            override = key.startswith("override ")
            key = key.removeprefix("override ").strip()
            absolute = key.startswith("/")
            group = key.lstrip("/").split("@", 1)[0]
            option = value_node.value if isinstance(value_node, yaml.ScalarNode) else ""
            entries.append(DefaultsEntry(group, str(option), line, absolute, override))
    return entries


def read_config_file(root: Path, path: Path, conf_dir: Path) -> tuple[ConfigFile, list[Diagnostic]]:
    """Parse one file; YAML problems come back as diagnostics, never as exceptions."""
    rel = path.relative_to(root).as_posix()
    group_path = path.parent.relative_to(conf_dir).as_posix()
    group = "" if group_path == "." else group_path
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        config = ConfigFile(rel, group, path.stem, "", "")
        config.valid = False
        line = data.count(b"\n", 0, exc.start) + 1
        return config, [
            Diagnostic(
                rel,
                line,
                "",
                f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                "yaml.encoding",
                "save the file as UTF-8",
            )
        ]
    config = ConfigFile(rel, group, path.stem, _package_of(text, group) if group else "", text)
    diagnostics: list[Diagnostic] = []
    if len(data) > MAX_BYTES:
        config.valid = False
        return config, [_too_large(rel, f"{len(data):,} bytes (at most {MAX_BYTES:,})")]
    try:
        node = yaml.compose(text, Loader=_omegaconf_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        diagnostics.append(
            Diagnostic(rel, line, "", f"YAML syntax error: {problem}", "yaml.syntax")
        )
        config.valid = False
        return config, diagnostics
    if node is None:
        return config, diagnostics
    excess = bounds_problem(node)
    if excess:
        config.valid = False
        return config, [_too_large(rel, excess)]
    if not isinstance(node, yaml.MappingNode):
        diagnostics.append(
            Diagnostic(
                rel, node.start_mark.line + 1, "", "top level must be a mapping", "yaml.root"
            )
        )
        config.valid = False
        return config, diagnostics
    problems: list[tuple[int, str]] = []
    body = []
    for key_node, value_node in node.value:
        if key_node.value == "defaults":
            config.defaults = _defaults_entries(value_node)
            config.lines["defaults"] = key_node.start_mark.line + 1
        else:
            body.append((key_node, value_node))
    node.value = body
    config.node = node
    _walk(node, config.package, config.lines, problems)
    for line, message in problems:
        diagnostics.append(Diagnostic(rel, line, "", message, "yaml.duplicate_key"))
        config.valid = False
    return config, diagnostics


@cache
def bounds_problem(root: yaml.Node) -> str:
    """Why a composed document is too big to load (its size with every alias expanded, or its
    depth), or empty. Aliases share nodes, so sizes are counted once per node: linear time."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested {depth} levels deep (at most {MAX_DEPTH})"
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            sizes[id(node)] = 1
            continue
        if children_done:
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_NODES:
                return f"more than {MAX_NODES:,} values once its aliases are expanded"
            sizes[id(node)] = size
            continue
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)
    return ""


def _too_large(rel: str, why: str) -> Diagnostic:
    return Diagnostic(
        rel, 0, "", f"refused: {why}", "yaml.too_large", "a config file is a page of settings"
    )


def _omegaconf_loader() -> type:
    """PyYAML's C loader with OmegaConf's scalar rules (YAML 1.2 floats, no timestamps).

    OmegaConf parses with a pure-Python loader; the C parser with the same implicit resolvers
    yields the same values about ten times faster. A test checks both agree on every example file.
    """
    from omegaconf._utils import get_yaml_loader  # the resolver table is not public API

    class Loader(_Loader):  # type: ignore[misc, valid-type]
        pass

    Loader.yaml_implicit_resolvers = {
        k: list(v) for k, v in get_yaml_loader().yaml_implicit_resolvers.items()
    }
    return Loader


def load_data(config: ConfigFile) -> dict[str, Any]:
    """The file's mapping as plain data (without ``defaults``), parsed the way OmegaConf does.

    Constructed once per file; callers must not mutate the result.
    """
    if config.data is None:
        if config.node is None:  # empty file, or one the reader rejected
            config.data = {}
        else:  # built from the node the reader composed: each file is parsed exactly once
            config.data = _omegaconf_loader()("").construct_document(config.node)
    return config.data
