"""Fault scenarios: what goes wrong, and when, while the emulator replays.

A scenario is a YAML file (see docs/emulator.md)::

    messages_per_second: 200
    faults:
      - after_messages: 40
        fault: drop
      - at_s: 2.5
        fault: silence
        duration_s: 5

:func:`load_scenario` checks the whole file before anything runs and raises one
:class:`ScenarioError` listing every problem as ``file:line: key: message``, so a broken scenario
is fixed in one pass rather than one error per run. :meth:`Emulator.inject` validates its
arguments with the same rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qcompile.errors import QcompileError


class ScenarioError(QcompileError):
    """A scenario (or an injected fault) is invalid; ``problems`` lists every one."""

    def __init__(self, problems: list[str], source: str = "scenario"):
        self.problems = problems
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {source}:\n{listing}")


@dataclass(frozen=True)
class Fault:
    """One fault, applied when its trigger fires.

    ``after_messages``: once that many replay events have gone by (whether or not anyone was
    subscribed). ``at_s``: that many seconds after the replay clock starts. Neither: at start.
    """

    fault: str
    after_messages: int | None = None
    at_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    messages_per_second: float | None = None
    faults: list[Fault] = field(default_factory=list)


# --- option rules -------------------------------------------------------------------------------

# A rule returns an error message, or None when the value is acceptable.
Rule = Callable[[Any], str | None]


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be an integer >= 1"
    return None


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be an integer >= 0"
    return None


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return "must be a number > 0"
    return None


def _non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return "must be a number >= 0"
    return None


def _any_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    return None


def _one_of(*choices: str) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return rule


@dataclass(frozen=True)
class Option:
    rule: Rule
    default: Any = None  # None: the option may be absent (its meaning is documented per fault)
    required: bool = False


_COUNT = Option(_positive_int, 1)
_RETRY_AFTER = Option(_non_negative_int, 2)

# Every fault and the options it takes. docs/emulator.md documents each; keep them in step.
FAULTS: dict[str, dict[str, Option]] = {
    "drop": {},
    "silence": {"duration_s": Option(_positive_number)},  # absent: until the client closes
    "rate_limit": {"count": _COUNT, "retry_after": _RETRY_AFTER},
    "http_429": {"count": _COUNT, "retry_after": _RETRY_AFTER},
    "error_4002": {"count": _COUNT},
    "malformed_json": {"count": _COUNT},
    "duplicate": {"count": _COUNT},
    "out_of_order": {"count": _COUNT},
    "timestamp_unit": {"unit": Option(_one_of("s", "us"), required=True)},
    "numeric_prices": {},
    # from now on every push's time is shifted by shift_s (negative: back), e.g. -18000 for a
    # feed that switched from UTC to New York time
    "time_shift": {"shift_s": Option(_any_number, required=True)},
    "live_clock": {},  # from now on pushes carry the time they are sent, as on a live feed
    "slow": {
        "delay_ms": Option(_non_negative_int, 200),
        "duration_s": Option(_positive_number),  # absent: until `clear`
    },
    "connection_limit": {"count": _COUNT},
    "protocol_variant": {"variant": Option(_one_of("article", "documented"), "article")},
    # a field of the next pushes replaced by ``value`` (any YAML value: "NaN", [1], null, -5)
    "bad_field": {
        "field": Option(
            _one_of("last_price", "price", "quantity", "timestamp", "symbol", "data"),
            required=True,
        ),
        "value": Option(lambda value: None, "NaN"),
        "count": _COUNT,
    },
    "binary_frame": {"count": _COUNT},
    # the next pushes padded to size_bytes with a filler field: still valid JSON
    "oversized_frame": {"size_bytes": Option(_positive_int, 10_000_000), "count": _COUNT},
    # the next pushes written a few bytes at a time (a frame that trickles in)
    "slow_frame": {"bytes_per_s": Option(_positive_int, 20), "count": _COUNT},
    # the next WebSocket upgrades answered HTTP 429 with a Retry-After header
    "upgrade_429": {"count": _COUNT, "retry_after": _RETRY_AFTER},
    # the next connections get a 3001 error frame with retry_after, then a close
    "error_close": {
        "count": _COUNT,
        "retry_after": _RETRY_AFTER,
    },  # the next pushes as binary frames of the same JSON
    # the next events also pushed on a channel the client did not subscribe to
    "unsubscribed_channel": {
        "channel": Option(_one_of("ticker", "trade", "depth"), "trade"),
        "count": _COUNT,
    },
    "clear": {},
}

TRIGGERS = ("after_messages", "at_s")
TOP_LEVEL_KEYS = ("messages_per_second", "faults")


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_fault(name: Any, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Options with defaults filled in, and problems keyed by the offending key (``""``: name)."""
    if not isinstance(name, str) or name not in FAULTS:
        known = list(FAULTS)
        hint = _did_you_mean(name, known) if isinstance(name, str) else ""
        return {}, {"fault": f"unknown fault {name!r}{hint} (known: {', '.join(known)})"}
    spec = FAULTS[name]
    problems: dict[str, str] = {}
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        if key not in spec:
            allowed = ", ".join(spec) or "none"
            problems[key] = (
                f"unknown option for fault {name!r}{_did_you_mean(str(key), list(spec))}"
                f" (options: {allowed})"
            )
        elif (message := spec[key].rule(value)) is not None:
            problems[key] = message
        else:
            resolved[key] = value
    for key, option in spec.items():
        if key in options:
            continue
        if option.required:
            problems[key] = f"missing (required by fault {name!r})"
        else:
            resolved[key] = option.default
    return resolved, problems


