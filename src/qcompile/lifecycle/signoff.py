"""Sign-offs and promotion: the two commands that write to conf/.

``qcompile signoff`` records who signed which artefact, when (UTC), and the sha256 of what they
signed; ``qcompile promote`` moves a strategy to another phase once that phase's gate is met.
Both edit the strategy's own YAML file through ``conf_edit`` (ruamel.yaml's round-trip mode), so
comments, quoting and layout stay as the team wrote them and a review diff shows only the signed
lines.

The gates compare a recorded hash with the artefact's current one; both hashes come from
``compiler.rules.signoffs``, which this module and the build share.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from qcompile.compiler.rules.checklist import AUTOMATIC_ITEMS
from qcompile.compiler.rules.evidence import not_utf8
from qcompile.compiler.rules.gates import CHECKLIST_ITEMS, PHASES, load_evidence, next_phase
from qcompile.compiler.rules.signoffs import artefact_locations, artefact_sha256
from qcompile.compiler.schema import (
    EMAIL_PATTERN,
    SIGNOFF_ROLES,
    TIMESTAMP_PATTERN,
)
from qcompile.errors import Diagnostic, DiagnosticsError, QcompileError
from qcompile.hashing import sha256_bytes
from qcompile.lifecycle.conf_edit import load_strategy, write_key
from qcompile.project import Project

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# What each role signs when --artefact is not given; SIGNOFF_ROLES says what it may sign.
DEFAULT_ARTEFACT = {
    "researcher": "report",
    "peer_reviewer": "validation",
    "quant_engineer": "checklist",
}
ROLES = tuple(DEFAULT_ARTEFACT)


def utc_now() -> datetime:
    return datetime.now(UTC)


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

    composed, config = load_strategy(project, strategy)
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
        record = {"by": by, "at": at, "attests": CHECKLIST_ITEMS[item]}
        what = f"checklist item {item} ({CHECKLIST_ITEMS[item]})"
        previous = (passport.get("checklist") or {}).get(item)
    else:
        assert artefact is not None
        _check_signer(passport, str(role), artefact, by)
        where = artefact_locations(config)[artefact]
        digest = artefact_sha256(project.root, config, artefact)
        if digest is None:
            raise QcompileError(
                f"cannot sign the {artefact} of {strategy_id}: {where} does not exist; "
                f"{_remedy(strategy_id, artefact)}"
            )
        _check_artefact(project, strategy_id, artefact, where)
        if artefact == "checklist":
            digest, changes = _checklist_to_sign(project, strategy_id, where)
        keys = ("strategy", "signoffs", artefact)
        record = {"by": by, "at": at, "sha256": digest}
        what = where if artefact == "brief" else f"the {artefact} ({where})"
        previous = (passport.get("signoffs") or {}).get(artefact)
    write_key(project, composed.file, keys, record)
    return Signature(
        strategy_id,
        composed.file.path,
        ".".join(keys),
        record,
        what,
        dict(previous) if isinstance(previous, dict) else None,
        changes if item is None and artefact == "checklist" else "",
    )


def sign_items(
    project: Project,
    strategy: str,
    by: str,
    items: Sequence[str],
    clock: Callable[[], datetime] = utc_now,
) -> list[Signature]:
    """Sign several manual checklist items, each a sign-off of its own at the same moment.
    Every item is checked first: one unknown or automatic item signs none and names them all."""
    problems = []
    for item in dict.fromkeys(items):
        try:
            _check_item(item)
        except QcompileError as error:
            problems.append(str(error))
    if problems:
        raise QcompileError("; ".join(problems) + "; nothing was signed")
    moment = clock()
    return [
        sign(project, strategy, by, item=item, clock=lambda: moment)
        for item in dict.fromkeys(items)
    ]


def _check_artefact(project: Project, strategy_id: str, artefact: str, where: str) -> None:
    """Refuse to record the hash of an artefact that is not what it should be: evidence.json a
    JSON object of the shape the gates read, a report or checklist UTF-8 text, a report not
    empty. A signature on a corrupt file would vouch for nothing."""
    if artefact == "brief":
        return  # it lives in the strategy's config, not in a file of its own
    path = project.root / where
    if artefact == "validation":
        problem = load_evidence(path, where, strategy_id).problem
        if problem is not None:
            raise DiagnosticsError([problem])
        return
    writer = "qcompile build" if artefact == "checklist" else f"qcompile backtest {strategy_id}"
    remedy = f"written by `{writer}`: run it again, review the result, then sign"
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        message, line = not_utf8(data, error)
        raise DiagnosticsError(
            [Diagnostic(where, line, "", message, "signoff.artefact", remedy)]
        ) from None
    if artefact == "report" and not text.strip():
        raise DiagnosticsError(
            [Diagnostic(where, 0, "", "empty: nothing to sign", "signoff.artefact", remedy)]
        )


def _checklist_to_sign(project: Project, strategy_id: str, where: str) -> tuple[str, str]:
    """The hash of the checklist the next build writes (what the gate compares), and a unified
    diff from the file on disk when they differ. The build may be refusing to write it: a
    production strategy whose checklist changed fails its gate until the engineer re-signs, so
    the engineer signs what the build will write, and sees here exactly how it differs."""

    from qcompile.compiler.build import compile_project
    from qcompile.compiler.plan import checklist_bytes

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
    if item in AUTOMATIC_ITEMS:
        raise QcompileError(
            f"checklist item {item} ({CHECKLIST_ITEMS[item]}) is checked automatically by "
            "`qcompile build`; a signature cannot tick it. If the check cannot pass, waive "
            f"checklist.{item} in strategy.waivers (who, why, until when; docs/lifecycle.md)"
        )
    if item in CHECKLIST_ITEMS:
        return
    from qcompile.compiler.compose import did_you_mean

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
    composed, config = load_strategy(project, strategy)
    strategy_id = str(config["strategy"]["id"])
    current = str(config["strategy"]["status"])
    if to_phase == current:
        raise QcompileError(f"{strategy_id} is already in {current}")
    if PHASES.index(to_phase) > PHASES.index(current) + 1:
        raise QcompileError(
            f"{strategy_id} is in {current}: promote one phase at a time "
            f"(--to {next_phase(current)})"
        )
    from qcompile.compiler.build import compile_project
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
    write_key(project, composed.file, ("strategy", "status"), to_phase)
    return Promotion(strategy_id, composed.file.path, current, to_phase)


__all__ = [
    "DEFAULT_ARTEFACT",
    "ROLES",
    "Promotion",
    "Signature",
    "promote",
    "sign",
]
