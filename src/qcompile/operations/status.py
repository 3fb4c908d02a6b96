"""``qcompile status``: every strategy's phase, pins, review dates and runner liveness.

Glue like research/workflows.py: it reads the compiled artefacts in generated/ (what production runs, not
what conf/ would compile to now) and the runtime's state stores. Reading a heartbeat never takes
a store's lease, so status is safe next to a running runner.

Two kinds of version mismatch are reported, because either means a result is not what was
validated: two strategies pinning different versions of one signal (generated/ built at
different times), and a runner whose heartbeat names another signal or strategy version than
generated/<id>/params.yaml pins (production is not running what was backtested).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from qcompile.compiler.build import read_manifest
from qcompile.compiler.rules.review_due import review_of
from qcompile.errors import QcompileError
from qcompile.project import Project

STATUS_INSTANCE = "qcompile-status"  # the instance id a read-only store is opened with
DOWN_AFTER = dt.timedelta(days=1)  # a heartbeat this old is from a runner that is gone


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise QcompileError(f"{path}: cannot read: {err}") from err
    if not isinstance(data, dict):
        raise QcompileError(f"{path}: not a YAML mapping")
    return data


def generated_strategies(project: Project) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(id, params, passport) of every strategy in generated/, by id."""
    strategies = read_manifest(project).get("strategies")
    if not isinstance(strategies, dict):
        raise QcompileError("generated/manifest.json not found; run `qcompile build` first")
    for strategy_id in sorted(strategies):
        folder = project.generated_dir / strategy_id
        yield (
            strategy_id,
            _load_yaml(folder / "params.yaml"),
            _load_yaml(folder / "passport.yaml"),
        )


