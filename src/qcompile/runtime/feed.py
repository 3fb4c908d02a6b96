"""The market-data feed: one thread owns the connection, its heartbeat and its reconnect loop.

The source document's handler reconnected from its error callback, its close callback and its
heartbeat thread alike, and started a heartbeat thread per open: after a few faults it held
duplicate connections and leaked threads. Here a single loop (:meth:`Feed.run`) connects, reads,
pings, watches for silence and reconnects; every other party can only *ask* it to reconnect
(:meth:`Feed.reconnect`), so there is exactly one connection and one reconnect schedule whatever
mix of close, error, heartbeat failure or contract violation triggers it.

Liveness is judged by what arrives, not by what is sent: any frame (push, reply, pong) counts, and
two heartbeat intervals without one is a disconnection, which is how a half-open connection (no
close, no data) is caught. A rate limit (code 3001) pauses the command sender for Retry-After
seconds while the receive path keeps reading: nothing ever sleeps between two reads.

The API key is part of the connect URL (the vendor's protocol puts it there); the URL is never
logged, and error texts are redacted before they reach a log line or an alert.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import websocket

from qcompile.runtime.backoff import Backoff
from qcompile.runtime.secrets import redact

log = logging.getLogger("qcompile.live.feed")

RATE_LIMITED = 3001
AUTH_CODES = {
    1001: "invalid or expired API key",
    1002: "API key missing",
    1003: "IP not whitelisted",
    1004: "plan lacks this feature",
}
REFUSALS = {3002: "monthly quota exhausted", 3003: "connection limit reached"}


def _parse(payload: bytes | str) -> Any:
    """The message in ``payload``: orjson (in C, a third of json.loads' time, on every push),
    and json.loads for what orjson refuses but Python's JSON reads (NaN, Infinity, lone
    surrogates), so that the engine judges such a field as it always has. orjson reads an
    integer past 64 bits as a float: as a time or a quantity it is refused either way."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


class ReadAhead:
    """A connected socket that reads ahead: one ``recv`` of up to 64 kB, small reads served from
    what it holds. websocket-client reads each frame's header and payload with reads of their
    exact size, and the feed loop waits in ``select`` before each frame: three or four system
    calls a push, each of which gives the interpreter lock away and waits to get it back. At
    10,000 pushes a second that churn slowed every other thread; now most pushes cost none.
    ``pending`` tells the feed loop what is held, so it never waits in ``select`` for bytes that
    already arrived. Everything else is the socket's own."""

    CHUNK = 65_536

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._held = b""  # read from the socket, not yet handed out from ``_at`` on
        self._at = 0

    def recv(self, size: int) -> bytes:
        if self._at >= len(self._held):
            data = self._sock.recv(max(size, self.CHUNK))
            if len(data) <= size:
                return data  # also b"": the peer closed, as the socket says it
            self._held, self._at = data, 0
        start = self._at
        self._at = min(start + size, len(self._held))
        return self._held[start : self._at]

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)  # an SSL socket's decrypted bytes
        return len(self._held) - self._at + (inner() if callable(inner) else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@dataclass
class FeedStats:
    connects: int = 0
    ready: int = 0
    disconnects: list[str] = field(default_factory=list)
    pings: int = 0
    pongs: int = 0
    pushes: int = 0
    malformed: int = 0
    binary: int = 0  # binary frames refused (counted in malformed too)
    oversized: int = 0  # frames over max_frame_bytes: never read, connection closed (1009)
    rate_limit_pauses: list[float] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)  # server-given waits honoured
    delays: list[float] = field(default_factory=list)


