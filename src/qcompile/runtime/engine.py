"""The decision engine: pushes in, checked against the data contract, bars out, decisions made.

Everything here runs under one lock, on the runner's decision thread, except :meth:`safe_state`,
which the feed thread calls the moment it confirms a disconnection: the lock is held only for one
decision cycle (a few milliseconds), so the safe state never waits long.

The durable state is what a restart needs to carry on exactly where the last acknowledged cycle
left off: positions and cash as the runner last saw them, pending orders, the signal cursor (the
last accepted timestamp per symbol), the bar being built, the last target per symbol and whether
signals are suspended. Completed bars are not part of it: they are market data, reloaded from the
history source at start-up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from qcompile.execution import Costs, Rebalance, rebalance, sleeve_capital
from qcompile.research.data import detect_unit, stamp_text
from qcompile.runtime.alerts import Alert, Alerter
from qcompile.runtime.broker import (
    Broker,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderReport,
    check_report,
    fill_increment,
    order_record,
    position_differences,
)
from qcompile.runtime.monitor import Monitor, MonitorState

log = logging.getLogger("qcompile.live")

BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_FIELDS = {"ticker": "last_price", "trade": "price"}
STATE_FORMAT = 1  # bump when the meaning of a persisted state changes
UNIT_PER_MS = {"s": 1e-3, "ms": 1.0, "us": 1e3, "ns": 1e6}


def _quantity(command: str, value: Any) -> float:
    """A push's quantity: absent (a ticker) is 0; otherwise a finite, non-negative decimal
    string (or number); anything else is Malformed, never a NaN in a bar."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Malformed(f"{command}.quantity is {type(value).__name__}: {value!r:.40}")
    try:
        quantity = float(value)
    except ValueError:
        raise Malformed(f"{command}.quantity is not a decimal: {value!r:.40}") from None
    if not math.isfinite(quantity) or quantity < 0:
        raise Malformed(f"{command}.quantity is not a finite quantity >= 0: {value!r:.40}")
    return quantity


def journal_alert(alert: Alert) -> dict[str, Any]:
    """An alert as a journal record: retrospectives list what broke from these."""
    return {
        "type": "alert",
        "at": alert.at.isoformat(timespec="milliseconds"),
        "key": alert.key,
        "severity": alert.severity,
        "summary": alert.summary,
    }


class ContractViolation(Exception):
    """A push that breaks the pinned data contract: the feed is not what the strategy was built
    on, so trading on it would be trading on a misread."""


class Malformed(Exception):
    """A push with a field of the wrong type or value: dropped before it reaches a bar or the
    state, and counted; too many in a minute are a contract violation."""


@dataclass
class Tick:
    symbol: str  # the universe's symbol, vendor suffix removed
    price: float
    quantity: float
    timestamp: int  # ms


@dataclass
class Fragment:
    """Consecutive pushes of one symbol within one bar, coalesced by the push queue when the
    decision thread falls behind (:class:`qcompile.runtime.pushqueue.PushQueue`): the first as a
    tick, the rest as the extremes, last price and volume they add to the bar being built. Bars,
    fills (at the first quote after an order) and cursors come out as if each push had been
    handled; only the thresholds are checked less often."""

    first: Tick
    high: float
    low: float
    close: float
    volume: float  # of the pushes after the first
    last_ms: int
    count: int  # pushes coalesced, the first included

    @classmethod
    def start(cls, tick: Tick) -> Fragment:
        return cls(tick, tick.price, tick.price, tick.price, 0.0, tick.timestamp, 1)

    def add(self, tick: Tick) -> None:
        self.high, self.low = max(self.high, tick.price), min(self.low, tick.price)
        self.close, self.last_ms = tick.price, tick.timestamp
        self.volume += tick.quantity
        self.count += 1


@dataclass
class BarClose:
    """A bar closed by a push, awaiting the cycle's decision: the bar, and the push that closed
    it (the next bar's open), at whose price and time its orders are sized and filled."""

    row: list[float]
    price: float
    timestamp: int


class BarHistory:
    """One symbol's completed bars, oldest first, at most ``capacity``: a buffer of twice the
    capacity, compacted when full, so appending is amortised O(1) and the window is a view."""

    def __init__(self, rows: Any, capacity: int):
        self.capacity = max(1, capacity)
        self._buffer = np.empty((2 * self.capacity, len(BAR_COLUMNS)))
        loaded = np.asarray(rows, dtype=np.float64).reshape(-1, len(BAR_COLUMNS))
        loaded = loaded[len(loaded) - min(len(loaded), self.capacity) :]
        self._buffer[: len(loaded)] = loaded
        self._start, self._end = 0, len(loaded)

    def append(self, row: list[float]) -> None:
        if self._end == len(self._buffer):  # full: keep the newest capacity - 1 rows
            keep = self.capacity - 1
            self._buffer[:keep] = self._buffer[self._end - keep : self._end]
            self._start, self._end = 0, keep
        self._buffer[self._end] = row
        self._end += 1
        if self._end - self._start > self.capacity:
            self._start += 1

    def window(self) -> np.ndarray:
        return self._buffer[self._start : self._end]

    def __len__(self) -> int:
        return self._end - self._start


@dataclass
class Counters:
    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    ignored: int = 0
    violations: int = 0
    malformed: int = 0  # pushes with a bad field, dropped
    unsubscribed: int = 0  # pushes of a channel the runner did not subscribe to, dropped
    decisions: int = 0
    orders: int = 0
    fills: int = 0
    safe_states: int = 0


