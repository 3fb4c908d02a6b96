"""Sign-offs and promotion: the two commands that write to conf/.

``qcompile signoff`` records who signed which artefact, when (UTC), and the sha256 of what they
signed; ``qcompile promote`` moves a strategy to another phase once that phase's gate is met.
Both edit the strategy's own YAML file in ruamel.yaml's round-trip mode, so comments, quoting and
layout stay as the team wrote them and a review diff shows only the signed lines.

The gates (lifecycle) compare a recorded hash with the artefact's current one, which
:func:`signed_artefacts` computes here: lifecycle itself reads no files.
"""

from __future__ import annotations

import copy
import difflib
import io
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from qcompile.errors import DiagnosticsError, QcompileError
from qcompile.hashing import sha256_bytes, sha256_file, sha256_json
from qcompile.lifecycle import CHECKLIST_ITEMS, PHASES, SignedArtefact, next_phase
from qcompile.project import Project
from qcompile.schema import EMAIL_PATTERN, SIGNOFF_ARTEFACTS, SIGNOFF_ROLES, TIMESTAMP_PATTERN

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# What each role signs when --artefact is not given; SIGNOFF_ROLES says what it may sign.
DEFAULT_ARTEFACT = {
    "researcher": "report",
    "peer_reviewer": "validation",
    "quant_engineer": "checklist",
}
ROLES = tuple(DEFAULT_ARTEFACT)
# ruamel cannot tell us a file's indentation reliably (comments throw its guess off), so each
# layout is tried until one reproduces the file byte for byte; conf/'s own style comes first.
_LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 6, 2), (4, 4, 0), (3, 5, 2), (4, 4, 2))


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- artefacts ------------------------------------------------------------------------------------


def artefact_locations(config: dict[str, Any]) -> dict[str, str]:
    """Where each signed artefact of a composed, resolved config lives (relative to the root)."""
    strategy = config["strategy"]
    reports = str((config.get("project") or {}).get("reports_dir", "reports")).rstrip("/")
    version_dir = f"{reports}/{strategy['id']}/{strategy['version']}"
    return {
        "brief": "the research brief (strategy.alpha_thesis and strategy.brief)",
        "report": f"{version_dir}/report.md",
        "validation": f"{version_dir}/evidence.json",
        "checklist": f"generated/{strategy['id']}/checklist.md",
    }


def artefact_sha256(root: Path, config: dict[str, Any], artefact: str) -> str | None:
    """The artefact's current hash, or None when its file does not exist.

    The brief lives in the config itself, so its hash is taken over the resolved values: editing
    the alpha thesis after signing makes the brief sign-off stale.
    """
    if artefact not in SIGNOFF_ARTEFACTS:
        raise ValueError(f"unknown sign-off artefact {artefact!r}")
    if artefact == "brief":
        strategy = config["strategy"]
        return sha256_json(
            {"alpha_thesis": strategy.get("alpha_thesis"), "brief": strategy.get("brief")}
        )
    path = root / artefact_locations(config)[artefact]
    return sha256_file(path) if path.is_file() else None


def signed_artefacts(root: Path, config: dict[str, Any]) -> dict[str, SignedArtefact]:
    """Current state of every artefact whose sign-off recorded a hash (for lifecycle.evaluate).

    Hand-written sign-offs without ``sha256`` are left out: there is nothing to compare.
    """
    signoffs = config["strategy"].get("signoffs")
    if not isinstance(signoffs, dict):
        return {}
    where = artefact_locations(config)
    return {
        name: SignedArtefact(where[name], artefact_sha256(root, config, name))
        for name, record in sorted(signoffs.items())
        if name in SIGNOFF_ARTEFACTS and isinstance(record, dict) and record.get("sha256")
    }


def resign_command(strategy_id: str, artefact: str) -> str:
    """The command that (re-)signs ``artefact``: hints print it."""
    extra = " --artefact brief" if artefact == "brief" else ""
    return f"qcompile signoff {strategy_id} --role {SIGNOFF_ROLES[artefact]}{extra} --by EMAIL"


def _remedy(strategy_id: str, artefact: str) -> str:
    if artefact == "checklist":
        return "run `qcompile build` first"
    return f"run `qcompile backtest {strategy_id}` first"


# -- signing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One recorded sign-off (of an artefact or a checklist item) and where it was written."""

    strategy_id: str
    file: str  # the strategy's YAML file, relative to the root
    key: str  # strategy.signoffs.report or strategy.checklist.docs.runbook
    record: dict[str, str]  # by, at and (artefacts) sha256
    what: str  # what was signed, for the message
    replaced: dict[str, Any] | None  # the record this one replaced, if any
    changes: str = ""  # checklist: how the signed text differs from the file on disk