def read_store(
    project: Project,
    strategy_id: str,
    params: Mapping[str, Any],
    read: str,
    env: Mapping[str, str] = os.environ,
) -> Any:
    """``read_heartbeat()`` or ``read_journal()`` of the strategy's state store, lease untouched.

    Raises QcompileError (a missing environment variable, an unreachable Redis) for the caller
    to show as unknown rather than fail the whole listing."""
    from qcompile.runtime.control import read_store as read_live_store

    identified = {**params, "strategy": {**(params.get("strategy") or {}), "id": strategy_id}}
    return read_live_store(identified, project.root, read, STATUS_INSTANCE, env)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for limit, size, unit in ((120, 1, "s"), (7200, 60, "m"), (172_800, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds // 86_400)}d"


def _process_gone(heartbeat: Mapping[str, Any]) -> bool:
    """True only when the heartbeat's process ran on this host and no longer exists."""
    pid = heartbeat.get("pid")
    if heartbeat.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False


def liveness(
    heartbeat: Mapping[str, Any] | None, interval_s: float, now: dt.datetime
) -> dict[str, Any]:
    """``up`` within two heartbeat intervals (the runner's own alert threshold), ``down`` when
    its process is gone or the heartbeat is a day old, ``stale`` in between, ``never`` without
    a heartbeat."""
    if not heartbeat:
        return {"state": "never", "age_s": None, "text": "never"}
    try:
        at = dt.datetime.fromisoformat(str(heartbeat.get("at") or heartbeat.get("heartbeat_at")))
    except ValueError:
        return {"state": "unknown", "age_s": None, "text": "unknown: heartbeat has no valid time"}
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    age = (now - at).total_seconds()
    if age <= 2 * interval_s:
        text = f"up {_age(age)} ago"
        if heartbeat.get("connected") is False:
            text += ", disconnected"
        if heartbeat.get("suspended") is True:
            text += ", suspended"
        return {"state": "up", "age_s": round(age, 3), "text": text}
    if _process_gone(heartbeat) or age > DOWN_AFTER.total_seconds():
        return {"state": "down", "age_s": round(age, 3), "text": f"down (last seen {_age(age)})"}
    return {"state": "stale", "age_s": round(age, 3), "text": f"stale {_age(age)}"}


def _data_pin(pins: Mapping[str, Any]) -> str:
    data = pins.get("data") or {}
    stamp = data.get("timestamp") or {}
    return (
        f"{data.get('vendor')} {data.get('api_version')} "
        f"({stamp.get('unit')}, {stamp.get('timezone')}, {stamp.get('stamping')})"
    )


def status_rows(
    project: Project,
    on: dt.date,
    now: dt.datetime,
    env: Mapping[str, str] = os.environ,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per strategy in generated/, and the version mismatches as footnote lines.

    ``on`` is the date the one-year rule is evaluated on; ``now`` is compared with heartbeats."""
    rows: list[dict[str, Any]] = []
    for strategy_id, params, passport in generated_strategies(project):
        pins = params.get("pins") or {}
        lifecycle = passport.get("lifecycle") or {}
        phase = lifecycle.get("phase") or passport.get("status")
        review = review_of(str(phase), passport.get("deployment"), on)
        interval = float((params.get("deployment") or {}).get("heartbeat_interval_s") or 15)
        try:
            heartbeat = read_store(project, strategy_id, params, "read_heartbeat", env)
            live = liveness(heartbeat, interval, now)
        except QcompileError as err:
            heartbeat = None
            live = {"state": "unknown", "age_s": None, "text": f"unknown: {err}"}
        signal = pins.get("signal") or {}
        running = None
        if heartbeat and live["state"] in ("up", "stale"):
            running = {
                "signal": heartbeat.get("signal"),
                "strategy_version": heartbeat.get("strategy_version"),
            }
        rows.append(
            {
                "id": strategy_id,
                "name": (params.get("strategy") or {}).get("name"),
                "phase": phase,
                "version": str((pins.get("strategy") or {}).get("version")),
                "signal": f"{signal.get('name')}@{signal.get('version')}",
                "data": _data_pin(pins),
                "last_review": review.last.isoformat() if review.last else None,
                "last_review_basis": review.basis,
                "next_review": review.due.isoformat() if review.due else None,
                "review_overdue": review.overdue,
                "liveness": live,
                "running": running,
                "mismatch": [],  # which cells disagree: "signal", "version"
                # gate requirements passed by a waiver, and requirements beyond the floor
                "waived": list(lifecycle.get("waived") or []),
                # "requirement: detail; waived by ..." as the passport writes it
                "waived_requirements": sorted(
                    {str(w).split(":", 1)[0] for w in lifecycle.get("waived") or []}
                ),
                "beyond_the_floor": list(lifecycle.get("beyond_the_floor") or []),
            }
        )
    return rows, _mark_mismatches(rows)


def _mark_mismatches(rows: list[dict[str, Any]]) -> list[str]:
    """Flag the cells that disagree (in each row's ``mismatch``) and describe every mismatch."""
    notes: list[str] = []
    by_signal: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        name, _, version = row["signal"].partition("@")
        by_signal.setdefault(name, {}).setdefault(version, []).append(row["id"])
    for name, versions in sorted(by_signal.items()):
        if len(versions) < 2:
            continue
        pinned = "; ".join(f"{v} by {', '.join(ids)}" for v, ids in sorted(versions.items()))
        notes.append(f"signal {name} is pinned at different versions: {pinned}")
        for row in rows:
            if row["signal"].partition("@")[0] == name:
                row["mismatch"].append("signal")
    for row in rows:
        running = row["running"]
        if not running:
            continue
        for cell, pinned, ran in (
            ("signal", row["signal"], running["signal"]),
            ("version", row["version"], running["strategy_version"]),
        ):
            if ran is not None and str(ran) != pinned:
                if cell not in row["mismatch"]:
                    row["mismatch"].append(cell)
                what = "signal" if cell == "signal" else "strategy version"
                notes.append(
                    f"{row['id']}: the runner reports {what} {ran} but "
                    f"generated/{row['id']}/params.yaml pins {pinned} "
                    "(production is not running what was backtested)"
                )
    return notes
