"""Stage 1 (compose): Hydra configs -> one composed config per strategy.

Consumes the parsed ``conf/`` files and command-line overrides (Hydra's grammar); produces a
:class:`ComposedStrategy` per selected strategy, unresolved (secret references stay references).

Composing from scratch costs tens of milliseconds per config, so the compose API runs once for
every group option the strategies select (universe, costs, data, deployment plus group overrides),
each under a slot of its own; each strategy's own body and the leaf overrides are merged onto its
options afterwards. When neither the primary config nor any selected option has a defaults list,
Hydra would compose each of them to its own data at its package, so the parts are taken from the
parsed files and Hydra is not started at all (its import and one compose were a third of a cold
build). A strategy whose defaults list does something the fast path does not model (non-group
entries, ``_self_`` not last, package redirects) is composed by Hydra directly. Tests check every
path against Hydra composing each strategy itself.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qcompile.compiler.read import ConfigFile, load_data, parent_key, read_config_file
from qcompile.errors import COMMAND_LINE, Diagnostic, DiagnosticsError
from qcompile.project import CONFIG_GROUPS, PRIMARY_CONFIG, Project

if TYPE_CHECKING:
    from omegaconf import DictConfig

SELF = "_self_"


@dataclass
class Override:
    """A parsed command-line override."""

    text: str
    key: str
    kind: str  # "change", "add", "force_add", "delete"
    value: Any
    is_group: bool


@dataclass
class ComposedStrategy:
    """One strategy's composed config and where every part of it came from."""

    name: str  # file stem under conf/strategy/
    file: ConfigFile
    data: dict[str, Any]  # composed, unresolved, as plain data; treat as read-only
    selection: dict[str, str]  # group -> option, after overrides
    sources: list[ConfigFile]  # in merge order: primary, groups, the strategy file
    overrides: list[Override] = field(default_factory=list)
    _config: DictConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> DictConfig:
        """The composed config as OmegaConf nodes, built on first use: creating nodes costs far
        more than composing, and most strategies need none (no interpolation, no override)."""
        if self._config is None:
            from omegaconf import OmegaConf

            self._config = OmegaConf.create(self.data)
            OmegaConf.set_struct(self._config, True)  # as Hydra leaves it
        return self._config

    def locate(self, key: str) -> tuple[str, int]:
        """The file and line that last set ``key`` (or its nearest ancestor); the command line
        when no file sets ``key`` and an override added it or something beneath it."""
        if not any(key in source.lines for source in self.sources) and any(
            not o.is_group and (o.key == key or o.key.startswith(key + ".")) for o in self.overrides
        ):
            return COMMAND_LINE, 0
        probe = key
        while probe:
            for override in self.overrides:
                if not override.is_group and override.key == probe:
                    return COMMAND_LINE, 0
            for source in reversed(self.sources):
                if probe in source.lines:
                    return source.path, source.lines[probe]
            probe = parent_key(probe)
        return _empty_source(self.sources, key) or (self.file.path, 0)

    @property
    def override_texts(self) -> list[str]:
        return [o.text for o in self.overrides]


def _empty_source(sources: list[ConfigFile], key: str) -> tuple[str, int] | None:
    """An empty file of the merge that would have set ``key``, at line 1: a group option whose
    package holds ``key`` (conf/costs/retail.yaml for ``costs.name``), else the primary config
    for a top-level section no file sets and no config group provides (``gates``). Its
    emptiness is the problem, not the strategy that selects it."""
    section = re.split(r"[.\[]", key, maxsplit=1)[0]
    defined = {re.split(r"[.\[]", k, maxsplit=1)[0] for s in sources for k in s.lines}
    blamed: ConfigFile | None = None
    for source in sources:
        if not source.valid or any(k != "defaults" for k in source.lines):
            continue  # a file that holds keys (or could not be read) is not empty
        package = source.package
        if package and (key == package or key.startswith(package + ".")):
            if blamed is None or len(package) > len(blamed.package):
                blamed = source
        elif not source.group and blamed is None and section not in (*defined, *CONFIG_GROUPS):
            blamed = source
    return (blamed.path, 1) if blamed is not None else None