class Feed:
    def __init__(
        self,
        ws_base: str,
        api_key: str,
        subscriptions: list[tuple[str, list[str]]],
        *,
        heartbeat_s: float,
        backoff: Backoff,
        on_push: Callable[[int, dict[str, Any]], None],
        on_ready: Callable[[int], None],
        on_down: Callable[[str, float], None],
        alert: Callable[[str, str, str], None],
        rate_limit_default_s: float = 60.0,
        path: str = "/v1/realtime",
        clock: Callable[[], float] = time.perf_counter,
        connect_timeout_s: float = 10.0,
        max_frame_bytes: int = 1_000_000,
    ):
        self.endpoint = ws_base.rstrip("/") + path  # loggable: no key in it
        self._url = f"{self.endpoint}?api_key={quote(api_key, safe='')}"
        self._secret = api_key
        self.subscriptions = subscriptions
        self.heartbeat_s = heartbeat_s
        self.backoff = backoff
        self.on_push, self.on_ready, self.on_down, self.alert = on_push, on_ready, on_down, alert
        self.rate_limit_default_s = rate_limit_default_s
        self.clock = clock
        self.connect_timeout_s = connect_timeout_s
        self.max_frame_bytes = max_frame_bytes  # a larger frame closes the connection unread
        self._current: websocket.WebSocket | None = None  # the open connection, for abort()
        self.stats = FeedStats()
        self.epoch = 0
        self.connected = threading.Event()
        self.last_received = 0.0
        self._reconnect_reason: str | None = None
        self._poll_s = min(0.05, heartbeat_s / 10)
        # the server's Retry-After (a 429 on the upgrade, a 3001 frame): no attempt before this
        self._not_before: float | None = None
        self._told_at: float | None = None  # when the server said so

    def abort(self, reason: str) -> None:
        """From another thread: drop the connection even if this thread is stuck reading a
        frame (its read fails at once, and the loop reconnects)."""
        self._reconnect_reason = reason
        current = self._current
        if current is not None and current.sock is not None:
            with contextlib.suppress(OSError):
                current.sock.shutdown(socket.SHUT_RDWR)

    def reconnect(self, reason: str) -> None:
        """Ask the connection loop to drop the connection (it alone reconnects)."""
        self._reconnect_reason = reason

    def _redact(self, text: str) -> str:
        return redact(text, [self._secret])

    def run(self, stop: threading.Event) -> None:
        """Connect, read and reconnect until ``stop`` is set: the one connection loop."""
        while not stop.is_set():
            self.epoch += 1
            self._reconnect_reason = None
            try:
                # UTF-8 is checked where the text is parsed (orjson.loads of the bytes: invalid
                # UTF-8 is malformed JSON), in C; websocket-client's own check is pure Python,
                # byte by byte, the feed thread's largest cost at 10,000 pushes a second
                ws = websocket.create_connection(
                    self._url, timeout=self.connect_timeout_s, skip_utf8_validation=True
                )
                ws.sock = ReadAhead(ws.sock)
                self._current = ws
            except Exception as error:  # any failure to connect is retried on the schedule
                reason = f"connect failed: {type(error).__name__}: {self._redact(str(error))}"
                log.warning("%s (%s)", reason, self.endpoint)
                status = getattr(error, "status_code", None)
                if status in (429, 503):  # the upgrade was refused with a time to come back
                    headers = getattr(error, "resp_headers", None) or {}
                    value = next(
                        (v for k, v in headers.items() if str(k).lower() == "retry-after"), None
                    )
                    self._server_said_wait(self._seconds(value), f"HTTP {status} on connect")
                self._wait(stop, reason, stable=False)
                continue
            self.stats.connects += 1
            log.info("connected to %s (connection %d)", self.endpoint, self.epoch)
            opened = self.clock()
            try:
                reason, detected_at = self._session(ws, stop)
            except Exception as error:  # a broken socket mid-read is a disconnection like any
                reason = self._reconnect_reason or (  # abort() names why it broke the socket
                    f"connection lost: {type(error).__name__}: {self._redact(str(error))}"
                )
                detected_at = self.clock()
            self.connected.clear()
            if stop.is_set() and reason == "stopping":
                self._close(ws)
                return
            self.stats.disconnects.append(reason)
            self.on_down(reason, detected_at)  # safe state first, then the socket's manners
            self._close(ws)
            stable = self.clock() - opened >= self.backoff.stable_s
            self._wait(stop, reason, stable=stable)

    def _remember_retry_after(self, seconds: float) -> None:
        """The server's Retry-After: the next connection attempt waits for it (plus jitter)."""
        self._told_at = self.clock()
        self._not_before = self._told_at + self.backoff.after_retry_after(seconds)
        self.stats.retry_after.append(seconds)

    def _server_said_wait(self, seconds: float, why: str) -> None:
        """A refused connection with a Retry-After: remembered, logged and alerted."""
        self._remember_retry_after(seconds)
        log.warning("%s: Retry-After %.1f s", why, seconds)
        self.alert("feed.rate_limited", "warning", f"{why}: told to wait {seconds:.0f} s")

    def _wait(self, stop: threading.Event, reason: str, stable: bool) -> None:
        if stable:
            self.backoff.reset()
        now = self.clock()
        told_at = self._told_at
        if self._not_before is not None and self._not_before > now:
            delay = self._not_before - now  # what the server asked; the schedule resumes after
        else:
            delay, told_at = self.backoff.next_delay(), None
        self._not_before = self._told_at = None
        log.warning("feed down (%s); reconnecting in %.2f s", reason, delay)
        stop.wait(delay)
        # a server-given wait counts from when the server said it, as measured: at least that
        self.stats.delays.append(delay if told_at is None else self.clock() - told_at)

    @staticmethod
    def _close(ws: websocket.WebSocket) -> None:
        # No close handshake: a half-open peer would make us wait for nothing; the socket may
        # already be gone, and then there is nothing left to release.
        with contextlib.suppress(Exception):
            ws.shutdown()

    def _session(self, ws: websocket.WebSocket, stop: threading.Event) -> tuple[str, float]:
        """Read until the connection is lost; returns the reason and when it was detected."""
        sock = ws.sock
        ws.settimeout(self.connect_timeout_s)  # only bounds a frame already begun
        outbox: deque[dict[str, Any]] = deque(
            {"cmd": "subscribe", "data": {"channel": channel, "symbols": symbols}}
            for channel, symbols in self.subscriptions
        )
        in_flight: deque[dict[str, Any]] = deque()
        unacknowledged = len(outbox)
        paused_until = 0.0
        now = self.clock()
        self.last_received = now
        next_ping = now + self.heartbeat_s
        while True:
            now = self.clock()
            if stop.is_set():
                return "stopping", now
            if self._reconnect_reason is not None:
                return self._reconnect_reason, now
            silent = now - self.last_received
            if silent > 2 * self.heartbeat_s:
                reason = f"heartbeat: nothing received for {silent:.2f} s (2 intervals)"
                self.alert("feed.silent", "critical", reason)
                return reason, now
            if now >= next_ping:  # pings are never paused: they are what proves liveness
                ws.send('{"cmd":"ping"}')
                self.stats.pings += 1
                next_ping = now + self.heartbeat_s
            if outbox and now >= paused_until:
                command = outbox.popleft()
                ws.send(json.dumps(command, separators=(",", ":")))
                in_flight.append(command)
            pending = getattr(sock, "pending", lambda: 0)()
            if not pending:
                readable, _, _ = select.select([sock], [], [], self._poll_s)
                if not readable:
                    continue
            announced = self._announced_length(ws)
            if announced > self.max_frame_bytes:  # never read: reading alone would stall us
                return self._refuse_oversized(ws, announced), self.clock()
            opcode, payload = ws.recv_data(control_frame=True)
            self.last_received = self.clock()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return "closed by the server", self.last_received
            if opcode == websocket.ABNF.OPCODE_BINARY:  # the protocol speaks JSON text only
                self.stats.malformed += 1
                self.stats.binary += 1
                log.warning("binary frame refused (%d bytes)", len(payload))
                self.alert("feed.malformed", "warning", "the feed sent a binary frame: refused")
                continue
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # control frames only prove liveness
            if len(payload) > self.max_frame_bytes:  # a message in many small fragments
                self.stats.malformed += 1
                self.stats.oversized += 1
                log.warning("message of %d bytes dropped unparsed", len(payload))
                self.alert(
                    "feed.malformed",
                    "warning",
                    f"a {len(payload):,}-byte message, over the {self.max_frame_bytes:,}-byte "
                    "limit: dropped unparsed",
                )
                continue
            if not payload:
                return "connection lost", self.last_received
            try:
                message = _parse(payload)
            except (ValueError, RecursionError):
                self.stats.malformed += 1
                log.warning("malformed message ignored: %.80r", payload)
                self.alert("feed.malformed", "warning", "the feed sent malformed JSON")
                continue
            if not isinstance(message, dict):
                self.stats.malformed += 1
                continue
            if "code" not in message:
                self.stats.pushes += 1
                self.on_push(self.epoch, message)
                continue
            code, command = message.get("code"), message.get("cmd")
            if code == 0:
                if command == "pong":
                    self.stats.pongs += 1
                elif command == "subscribe" and in_flight:
                    in_flight.popleft()
                    unacknowledged -= 1
                    if unacknowledged == 0:
                        self.connected.set()
                        self.stats.ready += 1
                        self.on_ready(self.epoch)
                continue
            if code == RATE_LIMITED:
                seconds = self._retry_after(message)
                paused_until = self.clock() + seconds
                self._remember_retry_after(seconds)  # if it closes now, reconnecting waits too
                self.stats.rate_limit_pauses.append(seconds)
                if command != "ping" and in_flight:
                    outbox.appendleft(in_flight.popleft())  # resend the refused command later
                log.warning("rate limited (3001) on %s: sender paused %.1f s", command, seconds)
                self.alert("feed.rate_limited", "warning", f"rate limited: paused {seconds:.0f} s")
                continue
            text = f"{code} {message.get('message', '')}".strip()
            if code in AUTH_CODES or code in REFUSALS:
                meaning = AUTH_CODES.get(code) or REFUSALS[code]
                self.alert("feed.refused", "critical", f"feed refused us: {meaning} ({code})")
                return f"refused: {meaning} ({code})", self.clock()
            if command in ("subscribe", "unsubscribe") and in_flight:
                in_flight.popleft()
            log.error("the feed answered %s with error %s", command, text)
            self.alert("feed.error", "warning", f"feed error on {command}: {text}")

    @staticmethod
    def _announced_length(ws: websocket.WebSocket) -> int:
        """The next frame's payload length from its header, read ahead of the payload.

        websocket-client keeps a partly read header in its frame buffer, so the following
        ``recv_data`` continues from here instead of reading the header again.
        """
        frames = ws.frame_buffer
        if frames.needs_header():
            frames.recv_header()
        if frames.needs_length():
            frames.recv_length()
        return frames.length or 0

    def _refuse_oversized(self, ws: websocket.WebSocket, announced: int) -> str:
        """A frame over the limit is never read: as RFC 6455 has it (and the websockets server
        does), the connection is closed with 1009, which the loop treats as any disconnection:
        safe state, then reconnect on the schedule."""
        self.stats.malformed += 1
        self.stats.oversized += 1
        reason = (
            f"frame too big: {announced:,} bytes announced, over the "
            f"{self.max_frame_bytes:,}-byte limit (closed 1009 unread)"
        )
        log.warning("%s", reason)
        self.alert("feed.malformed", "critical", reason)
        with contextlib.suppress(Exception):
            ws.send_close(websocket.STATUS_MESSAGE_TOO_BIG, b"message too big")
        return reason

    def _retry_after(self, message: dict[str, Any]) -> float:
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        return self._seconds(data.get("retry_after", message.get("retry_after")))

    def _seconds(self, value: Any) -> float:
        """A Retry-After value in seconds; absent or unreadable: the configured default."""
        try:
            seconds = float(value) if value is not None else self.rate_limit_default_s
        except (TypeError, ValueError):
            return self.rate_limit_default_s
        return max(0.0, seconds) if math.isfinite(seconds) else self.rate_limit_default_s
