"""Stage 2 (validate): composed configs -> resolved data + diagnostics.

Consumes :class:`~qcompile.compiler.compose.ComposedStrategy` records; produces each strategy's resolved
config as plain data (secret references kept as ``${oc.env:NAME}`` text, never resolved) and a
list of :class:`~qcompile.errors.Diagnostic`: interpolation failures, schema violations (cerberus),
literal secrets, cross-field rules and duplicate ids. Nothing here stops at the first problem.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from cerberus import Validator
from cerberus.schema import DefinitionSchema

from qcompile.compiler.compose import ComposedStrategy, ConfTree, did_you_mean
from qcompile.compiler.read import join_key
from qcompile.compiler.rules.checklist import AUTOMATIC_ITEMS, WAIVER_PREFIX
from qcompile.compiler.rules.gates import CHECKLIST_ITEMS, REQUIREMENTS
from qcompile.compiler.schema import (
    COMPOSED_SCHEMA,
    DATE_PATTERN,
    EMAIL_PATTERN,
    ID_PATTERN,
    SEMVER_PATTERN,
    SIGNOFF_ROLES,
    TIMESTAMP_PATTERN,
)
from qcompile.errors import COMMAND_LINE, Diagnostic
from qcompile.project import Project
from qcompile.runtimedefaults import ALERT_THRESHOLDS

SECRET_REFERENCE = re.compile(r"^\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)\}$")
_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|token|secret|password|passwd|credentials?|private_key)$", re.I
)
_SECRET_VALUE = [
    (re.compile(r"AKIA[0-9A-Z]{16}"), "an AWS access key"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), "an API secret key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), "a GitHub token"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (
        re.compile(r"[?&](api_?key|token|access_token|secret)=(?!\$\{)[^&\s]+", re.I),
        "a key in a URL",
    ),
    (re.compile(r"://[^/\s:@]+:(?!\$\{)[^@\s/]+@"), "a password in a URL"),
    (re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]+"), "a Slack webhook secret"),
]
_PATTERN_NAMES = {
    ID_PATTERN: "a strategy id like STR-2026-0042",
    SEMVER_PATTERN: "a semantic version like 1.3.2",
    DATE_PATTERN: "a date YYYY-MM-DD",
    TIMESTAMP_PATTERN: "an ISO 8601 timestamp with a timezone, e.g. 2026-01-20T14:03:00Z",
    EMAIL_PATTERN: "an email address",
}
_MISSING_ENV = object()


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.rsplit(".", 1)[-1].split("[", 1)[0]))


def secret_problem(key: str, value: Any) -> str | None:
    """Why ``value`` at ``key`` looks like a literal secret, or None. Never echoes the value."""
    if not isinstance(value, str) or not value:
        return None
    if is_secret_key(key) and not SECRET_REFERENCE.match(value):
        return "looks like a literal secret"
    for pattern, what in _SECRET_VALUE:
        if pattern.search(value):
            return f"looks like {what}"
    return None


@contextmanager
def secrets_unresolved() -> Iterator[None]:
    """While active, ``${oc.env:NAME}`` resolves to its own text, so no secret is ever read."""
    from omegaconf import OmegaConf
    from omegaconf.resolvers import oc

    def keep_reference(key: str, default: Any = _MISSING_ENV) -> str:
        return f"${{oc.env:{key}}}" if default is _MISSING_ENV else f"${{oc.env:{key},{default}}}"

    OmegaConf.register_new_resolver("oc.env", keep_reference, replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("oc.env", oc.env, replace=True)


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, join_key(prefix, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _leaves(value, join_key(prefix, index))
    else:
        yield prefix, data


def resolve(composed: ComposedStrategy) -> tuple[dict[str, Any], list[Diagnostic]]:
    """Resolve interpolations leaf by leaf so that every broken one is reported.

    A bare ``${oc.env:NAME}`` stays as it is without OmegaConf: it is a secret reference.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    diagnostics: list[Diagnostic] = []
    pending = [
        (key, value)
        for key, value in _leaves(composed.data)
        if isinstance(value, str) and "${" in value and not SECRET_REFERENCE.match(value)
    ]
    if not pending:
        return composed.data, diagnostics  # shared, read-only: no stage mutates config data
    raw = copy.deepcopy(composed.data)
    with secrets_unresolved():
        for key, value in pending:
            try:
                resolved = OmegaConf.select(composed.config, key, throw_on_missing=True)
                if isinstance(resolved, DictConfig | ListConfig):
                    resolved = OmegaConf.to_container(resolved, resolve=True)
            except OmegaConfBaseException as exc:
                file, line = composed.locate(key)
                message = str(exc).strip().splitlines()[0]
                diagnostics.append(
                    Diagnostic(
                        file,
                        line,
                        key,
                        f"bad interpolation {value!r}: {message}",
                        "config.interpolation",
                    )
                )
                continue
            _set_path(raw, key, resolved)
    return raw, diagnostics