@dataclass
class ConfTree:
    """Every file under conf/, parsed once."""

    files: dict[str, ConfigFile]  # keyed by "group/name" ("qcompile" for the primary)
    diagnostics: list[Diagnostic]

    def get(self, group: str, name: str) -> ConfigFile | None:
        return self.files.get(f"{group}/{name}" if group else name)

    def options(self, group: str) -> list[str]:
        prefix = f"{group}/"
        return sorted(
            k[len(prefix) :]
            for k in self.files
            if k.startswith(prefix) and "/" not in k[len(prefix) :]
        )

    def groups(self) -> set[str]:
        return {k.rsplit("/", 1)[0] for k in self.files if "/" in k}


def read_conf_tree(project: Project) -> ConfTree:
    files: dict[str, ConfigFile] = {}
    diagnostics: list[Diagnostic] = []
    for path in project.config_files():
        config, problems = read_config_file(project.root, path, project.conf_dir)
        diagnostics.extend(problems)
        files[f"{config.group}/{config.name}" if config.group else config.name] = config
    if PRIMARY_CONFIG.removesuffix(".yaml") not in files:
        diagnostics.append(Diagnostic(f"conf/{PRIMARY_CONFIG}", 0, "", "missing", "conf.primary"))
    return ConfTree(files, diagnostics)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else ""


def parse_overrides(texts: list[str], tree: ConfTree) -> tuple[list[Override], list[Diagnostic]]:
    """Parse overrides with Hydra's own grammar; sweeps are refused here (see ``qcompile sweep``)."""
    if not texts:
        return [], []  # without importing Hydra's parser, a tenth of a cold build
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    overrides: list[Override] = []
    diagnostics: list[Diagnostic] = []
    groups = tree.groups()
    for text in texts:
        try:
            (parsed,) = parser.parse_overrides([text])
        except HydraException as exc:
            message = str(exc).splitlines()[0]
            diagnostics.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    text,
                    f"invalid override: {message}",
                    "override.syntax",
                    "overrides follow Hydra's grammar: key=value, +key=value, ~key, group=option",
                )
            )
            continue
        if parsed.is_sweep_override():
            diagnostics.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    text,
                    "sweeps are not allowed here",
                    "override.sweep",
                    "use 'qcompile sweep' for parameter sweeps",
                )
            )
            continue
        kind = override_kind(parsed)
        key = parsed.key_or_group
        value = None if parsed.is_delete() else parsed.value()
        overrides.append(Override(text, key, kind, value, key in groups))
    return overrides, diagnostics


def override_kind(parsed: Any) -> str:
    """What a parsed Hydra override does: "delete" (~k), "force_add" (++k), "add" (+k) or
    "change"."""
    if parsed.is_delete():
        return "delete"
    if parsed.is_force_add():
        return "force_add"
    return "add" if parsed.is_add() else "change"


def _fast_path_ok(config: ConfigFile, selection: dict[str, str], tree: ConfTree) -> bool:
    """Whether composing this strategy from separately composed options is exactly Hydra's result:
    absolute group entries then ``_self_``, and every selected option placed at its group's key."""
    if config.package != "":
        return False
    for index, entry in enumerate(config.defaults):
        if entry.option == SELF:
            if index != len(config.defaults) - 1:
                return False
        elif not entry.absolute or entry.override or not entry.group:
            return False
    for group, option in selection.items():
        file = tree.get(group, option)
        if file is None or file.package != group.replace("/", "."):
            return False
    return True


@contextmanager
def hydra_session(project: Project):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(project.conf_dir.resolve()), version_base="1.3"):
        yield


NOT_FOUND = "no such key"


def _override_diagnostics(
    failed: dict[tuple[str, str], list[ComposedStrategy]], composed: int
) -> list[Diagnostic]:
    """One diagnostic per failed override: which strategies it failed for (all, or the ones
    named), and for a key that does not exist, the nearest keys that do."""
    found = []
    for (text, reason), where in sorted(failed.items(), key=lambda item: item[0]):
        message, hint = reason, ""
        if reason == NOT_FOUND and len(where) < composed:  # the others have it
            hint = "an override applies to every strategy compiled; pick some with --strategy ID"
        elif reason == NOT_FOUND:
            key = text.split("=", 1)[0]
            keys = sorted({k for strategy in where for k in _leaf_keys(strategy.data)})
            nearest = _nearest_key(key, keys)
            hint = (
                f"did you mean '{nearest}'?"
                if nearest
                else "to add a key that does not exist, write +KEY=VALUE"
            )
        if len(where) < composed:
            message += " in " + ", ".join(sorted(s.name for s in where))
        found.append(Diagnostic(COMMAND_LINE, 0, text, message, "override.invalid", hint))
    return found