@dataclass
class EngineConfig:
    strategy_id: str
    strategy_version: str
    signal_pin: dict[str, Any]  # name, version, source_sha256
    signal_params: dict[str, Any]
    symbols: list[str]
    symbol_suffix: str
    interval_ms: int
    timestamp_unit: str
    sizing: dict[str, Any]
    initial_capital: float
    history_bars: int = 400
    safe_state_budget_ms: float = 100.0
    channel: str = "ticker"  # the one channel subscribed: pushes of another are dropped
    max_malformed_per_minute: int = 10
    backward_run: int = 3  # pushes in a row behind their symbol's cursor: the clock went back
    clock_tolerance_ms: int | None = 300_000  # |push time - wall clock| allowed; None: replay
    costs: dict[str, Any] = field(default_factory=dict)  # slippage_bps, commission_per_share, ...
    monitoring: dict[str, Any] = field(default_factory=dict)  # the strategy's alert thresholds
    expected_daily: dict[str, Any] | None = None  # the backtest's daily statistics


@dataclass
class EngineState:
    cash: float = 0.0
    positions: dict[str, float] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # order id -> order
    cursor: dict[str, int] = field(default_factory=dict)
    # symbol -> the bar row being built; each push replaces the row, never changes it in place,
    # so a snapshot copies the dict, not 500 rows
    building: dict[str, list[float]] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    # symbol -> [price, timestamp ms] of its last accepted push: a restart marks its book at these
    # until fresh data arrives, instead of at nothing
    last_prices: dict[str, list[float]] = field(default_factory=dict)
    # per symbol, the cash its open trade has cost so far (fills and commissions): its result
    # when the position is flat again
    trade_cash: dict[str, float] = field(default_factory=dict)
    # per symbol, its sleeve's cash (qcompile.execution): what its next entry may invest
    sleeves: dict[str, float] = field(default_factory=dict)
    fill_seq: int = 0  # the broker's sequence number of the last fill applied here
    day: int | None = None  # start of the interval whose close is marked next
    monitor: MonitorState = field(default_factory=MonitorState)
    suspended: bool = True  # nothing is decided until a connected feed proved its data fresh
    suspended_reason: str = "starting"
    # a remote broker's orders: what was booked of each pending one, [filled, cost, commission]
    # (cumulative, as its reports give them), so a restart books nothing twice
    booked: dict[str, list[float]] = field(default_factory=dict)
    # why the runner must stay in the safe state until an operator reconciles it (qcompile
    # reconcile): the broker's books and ours disagree; fresh data does not lift it
    hold: str = ""

    def to_dict(self, config: EngineConfig) -> dict[str, Any]:
        # copies (a saver thread serialises them while decisions go on), left unsorted: the
        # store's canonical JSON sorts every key, in compiled code
        return {
            "format": STATE_FORMAT,
            "strategy": {"id": config.strategy_id, "version": config.strategy_version},
            "signal": config.signal_pin,
            "cash": self.cash,
            "positions": dict(self.positions),
            "pending_orders": [self.pending[k] for k in sorted(self.pending)],
            "cursor": dict(self.cursor),
            "building": dict(self.building),  # rows are replaced, not changed
            "targets": dict(self.targets),
            "last_prices": dict(self.last_prices),  # each [price, time] is replaced, not changed
            "trade_cash": dict(self.trade_cash),
            "sleeves": dict(self.sleeves),
            "fill_seq": self.fill_seq,
            "day": self.day,
            "monitor": self.monitor.to_dict(),
            "suspended": self.suspended,
            "suspended_reason": self.suspended_reason,
            # only where used: a paper runner's states stay as they were
            **({"booked": dict(self.booked)} if self.booked else {}),
            **({"hold": self.hold} if self.hold else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineState:
        return cls(
            cash=float(data["cash"]),
            positions={k: float(v) for k, v in data["positions"].items()},
            pending={o["id"]: o for o in data["pending_orders"]},
            cursor={k: int(v) for k, v in data["cursor"].items()},
            building={k: list(v) for k, v in data["building"].items()},
            targets={k: int(v) for k, v in data["targets"].items()},
            last_prices={
                k: [float(p), float(t)] for k, (p, t) in (data.get("last_prices") or {}).items()
            },
            trade_cash={k: float(v) for k, v in (data.get("trade_cash") or {}).items()},
            sleeves={k: float(v) for k, v in (data.get("sleeves") or {}).items()},
            fill_seq=int(data.get("fill_seq") or 0),
            day=None if data.get("day") is None else int(data["day"]),
            monitor=MonitorState.from_dict(data.get("monitor")),
            suspended=True,  # a restart re-proves the feed before deciding anything
            suspended_reason=f"held: {data['hold']}" if data.get("hold") else "restarted",
            booked={k: [float(x) for x in v] for k, v in (data.get("booked") or {}).items()},
            hold=str(data.get("hold") or ""),
        )


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        signal: Callable[..., pl.DataFrame],
        broker: Broker,
        alerter: Alerter,
        # (snapshot, wait for it to be durable, journal records to append before it)
        save: Callable[[dict[str, Any], bool, list[dict[str, Any]]], None],
        history: Callable[[str, int, int], Any],  # rows of BAR_COLUMNS before a time
        state: EngineState | None = None,
        clock: Callable[[], float] = time.perf_counter,
        journal: Callable[..., None] = lambda *records: None,  # journal(*records): one write
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        # the signal's arrays companion (see qcompile.signals.registry): the same targets from
        # the history's arrays, without building a frame
        signal_arrays: Callable[..., np.ndarray] | None = None,
    ):
        self.config = config
        self.signal = signal
        self.signal_arrays = signal_arrays
        self.broker = broker
        # a broker whose books are not saved with ours: orders are recorded durably before they
        # are sent, and fills come from its reports (settle), not from quotes
        self.remote = bool(getattr(broker, "remote", False))
        self.cancel_owed = False  # a safe state could not reach the broker: cancel again
        self.recheck_positions = False  # reconnected: compare positions with the broker's
        self.alerter = alerter
        self._save = save
        self._history_source = history
        self.clock = clock
        self.wall_clock_ms = wall_clock_ms
        self.journal = journal  # alerts, at once
        self._records: list[dict[str, Any]] = []  # fills and daily marks, saved with the state
        self.state = state or EngineState(cash=config.initial_capital)
        self.lock = threading.RLock()
        self.counters = Counters()
        self.bars: dict[str, BarHistory] = {}
        self._closes: dict[str, BarClose] = {}  # bars closed this cycle, not yet decided
        # marked at the saved last prices until each symbol's first fresh push (see EngineState)
        self.last_price: dict[str, float] = {k: v[0] for k, v in self.state.last_prices.items()}
        self._malformed_at: deque[float] = deque()  # clock readings of recent malformed pushes
        self._behind = 0  # pushes in a row older than their symbol's cursor
        self.monitor = Monitor(config.monitoring, self.state.monitor, config.expected_daily)
        self.epoch = 0  # the feed connection whose data may lift a suspension
        self._condemned = -1  # a connection that broke the data contract: its pushes are dropped
        self.feed_ready = False
        self.safe_state_ms: list[float] = []
        self.safe_state_at: list[float] = []  # clock readings when each safe state was complete
        self.request_reconnect: Callable[[str], None] = lambda reason: None
        self._suffix = config.symbol_suffix
        self._universe = set(config.symbols)
        self.costs = Costs.from_config(config.costs)
        self._open_sleeves(restored=state is not None)
        self._value = self._gross = 0.0  # positions at their last prices: net and gross
        self._revalue()

    def _open_sleeves(self, restored: bool) -> None:
        """Each symbol's sleeve, as the backtest starts them (qcompile.execution)."""
        sizing = self.config.sizing
        capital = sleeve_capital(
            self.config.initial_capital,
            str(sizing.get("method", "equal_weight")),
            sizing.get("fraction"),
            len(self.config.symbols),
        )
        missing = [s for s in self.config.symbols if s not in self.state.sleeves]
        if restored and missing and self.state.positions:
            log.warning(
                "the saved state has no sleeve for %s (written before sleeves existed): each "
                "restarts at its starting capital, %.2f",
                ", ".join(missing),
                capital,
            )
        for symbol in missing:
            self.state.sleeves[symbol] = capital

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        self._decide_closes()  # a saved state never holds a close it has not decided
        document = self.state.to_dict(self.config)
        ledger = getattr(self.broker, "ledger", None)
        if callable(ledger):  # a paper account: saved with the state, never out of step
            document["paper_ledger"] = ledger()
        return document

    def persist(self, wait: bool = False) -> None:
        """Hand the state, and the fills and marks journaled since the last one, to the saver;
        with ``wait``, return once it is durable."""
        snapshot = self.snapshot()  # decides the pending closes: their fills come with it
        records, self._records = self._records, []
        self._save(snapshot, wait, records)

    # -- the feed's events -------------------------------------------------------------------

    def connected(self, epoch: int) -> None:
        """Every subscription of connection ``epoch`` is acknowledged; the next valid push from it
        is the fresh data check that lifts a suspension."""
        with self.lock:
            self.epoch, self.feed_ready = epoch, True
            self.recheck_positions = self.remote

    def safe_state(self, reason: str, detected_at: float, planned: bool = False) -> float:
        """Cancel working orders, suspend signals, persist; returns the milliseconds it took from
        ``detected_at`` (a ``clock`` reading taken when the problem was detected). ``planned``
        marks an orderly stop: the same steps, reported as information rather than an alarm."""
        with self.lock:
            self.feed_ready = False
            self.state.suspended, self.state.suspended_reason = True, reason
            self._decide_closes()  # suspended: the closes join the history, undecided
            cancelled = self._cancel_working()
            self.persist(wait=True)
            done = self.clock()
            elapsed_ms = (done - detected_at) * 1000.0
        if planned:
            log.info("stopped (%s): %d working order(s) cancelled", reason, len(cancelled))
            return elapsed_ms
        self.safe_state_ms.append(elapsed_ms)
        self.safe_state_at.append(done)
        self.counters.safe_states += 1
        log.warning(
            "SAFE STATE (%s): %d working order(s) cancelled, signals suspended, in %.1f ms",
            reason,
            len(cancelled),
            elapsed_ms,
        )
        self._alert(
            "runner.safe_state",
            "critical",
            f"safe state: {reason}",
            {"cancelled_orders": len(cancelled), "elapsed_ms": round(elapsed_ms, 1)},
        )
        if elapsed_ms > self.config.safe_state_budget_ms:
            self._alert(
                "runner.safe_state_slow",
                "critical",
                f"safe state took {elapsed_ms:.0f} ms "
                f"(budget {self.config.safe_state_budget_ms:.0f} ms)",
            )
        return elapsed_ms

    def cycle(self, pushes: list[tuple[int, dict[str, Any] | Fragment]]) -> bool:
        """One decision cycle over the pushes received since the last one, then one save handed
        to the saver. Returns whether the state changed (and a save was handed over).

        Bars closed by the cycle's pushes are decided together, in one call of the signal over
        every closing symbol's history (the same function the backtest runs over all symbols at
        once), before the save. A symbol's orders are sized and filled at the price of the push
        that closed its bar, as if decided on the spot: each symbol trades in its own sleeve, so
        deciding later in the cycle changes nothing but the time it costs.

        The lock is taken per push, not per batch, so a safe state waits for one push's work
        at most, never for a whole burst."""
        changed = False
        for epoch, push in pushes:
            with self.lock:
                try:
                    changed |= self._handle(epoch, push)
                except Malformed as problem:
                    if self._malformed(str(problem)):
                        self._condemned = epoch
                        changed = True
                        break
                except ContractViolation as violation:
                    self._condemned = epoch
                    self._violation(str(violation))
                    changed = True
                    break  # the rest of this batch comes from the same suspect feed
        if changed or self._records:
            with self.lock:
                self.persist()  # decides the cycle's closes first
        return changed

    def warm_up(self, before_ms: int) -> None:
        """Run the signal once on stored history so that loading compiled code and the first
        history read happen before the feed starts, not inside the first decision's lock."""
        for symbol in self.config.symbols:
            if len(self._history(symbol, before_ms)):
                self._signal_targets([symbol])
                self.bars.pop(symbol, None)  # reloaded at the first live close, up to its time
                return

    # -- internals ---------------------------------------------------------------------------

    def _violation(self, reason: str) -> None:
        log.error("data contract violated: %s", reason)
        self.feed_ready = False
        if not self.state.suspended:
            self.state.suspended, self.state.suspended_reason = True, f"data contract: {reason}"
            self._cancel_working()
        self.counters.violations += 1  # last: whoever sees the count sees the suspension
        self._alert("feed.contract", "critical", f"data contract violated: {reason}")
        self.request_reconnect(f"data contract violated: {reason}")

    def _malformed(self, reason: str) -> bool:
        """Count a dropped malformed push; True when it makes too many in a minute (then it is a
        contract violation: safe state and reconnect)."""
        self.counters.malformed += 1
        now = self.clock()
        self._malformed_at.append(now)
        while self._malformed_at and now - self._malformed_at[0] > 60.0:
            self._malformed_at.popleft()
        log.warning("malformed push dropped: %s", reason)
        self._alert("feed.malformed", "warning", f"malformed push dropped: {reason}")
        limit = self.config.max_malformed_per_minute
        if len(self._malformed_at) > limit:
            self._malformed_at.clear()
            self._violation(f"{limit + 1} malformed pushes within a minute, the last: {reason}")
            return True
        return False

    def stamp(self, push: dict[str, Any]) -> tuple[str, int] | None:
        """(symbol, time in ms) of a push of a traded symbol with an integer time, checking
        nothing else: cheap enough for the feed thread to call on every push."""
        data = push.get("data")
        if type(data) is not dict:
            return None
        wire, stamp = data.get("symbol"), data.get("timestamp")
        if type(wire) is not str or type(stamp) is not int:
            return None
        symbol = wire.removesuffix(self._suffix) if self._suffix else wire
        if symbol not in self._universe:
            return None
        return symbol, int(stamp / UNIT_PER_MS[self.config.timestamp_unit])

    def peek(self, push: dict[str, Any]) -> Tick | bool:
        """What :meth:`parse` will make of ``push``, without touching a counter, an alert or the
        state (the feed thread calls it: the push queue coalesces by it): the tick if it is
        valid, True if it is silently ignored (another symbol, a message that is no price),
        False if handling it may have an effect beyond its symbol (an alert, a contract
        violation), so that no later push may be moved before it."""
        command = push.get("cmd")
        if command != self.config.channel:
            return command not in PRICE_FIELDS and not (command is None and "channel" in push)
        try:
            return self.parse(push) or True
        except (Malformed, ContractViolation):
            return False

    def parse(self, push: dict[str, Any]) -> Tick | None:
        """The push as a tick, None for pushes the strategy does not trade on; raises
        ContractViolation when it breaks the pinned convention."""
        command = push.get("cmd")
        if command is None:
            if "channel" in push:
                raise ContractViolation(
                    "pushes carry `channel` and no `cmd`: the article's protocol variant, "
                    "not the pinned documented protocol"
                )
            return None
        price_field = PRICE_FIELDS.get(command)
        if price_field is None:
            return None
        if command != self.config.channel:  # never trade on a channel that was not asked for
            self.counters.unsubscribed += 1
            self._alert(
                "feed.unsubscribed",
                "warning",
                f"{command} pushed, only {self.config.channel} is subscribed: dropped",
            )
            return None
        data = push.get("data")
        if not isinstance(data, dict):
            raise Malformed(f"{command} push without a data object")
        wire_symbol = str(data.get("symbol", ""))
        symbol = wire_symbol.removesuffix(self._suffix) if self._suffix else wire_symbol
        if symbol not in self._universe:
            return None
        price, stamp = data.get(price_field), data.get("timestamp")
        if not isinstance(price, str):
            raise ContractViolation(
                f"{command}.{price_field} is {type(price).__name__}, the protocol sends "
                "decimal strings"
            )
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            raise ContractViolation(f"{command}.timestamp is not an integer: {stamp!r}")
        unit = detect_unit(stamp)
        if unit != self.config.timestamp_unit:
            raise ContractViolation(
                f"timestamps look like {unit or 'no known unit'} ({stamp}), "
                f"the pinned convention is {self.config.timestamp_unit}"
            )
        try:
            value = float(price)
        except ValueError:
            raise ContractViolation(
                f"{command}.{price_field} is not a decimal: {price!r}"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ContractViolation(f"{command}.{price_field} is not a positive price: {price!r}")
        quantity = _quantity(command, data.get("quantity"))
        millis = int(stamp / UNIT_PER_MS[self.config.timestamp_unit])
        return Tick(symbol, value, quantity, millis)

    def _check_clock(self, symbol: str, timestamp: int) -> None:
        tolerance = self.config.clock_tolerance_ms
        if tolerance is not None:
            skew = timestamp - self.wall_clock_ms()
            if abs(skew) > tolerance:  # checked before anything, the fresh-data check included
                raise ContractViolation(
                    f"{symbol} stamped {stamp_text(timestamp, 'ms')}, "
                    f"{skew / 1000:+.0f} s from this host's clock (tolerance "
                    f"{tolerance / 1000:.0f} s)"
                )

    def _handle(self, epoch: int, push: dict[str, Any] | Fragment) -> bool:
        if epoch == self._condemned:  # the rest of a connection that broke the contract
            self.counters.ignored += push.count if isinstance(push, Fragment) else 1
            return False
        fragment = push if isinstance(push, Fragment) else None
        tick = fragment.first if fragment is not None else self.parse(push)  # type: ignore[arg-type]
        if tick is None:
            self.counters.ignored += 1
            return False
        self._check_clock(tick.symbol, tick.timestamp)
        if fragment is not None:
            self._check_clock(tick.symbol, fragment.last_ms)
        last = self.state.cursor.get(tick.symbol)
        if last is not None and tick.timestamp <= last:
            if tick.timestamp == last:
                self.counters.duplicates += 1
                return False
            self.counters.out_of_order += 1
            self._behind += 1
            if self._behind >= self.config.backward_run:  # not a late push: time went back
                self._behind = 0
                raise ContractViolation(
                    f"{self.config.backward_run} pushes in a row older than their symbol's last "
                    f"({tick.symbol} {stamp_text(tick.timestamp, 'ms')} after "
                    f"{stamp_text(last, 'ms')}): the feed's clock went back (a timezone or date "
                    "shift)"
                )
            return False
        self._behind = 0
        if self.state.suspended and self.feed_ready and epoch == self.epoch and not self.state.hold:
            self.state.suspended, self.state.suspended_reason = False, ""
            log.info("fresh data checked on connection %d: signals resumed", epoch)
            self._alert("runner.resumed", "info", "feed data fresh again: signals resumed")
        self.counters.accepted += 1
        self._mark_interval(tick.timestamp // self.config.interval_ms * self.config.interval_ms)
        self._price(tick.symbol, tick.price, tick.timestamp)
        self._bar(tick)
        for fill in self.broker.on_quote(tick.symbol, tick.price, tick.timestamp):
            self._filled(fill)
        if fragment is not None and fragment.count > 1:  # the rest, into the bar it began
            self.counters.accepted += fragment.count - 1
            self._price(tick.symbol, fragment.close, fragment.last_ms)
            self._extend(tick.symbol, fragment.high, fragment.low, fragment.close, fragment.volume)
            for fill in self.broker.on_quote(tick.symbol, fragment.close, fragment.last_ms):
                self._filled(fill)
        self._watch(self.state.cursor[tick.symbol])
        return True

    def _price(self, symbol: str, price: float, timestamp: int) -> None:
        """A symbol's last accepted price: the cursor, the marks, and the running valuation."""
        self.state.cursor[symbol] = timestamp
        held = self.state.positions.get(symbol)
        if held:
            change = price - self.last_price.get(symbol, 0.0)
            self._value += held * change
            self._gross += abs(held) * change
        self.last_price[symbol] = price
        self.state.last_prices[symbol] = [price, float(timestamp)]

    def _revalue(self) -> None:
        """The positions at their last prices, summed afresh: at start, after a reconciliation
        and at every interval's mark (the running sums drift by rounding, ~1e-16 a push)."""
        prices = self.last_price
        self._value = sum(q * prices.get(s, 0.0) for s, q in self.state.positions.items())
        self._gross = sum(abs(q) * prices.get(s, 0.0) for s, q in self.state.positions.items())

    def _watch(self, timestamp: int) -> None:
        """The strategy's own thresholds, after every price and fill, on the running marks:
        O(1) a push, whatever the number of positions."""
        if not self.monitor.thresholds:
            return
        day = timestamp // 86_400_000 * 86_400_000
        for breach in self.monitor.observe(self.state.cash + self._value, self._gross, day):
            self._alert(breach.key, breach.severity, breach.summary, breach.details)

    def _mark_interval(self, start: int) -> None:
        """Journal the equity of each completed interval (a day for daily bars), marked at the
        last prices when the next one begins: the live side of the weekly review."""
        marked = self.state.day
        if marked is not None and start > marked:
            self._decide_closes()  # the day's last decisions belong to its mark
            self._revalue()
            day = datetime.fromtimestamp(marked / 1000, UTC).date().isoformat()
            equity = round(self.state.cash + self._value, 6)  # equity(), summed just now
            self._records.append(
                {
                    "type": "daily",
                    "bar_ms": marked,
                    "date": day,
                    "equity": equity,
                    "cash": round(self.state.cash, 6),
                    "positions": dict(sorted(self.state.positions.items())),
                }
            )
            for breach in self.monitor.day_closed(day, equity):  # the weekly review, daily
                self._alert(breach.key, breach.severity, breach.summary, breach.details)
        if marked is None or start > marked:
            self.state.day = start

    def _bar(self, tick: Tick) -> None:
        """Aggregate ticks into bars; a tick in a later interval closes the bar being built, and
        the decision on that close acts on this tick (the next bar's open)."""
        interval = self.config.interval_ms
        start = tick.timestamp // interval * interval
        building = self.state.building.get(tick.symbol)
        if building is not None and start > building[0]:
            if tick.symbol in self._closes:  # its previous close first, in order
                self._decide_closes()
            self._closes[tick.symbol] = BarClose(building, tick.price, tick.timestamp)
            building = None
        if building is None:
            self.state.building[tick.symbol] = [
                float(start),
                tick.price,
                tick.price,
                tick.price,
                tick.price,
                tick.quantity,
            ]
        else:
            self._extend(tick.symbol, tick.price, tick.price, tick.price, tick.quantity)

    def _extend(self, symbol: str, high: float, low: float, close: float, volume: float) -> None:
        """The bar being built, with a later push (or a fragment's rest) added: a new row."""
        start, open_, top, bottom, _, traded = self.state.building[symbol]
        self.state.building[symbol] = [
            start,
            open_,
            max(top, high),
            min(bottom, low),
            close,
            traded + volume,
        ]

    def _history(self, symbol: str, before_ms: int) -> BarHistory:
        bars = self.bars.get(symbol)
        if bars is None:  # first close since start-up: completed bars come from the history source
            loaded = self._history_source(symbol, before_ms, self.config.history_bars)
            bars = self.bars[symbol] = BarHistory(loaded, self.config.history_bars)
        return bars

    def _decide_closes(self) -> None:
        """Decide every bar closed since the last call, all symbols in one signal call; each
        symbol's orders go out and fill at the push that closed its bar. Suspended, the closed
        bars only join the history (they are market data), and nothing is decided."""
        closes, self._closes = self._closes, {}
        if not closes:
            return
        if self.state.suspended:  # signal generation is suspended until the feed is proven again
            for symbol, close in closes.items():  # no history read here: the safe state waits
                if symbol in self.bars:  # (one not loaded yet comes with the bar from its source)
                    self.bars[symbol].append(close.row)
            return
        for symbol, close in closes.items():
            self._history(symbol, int(close.row[0])).append(close.row)
        targets = self._signal_targets(sorted(closes))
        remote_orders: list[Order] = []
        for symbol, close in closes.items():  # in the order the bars closed
            target, bar_ms = targets[symbol], int(close.row[0])
            self.counters.decisions += 1
            self.state.targets[symbol] = target
            for leg, quantity in self._legs(symbol, target, close.price).orders():
                order_id = f"{self.config.strategy_id}-{bar_ms}-{symbol}-{leg}"
                order = Order(order_id, symbol, quantity, bar_ms)
                if self.remote:
                    remote_orders.append(order)
                    continue
                self.submit(order)
                log.info("%s: target %+d, %s order %+g submitted", symbol, target, leg, quantity)
            for fill in self.broker.on_quote(symbol, close.price, close.timestamp):
                self._filled(fill)
        if remote_orders:
            self.send_orders(remote_orders)
        self._watch(max(close.timestamp for close in closes.values()))

    def _legs(self, symbol: str, target: int, price: float) -> Rebalance:
        """The orders that take ``symbol``'s sleeve to ``target`` at ``price``: the backtest's
        rules (qcompile.execution), so both size and charge a trade alike. Already in the trade:
        nothing (sized at entry and held)."""
        pending = sum(
            o["quantity"] - math.copysign(self.state.booked.get(order_id, [0.0])[0], o["quantity"])
            for order_id, o in self.state.pending.items()
            if o["symbol"] == symbol
        )
        held = self.state.positions.get(symbol, 0.0) + pending
        side = (held > 1e-12) - (held < -1e-12)
        return rebalance(
            self.state.sleeves.get(symbol, 0.0),
            side,
            abs(held),
            target,
            price,
            self.costs,
            bool(self.config.sizing.get("fractional_shares", False)),
        )

    def submit(self, order: Order) -> None:
        """Send ``order`` to the broker and record it as pending (call with the lock held). An
        id the broker already filled (decided again after a restart) is not sent twice: its
        fill is applied here if this state does not have it yet."""
        known = self.broker.submit(order)
        self.state.pending[order.id] = order_record(order)
        self.counters.orders += 1
        for fill in known:
            self._filled(fill)

    def send_orders(self, orders: list[Order]) -> None:
        """Send a cycle's orders to a remote broker (call with the lock held). Each is recorded
        and saved durably first, so a process killed at any moment after that knows every
        order that may have reached the broker and asks for it by its id at the restart; a kill
        before it leaves nothing sent. A refused order is dropped and alerted; an unreachable
        broker raises (the runner fails into its safe state and is restarted)."""
        for order in orders:
            self.state.pending[order.id] = order_record(order)
            self.state.booked[order.id] = [0.0, 0.0, 0.0]
        self.persist(wait=True)
        for order in orders:
            try:
                self.broker.submit(order)
            except OrderRejected as refused:
                self.state.pending.pop(order.id, None)
                self.state.booked.pop(order.id, None)
                self._alert(
                    "broker.rejected",
                    "critical",
                    f"order {order.id} ({order.symbol} {order.quantity:+g}) refused: {refused}",
                )
                continue
            self.counters.orders += 1
            log.info("%s: order %+g sent (%s)", order.symbol, order.quantity, order.id)

    def pending_orders(self) -> list[Order]:
        with self.lock:
            return [Order(**o) for o in self.state.pending.values()]

    def settle(
        self, reports: list[tuple[Order, OrderReport | None]], recovered: bool = False
    ) -> bool:
        """Book what a remote broker reports of our pending orders: the fills since the last
        report, and the end of each order that is no longer working. Returns whether anything
        changed (and was handed to the saver)."""
        changed = False
        with self.lock:
            for order, report in reports:
                if order.id not in self.state.pending:
                    continue  # settled meanwhile
                if report is None:  # recorded, then the process died before sending it
                    log.info("order %s never reached the broker: dropped", order.id)
                    self.state.pending.pop(order.id)
                    self.state.booked.pop(order.id, None)
                    changed = True
                    continue
                check_report(order, report)
                booked = self.state.booked.setdefault(order.id, [0.0, 0.0, 0.0])
                fill = fill_increment(report, booked)
                if fill is not None:
                    self._filled(fill, recovered, settled=False)
                    self.state.booked[order.id] = [report.filled, report.cost, report.commission]
                    changed = True
                if not report.open:
                    self.state.pending.pop(order.id)
                    self.state.booked.pop(order.id, None)
                    changed = True
            if changed:
                self.persist()
        return changed

    def settle_report(self, report: OrderReport) -> bool:
        """``settle`` one report that arrived by itself (a broker's stream of order updates)."""
        with self.lock:
            known = self.state.pending.get(report.order_id)
            if known is None:
                return False  # not ours, or settled already
            order = Order(**known)
            return self.settle([(order, report)])

    def _cancel_working(self) -> list[Order]:
        """Cancel the broker's working orders (call with the lock held). A remote broker's
        orders stay pending until their final reports are booked (a cancel can race a fill); if
        the broker cannot be reached, a critical alert, and the runner's broker thread keeps
        trying (``cancel_owed``)."""
        try:
            cancelled = self.broker.cancel_all()
        except BrokerError as error:
            self.cancel_owed = True
            self._alert(
                "broker.cancel_failed",
                "critical",
                f"could not cancel the working orders at the broker: {error}; retrying",
            )
            return []
        self.cancel_owed = False
        if not self.remote:
            self.state.pending.clear()
        return cancelled

    def retry_cancel(self) -> None:
        with self.lock:
            if self.cancel_owed:
                cancelled = self._cancel_working()
                if not self.cancel_owed:
                    log.warning(
                        "working orders cancelled at the broker at last: %d", len(cancelled)
                    )

    def compare_positions(self, broker_positions: dict[str, float]) -> list[str]:
        """Where the broker's positions in our universe differ from ours (pending orders count
        for nothing: call with none working)."""
        return position_differences(self.config.symbols, self.state.positions, broker_positions)

    def positions_check(self, fetch: Callable[[], dict[str, float]]) -> list[str] | None:
        """Compare positions with the broker's (``fetch``, called without the lock) when
        nothing can move them: no order working before the call and none sent during it; None
        when something did (an order sent and filled meanwhile would look like a difference),
        for the caller to try again later."""
        with self.lock:
            if self.state.pending:
                return None
            sent = self.counters.orders
        theirs = fetch()
        with self.lock:
            if self.state.pending or self.counters.orders != sent:
                return None
            return self.compare_positions(theirs)

    def hold(self, differences: list[str], when: str) -> None:
        """Books that disagree with the broker's: safe state, and held there (fresh data does
        not lift it) until an operator reconciles: ``qcompile reconcile STRATEGY``."""
        with self.lock:
            self.state.hold = f"{when}: " + "; ".join(differences)
            self.state.suspended, self.state.suspended_reason = True, f"held: {self.state.hold}"
            self._cancel_working()
            self.persist(wait=True)
        self._alert(
            "broker.mismatch",
            "critical",
            f"positions differ from the broker's {when}; trading held until an operator "
            "reconciles (qcompile reconcile)",
            {"differences": differences},
        )

    def _signal_targets(self, symbols: list[str]) -> dict[str, int]:
        """The signal's target at the last bar of each of ``symbols`` (sorted), from one call
        over all their histories, sorted by symbol then time as the backtest's frame.

        With an arrays companion the call takes the history's columns as arrays; otherwise a
        frame is built for it. The arrays path makes no polars call: each one gives the
        interpreter lock away and, with the feed thread busy, waits for it again (a tenth of a
        millisecond or more each, on a path a bar close takes hundreds of times a second)."""
        windows = [self.bars[s].window() for s in symbols]
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        ends = np.cumsum(lengths)
        rows = np.concatenate(windows)
        if self.signal_arrays is not None:
            values = rows.T.copy()  # one contiguous array per column
            columns = dict(zip(BAR_COLUMNS, values, strict=True))
            columns["timestamp"] = values[0].astype(np.int64)
            starts = np.concatenate(([0], ends))
            targets = self.signal_arrays(columns, starts, **self.config.signal_params)
            last = np.asarray(targets)[ends - 1].astype(np.int64).tolist()
            return dict(zip(symbols, last, strict=True))
        columns = [pl.Series(name, rows[:, column]) for column, name in enumerate(BAR_COLUMNS)]
        columns[0] = columns[0].cast(pl.Int64)
        names = pl.Series("symbol", symbols, dtype=pl.String)
        columns.append(names.gather(np.repeat(np.arange(len(symbols)), lengths)))
        frame = pl.DataFrame(columns)  # series in, no expression to plan: a tenth of a ms
        signal = self.signal(frame, **self.config.signal_params)["signal"]
        last = signal.gather(ends - 1).fill_null(0).cast(pl.Int64).to_list()
        return dict(zip(symbols, last, strict=True))

    def equity(self) -> float:
        held = sum(q * self.last_price.get(s, 0.0) for s, q in self.state.positions.items())
        return self.state.cash + held

    def _filled(self, fill: Fill, recovered: bool = False, settled: bool = True) -> None:
        if settled:  # a paper fill is the whole order; a remote order ends with its report
            self.state.pending.pop(fill.order_id, None)
        if fill.seq and fill.seq <= self.state.fill_seq:
            return  # applied before: a broker's answer to a repeated submit
        if not math.isfinite(fill.quantity * fill.price + fill.commission):
            # never into the books, nor a saved state (JSON has no NaN): the runner fails
            raise ValueError(f"fill {fill.order_id} is not a finite amount: {fill}")
        self.state.fill_seq = max(self.state.fill_seq, fill.seq)
        self._account_trade(fill)
        before = self.state.positions.get(fill.symbol, 0.0)
        held = before + fill.quantity
        price = self.last_price.get(fill.symbol, 0.0)
        self._value += (held - before) * price
        self._gross += (abs(held) - abs(before)) * price
        if abs(held) > 1e-12:
            self.state.positions[fill.symbol] = held
        else:
            self.state.positions.pop(fill.symbol, None)
        spent = fill.quantity * fill.price + fill.commission
        self.state.cash -= spent
        self.state.sleeves[fill.symbol] = self.state.sleeves.get(fill.symbol, 0.0) - spent
        self.counters.fills += 1
        self._records.append(
            {
                "type": "fill",
                "bar_ms": fill.timestamp,
                "order_id": fill.order_id,
                "symbol": fill.symbol,
                "quantity": fill.quantity,
                "price": round(fill.price, 8),
                "commission": round(fill.commission, 8),
                **({"recovered": True} if recovered else {}),
            }
        )
        log.info("%s: filled %+g at %.4f", fill.symbol, fill.quantity, fill.price)

    def _account_trade(self, fill: Fill) -> None:
        """Add the fill's cash to its symbol's open trade; when the trade is flat again (or
        flips), its result goes to the losing-streak monitor."""
        before = self.state.positions.get(fill.symbol, 0.0)
        after = before + fill.quantity
        closing = before != 0 and (after == 0 or (after > 0) != (before > 0))
        if not closing:
            cash = -(fill.quantity * fill.price + fill.commission)
            self.state.trade_cash[fill.symbol] = self.state.trade_cash.get(fill.symbol, 0.0) + cash
            return
        share = abs(before) / abs(fill.quantity)  # the part of the fill that closes the trade
        closed = self.state.trade_cash.pop(fill.symbol, 0.0) - share * (
            fill.quantity * fill.price + fill.commission
        )
        if abs(after) > 1e-12:  # flipped: the rest of the fill opens the next trade
            rest = (1 - share) * (fill.quantity * fill.price + fill.commission)
            self.state.trade_cash[fill.symbol] = -rest
        for breach in self.monitor.closed_trade(closed):
            self._alert(breach.key, breach.severity, breach.summary, breach.details)

    def reconcile(self) -> list[str]:
        """At start-up: apply the fills the broker made after the last save, cancel the orders
        the previous process left working, and adopt the broker's positions and cash where the
        state still disagrees (the broker is the truth: a crash can fall between its fill and
        our save); returns what differed, for the log and an alert.

        A remote broker's books are not saved with ours, so a difference there is not adopted:
        see ``_reconcile_remote``."""
        if self.remote:
            return self._reconcile_remote()
        with self.lock:
            # fills the broker made after our last save (a crash between the two): applied as
            # if received, so positions, sleeves and the journal agree with the broker
            missed = self.broker.fills_after(self.state.fill_seq)
            for fill in missed:
                self._filled(fill, recovered=True)
            # a restart starts in the safe state: the orders a dead process left working are
            # cancelled (they would fill at whatever quote comes first, not where they were
            # meant to); the decisions are made again on fresh data, under the same ids
            orphans = [o.id for o in self.broker.cancel_all()]
            self.state.pending.clear()
            differences = []
            broker_positions = self.broker.positions()
            for symbol in sorted(set(broker_positions) | set(self.state.positions)):
                ours, theirs = (
                    self.state.positions.get(symbol, 0.0),
                    broker_positions.get(symbol, 0.0),
                )
                if abs(ours - theirs) > 1e-9:
                    differences.append(f"{symbol}: state {ours:g}, broker {theirs:g}")
            for order_id in orphans:
                differences.append(f"order {order_id}: left working by the last process, cancelled")
            if abs(self.broker.cash() - self.state.cash) > 1e-6:
                differences.append(
                    f"cash: state {self.state.cash:.2f}, broker {self.broker.cash():.2f}"
                )
            self.state.positions = broker_positions
            self.state.cash = self.broker.cash()
            self._revalue()
            if missed or differences:
                self.persist(wait=True)
            if missed:
                self._alert(
                    "runner.recovered_fills",
                    "warning",
                    f"{len(missed)} fill(s) the broker made after the last save were applied",
                    {"orders": [fill.order_id for fill in missed]},
                )
            if differences:
                self._alert(
                    "runner.reconciled",
                    "warning",
                    "persisted state differed from the broker; adopted the broker's",
                    {"differences": differences},
                )
            return differences

    def _alert(
        self, key: str, severity: str, summary: str, details: dict[str, Any] | None = None
    ) -> None:
        alert = Alert(
            key=key,
            severity=severity,
            summary=summary,
            strategy_id=self.config.strategy_id,
            details=details or {},
        )
        # what led to it (a daily mark, a fill) goes first, in order, in the same write
        records, self._records = self._records, []
        self.journal(*records, journal_alert(alert))
        self.alerter.send(alert)

    def _reconcile_remote(self) -> list[str]:
        """At start-up, against a remote broker: book what it did with the orders the last
        process recorded (found by their ids; one recorded but never sent is dropped), cancel
        what is left working, then compare positions. A difference holds the runner in its
        safe state (``hold``) rather than being adopted: the broker is the truth, but only an
        operator can say whether our books or someone's hand moved it."""
        recorded = self.pending_orders()
        self.settle([(o, self.broker.report(o)) for o in recorded], recovered=True)
        with self.lock:
            orphans = [o.id for o in self._cancel_working()]
        still = self.pending_orders()  # a cancel can race a fill: their last word
        self.settle([(o, self.broker.report(o)) for o in still], recovered=True)
        notes = [f"order {o}: left working by the last process, cancelled" for o in orphans]
        if self.state.hold:
            notes.append(f"held since the last run: {self.state.hold}")
            return notes
        if self.pending_orders():
            self.recheck_positions = True  # compared once their reports are final
            return notes
        differences = self.compare_positions(self.broker.positions())
        if differences:
            self.hold(differences, "at start-up")
        return notes + differences
