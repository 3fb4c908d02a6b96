"""Stage 3 (lock): validated config -> pins, the strategy's reproducible identity.

Consumes a strategy's resolved config, the signal sources found by reading the signal packages,
the local data fingerprint and the previous build's lock (from generated/manifest.json); produces
the pins written into the passport and the diagnostics of any broken reference or drift. Changed
signal source under an unchanged version is an error: the version is the promise that behaviour
did not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcompile import __version__
from qcompile.compiler.compose import ComposedStrategy, did_you_mean
from qcompile.compiler.fingerprint import DataFingerprint
from qcompile.errors import Diagnostic
from qcompile.hashing import sha256_file, sha256_json
from qcompile.signals.source import SignalSource

# The parts of a strategy that change what a backtest computes; the evidence of a report must
# have been produced from exactly these (sign-offs, phase and deployment records do not count).
BACKTEST_STRATEGY_KEYS = ("id", "version", "type", "signal", "backtest")
BACKTEST_DATA_KEYS = (
    "vendor",
    "api_version",
    "interval",
    "adjustment",
    "timestamp",
    "symbols",
    "local",
)


@dataclass
class Lock:
    pins: dict[str, Any]
    backtest_inputs: dict[str, Any]  # what a report's evidence must have been produced from
    signal: SignalSource | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def backtest_config(data: dict[str, Any]) -> dict[str, Any]:
    strategy, source = data.get("strategy") or {}, data.get("data") or {}
    return {
        "strategy": {k: strategy.get(k) for k in BACKTEST_STRATEGY_KEYS},
        "universe": data.get("universe"),
        "costs": data.get("costs"),
        "data": {k: source.get(k) for k in BACKTEST_DATA_KEYS},
    }


def lock_strategy(
    composed: ComposedStrategy,
    data: dict[str, Any],
    signals: dict[str, SignalSource],
    fingerprint: DataFingerprint | None,
    root: Path,
) -> Lock:
    strategy, source = data["strategy"], data["data"]
    reference = strategy["signal"]
    diagnostics: list[Diagnostic] = []

    def problem(key: str, message: str, code: str, hint: str = "") -> None:
        file, line = composed.locate(key)
        diagnostics.append(Diagnostic(file, line, key, message, code, hint))

    found = signals.get(reference["name"])
    if found is None:
        problem(
            "strategy.signal.name",
            f"no signal named {reference['name']!r} in the signal packages",
            "lock.signal_unknown",
            did_you_mean(reference["name"], signals),
        )
    else:
        if found.version != reference["version"]:
            problem(
                "strategy.signal.version",
                f"the library has {found.name}@{found.version} "
                f"({found.file}:{found.line}), the strategy pins {reference['version']}",
                "lock.signal_version",
                "re-run the backtest on the library version and update the pin",
            )
        known = set(found.required_params) | set(found.optional_params)
        for name in sorted(set(reference["params"]) - known):
            problem(
                f"strategy.signal.params.{name}",
                f"{found.name} has no parameter {name!r}",
                "lock.signal_param_unknown",
                did_you_mean(name, sorted(known)),
            )
        if reference.get("events") and "events" not in known:
            problem(
                "strategy.signal.events",
                f"{found.name} takes no events input",
                "lock.signal_events",
            )
        if "events" in reference["params"]:
            problem(
                "strategy.signal.params.events",
                "events come from a file: set strategy.signal.events to its path",
                "lock.signal_param_unknown",
            )
        declared = dict(found.param_types)
        ranges = reference.get("ranges") or {}
        for name, value in sorted(reference["params"].items()):
            expected = declared.get(name)
            for key, given in [
                (f"strategy.signal.params.{name}", value),
                *((f"strategy.signal.ranges.{name}", v) for v in ranges.get(name) or []),
            ]:
                if expected and not _has_type(given, expected):
                    problem(
                        key,
                        f"must be {TYPE_NAMES[expected]} ({found.name} declares {name}: "
                        f"{expected}), was {given!r}",
                        "lock.signal_param_type",
                    )
        for name in found.required_params:
            if name not in reference["params"]:
                problem(
                    "strategy.signal.params",
                    f"{found.name} requires parameter {name!r}",
                    "lock.signal_param_missing",
                )

    timestamp = source["timestamp"]
    pins = {
        "strategy": {"id": strategy["id"], "version": strategy["version"]},
        "signal": {
            "name": reference["name"],
            "version": reference["version"],
            "module": found.module if found else None,
            "source_sha256": found.source_sha256 if found else None,
            **_events_pin(reference.get("events"), root),
        },
        "data": {
            "vendor": source["vendor"],
            "api_version": source["api_version"],
            "protocol": source.get("protocol", "documented"),
            "interval": source["interval"],
            "adjustment": source["adjustment"],
            "symbols": list(source["symbols"]),
            "timestamp": {k: timestamp[k] for k in ("unit", "timezone", "stamping")},
            "fingerprint": fingerprint.as_dict() if fingerprint else None,
        },
        "universe_sha256": sha256_json(data["universe"]),
        "costs_sha256": sha256_json(data["costs"]),
        "qcompile_version": __version__,
    }
    inputs = {
        "config_sha256": sha256_json(backtest_config(data)),
        "data_sha256": fingerprint.content_sha256 if fingerprint else None,
        "signal_source_sha256": pins["signal"]["source_sha256"],
    }
    if "events" in pins["signal"]:  # only strategies with an event calendar pin one
        inputs["events_sha256"] = pins["signal"]["events"]["sha256"]
    return Lock(pins, inputs, found, diagnostics)


def _events_pin(path: str | None, root: Path) -> dict[str, Any]:
    """The event calendar's path and content hash (None while the file does not exist)."""
    if not path:
        return {}
    file = root / path
    return {"events": {"path": path, "sha256": sha256_file(file) if file.is_file() else None}}


def drift_diagnostics(
    signals: dict[str, SignalSource], used: set[str], previous: dict[str, dict[str, str]]
) -> list[Diagnostic]:
    """Signals whose source changed while their declared version stayed the same."""
    diagnostics = []
    for name in sorted(used):
        current, locked = signals.get(name), previous.get(name)
        if current is None or locked is None or locked.get("version") != current.version:
            continue
        if locked.get("sha256") != current.source_sha256:
            diagnostics.append(
                Diagnostic(
                    current.file,
                    current.line,
                    f"signal {name}@{current.version}",
                    f"source changed since it was locked (sha256 {locked.get('sha256', '')[:12]} -> "
                    f"{current.source_sha256[:12]}) but the version did not",
                    "lock.signal_drift",
                    "bump the version in @signal(...) and in every strategy that pins it, then re-run "
                    "their backtests",
                )
            )
    return diagnostics


TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def _has_type(value: Any, expected: str) -> bool:
    """Whether a config value is what a signal parameter annotated ``expected`` takes (YAML's
    true is not an integer, and 14.5 or "14" is not one either)."""
    if expected == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected == "int":
        return isinstance(value, int)
    if expected == "float":
        return isinstance(value, int | float)
    return isinstance(value, str)