def _nearest_key(key: str, keys: list[str]) -> str | None:
    """The existing key a mistyped one most likely meant: by its last part first (a misspelt
    name, or the right name under the wrong parent), then by the whole path."""
    leaf = key.rpartition(".")[2]
    by_leaf: dict[str, list[str]] = {}
    for candidate in keys:
        by_leaf.setdefault(candidate.rpartition(".")[2], []).append(candidate)
    names = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    if names:
        paths = by_leaf[names[0]]
        return max(paths, key=lambda p: difflib.SequenceMatcher(None, key, p).ratio())
    whole = difflib.get_close_matches(key, keys, n=1, cutoff=0.85)
    return whole[0] if whole else None


def _leaf_keys(data: Any, prefix: str = "") -> list[str]:
    if not isinstance(data, dict):
        return [prefix] if prefix else []
    keys = [prefix] if prefix else []
    for name, value in data.items():
        keys += _leaf_keys(value, f"{prefix}.{name}" if prefix else str(name))
    return keys


def _apply_leaf_overrides(cfg: DictConfig, overrides: list[Override]) -> list[tuple[Override, str]]:
    """Hydra's leaf-override semantics; returns (override, reason) for each one that failed."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    failures: list[tuple[Override, str]] = []
    for override in overrides:
        exists = _exists(cfg, override.key)
        try:
            if override.kind == "delete":
                if not exists:
                    failures.append((override, "cannot delete: key not found"))
                    continue
                parent, _, leaf = override.key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                with open_dict(node):
                    del node[leaf]
            elif override.kind == "add" and exists:
                failures.append((override, "cannot add: key already exists (use ++ to force)"))
            elif override.kind == "change" and not exists:
                failures.append((override, NOT_FOUND))
            else:
                with open_dict(cfg):
                    OmegaConf.update(cfg, override.key, override.value, merge=True, force_add=True)
        except OmegaConfBaseException as exc:
            failures.append((override, str(exc).splitlines()[0]))
    return failures


_MISSING = object()


def _exists(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` names a node of ``cfg``, without resolving it: a ``${oc.env:NAME}``
    value exists whether or not NAME is set here."""
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=_MISSING) if parent else cfg
    if "[" in leaf or not isinstance(node, DictConfig):  # an item of a list: select it
        selected = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        return selected is not _MISSING
    return leaf in OmegaConf.to_container(node, resolve=False)


def _selection_of(config: ConfigFile) -> dict[str, str]:
    return {e.group: e.option for e in config.defaults if e.option != SELF}


