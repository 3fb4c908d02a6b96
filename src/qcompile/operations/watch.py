"""`qcompile watch`: the monitor outside the runner, and `qcompile alert test`.

A runner that dies cannot say so. The watchdog reads each watched strategy's heartbeat from its
state store (no lease taken) and, when it is older than two heartbeat intervals (the source
document's bound), alerts through that strategy's own sinks: once per incident, then once more
when the heartbeat comes back. Incidents are kept in ``.qcompile/watch.json`` so that a watchdog
run from cron (``--once``) or restarted by systemd does not alert twice for one outage.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qcompile.errors import QcompileError
from qcompile.operations.status import generated_strategies, liveness, read_store
from qcompile.project import Project

WATCH_STATE = "watch.json"


@dataclass(frozen=True)
class Event:
    """What one pass found for one strategy: an outage begun, one ended, or nothing new."""

    strategy_id: str
    kind: str  # "down", "recovered" or "" (no change)
    text: str
    delivered: bool = True


def _watched(project: Project, only: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(id, params) of the production strategies, or of ``only`` whatever their phase."""
    chosen = []
    for strategy_id, params, passport in generated_strategies(project):
        phase = (passport.get("lifecycle") or {}).get("phase")
        if (strategy_id in only) if only else phase == "production":
            chosen.append((strategy_id, params))
    missing = sorted(set(only) - {i for i, _ in chosen})
    if missing:
        raise QcompileError(f"not in generated/: {', '.join(missing)}; run `qcompile build`")
    return chosen


class Watchdog:
    def __init__(
        self,
        project: Project,
        only: list[str] | None = None,
        env: Mapping[str, str] = os.environ,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ):
        self.project, self.env, self.now = project, env, now
        self.strategies = _watched(project, list(only or []))
        self._state_file = project.cache_dir / WATCH_STATE
        self.incidents: dict[str, str] = self._load()
        self._alerters: dict[str, Any] = {}

    def intervals(self) -> dict[str, float]:
        return {
            strategy_id: float(params["deployment"]["heartbeat_interval_s"])
            for strategy_id, params in self.strategies
        }

    def check(self) -> list[Event]:
        """One pass over every watched strategy; alerts what changed."""
        events = []
        for strategy_id, params in self.strategies:
            interval = float(params["deployment"]["heartbeat_interval_s"])
            try:
                beat = read_store(self.project, strategy_id, params, "read_heartbeat", self.env)
                state = liveness(beat, interval, self.now())
                alive, text = state["state"] == "up", state["text"]
            except QcompileError as error:  # a store we cannot read is an outage we cannot rule out
                alive, text = False, f"heartbeat unreadable: {error}"
            if not alive and strategy_id not in self.incidents:
                summary = (
                    f"runner not alive: {text} (a heartbeat is due every {interval:g} s; "
                    f"alerting after {2 * interval:g} s)"
                )
                delivered = self._send(params, strategy_id, "runner.down", "critical", summary)
                self.incidents[strategy_id] = self.now().isoformat(timespec="seconds")
                events.append(Event(strategy_id, "down", summary, delivered))
            elif alive and strategy_id in self.incidents:
                since = self.incidents.pop(strategy_id)
                summary = f"runner alive again ({text}); down since {since}"
                delivered = self._send(params, strategy_id, "runner.recovered", "info", summary)
                events.append(Event(strategy_id, "recovered", summary, delivered))
            else:
                events.append(Event(strategy_id, "", text))
        self._save()
        return events

    def _send(
        self, params: Mapping[str, Any], strategy_id: str, key: str, severity: str, summary: str
    ) -> bool:
        """Deliver through the strategy's own sinks; True when every sink took it."""
        from qcompile.runtime.alerts import Alert

        alerter = self._alerter(params, strategy_id)
        failures = len(alerter.failures)
        alerter.send(Alert(key=key, severity=severity, summary=summary, strategy_id=strategy_id))
        alerter.flush(10.0)
        return len(alerter.failures) == failures

    def _alerter(self, params: Mapping[str, Any], strategy_id: str) -> Any:
        from qcompile.runtime.alerts import Alerter, build_sinks

        if strategy_id not in self._alerters:
            sinks = build_sinks(params["deployment"].get("alerts") or [{"kind": "log"}], self.env)
            # every outage and every recovery is news: no de-duplication window here
            self._alerters[strategy_id] = Alerter(sinks, dedupe_window_s=0.0)
        return self._alerters[strategy_id]

    def run(self, stop: threading.Event, poll_s: float, announce: Callable[[Event], None]) -> None:
        while True:
            for event in self.check():
                if event.kind:
                    announce(event)
            if stop.wait(poll_s):
                return

    def close(self) -> None:
        for alerter in self._alerters.values():
            alerter.close()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._state_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.incidents, sort_keys=True), encoding="utf-8")
        temporary.replace(self._state_file)


def default_poll(intervals: Mapping[str, float]) -> float:
    """Half the shortest heartbeat interval (so an outage is seen within two intervals plus a
    half), between 0.2 s and 30 s."""
    return min(30.0, max(0.2, min(intervals.values(), default=60.0) / 2))


def alert_test(
    project: Project, strategy_id: str, env: Mapping[str, str] = os.environ
) -> list[tuple[str, str]]:
    """Send one test alert through each sink of the strategy's deployment; (sink, outcome)."""
    from qcompile.runtime.alerts import Alert, Alerter, build_sinks

    chosen = [(i, p) for i, p, _ in generated_strategies(project) if i == strategy_id]
    if not chosen:
        raise QcompileError(f"{strategy_id} is not in generated/; run `qcompile build`")
    params = chosen[0][1]
    results = []
    for config in params["deployment"].get("alerts") or [{"kind": "log"}]:
        (sink,) = build_sinks([config], env)
        alerter = Alerter([sink], dedupe_window_s=0.0, retries=0)
        alerter.send(
            Alert(
                key="alert.test",
                severity="info",
                summary=f"test alert from `qcompile alert test {strategy_id}`: no action needed",
                strategy_id=strategy_id,
            )
        )
        alerter.flush(15.0)
        failures = [f[2] for f in alerter.failures]
        alerter.close()
        results.append((str(config.get("kind")), f"failed: {failures[0]}" if failures else "sent"))
    return results
