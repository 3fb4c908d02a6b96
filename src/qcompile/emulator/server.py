"""A local stand-in for the TickDB market-data vendor, with scriptable faults.

One port serves both faces of the vendor: WebSocket pushes on ``/v1/realtime`` and the REST
endpoints as plain HTTP, answered from the WebSocket handshake hook (``process_request``).
An asyncio loop runs in a daemon thread so that synchronous tests and runners can use it::

    with Emulator(ticks_from_bars(bars, DAY_MS, ".US"), api_keys={"k"}, bars=bars) as emulator:
        ws = websocket.create_connection(f"{emulator.ws_url}?api_key=k")

Design notes (what a client can rely on is in docs/emulator.md):

- One replay clock, like a real market: events go out at ``messages_per_second`` whether or not
  anyone listens, and a slow client never slows the others (each connection has its own outbox
  and writer task).
- Faults act where a real network or vendor would: ``drop`` aborts the TCP connection without a
  close frame; ``silence`` swallows every outgoing byte, WebSocket pongs included, while the
  socket stays open (a half-open link); ``slow`` stalls each send.
- ``qcompile emulator`` (qcompile.runtime.command) serves one by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import math
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import polars as pl
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from qcompile.emulator.replay import (
    DEPTH_LEVELS,
    INTERVAL_MS,
    Tick,
    TickWalker,
    WireStyle,
    kline_records,
    render,
)
from qcompile.emulator.scenario import Fault, Scenario, ScenarioError, resolve_fault

log = logging.getLogger("qcompile.emulator")

REALTIME_PATH = "/v1/realtime"
ARTICLE_STREAM_PATH = "/v1/market/stream"  # only while protocol_variant is "article"
KLINE_PATH = "/v1/market/kline"
SYMBOLS_PATH = "/v1/symbols/available"

CHANNELS = ("ticker", "trade", "depth")  # documented order of the pushes of one event
DEFAULT_KLINE_LIMIT = 100
MAX_KLINE_LIMIT = 1000
REPLAY_STARTS = ("immediately", "first_subscribe", "manual")
ReplayStart = Literal["immediately", "first_subscribe", "manual"]
FLUSH_TIMEOUT_S = 2.0  # how long drop/silence wait for already-dispatched pushes to go out
MAX_OUTBOX = 100_000  # a consumer this far behind is disconnected, as a vendor would
CLOSE_POLICY = 1008  # WebSocket close code after an authentication refusal
CLOSE_TRY_AGAIN_LATER = 1013  # ... and after a connection-limit refusal

# Faults that arm a countdown; re-applying one replaces its remaining count.
COUNTED_FAULTS = (
    "rate_limit",
    "http_429",
    "error_4002",
    "malformed_json",
    "duplicate",
    "out_of_order",
    "connection_limit",
    "bad_field",
    "binary_frame",
    "oversized_frame",
    "slow_frame",
    "unsubscribed_channel",
    "upgrade_429",
    "error_close",
)


def _with_field(text: str, name: str, value: Any) -> str:
    """A push with one field replaced: in ``data`` (or ``data`` itself), NaN written as JSON's
    non-standard literal when the value is a float NaN, as a careless vendor would."""
    message = json.loads(text)
    if name == "data":
        message["data"] = value
    elif isinstance(message.get("data"), dict):
        message["data"][name] = value
    return json.dumps(message)


@dataclass(frozen=True)
class _Trickle:
    """A push to be written a few bytes at a time (the ``slow_frame`` fault)."""

    text: str
    bytes_per_s: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Stats:
    """Counters of what the emulator did; :attr:`Emulator.stats` returns a snapshot copy."""

    connections_accepted: int = 0
    connections_open: int = 0
    connections_refused: int = 0  # missing/unknown key or connection_limit
    pings: int = 0
    subscribes: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    unsubscribes: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    messages_pushed: int = 0  # push messages written to sockets (replies not counted)
    rest_requests: int = 0
    rate_limited: int = 0  # 3001 replies on the socket plus HTTP 429 answers
    sent_index: int = 0  # position of the replay clock in the current pass over the events
    events_dispatched: int = 0  # over all passes; after_messages triggers compare to this
    exhausted: bool = False
    faults_applied: list[str] = field(default_factory=list)

    def copy(self) -> Stats:
        return replace(
            self,
            subscribes=list(self.subscribes),
            unsubscribes=list(self.unsubscribes),
            faults_applied=list(self.faults_applied),
        )


class _Connection(ServerConnection):
    """A server connection that can go silent: outgoing bytes are discarded, pongs included.

    Reading goes on, so the server still notices when the client gives up and closes.
    """

    silenced_until: float = 0.0  # event-loop time; math.inf: until the connection ends

    def silenced(self) -> bool:
        return self.loop.time() < self.silenced_until

    def send_data(self) -> None:
        if not self.silenced():
            super().send_data()
            return
        for data in self.protocol.data_to_send():
            if not data:  # end of stream: still close the TCP side as the library would
                if self.transport.can_write_eof():
                    with contextlib.suppress(Exception):
                        self.transport.write_eof()
                else:
                    self.transport.close()


async def _trickle(connection: ServerConnection, trickle: _Trickle) -> None:
    """Write one text frame a few bytes at a time, as a congested link delivers it.

    The frame is serialised whole and written under the protocol object: it is complete and
    unfragmented, so the connection's state is as if ``send`` had written it. Nothing else goes
    to this client meanwhile (its writer task is here), as on a real stalled link.
    """
    data = Frame(Opcode.TEXT, trickle.text.encode()).serialize(mask=False)
    step = max(1, trickle.bytes_per_s // 10)  # ten writes a second
    transport = connection.transport
    for start in range(0, len(data), step):
        if transport.is_closing():
            raise ConnectionClosed(None, None)
        transport.write(data[start : start + step])
        await asyncio.sleep(step / trickle.bytes_per_s)


@dataclass(eq=False)
class _Client:
    connection: _Connection
    # channel -> subscribed symbols; None: every symbol (the article variant's subscriptions)
    subscriptions: dict[str, set[str] | None] = field(default_factory=dict)
    outbox: asyncio.Queue[tuple[str | bytes | _Trickle, bool]] = field(
        default_factory=asyncio.Queue
    )
    writer: asyncio.Task[None] | None = None

    def enqueue(self, text: str | bytes | _Trickle, push: bool) -> None:
        if self.outbox.qsize() >= MAX_OUTBOX:
            log.warning("a client fell %d messages behind; disconnecting it", MAX_OUTBOX)
            self.connection.transport.abort()
            return
        self.outbox.put_nowait((text, push))


def _json_response(
    status: int, body: dict[str, Any], extra: dict[str, str] | None = None
) -> Response:
    payload = json.dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            *(extra or {}).items(),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, payload)


def _envelope(code: int, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return body


class _BadRequest(Exception):
    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(message)


class Emulator:
    """The vendor on loopback: replays ``events`` (see :func:`ticks_from_bars`), serves ``bars``.

    ``scenario`` schedules faults; :meth:`inject` applies one now. The scenario's
    ``messages_per_second``, when set, overrides the argument. ``replay_start`` says when the
    replay clock starts: ``"immediately"`` (like a live market), at the ``"first_subscribe"`` of
    any connection (so a runner sees the replay from its first event), or ``"manual"``, by
    :meth:`start_replay` (so a test can subscribe on several channels first).
    ``symbol_suffix`` maps wire symbols (``MSFT.US``) to ``bars`` symbols (``MSFT``); by default it
    is inferred from the events.
    """

    def __init__(
        self,
        events: list[dict[str, Any]],
        *,
        api_keys: Collection[str],
        scenario: Scenario | None = None,
        messages_per_second: float = 100.0,
        host: str = "127.0.0.1",
        port: int = 0,
        bars: pl.DataFrame | None = None,
        interval: str = "1d",
        loop_replay: bool = False,
        replay_start: ReplayStart = "immediately",
        symbol_suffix: str | None = None,
    ):
        if interval not in INTERVAL_MS:
            raise ValueError(f"unknown interval {interval!r} (one of {', '.join(INTERVAL_MS)})")
        scenario = scenario or Scenario()
        rate = scenario.messages_per_second or messages_per_second
        if not rate > 0:
            raise ValueError("messages_per_second must be > 0")
        if replay_start not in REPLAY_STARTS:
            raise ValueError(f"replay_start must be one of {', '.join(REPLAY_STARTS)}")
        self._events = list(events)
        self._api_keys = frozenset(api_keys)
        self._rate = float(rate)
        self.host = host
        self.port = port
        self._interval = interval
        self._loop_replay = loop_replay
        self._replay_start = replay_start

        resolved: list[Fault] = []
        problems: list[str] = []
        for index, fault in enumerate(scenario.faults):
            checked, messages = resolve_fault(fault, f"faults[{index}]")
            resolved.append(checked)
            problems += messages
        if problems:
            raise ScenarioError(problems)
        self._start_faults = [f for f in resolved if f.after_messages is None and f.at_s is None]
        self._timed_faults = [f for f in resolved if f.at_s is not None]
        self._counted_faults = sorted(
            (f for f in resolved if f.after_messages is not None),
            key=lambda f: f.after_messages or 0,
        )

        self._bars_by_symbol: dict[str, list[dict[str, Any]]] = {}
        self._bar_times: dict[str, list[int]] = {}
        if bars is not None:
            for (symbol,), frame in bars.sort("timestamp").group_by("symbol", maintain_order=True):
                rows = frame.to_dicts()
                self._bars_by_symbol[str(symbol)] = rows
                self._bar_times[str(symbol)] = [int(r["timestamp"]) for r in rows]
        self._suffix = (
            symbol_suffix if symbol_suffix is not None else self._infer_suffix(self._events)
        )
        self._symbol_set = frozenset(
            {e["symbol"] for e in self._events}
            | {f"{s}{self._suffix}" for s in self._bars_by_symbol}
        )
        self._symbols = sorted(self._symbol_set)

        # Runtime state, touched only on the event loop (except _stats, under its lock).
        self._stats = Stats()
        self._stats_lock = threading.Lock()
        self._exhausted = threading.Event()
        self._lifecycle_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._play: asyncio.Event | None = None
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._style = WireStyle()
        self._remaining = dict.fromkeys(COUNTED_FAULTS, 0)
        self._retry_after = {"rate_limit": 2, "http_429": 2, "upgrade_429": 2, "error_close": 2}
        self._bad_field: tuple[str, Any] = ("quantity", "NaN")
        self._extra_channel = "trade"
        self._oversize = 10_000_000
        self._trickle_rate = 20
        self._slow_delay_s = 0.0
        self._slow_until = 0.0
        self._held: Tick | None = None  # an out_of_order event waiting for its successor

    def _infer_suffix(self, events: list[dict[str, Any]]) -> str:
        if not events or not self._bars_by_symbol:
            return ""
        wire = events[0]["symbol"]
        matches = [s for s in self._bars_by_symbol if wire.startswith(s)]
        return wire[len(max(matches, key=len)) :] if matches else ""

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{REALTIME_PATH}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def messages_per_second(self) -> float:
        """The replay rate in effect (a scenario's rate overrides the constructor's)."""
        return self._rate

    @property
    def symbols(self) -> list[str]:
        """Wire symbols (with suffix) that can be subscribed to and queried."""
        return list(self._symbols)

    def start(self) -> Emulator:
        """Start serving in a daemon thread; returns once the port is listening."""
        with self._lifecycle_lock:
            if self._thread is not None:
                raise RuntimeError("the emulator is already running")
            ready = threading.Event()
            failure: list[BaseException] = []
            self._thread = threading.Thread(
                target=self._run, args=(ready, failure), name="qcompile-emulator", daemon=True
            )
            self._thread.start()
        if not ready.wait(timeout=10) or failure:
            self.stop()
            if failure:
                raise RuntimeError(f"the emulator failed to start: {failure[0]}") from failure[0]
            raise RuntimeError("the emulator did not start within 10 s")
        return self

    def stop(self) -> None:
        """Close every connection and the server, and join the thread. Idempotent."""
        with self._lifecycle_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout=10)
        if thread.is_alive():
            log.warning("the emulator thread did not stop within 10 s (it is a daemon)")

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as error:
            if not ready.is_set():
                failure.append(error)
                ready.set()
            else:
                log.exception("the emulator stopped on an error")

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._play = asyncio.Event()
        for fault in self._start_faults:
            await self._apply(fault)
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            create_connection=_Connection,
            compression=None,
            ping_interval=None,  # the documented protocol has application-level pings only
            close_timeout=0.5,
            logger=logging.getLogger("qcompile.emulator.websockets"),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._replay())
        if self._replay_start == "immediately":
            self._play.set()
        ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for client in list(self._clients):
            if client.connection.silenced():  # it would not answer a close handshake
                client.connection.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=3)
            except TimeoutError:
                for client in list(self._clients):
                    client.connection.transport.abort()

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- thread-safe API ------------------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        with self._stats_lock:
            return self._stats.copy()

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, amount in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + amount)

    def inject(self, fault: str, **options: Any) -> None:
        """Apply a fault now (same names and options as a scenario entry); returns once applied.

        Pushes already dispatched are delivered before ``drop`` and ``silence`` take effect.
        Before :meth:`start`, the fault is applied at start.
        """
        checked, problems = resolve_fault(Fault(fault, options=options), "inject")
        if problems:
            raise ScenarioError(problems, "inject()")
        loop = self._loop
        if self._thread is None or loop is None:
            self._start_faults.append(checked)
            return
        asyncio.run_coroutine_threadsafe(self._apply(checked), loop).result(timeout=10)

    def start_replay(self) -> None:
        """Start the replay clock now (for ``replay_start="manual"``; no-op once started)."""
        if self._loop is None or self._play is None:
            raise RuntimeError("start() the emulator first")
        self._loop.call_soon_threadsafe(self._play.set)

    def wait_exhausted(self, timeout: float) -> bool:
        """True once the replay clock has passed the last event (its first pass, if looping).

        Every push is then queued for its connections; a client may still be reading them.
        """
        return self._exhausted.wait(timeout)

    def wait_for(self, predicate: Callable[[Stats], bool], timeout: float) -> bool:
        """Poll :attr:`stats` until ``predicate`` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.stats):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    # --- faults ---------------------------------------------------------------------------------

    async def _apply(self, fault: Fault) -> None:
        name, options = fault.fault, fault.options
        log.info("fault: %s %s", name, options)
        with self._stats_lock:
            self._stats.faults_applied.append(name)
        loop = asyncio.get_running_loop()
        if name in ("drop", "silence"):
            await self._flush_outboxes()
        if name == "drop":
            for client in list(self._clients):
                client.connection.transport.abort()  # TCP close, no WebSocket close frame
        elif name == "silence":
            duration = options.get("duration_s")
            until = math.inf if duration is None else loop.time() + duration
            for client in self._clients:
                client.connection.silenced_until = until
        elif name in COUNTED_FAULTS:
            self._remaining[name] = options["count"]
            if name in self._retry_after:
                self._retry_after[name] = options["retry_after"]
            if name == "bad_field":
                self._bad_field = (options["field"], options["value"])
            if name == "unsubscribed_channel":
                self._extra_channel = options["channel"]
            if name == "oversized_frame":
                self._oversize = options["size_bytes"]
            if name == "slow_frame":
                self._trickle_rate = options["bytes_per_s"]
        elif name == "timestamp_unit":
            self._style = replace(self._style, timestamp_unit=options["unit"])
        elif name == "numeric_prices":
            self._style = replace(self._style, numeric_prices=True)
        elif name == "time_shift":
            self._style = replace(self._style, shift_ms=round(options["shift_s"] * 1000))
        elif name == "live_clock":
            self._style = replace(self._style, live_clock=True)
        elif name == "protocol_variant":
            self._style = replace(self._style, variant=options["variant"])
        elif name == "slow":
            duration = options.get("duration_s")
            self._slow_delay_s = options["delay_ms"] / 1000
            self._slow_until = math.inf if duration is None else loop.time() + duration
        elif name == "clear":
            self._style = WireStyle()
            self._slow_until = 0.0
            self._remaining = dict.fromkeys(COUNTED_FAULTS, 0)
            for client in self._clients:
                client.connection.silenced_until = 0.0

    def _take(self, name: str) -> bool:
        """Consume one use of a counted fault; True if it applies."""
        if self._remaining[name] > 0:
            self._remaining[name] -= 1
            return True
        return False

    async def _flush_outboxes(self) -> None:
        waits = [client.outbox.join() for client in self._clients]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), FLUSH_TIMEOUT_S)

    def _slow_delay(self) -> float:
        loop = asyncio.get_running_loop()
        return self._slow_delay_s if loop.time() < self._slow_until else 0.0

    # --- replay clock ---------------------------------------------------------------------------

    async def _replay(self) -> None:
        assert self._play is not None
        await self._play.wait()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for fault in self._timed_faults:
            self._spawn(self._apply_at(fault, start + (fault.at_s or 0.0)))
        pending = list(self._counted_faults)
        dispatched = 0
        if await self._fire_due(pending, dispatched):
            start = loop.time()
        while self._events:  # one pass per iteration; more only with loop_replay
            walker = TickWalker(INTERVAL_MS[self._interval])
            for index, event in enumerate(self._events):
                # Sleep until the event's due time rather than 1/rate per event: asyncio's timer
                # granularity would otherwise cap the rate far below 1,000 msg/s.
                delay = start + dispatched / self._rate - loop.time()
                await asyncio.sleep(max(delay, 0))
                self._dispatch(walker.walk(event))
                dispatched += 1
                with self._stats_lock:
                    self._stats.sent_index = index + 1
                    self._stats.events_dispatched = dispatched
                if await self._fire_due(pending, dispatched):
                    start = loop.time() - dispatched / self._rate  # no catch-up burst
            if self._held is not None:  # the last event was held back: nothing left to swap
                held, self._held = self._held, None
                self._deliver(held)
            self._mark_exhausted()
            if not self._loop_replay:
                return
        self._mark_exhausted()  # no events at all

    def _mark_exhausted(self) -> None:
        with self._stats_lock:
            self._stats.exhausted = True
        self._exhausted.set()

    async def _fire_due(self, pending: list[Fault], dispatched: int) -> bool:
        fired = False
        while pending and (pending[0].after_messages or 0) <= dispatched:
            await self._apply(pending.pop(0))
            fired = True
        return fired

    async def _apply_at(self, fault: Fault, when: float) -> None:
        await asyncio.sleep(max(when - asyncio.get_running_loop().time(), 0))
        await self._apply(fault)

    def _dispatch(self, tick: Tick) -> None:
        if self._held is not None:
            if self._deliver(tick):  # the successor goes first, then the held event
                held, self._held = self._held, None
                self._deliver(held)
            return
        if self._remaining["out_of_order"] > 0 and self._recipients(tick):
            self._remaining["out_of_order"] -= 1
            self._held = tick
            return
        self._deliver(tick)

    def _recipients(self, tick: Tick) -> list[tuple[_Client, list[str]]]:
        """Each listening client with the pushes ``tick`` makes for it, in channel order."""
        rendered: dict[str, str | None] = {}
        recipients = []
        for client in self._clients:
            if client.connection.silenced():
                continue  # lost on a half-open link
            texts = []
            for channel in sorted(client.subscriptions, key=_channel_rank):
                symbols = client.subscriptions[channel]
                if symbols is not None and tick.symbol not in symbols:
                    continue
                if channel not in rendered:
                    rendered[channel] = render(tick, channel, self._style)
                text = rendered[channel]
                if text is not None:
                    texts.append(text)
            if texts:
                recipients.append((client, texts))
        return recipients

    def _deliver(self, tick: Tick) -> bool:
        recipients = self._recipients(tick)
        if not recipients:
            return False
        truncate = self._take("malformed_json")
        copies = 2 if self._take("duplicate") else 1
        bad = self._take("bad_field")
        binary = self._take("binary_frame")
        oversized = self._take("oversized_frame")
        trickle = self._take("slow_frame")
        extra = self._take("unsubscribed_channel")
        for client, texts in recipients:
            if extra and self._extra_channel not in client.subscriptions:
                unasked = render(tick, self._extra_channel, self._style)
                texts = [*texts, *([unasked] if unasked else [])]
            for text in texts:
                if bad:
                    text = _with_field(text, *self._bad_field)
                if oversized:
                    text = text[:-1] + ', "padding": "' + "x" * self._oversize + '"}'
                if truncate:
                    text = text[: len(text) // 2]  # a cut-off frame: not valid JSON
                frame: str | bytes | _Trickle = text.encode() if binary else text
                if trickle:
                    frame = _Trickle(text, self._trickle_rate)
                for _ in range(copies):
                    client.enqueue(frame, push=True)
        return True

    # --- WebSocket ------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, _Connection) and connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        key = (query.get("api_key") or [""])[0]
        refusal: tuple[int, str, int] | None = None
        if not key:
            refusal = (1002, "missing api_key", CLOSE_POLICY)
        elif key not in self._api_keys:
            refusal = (1001, "invalid or expired api_key", CLOSE_POLICY)
        elif self._take("connection_limit"):
            refusal = (3003, "connection limit exceeded", CLOSE_TRY_AGAIN_LATER)
        elif self._take("error_close"):
            refusal = (3001, "rate limit exceeded", CLOSE_TRY_AGAIN_LATER)
        if refusal is not None:
            code, message, close_code = refusal
            self._count(connections_refused=1)
            frame: dict[str, Any] = {"cmd": "error", "code": code, "message": message}
            if code == 3001:
                frame["data"] = {"retry_after": self._retry_after["error_close"]}
                self._count(rate_limited=1)
            with contextlib.suppress(ConnectionClosed):
                await connection.send(json.dumps(frame))
                await connection.close(close_code, message)
            return

        client = _Client(connection)
        client.writer = asyncio.get_running_loop().create_task(self._write(client))
        self._clients.add(client)
        self._count(connections_accepted=1, connections_open=1)
        try:
            async for raw in connection:
                if not connection.silenced():  # on a half-open link nothing arrives either
                    self._on_command(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            client.writer.cancel()
            self._count(connections_open=-1)

    async def _write(self, client: _Client) -> None:
        connection = client.connection
        while True:
            text, push = await client.outbox.get()
            try:
                if delay := self._slow_delay():
                    await asyncio.sleep(delay)
                if connection.silenced():
                    continue
                if push:  # counted first: a client that has it may look at stats at once
                    self._count(messages_pushed=1)
                if isinstance(text, _Trickle):
                    await _trickle(connection, text)
                else:
                    await connection.send(text)
            except ConnectionClosed:
                return
            finally:
                client.outbox.task_done()

    def _reply(self, client: _Client, message: dict[str, Any]) -> None:
        client.enqueue(json.dumps(message), push=False)

    def _on_command(self, client: _Client, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._reply(client, {"cmd": "error", "code": 4002, "message": "invalid JSON"})
            return
        if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
            self._reply(client, {"cmd": "error", "code": 4002, "message": "missing cmd"})
            return
        cmd = message["cmd"]
        if self._take("rate_limit"):
            self._count(rate_limited=1)
            retry_after = self._retry_after["rate_limit"]
            self._reply(
                client,
                {
                    "cmd": cmd,
                    "code": 3001,
                    "message": "rate limit exceeded",
                    "data": {"retry_after": retry_after},
                },
            )
        elif self._take("error_4002"):
            self._reply(client, {"cmd": cmd, "code": 4002, "message": "invalid message format"})
        elif cmd == "ping":
            self._count(pings=1)
            self._reply(
                client,
                {
                    "cmd": "pong",
                    "code": 0,
                    "message": "pong",
                    "data": {"timestamp": self._style.time(now_ms())},
                },
            )
        elif cmd in ("subscribe", "unsubscribe"):
            try:
                data = self._subscription(client, cmd, message)
            except _BadRequest as error:
                self._reply(client, {"cmd": cmd, "code": error.code, "message": str(error)})
            else:
                self._reply(client, {"cmd": cmd, "code": 0, "message": "success", "data": data})
                if cmd == "subscribe" and self._replay_start == "first_subscribe":
                    assert self._play is not None
                    self._play.set()  # the reply is queued first, the pushes follow
        else:
            self._reply(client, {"cmd": cmd, "code": 4001, "message": f"unknown command {cmd!r}"})

    def _subscription(self, client: _Client, cmd: str, message: dict[str, Any]) -> dict[str, Any]:
        """Apply a (un)subscribe; returns the reply's data or raises _BadRequest."""
        subscribe = cmd == "subscribe"
        log_entry = self._stats.subscribes if subscribe else self._stats.unsubscribes
        data = message.get("data")
        if not isinstance(data, dict) and "channels" in message and self._is_article():
            channels = message["channels"]
            if (
                not isinstance(channels, list)
                or not channels
                or not all(isinstance(c, str) and self._article_channel(c) for c in channels)
            ):
                raise _BadRequest(
                    4002,
                    "channels must be a non-empty list of ticker, trade, depth, depth.<1-5>,"
                    f" kline.{self._interval}",
                )
            for channel in channels:
                if subscribe:
                    client.subscriptions[channel] = None
                else:
                    client.subscriptions.pop(channel, None)
            with self._stats_lock:
                log_entry.extend((channel, ()) for channel in channels)
            return {"channels": channels}
        if not isinstance(data, dict):
            raise _BadRequest(4002, "missing data.channel and data.symbols")
        channel, symbols = data.get("channel"), data.get("symbols")
        if channel not in CHANNELS:
            raise _BadRequest(4002, f"data.channel must be one of {', '.join(CHANNELS)}")
        if (
            not isinstance(symbols, list)
            or not symbols
            or not all(isinstance(s, str) for s in symbols)
        ):
            raise _BadRequest(4002, "data.symbols must be a non-empty list of strings")
        unknown = [s for s in symbols if s not in self._symbol_set]
        if unknown:
            raise _BadRequest(2002, f"symbol not found: {', '.join(unknown)}")
        current = client.subscriptions.get(channel, set())
        if subscribe:
            if current is not None:
                client.subscriptions[channel] = current | set(symbols)
        elif current is not None:
            remaining = current - set(symbols)
            if remaining:
                client.subscriptions[channel] = remaining
            else:
                client.subscriptions.pop(channel, None)
        with self._stats_lock:
            log_entry.append((channel, tuple(symbols)))
        return {"channel": channel, "symbols": symbols}

    def _is_article(self) -> bool:
        return self._style.variant == "article"

    def _article_channel(self, channel: str) -> bool:
        if channel in CHANNELS or channel == f"kline.{self._interval}":
            return True
        prefix, _, levels = channel.partition(".")
        return prefix == "depth" and levels.isdigit() and 1 <= int(levels) <= DEPTH_LEVELS

    # --- HTTP / REST ----------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and url.path == REALTIME_PATH and self._take("upgrade_429"):
            self._count(rate_limited=1, connections_refused=1)
            retry_after = self._retry_after["upgrade_429"]
            return _json_response(
                429,
                _envelope(3001, "rate limit exceeded", {"retry_after": retry_after}),
                {"Retry-After": str(retry_after)},
            )
        if upgrade and url.path == REALTIME_PATH:
            return None
        if upgrade and url.path == ARTICLE_STREAM_PATH and self._is_article():
            return None
        if upgrade:
            hint = " (served only with protocol_variant: article)" * (
                url.path == ARTICLE_STREAM_PATH
            )
            return _json_response(404, _envelope(4001, f"no WebSocket at {url.path}{hint}"))
        return self._rest(url.path, url.query, request.headers)

    def _rest(self, path: str, query_string: str, headers: Headers) -> Response:
        self._count(rest_requests=1)
        key = headers.get("X-API-Key")
        if not key:
            return _json_response(401, _envelope(1002, "missing X-API-Key header"))
        if key not in self._api_keys:
            return _json_response(401, _envelope(1001, "invalid or expired API key"))
        if self._take("http_429"):
            self._count(rate_limited=1)
            retry_after = self._retry_after["http_429"]
            return _json_response(
                429,
                _envelope(3001, "rate limit exceeded", {"retry_after": retry_after}),
                {"Retry-After": str(retry_after)},
            )
        query = {k: v[0] for k, v in parse_qs(query_string).items()}
        try:
            if path == KLINE_PATH:
                data = self._klines(query)
            elif path == SYMBOLS_PATH:
                data = {"symbols": list(self._symbols)}
            else:
                return _json_response(404, _envelope(4001, f"unknown endpoint {path}"))
        except _BadRequest as error:
            # Like the vendor: HTTP 200 with the error in the envelope's code.
            return _json_response(200, _envelope(error.code, str(error)))
        return _json_response(200, _envelope(0, "success", data))

    def _klines(self, query: dict[str, str]) -> dict[str, Any]:
        symbol, interval = query.get("symbol"), query.get("interval")
        if not symbol:
            raise _BadRequest(2001, "missing symbol")
        if interval not in INTERVAL_MS:
            raise _BadRequest(2001, f"interval must be one of {', '.join(INTERVAL_MS)}")
        if interval != self._interval:
            raise _BadRequest(2001, f"this emulator serves {self._interval} bars only")
        try:
            limit = int(query.get("limit", DEFAULT_KLINE_LIMIT))
            start = int(query["start_time"]) if "start_time" in query else None
            end = int(query["end_time"]) if "end_time" in query else None
        except ValueError:
            raise _BadRequest(2001, "limit, start_time and end_time must be integers") from None
        if limit < 1:
            raise _BadRequest(2001, "limit must be >= 1")
        if limit > MAX_KLINE_LIMIT:
            raise _BadRequest(2004, f"limit must be at most {MAX_KLINE_LIMIT}")
        if start is not None and end is not None and start > end:
            raise _BadRequest(2003, "start_time is after end_time")
        base = symbol[: -len(self._suffix)] if self._suffix else symbol
        if not symbol.endswith(self._suffix) or base not in self._bars_by_symbol:
            raise _BadRequest(2002, f"symbol not found: {symbol}")
        rows, times = self._bars_by_symbol[base], self._bar_times[base]
        low = bisect_left(times, start) if start is not None else 0
        high = bisect_right(times, end) if end is not None else len(times)
        # From start_time: the first `limit` bars; without it: the latest `limit` bars.
        first = low if start is not None else max(low, high - limit)
        chosen = rows[first : min(high, first + limit)]
        return {"symbol": symbol, "interval": interval, "klines": kline_records(chosen)}


def _channel_rank(channel: str) -> tuple[int, str]:
    base = channel.split(".")[0]
    return (CHANNELS.index(base) if base in CHANNELS else len(CHANNELS), channel)