def _set_path(data: Any, key: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    target = data
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = value
    else:
        target[last] = value


class _Validator(Validator):
    """cerberus with the custom checks our schemas name in ``check_with``."""

    def _check_with_calendar_date(self, field: str, value: Any) -> None:
        # only a value in the date format: the regex reports any other (schema.format), once
        if not isinstance(value, str) or not re.fullmatch(DATE_PATTERN, value):
            return
        try:
            dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            self._error(field, f"is not a real calendar date, was {value!r}")

    def _check_with_utc_timestamp(self, field: str, value: Any) -> None:
        # only a value in the timestamp format: the regex reports any other (schema.format)
        if not isinstance(value, str) or not re.fullmatch(TIMESTAMP_PATTERN, value):
            return
        try:
            dt.datetime.fromisoformat(value).astimezone(dt.UTC)
        except (ValueError, OverflowError):
            self._error(field, f"is not a real UTC time, was {value!r}")

    def _check_with_gate_requirement(self, field: str, value: Any) -> None:
        # a waiver names a gate requirement, or checklist.<id> of an automatic checklist item
        waivable = [*REQUIREMENTS, *(WAIVER_PREFIX + item for item in AUTOMATIC_ITEMS)]
        if value not in waivable:
            manual = value.removeprefix(WAIVER_PREFIX) in CHECKLIST_ITEMS
            if manual:
                self._error(
                    field,
                    f"{value!r} is a manual checklist item: it is signed "
                    "(`qcompile signoff --item`), not waived",
                )
                return
            hint = did_you_mean(value, waivable)
            self._error(
                field, f"unknown gate requirement {value!r}" + (f"; {hint}" if hint else "")
            )

    def _check_with_broker(self, field: str, value: Any) -> None:
        if isinstance(value, str) and value != "paper":
            self._error(
                field,
                f"{value!r} is not a broker: write paper, or a mapping whose kind is alpaca or "
                "ccxt (docs/brokers.md)",
            )

    def _check_with_checklist_item(self, field: str, value: Any) -> None:
        if value not in CHECKLIST_ITEMS:
            hint = did_you_mean(value, CHECKLIST_ITEMS)
            self._error(field, f"unknown checklist item {value!r}" + (f"; {hint}" if hint else ""))


# The strategy's own section is unique to it; everything else (project settings, gates, universe,
# costs, data source, deployment) is shared by many strategies and is validated once per distinct
# combination. Two validators, built once each: cerberus checks a schema when it is constructed.
_PARTS = {
    "strategy": ("strategy",),
    "shared": tuple(section for section in COMPOSED_SCHEMA if section != "strategy"),
}
_PART_ERRORS: dict[tuple[str, str], list[Any]] = {}


def part_schema(part: str) -> dict[str, Any]:
    return {section: COMPOSED_SCHEMA[section] for section in _PARTS[part]}


class _PrecheckedSchema(DefinitionSchema):
    """A schema cerberus takes as already checked. Ours are constants of this module, checked by
    cerberus itself in the test suite (tests/unit/test_schema.py); checking them again on every
    run would cost each build about a tenth of a second."""

    def validate(self, schema: Any = None) -> None:
        return None


@cache
def _part_validator(part: str) -> _Validator:
    validator = _Validator()
    validator.schema = _PrecheckedSchema(validator, part_schema(part))
    return validator


def _schema_errors(data: dict[str, Any]) -> list[Any]:
    from qcompile.hashing import canonical_json

    errors: list[Any] = []
    for part, sections in _PARTS.items():
        document = {section: data[section] for section in sections if section in data}
        memo = (part, canonical_json(document))
        if memo not in _PART_ERRORS:
            validator = _part_validator(part)
            validator.validate(document, normalize=False)
            _PART_ERRORS[memo] = list(_flatten(validator._errors))  # structured errors
        errors.extend(_PART_ERRORS[memo])
    return errors


def _flatten(errors: Any) -> Iterator[Any]:
    for error in errors:
        if error.is_group_error:
            yield from _flatten(error.child_errors)
        else:
            yield error


def _schema_at(path: tuple) -> dict[str, Any] | None:
    """The mapping schema that holds ``path``'s last element, for did-you-mean on unknown keys."""
    schema: Any = COMPOSED_SCHEMA
    for part in path[:-1]:
        if isinstance(part, int):
            schema = schema.get("schema") if isinstance(schema, dict) else None
            continue
        rule = schema.get(part) if isinstance(schema, dict) else None
        if not rule:
            return None
        schema = rule.get("schema")
        if isinstance(schema, dict) and schema.get("type") == "dict":  # list of dicts
            schema = schema.get("schema")
    return schema if isinstance(schema, dict) else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path_key(path: tuple) -> str:
    key = ""
    for part in path:
        key = join_key(key, part)
    return key


def _describe(error: Any, key: str) -> tuple[str, str, str]:
    """(message, code, hint) for one cerberus error."""
    value, constraint = error.value, error.constraint
    shown = "<hidden>" if is_secret_key(key) else _show(value)
    if error.code == 0x02:
        return "required field missing", "schema.required", ""
    if error.code == 0x03:
        schema = _schema_at(error.document_path) or {}
        return (
            "unknown key",
            "schema.unknown_key",
            did_you_mean(str(error.document_path[-1]), schema),
        )
    if error.rule is None:
        return str(error.info[0]), "schema.check", ""
    if error.rule == "type":
        wanted = " or ".join(constraint) if isinstance(constraint, list) else constraint
        return f"must be of type {wanted}, was {shown}", "schema.type", ""
    if error.rule == "min":
        return f"must be >= {constraint}, was {shown}", "schema.min", ""
    if error.rule == "max":
        return f"must be <= {constraint}, was {shown}", "schema.max", ""
    if error.rule == "allowed":
        hint = did_you_mean(str(value), [str(c) for c in constraint])
        return (
            f"must be one of {', '.join(map(str, constraint))}; was {shown}",
            "schema.allowed",
            hint,
        )
    if error.rule == "regex":
        return (
            f"must be {_PATTERN_NAMES.get(constraint, 'matching ' + constraint)}, was {shown}",
            "schema.format",
            "",
        )
    if error.rule == "empty":
        return "must not be empty", "schema.empty", ""
    if error.rule == "nullable":
        return "must not be null", "schema.null", ""
    return f"fails rule {error.rule} ({constraint}), was {shown}", f"schema.{error.rule}", ""


def schema_diagnostics(composed: ComposedStrategy, data: dict[str, Any]) -> list[Diagnostic]:
    diagnostics = []
    for section in data:
        if section not in COMPOSED_SCHEMA:
            file, line = composed.locate(section)
            hint = did_you_mean(str(section), COMPOSED_SCHEMA)
            diagnostics.append(
                Diagnostic(file, line, section, "unknown key", "schema.unknown_key", hint)
            )
    for error in _schema_errors(data):
        key = _path_key(error.document_path)
        message, code, hint = _describe(error, key)
        file, line = composed.locate(key)
        diagnostics.append(Diagnostic(file, line, key, message, code, hint))
    return diagnostics


def secret_diagnostics(tree: ConfTree, override_texts: list[str]) -> list[Diagnostic]:
    """Scan every conf/ file (used or not) and every override for literal secrets."""
    from qcompile.compiler.read import load_data

    diagnostics = []
    for config in tree.files.values():
        if not config.valid:
            continue
        try:
            data = load_data(config)
        except Exception:  # unparseable files are reported by the reader
            continue
        for key, value in _leaves(data, config.package):
            problem = secret_problem(key, value)
            if problem:
                diagnostics.append(
                    Diagnostic(
                        config.path,
                        config.line_of(key),
                        key,
                        f"{problem}; the value is not shown",
                        "secret.literal",
                        "move it to an environment variable and write ${oc.env:NAME}",
                    )
                )
    for text in override_texts:
        key, _, value = text.lstrip("+~").partition("=")
        problem = secret_problem(key, value)
        if problem:
            diagnostics.append(
                Diagnostic(
                    COMMAND_LINE,
                    0,
                    key,
                    f"{problem}; the value is not shown",
                    "secret.literal",
                    "pass secrets through the environment",
                )
            )
    return diagnostics


# Every path a config names, read or written by qcompile: each must stay inside the project.
PATH_KEYS = (
    "data.local.path",
    "project.reports_dir",
    "project.coverage_report",
    "strategy.signal.events",
    "deployment.state_store.path",
)


def containment_diagnostics(
    project: Project, composed: ComposedStrategy, data: dict[str, Any]
) -> list[Diagnostic]:
    """A path that leaves the project (``..``, an absolute path, or a symlink pointing out) is
    refused: generated artefacts never hold outside paths, and qcompile reads and writes only
    what the repository holds."""
    found = []
    for key in PATH_KEYS:
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str) or not node:
            continue
        target = project.root / node
        if not project.contains(target):
            file, line = composed.locate(key)
            found.append(
                Diagnostic(
                    file,
                    line,
                    key,
                    f"{node!r} resolves to {target.resolve()}, outside the project",
                    "rule.path_outside",
                    "keep every path a config names inside the project (copy or link the "
                    "files in, not out)",
                )
            )
    return found