def resolve_fault(fault: Fault, where: str = "fault") -> tuple[Fault, list[str]]:
    """``fault`` with its defaults filled in, and every problem as ``where.key: message``."""
    options, problems = check_fault(fault.fault, fault.options)
    messages = [f"{where}.{key}: {message}" for key, message in problems.items()]
    if fault.after_messages is not None and fault.at_s is not None:
        messages.append(f"{where}: use either after_messages or at_s, not both")
    if fault.after_messages is not None and (m := _non_negative_int(fault.after_messages)):
        messages.append(f"{where}.after_messages: {m}")
    if fault.at_s is not None and (m := _non_negative_number(fault.at_s)):
        messages.append(f"{where}.at_s: {m}")
    return Fault(fault.fault, fault.after_messages, fault.at_s, options), messages


# --- YAML ---------------------------------------------------------------------------------------


def _key_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Record the 1-based line of every mapping key and sequence item under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _key_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{path}[{index}]"
            lines[child] = item.start_mark.line + 1
            _key_lines(item, child, lines)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and check scenario YAML; ``source`` names it in error messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ScenarioError([f"{where}: invalid YAML: {error}"], source) from None
    lines: dict[str, int] = {}
    if node is not None:
        _key_lines(node, "", lines)

    problems: list[tuple[int, str]] = []

    def report(key: str, message: str) -> None:
        # The line of the key itself, else of its nearest enclosing entry.
        probe = key
        while probe and probe not in lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        line = lines.get(probe, 1)
        problems.append((line, f"{source}:{line}: {key}: {message}"))

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError([f"{source}:1: the scenario must be a mapping"], source)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            report(str(key), f"unknown key{_did_you_mean(str(key), TOP_LEVEL_KEYS)}")

    rate = data.get("messages_per_second")
    if rate is not None and (message := _positive_number(rate)):
        report("messages_per_second", message)

    faults: list[Fault] = []
    entries = data.get("faults") or []
    if not isinstance(entries, list):
        report("faults", "must be a list of fault entries")
        entries = []
    for index, entry in enumerate(entries):
        where = f"faults[{index}]"
        if not isinstance(entry, dict):
            report(where, "must be a mapping with a `fault` key")
            continue
        if "fault" not in entry:
            report(where, f"missing `fault` (one of {', '.join(FAULTS)})")
            continue
        options = {k: v for k, v in entry.items() if k != "fault" and k not in TRIGGERS}
        fault, messages = resolve_fault(
            Fault(entry["fault"], entry.get("after_messages"), entry.get("at_s"), options), where
        )
        for message in messages:
            key, _, text = message.partition(": ")
            report(key, text)
        faults.append(fault)

    if problems:
        raise ScenarioError([text for _, text in sorted(problems)], source)
    return Scenario(float(rate) if rate is not None else None, faults)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises :class:`ScenarioError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError([f"{path}: cannot read: {error.strerror}"], str(path)) from None
    return parse_scenario(text, str(path))