def sign(
    project: Project,
    strategy: str,
    by: str,
    *,
    role: str | None = None,
    artefact: str | None = None,
    item: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Signature:
    """Record a sign-off in the strategy's YAML file; the file is untouched on any error.

    With ``role``: sign that role's artefact (``artefact`` picks the researcher's brief instead of
    the report) with its current sha256. With ``item``: sign one manual deployment-checklist item.
    """
    if (role is None) == (item is None):
        raise QcompileError(
            "give either --role (to sign an artefact) or --item (a checklist item), not both"
            if role is not None
            else "give --role (to sign an artefact) or --item (to sign a checklist item)"
        )
    if not re.fullmatch(EMAIL_PATTERN, by):
        raise QcompileError(f"--by must be an email address, was {by!r}")
    if item is not None:
        if artefact is not None:
            raise QcompileError("--artefact goes with --role, not with --item")
        _check_item(item)
    else:
        artefact = _artefact_for(str(role), artefact)

    composed, config = _load(project, strategy)
    passport = config["strategy"]
    strategy_id = str(passport["id"])
    moment = clock()
    if moment.tzinfo is None:
        raise ValueError("the clock must return a timezone-aware datetime")
    at = moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
    assert re.fullmatch(TIMESTAMP_PATTERN, at)  # what the schema accepts
    _check_order(passport, at)

    if item is not None:
        keys = ("strategy", "checklist", item)
        record = {"by": by, "at": at}
        what = f"checklist item {item} ({CHECKLIST_ITEMS[item]})"
        previous = (passport.get("checklist") or {}).get(item)
    else:
        assert artefact is not None
        _check_signer(passport, str(role), artefact, by)
        where = artefact_locations(config)[artefact]
        digest = artefact_sha256(project.root, config, artefact)
        if digest is not None and artefact == "checklist":
            digest, changes = _checklist_to_sign(project, strategy_id, where)
        if digest is None:
            raise QcompileError(
                f"cannot sign the {artefact} of {strategy_id}: {where} does not exist; "
                f"{_remedy(strategy_id, artefact)}"
            )
        keys = ("strategy", "signoffs", artefact)
        record = {"by": by, "at": at, "sha256": digest}
        what = where if artefact == "brief" else f"the {artefact} ({where})"
        previous = (passport.get("signoffs") or {}).get(artefact)
    _write_key(project, composed.file, keys, record)
    return Signature(
        strategy_id,
        composed.file.path,
        ".".join(keys),
        record,
        what,
        dict(previous) if isinstance(previous, dict) else None,
        changes if item is None and artefact == "checklist" else "",
    )


def _checklist_to_sign(project: Project, strategy_id: str, where: str) -> tuple[str, str]:
    """The hash of the checklist the next build writes (what the gate compares), and a unified
    diff from the file on disk when they differ. The build may be refusing to write it: a
    production strategy whose checklist changed fails its gate until the engineer re-signs, so
    the engineer signs what the build will write, and sees here exactly how it differs."""
    import difflib

    from qcompile.build import compile_project
    from qcompile.plan import checklist_bytes

    (compiled,) = compile_project(project, [], [strategy_id], enforce_gates=False).strategies
    rendered = checklist_bytes(compiled)
    on_disk = (project.root / where).read_bytes()
    if rendered == on_disk:
        return sha256_bytes(rendered), ""
    diff = difflib.unified_diff(
        on_disk.decode("utf-8").splitlines(keepends=True),
        rendered.decode("utf-8").splitlines(keepends=True),
        f"a/{where}",
        f"b/{where} (as the next build writes it)",
    )
    return sha256_bytes(rendered), "".join(diff)


def _artefact_for(role: str, artefact: str | None) -> str:
    if role not in DEFAULT_ARTEFACT:
        raise QcompileError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    chosen = artefact or DEFAULT_ARTEFACT[role]
    if chosen not in SIGNOFF_ROLES:
        raise QcompileError(f"unknown artefact {chosen!r}; artefacts: {', '.join(SIGNOFF_ROLES)}")
    if SIGNOFF_ROLES[chosen] != role:
        may = [a for a, r in SIGNOFF_ROLES.items() if r == role]
        raise QcompileError(
            f"the {chosen} is signed by the {SIGNOFF_ROLES[chosen]}, not the {role}; "
            f"the {role} signs: {', '.join(may)}"
        )
    return chosen


def _check_item(item: str) -> None:
    if item in CHECKLIST_ITEMS:
        return
    from qcompile.compose import did_you_mean

    hint = did_you_mean(item, CHECKLIST_ITEMS)
    raise QcompileError(
        f"unknown checklist item {item!r}"
        + (f"; {hint}" if hint else "; the ids are listed in docs/config-reference.md")
    )


def _check_signer(passport: dict[str, Any], role: str, artefact: str, by: str) -> None:
    """The build's sign-off rules (rule.signoff_role, rule.signoff_independent), checked before
    writing so that a sign-off never leaves the config failing to build."""
    researcher = passport.get("researcher")
    if role == "researcher" and researcher and by != researcher:
        raise QcompileError(
            f"the {artefact} is signed by the strategy's researcher ({researcher}), not {by}"
        )
    if role == "peer_reviewer" and by == researcher:
        raise QcompileError("the peer reviewer must not be the strategy's researcher")


def _check_order(passport: dict[str, Any], at: str) -> None:
    hypothesis = passport.get("hypothesis_date")
    try:
        formed = date.fromisoformat(str(hypothesis))
    except ValueError:
        return  # the schema reports it
    if at[:10] < formed.isoformat():
        raise QcompileError(f"cannot sign at {at}: before the hypothesis date {formed}")


# -- promotion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    strategy_id: str
    file: str
    previous: str
    phase: str

    @property
    def demotion(self) -> bool:
        return PHASES.index(self.phase) < PHASES.index(self.previous)


def promote(project: Project, strategy: str, to_phase: str) -> Promotion:
    """Move a strategy to the next phase (or back to any earlier one) if the build would pass.

    The strategy is compiled as if it were already in ``to_phase`` (an override of
    ``strategy.status``): every unmet requirement of that gate, and any other problem the build
    would report, refuses the move and nothing is written.
    """
    if to_phase not in PHASES:
        raise QcompileError(f"unknown phase {to_phase!r}; phases: {', '.join(PHASES)}")
    composed, config = _load(project, strategy)
    strategy_id = str(config["strategy"]["id"])
    current = str(config["strategy"]["status"])
    if to_phase == current:
        raise QcompileError(f"{strategy_id} is already in {current}")
    if PHASES.index(to_phase) > PHASES.index(current) + 1:
        raise QcompileError(
            f"{strategy_id} is in {current}: promote one phase at a time "
            f"(--to {next_phase(current)})"
        )
    from qcompile.build import compile_project
    from qcompile.errors import COMMAND_LINE

    try:
        compile_project(project, [f"strategy.status={to_phase}"], [strategy_id])
    except DiagnosticsError as error:
        line = composed.file.line_of("strategy.status")
        lines = []
        for problem in error.errors:
            if problem.file == COMMAND_LINE and problem.key == "strategy.status":
                # the gate problems point at our override: show the line that will change
                problem = type(problem)(
                    composed.file.path,
                    line,
                    problem.key,
                    problem.message,
                    problem.code,
                    problem.hint,
                )
            lines.append("  " + problem.render().replace("\n", "\n  "))
        gate = sum(1 for p in error.errors if p.code.startswith("gate."))
        other = len(error.errors) - gate
        raise QcompileError(
            f"cannot move {strategy_id} from {current} to {to_phase}: {gate} unmet "
            f"requirement(s)"
            + (f" and {other} other problem(s)" if other else "")
            + f"; {composed.file.path} is unchanged\n"
            + "\n".join(lines)
        ) from None
    _write_key(project, composed.file, ("strategy", "status"), to_phase)
    return Promotion(strategy_id, composed.file.path, current, to_phase)


# -- reading and writing the strategy's file ------------------------------------------------------


def _load(project: Project, strategy: str) -> tuple[Any, dict[str, Any]]:
    """The strategy's composition (which knows its source file) and its resolved config.

    Only compose, resolve and schema: signing must work while the strategy fails its gate (a
    stale sign-off is exactly such a failure), and needs no lock.
    """
    from qcompile.compose import compose_strategies, read_conf_tree
    from qcompile.validate import resolve, schema_diagnostics

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


def _write_key(project: Project, source: Any, keys: tuple[str, ...], value: Any) -> None:
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


__all__ = [
    "DEFAULT_ARTEFACT",
    "ROLES",
    "Promotion",
    "Signature",
    "artefact_locations",
    "artefact_sha256",
    "promote",
    "resign_command",
    "sign",
    "signed_artefacts",
]