def cross_field_diagnostics(composed: ComposedStrategy, data: dict[str, Any]) -> list[Diagnostic]:
    """Rules that relate several fields or groups; each skips itself if its inputs are invalid."""
    found: list[tuple[str, str, str, str]] = []  # key, message, code, hint

    def add(key: str, message: str, code: str, hint: str = "") -> None:
        found.append((key, message, code, hint))

    strategy = data.get("strategy") if isinstance(data.get("strategy"), dict) else {}
    deployment = data.get("deployment") if isinstance(data.get("deployment"), dict) else {}
    broker = deployment.get("broker")
    needed = {"alpaca": ("api_key", "secret"), "ccxt": ("exchange", "api_key", "secret")}
    if isinstance(broker, dict):
        for name in needed.get(str(broker.get("kind")), ()):
            if broker.get(name) in (None, ""):
                add(
                    f"deployment.broker.{name}",
                    f"required when kind is {broker['kind']}",
                    "rule.broker_settings",
                    "docs/brokers.md shows a complete deployment",
                )
    backtest = strategy.get("backtest") if isinstance(strategy.get("backtest"), dict) else {}
    start, end = _date(backtest.get("start_date")), _date(backtest.get("end_date"))
    if start and end and start >= end:
        add(
            "strategy.backtest.end_date",
            f"must be after start_date {start}, was {end}",
            "rule.window_order",
        )
    oos = backtest.get("out_of_sample") if isinstance(backtest.get("out_of_sample"), dict) else {}
    oos_start, oos_end = _date(oos.get("start_date")), _date(oos.get("end_date"))
    if oos_start and oos_end:
        if oos_start >= oos_end:
            add(
                "strategy.backtest.out_of_sample.end_date",
                "must be after its start_date",
                "rule.window_order",
            )
        if start and end and not (start <= oos_start and oos_end <= end):
            add(
                "strategy.backtest.out_of_sample",
                f"held-out period {oos_start}..{oos_end} must lie "
                f"inside the backtest window {start}..{end}",
                "rule.oos_window",
            )
    parity_from = _date(backtest.get("parity_from"))
    if parity_from and start and end and not (start < parity_from < end):
        add(
            "strategy.backtest.parity_from",
            f"the parity slice must start inside the backtest window {start}..{end}, "
            f"was {parity_from}",
            "rule.parity_window",
            "set a day after start_date, or remove it to replay the whole window",
        )
    record = strategy.get("deployment_record")
    declared = record.get("monitoring_alerts") if isinstance(record, dict) else None
    thresholds = strategy.get("monitoring") if isinstance(strategy.get("monitoring"), dict) else {}
    for alert in declared if isinstance(declared, list) else []:
        needed = ALERT_THRESHOLDS.get(alert)
        if needed is not None and thresholds.get(needed) is None:
            add(
                "strategy.deployment_record.monitoring_alerts",
                f"promises {alert}, but strategy.monitoring.{needed} is not set: the runner "
                "would have nothing to alert on",
                "rule.monitoring_threshold",
                f"set strategy.monitoring.{needed}, or remove {alert} (docs/runner.md)",
            )
    sizing = backtest.get("sizing") if isinstance(backtest.get("sizing"), dict) else {}
    if sizing.get("method") == "fixed_fraction" and sizing.get("fraction") is None:
        add(
            "strategy.backtest.sizing.fraction",
            "required when method is fixed_fraction",
            "rule.sizing_fraction",
        )

    signal = strategy.get("signal") if isinstance(strategy.get("signal"), dict) else {}
    params = signal.get("params") if isinstance(signal.get("params"), dict) else {}
    ranges = signal.get("ranges") if isinstance(signal.get("ranges"), dict) else {}
    for name, tested in sorted(ranges.items()):
        if name not in params:
            add(
                f"strategy.signal.ranges.{name}",
                "range given for a parameter the signal does not set",
                "rule.range_unknown_param",
                did_you_mean(name, params),
            )
        elif (
            isinstance(tested, list)
            and _kind(params[name]) in {_kind(t) for t in tested}  # else: a type error (lock)
            and params[name] not in tested
        ):
            add(
                f"strategy.signal.params.{name}",
                f"value {params[name]!r} is not one of its tested values {tested}",
                "rule.param_untested",
                "the parameter grid backtests exactly the listed values: add it to the list",
            )

    universe = data.get("universe") if isinstance(data.get("universe"), dict) else {}
    source = data.get("data") if isinstance(data.get("data"), dict) else {}
    if isinstance(universe.get("symbols"), list) and isinstance(source.get("symbols"), list):
        for field in ("symbols", "benchmarks"):
            listed = universe.get(field) if isinstance(universe.get(field), list) else []
            missing = sorted(set(listed) - set(source["symbols"]))
            if missing:
                add(
                    f"universe.{field}",
                    f"not provided by data source {source.get('vendor', '?')!s}: "
                    f"{', '.join(missing)}",
                    "rule.universe_not_in_data",
                )
    tradable = universe.get("symbols") if isinstance(universe.get("symbols"), list) else []
    references = universe.get("benchmarks") if isinstance(universe.get("benchmarks"), list) else []
    if both := sorted(set(tradable) & set(references)):
        add(
            "universe.benchmarks",
            f"{', '.join(both)} also traded (universe.symbols): a benchmark is never traded",
            "rule.benchmark_traded",
            "list each symbol once: in symbols to trade it, in benchmarks to compare against it",
        )
    chosen = backtest.get("benchmark")
    if (
        chosen
        and isinstance(chosen, str)
        and chosen != "equal_weight"
        and chosen not in tradable + references
    ):
        add(
            "strategy.backtest.benchmark",
            f"{chosen} is neither in universe.symbols nor in universe.benchmarks",
            "rule.benchmark_symbol",
            "add it to universe.benchmarks (loaded, never traded), or use equal_weight",
        )
    kind, interval = strategy.get("type"), source.get("interval")
    allowed = {
        "intraday": {"1m", "5m", "15m", "30m", "1h", "4h", "12h"},
        "daily": {"1d"},
        "weekly": {"1d", "1w"},
    }
    if kind in allowed and isinstance(interval, str) and interval not in allowed[kind]:
        add(
            "data.interval",
            f"{interval} bars cannot drive a {kind} strategy "
            f"(needs one of {', '.join(sorted(allowed[kind]))})",
            "rule.interval_type",
        )

    signoffs = strategy.get("signoffs") if isinstance(strategy.get("signoffs"), dict) else {}
    researcher = strategy.get("researcher")
    for artefact, record in sorted(signoffs.items()):
        if not isinstance(record, dict):
            continue
        role = SIGNOFF_ROLES.get(artefact)
        if role == "researcher" and researcher and record.get("by") != researcher:
            add(
                f"strategy.signoffs.{artefact}.by",
                f"the {artefact} is signed by the researcher "
                f"({researcher}), was {record.get('by')!r}",
                "rule.signoff_role",
            )
        if role == "peer_reviewer" and record.get("by") == researcher:
            add(
                f"strategy.signoffs.{artefact}.by",
                "the peer reviewer must not be the researcher",
                "rule.signoff_independent",
            )
    hypothesis = _date(strategy.get("hypothesis_date"))
    for artefact, record in sorted(signoffs.items()):
        at = _timestamp(record.get("at")) if isinstance(record, dict) else None
        if hypothesis and at and at.date() < hypothesis:
            add(
                f"strategy.signoffs.{artefact}.at",
                f"signed before the hypothesis date {hypothesis}",
                "rule.signoff_order",
            )

    diagnostics = []
    for key, message, code, hint in found:
        file, line = composed.locate(key)
        diagnostics.append(Diagnostic(file, line, key, message, code, hint))
    return diagnostics


def duplicate_id_diagnostics(
    strategies: list[tuple[ComposedStrategy, dict[str, Any]]],
) -> list[Diagnostic]:
    first: dict[str, ComposedStrategy] = {}
    diagnostics = []
    for composed, data in strategies:
        strategy_id = (
            (data.get("strategy") or {}).get("id")
            if isinstance(data.get("strategy"), dict)
            else None
        )
        if not isinstance(strategy_id, str):
            continue
        if strategy_id in first:
            file, line = composed.locate("strategy.id")
            diagnostics.append(
                Diagnostic(
                    file,
                    line,
                    "strategy.id",
                    f"duplicate id {strategy_id}, also used by {first[strategy_id].file.path}",
                    "rule.duplicate_id",
                    "every strategy needs its own id",
                )
            )
        else:
            first[strategy_id] = composed
    return diagnostics


def _kind(value: Any) -> str:
    """number, bool, text or other: values of different kinds are never compared."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else type(value).__name__


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _timestamp(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