def compose_strategies(
    project: Project, tree: ConfTree, override_texts: list[str], only: set[str] | None = None
) -> list[ComposedStrategy]:
    """Compose every strategy (or those named in ``only``, by file stem or id)."""
    diagnostics = list(tree.diagnostics)
    overrides, problems = parse_overrides(override_texts, tree)
    diagnostics.extend(problems)
    group_overrides = [o for o in overrides if o.is_group]
    leaf_overrides = [o for o in overrides if not o.is_group]
    for override in list(group_overrides):
        if override.kind != "delete" and override.value not in tree.options(override.key):
            group_overrides.remove(override)  # compose on without it to report every other problem
            hint = did_you_mean(str(override.value), tree.options(override.key))
            diagnostics.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    override.text,
                    f"no option '{override.value}' in group '{override.key}'",
                    "override.unknown_option",
                    hint,
                )
            )
    strategies = [tree.files[k] for k in sorted(tree.files) if k.startswith("strategy/")]
    if only:
        strategies = [s for s in strategies if s.name in only or _declared_id(s) in only]
        unknown = only - {s.name for s in strategies} - {_declared_id(s) for s in strategies}
        # a file that could not be read may hold the strategy: say so rather than guess another
        unreadable = [
            f.path for f in tree.files.values() if f.group == "strategy" and not _declared_id(f)
        ]
        for name in sorted(unknown):
            names = [s.name for s in tree.files.values() if s.group == "strategy"]
            ids = [_declared_id(s) for s in tree.files.values() if s.group == "strategy"]
            hint = (
                f"{', '.join(sorted(unreadable))} could not be read; it may hold {name}"
                if unreadable
                else did_you_mean(name, [*names, *(i for i in ids if i)])
            )
            diagnostics.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    "",
                    f"no strategy '{name}' (a file name under conf/strategy/, or an id)",
                    "cli.unknown_strategy",
                    hint,
                )
            )
    broken = set()
    for strategy in strategies:
        problems = _check_defaults(strategy, tree)
        diagnostics.extend(problems)
        # a selected file with a YAML error was reported by the reader: skip, don't pile on
        selected = [tree.get(g, o) for g, o in _selection_of(strategy).items()]
        if problems or not strategy.valid or any(f is not None and not f.valid for f in selected):
            broken.add(strategy.name)
    primary = tree.files.get("qcompile")
    if primary is None or not primary.valid:
        raise DiagnosticsError(diagnostics)  # nothing composes without the primary config
    strategies = [s for s in strategies if s.name not in broken]

    composed: list[ComposedStrategy] = []
    failed: dict[tuple[str, str], list[ComposedStrategy]] = {}  # (override, reason) -> where
    selections: dict[str, dict[str, str]] = {}
    for strategy in strategies:
        selection, problems = _apply_group_overrides(_selection_of(strategy), group_overrides)
        diagnostics.extend(problems)
        if not problems:
            selections[strategy.name] = selection
    fast = {
        s.name
        for s in strategies
        if s.name in selections and _fast_path_ok(s, selections[s.name], tree)
    }
    needed = sorted({pair for name in fast for pair in selections[name].items()})
    parts = _plain_parts(primary, needed, tree) if fast else None
    with ExitStack() as session:
        if parts is None or len(fast) < len(selections):  # Hydra composes something: start it
            session.enter_context(hydra_session(project))
        primary_data, options = parts or ({}, {})
        try:
            if fast and parts is None:
                primary_data, options = _compose_options(needed)
        except Exception:  # compose each strategy on its own below, to say which one fails
            fast = set()
        for strategy in strategies:
            if strategy.name not in selections:
                continue
            selection = selections[strategy.name]
            try:
                if strategy.name in fast:
                    data = _merged(_base(primary_data, options, selection), load_data(strategy))
                else:
                    data = _compose_hydra(
                        strategy, override_texts=[o.text for o in group_overrides]
                    )
            except Exception as exc:  # Hydra raises many types; each becomes a diagnostic
                diagnostics.append(
                    Diagnostic(
                        strategy.path,
                        1,
                        "",
                        f"composition failed: {_first_line(exc)}",
                        "compose.failed",
                    )
                )
                continue
            sources = (
                [tree.files["qcompile"]]
                + [f for g, o in selection.items() if (f := tree.get(g, o)) is not None]
                + [strategy]
            )
            result = ComposedStrategy(strategy.name, strategy, data, selection, sources, overrides)
            if leaf_overrides:
                for override, reason in _apply_leaf_overrides(result.config, leaf_overrides):
                    failed.setdefault((override.text, reason), []).append(result)
                result.data = _container(result.config)
            composed.append(result)
    diagnostics += _override_diagnostics(failed, len(composed))
    if any(d.severity == "error" for d in diagnostics):
        raise DiagnosticsError(diagnostics)
    return composed


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _declared_id(config: ConfigFile) -> str:
    """The strategy id as written in the file, read without composing (for --strategy)."""
    try:
        data = load_data(config)
    except Exception:
        return ""
    strategy = data.get("strategy")
    return str(strategy.get("id", "")) if isinstance(strategy, dict) else ""


