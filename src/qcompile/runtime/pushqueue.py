"""The queue between the feed thread and the decision thread: bounded, coalescing under load.

While the decision thread keeps up, every push goes through as received. When it falls behind
and ``soft_limit`` entries are waiting, the feed thread folds each new valid push into the
waiting entry of its symbol for the same bar (a :class:`~qcompile.runtime.engine.Fragment`: the
first push as a tick, then the extremes, last price and volume), so the backlog holds at most
about one entry per symbol and bar instead of one per push: the latency past saturation stays
bounded and the bars, fills and cursors come out as if every push had been handled.

Only what cannot change the result moves: a push is folded only when it is valid, newer than
everything seen of its symbol and within the bar its entry began. A push whose handling may
reach beyond its symbol (a malformed field, a contract breach, a stale or repeated time, another
channel) is a barrier: nothing received after it is folded into an entry before it. A flood of
such pushes cannot be coalesced; at ``hard_limit`` entries the feed thread waits for the decision
thread (the socket's buffers then push back on the vendor, and the staleness watchdog sees the
feed thread stall), never an unbounded backlog.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qcompile.runtime.engine import Fragment, Tick

Payload = dict[str, Any] | Fragment


@dataclass
class Entry:
    epoch: int
    payload: Payload
    received: float  # perf_counter at the receipt of its (first) push


class PushQueue:
    def __init__(
        self,
        peek: Callable[[dict[str, Any]], Tick | bool],
        stamp: Callable[[dict[str, Any]], tuple[str, int] | None],
        cursor: Callable[[str], int | None],
        interval_ms: int,
        soft_limit: int,
        hard_limit: int | None = None,
    ):
        self._peek = peek  # Engine.peek: the tick, True (harmless), False (a barrier)
        self._stamp = stamp  # Engine.stamp: (symbol, ms) of any push, unchecked
        self._cursor = cursor  # the engine's last accepted time of a symbol, ms
        self._interval = interval_ms
        self.soft_limit = max(1, soft_limit)
        self.hard_limit = max(self.soft_limit, hard_limit or 4 * self.soft_limit)
        self._entries: deque[Entry] = deque()
        self._open: dict[tuple[int, str], Fragment] = {}  # foldable entries, by epoch and symbol
        # per traded symbol, the newest time (ms) of any push received: with the engine's cursor,
        # what a push must be newer than to start or join a fragment
        self._newest: dict[str, int] = {}
        self._condition = threading.Condition()
        self.coalesced = 0  # pushes folded into an entry
        self.overloaded = False  # coalescing since the backlog reached soft_limit
        self.puts = 0  # pushes received
        self._closed = False
        self._busy = False  # drained entries are being decided

    def put(self, epoch: int, push: dict[str, Any], received: float) -> None:
        """On the feed thread: enqueue ``push`` (folded into a waiting entry when over the soft
        limit); waits while the hard limit is reached."""
        stamped = self._stamp(push)
        with self._condition:
            self.puts += 1
            newest = -1
            if stamped is not None:
                symbol, millis = stamped
                newest = self._newest.get(symbol, -1)
                if millis > newest:
                    self._newest[symbol] = millis
            if len(self._entries) < self.soft_limit and not self._open:
                self._append(Entry(epoch, push, received))
                return
            self.overloaded = True
            seen = self._peek(push)
            if isinstance(seen, Tick):
                self._fold(epoch, seen, newest, push, received)
            else:
                if seen is False:
                    self._open.clear()  # a barrier: nothing later moves before it
                self._append(Entry(epoch, push, received))
            while len(self._entries) >= self.hard_limit and not self._closed:
                self._condition.wait(0.1)

    def _fold(
        self, epoch: int, tick: Tick, newest: int, push: dict[str, Any], received: float
    ) -> None:
        """Fold a valid tick into its symbol's open fragment, or start one. Only a tick newer
        than every push of its symbol received before it and than the engine's cursor (which
        only the pushes received before it can have moved) joins: the engine would accept it."""
        symbol = tick.symbol
        if tick.timestamp <= max(newest, self._cursor(symbol) or -1):
            self._open.clear()  # a repeat or late push: the engine judges it, in order
            self._append(Entry(epoch, push, received))
            return
        fragment = self._open.get((epoch, symbol))
        bar = tick.timestamp // self._interval
        if fragment is not None and fragment.first.timestamp // self._interval == bar:
            fragment.add(tick)
            self.coalesced += 1
            return
        fragment = self._open[(epoch, symbol)] = Fragment.start(tick)
        self._append(Entry(epoch, fragment, received))

    def _append(self, entry: Entry) -> None:
        self._entries.append(entry)
        self._condition.notify_all()

    def drain(self, timeout: float) -> list[Entry]:
        """On the decision thread: every waiting entry (waits up to ``timeout`` for the first);
        drained fragments can no longer be folded into."""
        with self._condition:
            if not self._entries:
                self._condition.wait(timeout)
            entries = list(self._entries)
            self._entries.clear()
            self._busy = bool(entries)
            self._open.clear()
            if len(entries) < self.soft_limit // 2:
                self.overloaded = False
            self._condition.notify_all()
            return entries

    def close(self) -> None:
        """The runner stops: a feed thread waiting for room goes on."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def done(self) -> None:
        """On the decision thread: the drained entries are decided."""
        with self._condition:
            self._busy = False

    def settled(self) -> bool:
        """Nothing waiting and nothing being decided."""
        with self._condition:
            return not self._entries and not self._busy

    def __len__(self) -> int:
        return len(self._entries)
