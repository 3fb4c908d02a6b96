"""Operating a runner from outside: stop it, check its persisted state, wait for its heartbeat.

These are the steps a rollback script and an on-call engineer need, as commands with exit codes:
`qcompile stop`, `qcompile run --check-state`, `qcompile heartbeat --wait`. They read the same
parameters file and state store the runner uses and never hold the lease longer than a probe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qcompile.errors import QcompileError
from qcompile.runtime.runner import compatibility
from qcompile.runtime.state import LeaseError, StateStore, open_store


class ControlError(QcompileError):
    """A runner could not be stopped, or its state or heartbeat is not what was expected."""


def _store(params: Mapping[str, Any], root: Path, env: Mapping[str, str]) -> StateStore:
    instance = f"control-{socket.gethostname()}-{os.getpid()}"
    return open_store(
        params["deployment"]["state_store"], str(params["strategy"]["id"]), instance, root, env
    )


def read_store(
    params: Mapping[str, Any],
    root: Path,
    read: str,
    reader: str = "reader",
    env: Mapping[str, str] = os.environ,
) -> Any:
    """``read_heartbeat()`` or ``read_journal()`` of the strategy's state store, its lease
    untouched; ``reader`` names who opened it (in the store's logs, never as the lease holder)."""
    spec = (params.get("deployment") or {}).get("state_store") or {"kind": "file"}
    store = open_store(spec, str(params["strategy"]["id"]), reader, root, env)
    try:
        return getattr(store, read)()
    finally:
        store.close()


def _lease_free(store: StateStore) -> bool:
    try:
        store.acquire()
    except LeaseError:
        return False
    store.release()
    return True


def stop(
    params: Mapping[str, Any], root: Path, timeout_s: float, env: Mapping[str, str] = os.environ
) -> str:
    """Ask the running instance to stop (SIGTERM: it reaches its safe state, saves, releases
    its lease) and wait until the lease is free. Returns what happened."""
    store = _store(params, root, env)
    try:
        if _lease_free(store):
            return "not running (the lease is free)"
        beat = store.read_heartbeat() or {}
        host, pid = beat.get("host"), beat.get("pid")
        if host != socket.gethostname() or not isinstance(pid, int):
            raise ControlError(
                f"{store.location}: held by {beat.get('instance', 'an unknown instance')} on "
                f"another host; stop it there"
            )
        with contextlib.suppress(ProcessLookupError):  # gone already: its lease is being freed
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _lease_free(store):
                return f"stopped (pid {pid})"
            time.sleep(0.1)
        raise ControlError(f"pid {pid} still holds the lease after {timeout_s:g} s")
    finally:
        store.close()


def check_state(
    params: Mapping[str, Any], root: Path, env: Mapping[str, str] = os.environ
) -> list[str]:
    """Notes about resuming the persisted state under ``params``; raises when it cannot."""
    store = _store(params, root, env)
    try:
        saved = store.load()
    finally:
        store.close()
    if saved is None:
        return [f"{store.location}: no persisted state; the runner starts flat"]
    problems, notes = compatibility(saved, params)
    if problems:
        raise ControlError(f"{store.location}: not compatible: {'; '.join(problems)}")
    return [f"{store.location}: state seq {saved.get('seq')} is compatible", *notes]


def wait_heartbeat(
    params: Mapping[str, Any],
    root: Path,
    timeout_s: float,
    since: datetime | None,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """The first liveness record written after ``since`` (any, when None) by a connected
    runner; raises after ``timeout_s``."""
    store = _store(params, root, env)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            beat = store.read_heartbeat()
            if beat and beat.get("connected") and _after(beat.get("at"), since):
                return beat
            if time.monotonic() >= deadline:
                raise ControlError(
                    f"{store.location}: no heartbeat from a connected runner within {timeout_s:g} s"
                )
            time.sleep(0.2)
    finally:
        store.close()


def _after(stamp: Any, since: datetime | None) -> bool:
    if since is None:
        return True
    try:
        return datetime.fromisoformat(str(stamp)) > since
    except ValueError:
        return False


def _event(kind: str, detail: str) -> dict[str, Any]:
    """An operator's journal record, stamped now (UTC, milliseconds)."""
    return {
        "type": kind,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "detail": detail,
    }


def journal_event(
    params: Mapping[str, Any],
    root: Path,
    kind: str,
    detail: str,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """Append an operator's event (a rollback, say) to the strategy's journal."""
    record = _event(kind, detail)
    store = _store(params, root, env)
    try:
        store.append_journal(record)
    finally:
        store.close()
    return record


def reconcile(
    params: Mapping[str, Any],
    root: Path,
    accept_broker: bool,
    operator: str,
    env: Mapping[str, str] = os.environ,
) -> tuple[list[str], bool]:
    """Compare the stopped runner's persisted books with its broker's: (lines to print,
    whether they agree). With ``accept_broker``, working orders are cancelled at the broker, its
    positions in the universe become the state's, the hold is lifted and the journal says who
    did it; the runner resumes from there at its next start."""
    from qcompile.runtime.broker import BrokerError, position_differences
    from qcompile.runtime.routing import broker_settings, open_remote_broker

    if broker_settings(params["deployment"])["kind"] == "paper":
        raise ControlError(
            "deployment.broker is paper: its books are saved with the runner's state, in the "
            "same write, so there is nothing to reconcile"
        )
    store = _store(params, root, env)
    try:
        try:
            store.acquire()
        except LeaseError as held:
            raise ControlError(f"{held}; stop the runner first (qcompile stop)") from None
        saved = store.load()
        if saved is None:
            raise ControlError(f"{store.location}: no persisted state; nothing to reconcile")
        try:
            broker = open_remote_broker(params, params["deployment"], env)
            held = broker.positions()
            working = broker.working_orders()
        except BrokerError as error:
            raise ControlError(f"the broker: {error}") from None
        symbols = list(params["universe"]["symbols"])
        ours = {k: float(v) for k, v in (saved.get("positions") or {}).items()}
        lines = [f"{store.location}: state seq {saved.get('seq')}; broker {broker.describe()}"]
        if saved.get("hold"):
            lines.append(f"held: {saved['hold']}")
        differences = position_differences(symbols, ours, held)
        lines += differences or ["positions agree"]
        lines += [f"working at the broker: {o.id} {o.symbol} {o.quantity:+g}" for o in working]
        pending = saved.get("pending_orders") or []
        lines += [f"pending in the state: {o.get('id')}" for o in pending]
        agree = not differences and not working and not pending and not saved.get("hold")
        if not accept_broker or agree:
            return lines, agree
        try:
            broker.cancel_all()
        except BrokerError as error:
            raise ControlError(f"cancelling the working orders: {error}") from None
        state = dict(saved)
        state["positions"] = {
            **{s: q for s, q in ours.items() if s not in symbols},
            **{s: held[s] for s in symbols if held.get(s)},
        }
        state["pending_orders"] = []
        state.pop("booked", None)
        state.pop("hold", None)
        state["seq"] = int(saved["seq"]) + 1
        store.save(state)
        store.append_journal(
            _event("reconciled", "accepted the broker's positions")
            | {"by": operator, "differences": differences}
        )
        lines.append(f"accepted the broker's positions (state seq {state['seq']}); hold lifted")
        return lines, True
    finally:
        store.close()