def _check_defaults(strategy: ConfigFile, tree: ConfTree) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    if not strategy.valid:
        return problems
    if not re.fullmatch(r"[A-Za-z0-9_-]+", strategy.name):
        problems.append(
            Diagnostic(
                strategy.path,
                0,
                "",
                "a strategy file name may only hold letters, digits, '_' and '-'",
                "conf.strategy_filename",
                "the name is used on command lines (qcompile show NAME)",
            )
        )
        return problems
    if strategy.package != "":
        problems.append(
            Diagnostic(
                strategy.path,
                1,
                "",
                "a strategy file must start with '# @package _global_'",
                "conf.strategy_package",
                "its defaults then select /universe, /costs, /data and /deployment at the top level",
            )
        )
    for entry in strategy.defaults:
        if entry.option == SELF or not entry.group:
            continue
        if entry.group not in tree.groups():
            problems.append(
                Diagnostic(
                    strategy.path,
                    entry.line,
                    f"defaults.{entry.group}",
                    f"no config group '{entry.group}'",
                    "defaults.unknown_group",
                    did_you_mean(entry.group, tree.groups()),
                )
            )
        elif entry.option not in tree.options(entry.group):
            problems.append(
                Diagnostic(
                    strategy.path,
                    entry.line,
                    f"defaults.{entry.group}",
                    f"no option '{entry.option}' in group '{entry.group}'",
                    "defaults.unknown_option",
                    did_you_mean(entry.option, tree.options(entry.group)),
                )
            )
    return problems


def _apply_group_overrides(
    selection: dict[str, str], overrides: list[Override]
) -> tuple[dict[str, str], list[Diagnostic]]:
    selection = dict(selection)
    problems: list[Diagnostic] = []
    for override in overrides:
        present = override.key in selection
        if override.kind == "delete":
            selection.pop(override.key, None)
        elif override.kind == "change" and not present:
            problems.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    override.text,
                    f"group '{override.key}' is not selected by this strategy",
                    "override.group_not_selected",
                    f"use +{override.text} to add it",
                )
            )
        elif override.kind == "add" and present:
            problems.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    override.text,
                    f"group '{override.key}' is already selected",
                    "override.group_selected",
                    f"use {override.text.lstrip('+')} to change it",
                )
            )
        else:
            selection[override.key] = str(override.value)
    return selection, problems


def _merged(base: Any, body: Any) -> Any:
    """OmegaConf's merge on plain data: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(body, dict):
        merged = dict(base)
        for key, value in body.items():
            merged[key] = _merged(base[key], value) if key in base else value
        return merged
    return body  # shared, not copied: composed data is read-only from here on


def _container(cfg: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    return data  # type: ignore[return-value]


_SLOT = "_qcompile_option_{}"


def _compose_options(
    needed: list[tuple[str, str]],
) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    """One Hydra compose for the primary config and every needed group option, each option under
    a slot of its own (``+costs@slot=retail``); strategies are then assembled from the parts."""
    from hydra import compose

    slots = {pair: _SLOT.format(index) for index, pair in enumerate(needed)}
    overrides = [f"+{group}@{slot}={option}" for (group, option), slot in slots.items()]
    data = _container(compose(config_name="qcompile", overrides=overrides))
    options = {pair: data.pop(slot, None) for pair, slot in slots.items()}
    return data, options


def _plain_parts(
    primary: ConfigFile, needed: list[tuple[str, str]], tree: ConfTree
) -> tuple[dict[str, Any], dict[tuple[str, str], Any]] | None:
    """The parts ``_compose_options`` would return, read straight from the parsed files when no
    file involved has a defaults list (nor a ``hydra`` node): Hydra then composes each one to its
    own data at its package, so starting Hydra (a third of a cold build) would add nothing."""
    files = [tree.get(group, option) for group, option in needed]
    if primary.defaults or "hydra" in load_data(primary):
        return None
    if any(f is None or f.defaults or not f.valid or f.node is None for f in files):
        return None  # (an empty file is left to Hydra too: whether it adds an empty node)
    return load_data(primary), {
        pair: load_data(file) for pair, file in zip(needed, files, strict=True) if file is not None
    }


def _base(
    primary: dict[str, Any], options: dict[tuple[str, str], Any], selection: dict[str, str]
) -> dict[str, Any]:
    """The primary config with each selected option at its group's key, in defaults order."""
    base = primary
    for group, option in selection.items():
        part = options.get((group, option))
        if part is not None:
            base = _merged(base, {group: part})
    return base


def _compose_hydra(strategy: ConfigFile, override_texts: list[str]) -> dict[str, Any]:
    from hydra import compose

    return _container(
        compose(config_name="qcompile", overrides=[f"+strategy={strategy.name}", *override_texts])
    )
