"""The production runner: a strategy's parameters file in, a trading session out.

Consumes ``generated/<id>/params.yaml`` (every strategy-specific value) and the environment
(secrets only); nothing about a particular strategy is written here. Two threads do the work:

- the **feed thread** owns the market-data connection (:class:`~qcompile.runtime.feed.Feed`): it
  reads, pings, detects silence and is the only place that reconnects; on a confirmed
  disconnection it puts the engine into its safe state before anything else;
- the **decision thread** drains the pushes received so far, runs one decision cycle over them
  (:meth:`~qcompile.runtime.engine.Engine.cycle`: the bars they close decided in one signal call)
  and saves the state durably once per cycle: a burst of pushes costs one fsync, and a state is
  acknowledged only after its save returned.

Between the two, a bounded queue (:class:`~qcompile.runtime.pushqueue.PushQueue`): when the
decision thread falls behind, each symbol's further pushes are coalesced into the bar being built
and ``runner.lagging`` is raised; the backlog never grows without bound.

The main thread waits for a stop request (Ctrl-C, SIGTERM, the end of an emulator replay, a
duration) and then shuts down in order: feed closed, queued pushes decided, working orders
cancelled, final state saved, lease released.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import secrets as token_source
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl
import yaml

from qcompile.errors import QcompileError
from qcompile.marketdata.intervals import INTERVAL_MS
from qcompile.marketdata.rest import RestClient
from qcompile.research.data import Convention, load_bars
from qcompile.runtime.alerts import Alert, Alerter, build_sinks
from qcompile.runtime.backoff import Backoff
from qcompile.runtime.broker import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    OrderReport,
    PaperBroker,
)
from qcompile.runtime.engine import (
    BAR_COLUMNS,
    STATE_FORMAT,
    Engine,
    EngineConfig,
    EngineState,
    journal_alert,
)
from qcompile.runtime.feed import Feed
from qcompile.runtime.pushqueue import PushQueue
from qcompile.runtime.routing import broker_settings, open_remote_broker
from qcompile.runtime.saver import Saver
from qcompile.runtime.secrets import SecretError, install_redaction, resolve
from qcompile.runtime.state import StateStore, canonical_json, open_store
from qcompile.runtimedefaults import (
    CHANNEL,
    HISTORY_BARS,
    MAX_FRAME_BYTES,
    MAX_MALFORMED_PER_MINUTE,
    MAX_QUEUED_PUSHES,
    RATE_LIMIT_DEFAULT_S,
    SAFE_STATE_BUDGET_MS,
)
from qcompile.signals import SignalError
from qcompile.signals.pinning import event_calendar, events_on, pinned_signal

log = logging.getLogger("qcompile.live")


SWITCH_INTERVAL_S = 0.0002  # see Runner.start
BROKER_POLL_S = 1.0  # how often a remote broker is asked about the orders still working
# a remote broker unreachable for this long fails the runner (safe state, alert, exit non-zero)
BROKER_UNREACHABLE_S = 30.0
LEDGER = "paper-broker"  # where the paper broker's books were kept before they moved into the state


class RunnerError(QcompileError):
    """The runner cannot start: a missing secret, an incompatible state, a held lease."""


class RunnerFailed(QcompileError):
    """A worker thread failed while running: the safe state was entered and the process must
    exit non-zero, for its manager to restart it from the durable state."""


@dataclass
class Session:
    """How to run: where the feed comes from and when to stop."""

    ws_base: str | None = None  # None: the data source's ws_base
    rest_base: str | None = None
    api_key: str | None = None  # None: resolved from the data source's reference
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    acks: Path | None = None  # append "seq sha256" per acknowledged state (crash tests)
    settings: dict[str, Any] = field(default_factory=dict)  # deployment overrides (tests)
    replay: bool = False  # a replay of history: push times are not compared with the clock
    paper_broker: bool = False  # trade against the paper broker whatever the deployment names


@dataclass
class Summary:
    strategy_id: str
    accepted: int
    decisions: int
    orders: int
    fills: int
    safe_states: int
    reconnects: int
    seq: int
    positions: dict[str, float]
    equity: float
    state_location: str
    coalesced: int = 0  # pushes folded into a bar by the queue while decisions lagged


@contextlib.contextmanager
def single_threaded_signals() -> Iterator[None]:
    """Compiled signals run on the calling thread only (numba's setting is per thread). A runner
    decides one symbol's bar at a time: handing a few hundred rows to a parallel region costs
    more than the work, and on a busy machine it waits for a free core (0.6 ms became 15 ms)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def compatibility(
    saved: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """(problems, notes) of resuming ``saved`` under ``params``. Problems forbid it: another
    strategy's state, another state format, positions or orders in symbols this universe does not
    trade. A different signal version is only a note (a rollback changes it on purpose): targets
    are recomputed at the next bar close."""
    problems, notes = [], []
    strategy_id = params["strategy"]["id"]
    owner = (saved.get("strategy") or {}).get("id")
    if owner != strategy_id:
        problems.append(f"it belongs to {owner}, not {strategy_id}")
    if saved.get("format", STATE_FORMAT) != STATE_FORMAT:
        problems.append(f"state format {saved.get('format')}, this runner reads {STATE_FORMAT}")
    universe = set(params["universe"]["symbols"])
    held = set(saved.get("positions") or {}) | {
        o.get("symbol") for o in saved.get("pending_orders") or []
    }
    if held - universe:
        problems.append(f"it holds {', '.join(sorted(held - universe))}, outside the universe")
    wrote, pin = saved.get("signal") or {}, params["pins"]["signal"]
    if (wrote.get("name"), wrote.get("version")) != (pin["name"], pin["version"]):
        notes.append(
            f"written under signal {wrote.get('name')}@{wrote.get('version')}, this release pins "
            f"{pin['name']}@{pin['version']}: targets are recomputed at the next bar close"
        )
    return problems, notes


def load_params(params_file: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(params_file.read_text(encoding="utf-8"))
    except OSError as error:
        raise RunnerError(f"{params_file}: cannot read the parameters file: {error}") from None


def state_digest(state: Mapping[str, Any]) -> str:
    """Hash of the bytes the store saves for ``state`` (what an acknowledgement vouches for)."""
    return hashlib.sha256(canonical_json(state)).hexdigest()


class Runner:
    def __init__(
        self,
        params: dict[str, Any],
        root: Path,
        session: Session | None = None,
        env: Mapping[str, str] = os.environ,
    ):
        self.params, self.root = params, root
        self.session = session or Session()
        self.env = env
        deployment = {**params["deployment"], **self.session.settings}
        self.deployment = deployment
        data = params["data"]
        self.strategy_id = str(params["strategy"]["id"])
        if data["interval"] not in INTERVAL_MS or data["interval"] == "1M":
            raise RunnerError(f"data.interval: the runner cannot aggregate {data['interval']} bars")
        self.interval_ms = INTERVAL_MS[data["interval"]]
        self.api_key = self.session.api_key or resolve(
            data.get("api_key"), env, what="data.api_key"
        )
        if not self.api_key:
            raise RunnerError("data.api_key: the data source declares no API key reference")
        install_redaction([self.api_key])
        self.ws_base = self.session.ws_base or data.get("ws_base")
        self.rest_base = self.session.rest_base or data.get("rest_base")
        if not self.ws_base:
            raise RunnerError("data.ws_base: the data source declares no WebSocket endpoint")
        self.heartbeat_s = float(deployment["heartbeat_interval_s"])
        self.stop_requested = threading.Event()
        self._feed_stop = threading.Event()
        # seconds from a push's receipt on the feed thread to the end of its cycle's save
        self.latencies: deque[float] = deque(maxlen=200_000)
        self._waiting: deque[tuple[int, list[float]]] = deque()  # (save ticket, receipt times)
        self._waiting_lock = threading.Lock()
        self._last_ticket = 0
        self._threads: list[threading.Thread] = []
        self.failed = threading.Event()  # a worker failed: the process must exit non-zero
        self.failure: str | None = None
        self._failure_lock = threading.Lock()
        self._acks = None
        self.store: StateStore | None = None
        self.alerter = Alerter(build_sinks(deployment.get("alerts", [{"kind": "log"}]), env))
        self.alerter.on_worker_failure = self._fail  # a dead sink thread fails the runner too
        self.stopped = False
        self.started = False  # start() completed: there is something to stop
        self.history_is_local = False
        self._pushes: PushQueue | None = None  # made at start, from the engine

    @property
    def coalesced(self) -> int:
        """Pushes coalesced into a bar by the queue because decisions fell behind."""
        return self._pushes.coalesced if self._pushes is not None else 0

    # -- assembly ----------------------------------------------------------------------------

    def _signal(self) -> tuple[Callable[..., pl.DataFrame], Callable[..., Any] | None]:
        """The pinned signal, and its arrays companion where it has one and needs no calendar
        (a calendar's events are joined on a frame)."""
        pinned = self.params["pins"]["signal"]
        try:
            spec = pinned_signal(pinned, self.params["signal"]["packages"], self.root)
            calendar = event_calendar(pinned.get("events"), self.root)
        except SignalError as error:
            raise RunnerError(str(error)) from None
        if calendar is None:
            return spec.function, spec.arrays
        return lambda bars, **params: spec.function(
            bars, events=events_on(calendar, bars), **params
        ), None

    def _history(self) -> Callable[[str, int, int], Any]:
        """Completed bars before a time: the pinned local copy when there is one, else the
        vendor's REST kline endpoint (rate limits honoured on this thread, never the feed's)."""
        data = self.params["data"]
        local = data.get("local") or {}
        directory = self.root / local["path"] if local.get("path") else None
        if directory is not None and directory.is_dir():
            stamp = data["timestamp"]
            frame = load_bars(
                directory,
                local["format"],
                list(self.params["universe"]["symbols"]),
                Convention(stamp["unit"], stamp["timezone"], stamp["stamping"]),
                self.root,
            ).select(["symbol", *BAR_COLUMNS])
            # per symbol, its bars as one float array sorted by time: a lookup is a binary
            # search, so the first closes after a start cost microseconds, not a frame filter
            arrays = {
                str(key[0]): part.sort("timestamp")
                .select(pl.col(c).cast(pl.Float64) for c in BAR_COLUMNS)
                .to_numpy()
                for key, part in frame.partition_by("symbol", as_dict=True).items()
            }

            def from_local(symbol: str, before_ms: int, count: int) -> np.ndarray:
                rows = arrays.get(symbol)
                if rows is None:
                    return np.empty((0, len(BAR_COLUMNS)))
                end = int(np.searchsorted(rows[:, 0], before_ms, side="left"))
                return rows[max(0, end - count) : end]

            self.history_is_local = True
            return from_local
        if not self.rest_base:
            return lambda symbol, before_ms, count: []
        client = RestClient(self.rest_base, self.api_key)
        suffix = data.get("symbol_suffix", "") or ""

        def from_rest(symbol: str, before_ms: int, count: int) -> list[list[float]]:
            start = before_ms - int(count * self.interval_ms * 1.6)  # weekends and holidays
            klines = client.klines(symbol + suffix, data["interval"], start, before_ms - 1)
            rows = [
                [
                    float(k["time"]),
                    *(float(k[c]) for c in ("open", "high", "low", "close", "volume")),
                ]
                for k in klines
            ]
            return rows[-count:]

        return from_rest

    def _engine(self, state: EngineState | None, broker: Broker) -> Engine:
        params, data = self.params, self.params["data"]
        backtest = params["backtest"]
        monitoring = params.get("monitoring") or {}
        config = EngineConfig(
            strategy_id=self.strategy_id,
            strategy_version=str(params["strategy"]["version"]),
            signal_pin={
                k: params["pins"]["signal"][k] for k in ("name", "version", "source_sha256")
            },
            signal_params=dict(params["signal"]["params"]),
            symbols=list(params["universe"]["symbols"]),
            symbol_suffix=data.get("symbol_suffix", "") or "",
            interval_ms=self.interval_ms,
            timestamp_unit=data["timestamp"]["unit"],
            sizing=dict(backtest.get("sizing") or {}),
            initial_capital=float(backtest["initial_capital"]),
            history_bars=int(self.deployment.get("history_bars", HISTORY_BARS)),
            safe_state_budget_ms=float(
                self.deployment.get("safe_state_budget_ms", SAFE_STATE_BUDGET_MS)
            ),
            channel=str(self.deployment.get("channel", CHANNEL)),
            backward_run=int(data["timestamp"].get("backward_run", 3)),
            costs=dict(params["costs"]),
            monitoring=dict(monitoring.get("thresholds") or {}),
            expected_daily=monitoring.get("backtest_daily"),
            clock_tolerance_ms=None
            if self.session.replay
            else int(float(data["timestamp"].get("clock_tolerance_s", 300)) * 1000),
            max_malformed_per_minute=int(
                self.deployment.get("max_malformed_per_minute", MAX_MALFORMED_PER_MINUTE)
            ),
        )
        signal, signal_arrays = self._signal()
        return Engine(
            config,
            signal,
            broker,
            self.alerter,
            self._save,
            self._history(),
            state,
            journal=self._journal,
            signal_arrays=signal_arrays,
        )

    def _save(self, snapshot: dict[str, Any], wait: bool, records: list[dict[str, Any]]) -> None:
        self._last_ticket = self.saver.submit(snapshot, wait, records)

    def _saved(self, state: dict[str, Any], ticket: int) -> None:
        """On the saver thread, once ``state`` is durable: acknowledge it."""
        if self._acks is not None:
            self._acks.write(f"{state['seq']} {state_digest(state)}\n")
            self._acks.flush()
        done = time.perf_counter()
        with self._waiting_lock:
            while self._waiting and self._waiting[0][0] <= ticket:
                _, received = self._waiting.popleft()
                self.latencies.extend(done - r for r in received)

    def _check_compatible(self, saved: dict[str, Any]) -> None:
        """A persisted state is resumed only where it means the same thing."""
        problems, notes = compatibility(saved, self.params)
        for note in notes:
            log.warning("persisted state: %s", note)
        if problems:
            where = self.store.location if self.store else "the state store"
            raise RunnerError(
                f"{where}: persisted state is not compatible: {'; '.join(problems)}. "
                "Roll back to a release that can read it, or move the state aside deliberately."
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Runner:
        """Take the lease, restore and reconcile the state, start the feed and decision threads."""
        # The feed, decision and saver threads hand work to each other through the interpreter
        # lock; every system call of a save waits for it again, by default up to 5 ms while
        # another thread computes. A shorter interval halves the latency under load (measured
        # with benchmarks/runner_speed.py); the runner is a process of its own.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.store = open_store(
            self.deployment["state_store"],
            self.strategy_id,
            self.session.instance_id,
            self.root,
            self.env,
        )
        self.store.acquire()
        try:
            self._start_with_lease()
        except BaseException:  # nothing runs yet: give the lease back, keep the error
            self._abandon_start()
            raise
        self.started = True
        return self

    def _abandon_start(self) -> None:
        if self._acks is not None:
            self._acks.close()
        if self.store is not None:
            self.store.release()
            self.store.close()
        self.alerter.close()

    def _start_with_lease(self) -> None:
        assert self.store is not None
        if self.session.acks is not None:
            self._acks = self.session.acks.open("a", encoding="utf-8")
        saved = self.store.load()
        if saved is not None:
            self._check_compatible(saved)
        self.saver = Saver(
            self.store,
            int(saved["seq"]) if saved else 0,
            self._saved,
            lambda error: self._fail("saver", error),
            self._journal,
        )
        # the paper account is saved inside the state, in the same atomic write, so a kill -9
        # can never leave the two out of step; a state from before that keeps it beside
        self.broker = self._broker(saved)
        state = EngineState.from_dict(saved) if saved else None
        self.engine = self._engine(state, self.broker)
        if self.history_is_local:  # a REST warm-up would spend the vendor's quota at every start
            with single_threaded_signals():
                self.engine.warm_up(int(time.time() * 1000))
        try:
            differences = self.engine.reconcile()
        except BrokerError as error:
            raise RunnerError(f"reconciling with the broker at start-up: {error}") from None
        if saved:
            log.info(
                "resumed %s from state seq %d (%s)",
                self.strategy_id,
                saved["seq"],
                self.store.location,
            )
        for difference in differences:
            log.warning("reconciled: %s", difference)
        symbols = [s + self.engine.config.symbol_suffix for s in self.engine.config.symbols]
        engine = self.engine
        self._pushes = pushes = PushQueue(
            engine.peek,
            engine.stamp,
            engine.state.cursor.get,
            self.interval_ms,
            int(self.deployment.get("max_queued_pushes", MAX_QUEUED_PUSHES)),
        )
        self.feed = Feed(
            self.ws_base,
            self.api_key,
            [(str(self.deployment.get("channel", CHANNEL)), symbols)],
            heartbeat_s=self.heartbeat_s,
            backoff=Backoff.for_deployment(self.deployment),
            on_push=lambda epoch, push: pushes.put(epoch, push, time.perf_counter()),
            on_ready=self.engine.connected,
            on_down=self.engine.safe_state,
            alert=self._alert,
            rate_limit_default_s=float(
                self.deployment.get("rate_limit_default_s", RATE_LIMIT_DEFAULT_S)
            ),
            max_frame_bytes=int(self.deployment.get("max_frame_bytes", MAX_FRAME_BYTES)),
        )
        self.engine.request_reconnect = self.feed.reconnect
        # What start-up built (modules, history, the compiled signal) lives as long as the
        # process: frozen, a full collection no longer walks it. One walk of it took 40-60 ms,
        # a stall of every decision and save, a few times a minute under load.
        gc.collect()
        gc.freeze()
        self._spawn("feed", lambda: self.feed.run(self._feed_stop))
        self._spawn("decisions", self._decide_loop)
        self._spawn("staleness", self._watch_staleness)
        if self.engine.remote:
            self._spawn("broker", self._watch_broker)
            stream = getattr(self.broker, "stream_reports", None)
            if stream is not None:  # fills at once; the broker thread's polls are the backstop
                stream(self._streamed_report)
        self._alert("runner.started", "info", f"runner started ({self.session.instance_id})")
        data = self.params["data"]
        overridden = [
            f"{what} {given} instead of {declared}"
            for what, given, declared in (
                ("feed", self.session.ws_base, data.get("ws_base")),
                ("history", self.session.rest_base, data.get("rest_base")),
            )
            if given and given != declared
        ]
        if overridden and not self.session.replay:  # an operator's override, never silent
            self._alert("runner.feed_override", "warning", "; ".join(overridden))
        broker_url = broker_settings(self.deployment).get("url")
        if self.engine.remote and broker_url:  # a rehearsal's stand-in: never a silent one
            self._alert(
                "runner.broker_override",
                "warning",
                f"orders go to {broker_url}, not {self.broker.describe()}'s own API "
                "(deployment.broker.url)",
            )

    def _broker(self, saved: dict[str, Any] | None) -> Broker:
        """The broker ``deployment.broker`` names (the paper broker when the session asks for
        it); a paper account's books come from the saved state."""
        settings = broker_settings(self.deployment)
        if settings["kind"] == "paper" or self.session.paper_broker:
            # the paper account is saved inside the state, in the same atomic write, so a kill
            # -9 can never leave the two out of step; a state from before that keeps it beside
            ledger = saved.get("paper_ledger") if saved else None
            if saved is not None and ledger is None and self.store is not None:
                ledger = self.store.load_document(LEDGER)
            return PaperBroker(
                self.params["costs"], float(self.params["backtest"]["initial_capital"]), ledger
            )
        try:
            broker = open_remote_broker(self.params, self.deployment, self.env)
        except (BrokerError, SecretError) as error:
            raise RunnerError(str(error)) from None
        log.info("trading through %s", broker.describe())
        return broker

    def _streamed_report(self, report: OrderReport) -> None:
        """On the broker stream's thread: book the update; a failure here fails the runner
        (the SDK would only log it, and the fills would wait for the next poll unnoticed)."""
        try:
            self.engine.settle_report(report)
        except BaseException as error:
            self._fail("broker stream", error)

    def _watch_broker(self) -> None:
        """A remote broker's side of the books, on a thread of its own (its calls take
        milliseconds to seconds, never inside a decision): the reports of the orders still
        working, booked as they fill; a cancel a safe state could not make, made; after a
        reconnect, once nothing is working, the positions compared (a difference holds the
        runner). Unreachable for BROKER_UNREACHABLE_S, the runner fails (safe state, alert)."""
        interval = float(broker_settings(self.deployment).get("poll_interval_s", BROKER_POLL_S))
        engine, broker = self.engine, self.broker
        down_since: float | None = None
        while not self._feed_stop.wait(interval):
            try:
                if engine.cancel_owed:
                    engine.retry_cancel()
                orders = engine.pending_orders()
                if orders:
                    engine.settle([(o, broker.report(o)) for o in orders])
                elif engine.recheck_positions and not engine.state.hold:
                    differences = engine.positions_check(broker.positions)
                    if differences is not None:  # None: an order moved them meanwhile
                        engine.recheck_positions = False
                        if differences:
                            engine.hold(differences, "after a reconnect")
            except BrokerUnavailable as error:
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    self._alert("broker.unreachable", "warning", f"broker unreachable: {error}")
                elif now - down_since > BROKER_UNREACHABLE_S:
                    raise RunnerFailed(
                        f"the broker was unreachable for {now - down_since:.0f} s: {error}"
                    ) from None
                continue
            if down_since is not None:
                down_since = None
                log.info("the broker answers again")

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        """Start a worker under supervision: if it raises, or returns while the runner is still
        running, the runner fails (safe state, critical alert, non-zero exit), never goes on
        looking alive with a dead thread."""

        def supervised() -> None:
            try:
                target()
            except BaseException as error:
                self._fail(name, error)
                return
            if not self._feed_stop.is_set():
                self._fail(name, RuntimeError("the thread returned while the runner was running"))

        thread = threading.Thread(target=supervised, name=f"{self.strategy_id}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fail(self, worker: str, error: BaseException) -> None:
        """Fail-stop: the first failure of any worker puts the engine in its safe state (cancel
        working orders, suspend signals, save what can be saved), raises a critical alert naming
        the thread and the error, and asks the process to exit non-zero."""
        with self._failure_lock:
            if self.failure is not None:
                return
            frames = traceback.extract_tb(error.__traceback__)
            where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
            self.failure = f"{worker} thread failed: {type(error).__name__}: {error}{where}"
        log.critical("%s", self.failure)  # one line for the operator; the stack with --verbose
        log.debug("the failure's stack", exc_info=error)
        self._feed_stop.set()  # the feed stops reading: nothing is decided on after this
        if self._pushes is not None:  # a feed thread waiting for room goes on (to its stop)
            self._pushes.close()
        try:
            self.engine.safe_state(f"runner failed ({worker})", time.perf_counter())
        except BaseException as second:  # the state may be what broke: still cancel the orders
            log.critical("the safe state could not be saved: %s", second)
            with contextlib.suppress(BaseException):
                self.broker.cancel_all()
        self._alert(
            "runner.failed",
            "critical",
            f"{self.failure}; safe state entered; the process exits non-zero for its manager "
            "to restart it from the durable state",
        )
        self.failed.set()
        self.stop_requested.set()

    def _alert(self, key: str, severity: str, summary: str) -> None:
        alert = Alert(key=key, severity=severity, summary=summary, strategy_id=self.strategy_id)
        self._journal(journal_alert(alert))
        self.alerter.send(alert)

    def _journal(self, *records: dict[str, Any]) -> None:
        """Journal records, in one write; a failing journal is logged, never a reason to stop
        trading."""
        assert self.store is not None
        try:
            self.store.append_journal(*records)
        except (OSError, QcompileError) as error:
            log.error("journal append failed (%d records): %s", len(records), error)

    def _watch_staleness(self) -> None:
        """Judge the feed's silence by a clock of our own: the feed thread checks it too, but a
        frame that trickles in or takes long to handle stalls that thread, and with it its
        check. Half an interval after the feed thread should have acted, act for it: safe
        state, alert, and the connection dropped under it."""
        limit = 2.5 * self.heartbeat_s
        handled = -1
        while not self._feed_stop.wait(self.heartbeat_s / 4):
            feed = self.feed
            silent = time.perf_counter() - feed.last_received
            if not feed.connected.is_set() or silent <= limit or handled == feed.epoch:
                continue
            handled = feed.epoch
            reason = f"feed stalled: nothing read for {silent:.2f} s (the feed thread is stuck)"
            self._alert("feed.stalled", "critical", reason)
            self.engine.safe_state(reason, time.perf_counter())
            feed.abort(reason)

    def _decide_loop(self) -> None:
        with single_threaded_signals():
            self._decide_until_stopped()

    def _decide_until_stopped(self) -> None:
        pushes = self._pushes
        assert pushes is not None
        next_beat, beat_connected = 0.0, False
        lagging = False  # in a lagging episode (alerted once, until the backlog is gone)
        while True:
            entries = pushes.drain(0.05)
            if not entries:
                if self._feed_stop.is_set():
                    return
            else:
                lag = time.perf_counter() - entries[0].received
                overloaded = pushes.overloaded
                if (overloaded or lag > self.heartbeat_s) and not lagging:
                    lagging = True  # decisions fall behind the feed: say so, loudly, once
                    self._alert(
                        "runner.lagging",
                        "warning",
                        f"decisions lag the feed by {lag * 1000:.0f} ms ({len(entries)} entries "
                        "queued); each symbol's pushes are coalesced into the bar being built "
                        "until the backlog is gone",
                    )
                elif lagging and not overloaded and lag < self.heartbeat_s / 10:
                    lagging = False
                    log.info("decisions caught up with the feed")
                # each push's receipt time (a coalesced entry's pushes: its first's, the oldest)
                received = [
                    entry.received
                    for entry in entries
                    for _ in range(getattr(entry.payload, "count", 1))
                ]
                if self.engine.cycle([(entry.epoch, entry.payload) for entry in entries]):
                    with self._waiting_lock:  # decided; acknowledged once its save is durable
                        self._waiting.append((self._last_ticket, received))
                else:  # nothing to save: decided is done
                    done = time.perf_counter()
                    self.latencies.extend(done - r for r in received)
                pushes.done()
            now = time.monotonic()
            connected = self.feed.connected.is_set()
            if now >= next_beat or connected != beat_connected:  # a change is news at once
                next_beat, beat_connected = now + self.heartbeat_s, connected
                self._liveness()

    def _liveness(self) -> None:
        """The runner's own heartbeat, for monitoring and the dashboard."""
        assert self.store is not None
        state = self.engine.state
        self.store.heartbeat(
            {
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "instance": self.session.instance_id,
                "strategy_version": str(self.params["strategy"]["version"]),
                "signal": f"{self.engine.config.signal_pin['name']}@"
                f"{self.engine.config.signal_pin['version']}",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "connected": self.feed.connected.is_set(),
                "suspended": state.suspended,
                "seq": self.saver.seq,
                "last_message_age_s": round(time.perf_counter() - self.feed.last_received, 3)
                if self.feed.last_received
                else None,
            }
        )

    def wait_idle(self, timeout: float, quiet_s: float = 0.05) -> bool:
        """True once every push received was decided and none arrived for ``quiet_s`` (the last
        bytes a server sent may still be on their way through the socket; tests, replays)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            pushes = self._pushes
            if pushes is None:
                return True
            if not pushes.settled():
                seen = -1
                time.sleep(0.005)
                continue
            if pushes.puts == seen:
                return True
            seen = pushes.puts
            time.sleep(quiet_s)
        return False

    def stop(self) -> Summary:
        """Close the feed, decide what was received, cancel working orders, save, release.
        After a worker failed, each step is attempted and its failure logged: the lease is
        released and the alerts flushed whatever else went wrong."""
        self.stopped = True
        self._feed_stop.set()
        if self._pushes is not None:
            self._pushes.close()
        for thread in self._threads:
            thread.join(timeout=30)
        for step in (
            lambda: self.engine.safe_state("runner stopped", time.perf_counter(), planned=True),
            self._settle_last,
            getattr(self.broker, "close", lambda: None),
            self.saver.close,
            self._liveness,
        ):
            try:
                step()
            except BaseException as error:
                if self.failure is None:
                    raise
                log.error("after the failure, a stop step failed too: %s", error)
        summary = self.summary()
        assert self.store is not None
        self.store.release()
        self.store.close()
        if self._acks is not None:
            self._acks.close()
        self.alerter.flush(5.0)
        self.alerter.close()
        return summary

    def _settle_last(self) -> None:
        """A remote broker's last word on the orders the stop cancelled (a cancel can race a
        fill): booked before the final save; what is still unknown is asked at the next start."""
        if not self.engine.remote:
            return
        orders = self.engine.pending_orders()
        if orders:
            self.engine.settle([(o, self.broker.report(o)) for o in orders])

    def summary(self) -> Summary:
        counters, state = self.engine.counters, self.engine.state
        return Summary(
            strategy_id=self.strategy_id,
            accepted=counters.accepted,
            decisions=counters.decisions,
            orders=counters.orders,
            fills=counters.fills,
            safe_states=counters.safe_states,
            reconnects=max(0, self.feed.stats.connects - 1),
            seq=self.saver.seq,
            positions=dict(sorted(state.positions.items())),
            equity=self.engine.equity(),
            state_location=self.store.location if self.store else "",
            coalesced=self.coalesced,
        )


def local_api_key() -> str:
    """A throwaway key for a local emulator session: no real key is needed or read."""
    return "local-" + token_source.token_hex(12)


def emulator_for(
    params: dict[str, Any],
    root: Path,
    session: Session,
    replay: Path | None,
    bars: int,
    speed: float,
    scenario: Path | None,
) -> tuple[Any, Session]:
    """Start a local emulator replaying the last ``bars`` bars of the strategy's local data (or
    of ``replay``) and point a session at it with a throwaway key."""
    from qcompile.emulator import Emulator, load_bars, load_scenario, ticks_from_bars

    data = params["data"]
    directory = replay or root / (data.get("local") or {}).get("path", "")
    if not directory.is_dir():
        raise RunnerError(f"{directory}: no local bars to replay; pass --replay DIRECTORY")
    frame = load_bars(directory, list(params["universe"]["symbols"]))
    first = frame.group_by("symbol").agg(pl.col("timestamp").sort().tail(bars).first())
    replayed = frame.join(first, on="symbol", suffix="_first").filter(
        pl.col("timestamp") >= pl.col("timestamp_first")
    )
    suffix = data.get("symbol_suffix", "") or ""
    key = local_api_key()
    emulator = Emulator(
        ticks_from_bars(replayed.drop("timestamp_first"), INTERVAL_MS[data["interval"]], suffix),
        api_keys=[key],
        scenario=load_scenario(scenario) if scenario else None,
        messages_per_second=speed,
        bars=frame,
        interval=data["interval"],
        replay_start="first_subscribe",  # the session sees the replay from its first bar
        symbol_suffix=suffix,
    ).start()
    base = f"ws://127.0.0.1:{emulator.port}"
    return emulator, Session(
        ws_base=base,
        rest_base=emulator.rest_url,
        api_key=key,
        instance_id=session.instance_id,
        acks=session.acks,
        settings=session.settings,
        replay=True,
        paper_broker=session.paper_broker,
    )
