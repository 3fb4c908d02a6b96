"""Alerts from the production runner to people: log, Slack-compatible webhook, email.

The :class:`Alerter` decides synchronously whether an alert goes out (de-duplication, rate
limit) and hands it to one worker thread per sink, so the runner's thread never waits for a
network: it sends alerts while entering a safe state, and a slow SMTP server must not delay
cancelling orders, nor one broken sink stop the others.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

from qcompile.errors import QcompileError
from qcompile.runtime.secrets import redact, reference_name, resolve

log = logging.getLogger("qcompile.alerts")

SEVERITIES = ("info", "warning", "critical")
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
RATE_WINDOW_S = 60.0


class AlertConfigError(QcompileError):
    """A deployment's ``alerts`` entry is unusable. Never quotes a secret."""


class AlertDeliveryError(QcompileError):
    """A sink could not deliver; the message is safe to log (no URL, no password)."""


@dataclass(frozen=True)
class Alert:
    """Something a person should know. ``key`` groups repeats of the same condition."""

    key: str  # dedupe key, e.g. "feed.disconnected"
    severity: str  # "info" | "warning" | "critical"
    summary: str
    strategy_id: str
    details: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    suppressed: int = 0  # similar alerts held back since the last delivered one (set by Alerter)

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"alert severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.at.tzinfo is None:
            raise ValueError("alert time must be timezone-aware (UTC)")

    @property
    def headline(self) -> str:
        """``CRITICAL STR-1 summary (3 similar suppressed)``: the one line every sink shows."""
        text = f"{self.severity.upper()} {self.strategy_id} {self.summary}"
        if self.suppressed:
            text += f" ({self.suppressed} similar suppressed)"
        return text

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["details"] = dict(self.details)
        record["at"] = self.at.astimezone(UTC).isoformat()
        return record


class AlertSink(Protocol):
    name: str  # in ``Alerter.delivered``/``failures`` and logs: never holds a secret

    def deliver(self, alert: Alert) -> None:
        """Deliver or raise; the Alerter retries and records failures."""


class LogSink:
    """Alerts as log records on ``qcompile.alerts``, at a level following the severity."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    def deliver(self, alert: Alert) -> None:
        details = json.dumps(dict(alert.details), sort_keys=True, default=str)
        log.log(_LOG_LEVEL[alert.severity], "ALERT %s [%s] %s", alert.headline, alert.key, details)


class WebhookSink:
    """POSTs ``{"text": headline, "alert": {...}}``: Slack's incoming-webhook shape, which most
    chat tools accept too. The URL is a credential (anyone holding it can post), so it appears in
    no name, log line or error."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, name: str = "webhook") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertConfigError(f"{name}: the webhook URL must be an http(s) URL")
        self.name = name
        self.timeout_s = timeout_s
        self._url = url
        # Also hide the pieces, in case a library quotes only the path or the query; short
        # ones ("/", "v1") carry no token and hiding them would garble every message.
        pieces = (parts.path, parts.path.strip("/"), parts.query, parts.password or "")
        self._secrets = [url, *(piece for piece in pieces if len(piece) >= 8)]

    def deliver(self, alert: Alert) -> None:
        body = json.dumps({"text": alert.headline, "alert": alert.to_json()}, default=str)
        request = urllib.request.Request(
            self._url,
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            err.close()
            raise AlertDeliveryError(f"HTTP {err.code}") from None
        except Exception as err:  # urllib errors may quote the URL: rephrase, do not chain
            reason = getattr(err, "reason", err)
            text = redact(f"{type(err).__name__}: {reason}", self._secrets)
            raise AlertDeliveryError(text) from None
        if not 200 <= status < 300:
            raise AlertDeliveryError(f"HTTP {status}")


class EmailSink:
    """Plain-text email over SMTP (STARTTLS and login optional)."""

    def __init__(
        self,
        to: list[str],
        smtp_host: str,
        smtp_port: int = 25,
        *,
        sender: str | None = None,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        name: str = "email",
    ) -> None:
        if not to:
            raise AlertConfigError(f"{name}: an email sink needs at least one recipient")
        self.name = name
        self.to = list(to)
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.sender = sender or f"qcompile@{socket.gethostname()}"
        self.starttls = starttls
        self.timeout_s = timeout_s
        self._username = username
        self._password = password

    def message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        # Header values may not span lines; summaries can (a data-contract message, say).
        message["Subject"] = " ".join(f"[qcompile] {alert.headline}".split())[:250]
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message["Date"] = formatdate(alert.at.timestamp(), usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        lines = [
            alert.headline,
            "",
            f"strategy:  {alert.strategy_id}",
            f"severity:  {alert.severity}",
            f"key:       {alert.key}",
            f"at:        {alert.at.astimezone(UTC).isoformat()}",
        ]
        if alert.suppressed:
            lines.append(f"similar alerts suppressed since the last one: {alert.suppressed}")
        if alert.details:
            lines += ["", "details:"]
            lines += [f"  {k}: {v}" for k, v in sorted(alert.details.items(), key=str)]
        message.set_content("\n".join(lines) + "\n")
        return message

    def deliver(self, alert: Alert) -> None:
        message = self.message(alert)
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self._username:
                    smtp.login(self._username, self._password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as err:
            secrets = [self._password] if self._password else []
            text = redact(f"{type(err).__name__}: {err}", secrets)
            raise AlertDeliveryError(f"{self.smtp_host}:{self.smtp_port}: {text}") from None


# --------------------------------------------------------------------------------------------


def _log_worker_failure(worker: str, error: BaseException) -> None:
    log.critical("%s thread failed: %s: %s", worker, type(error).__name__, error)


class _SinkWorker:
    """One sink's queue and delivery thread, so sinks never wait for one another."""

    def __init__(self, alerter: Alerter, sink: AlertSink, max_queued: int) -> None:
        self.alerter = alerter
        self.sink = sink
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=max_queued)
        self.pending = 0  # queued or being delivered; guarded by alerter._idle
        self.dead = False  # its thread died: nothing queued for it will go out
        self.thread = threading.Thread(
            target=self._run, name=f"qcompile-alerts-{sink.name}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            while (alert := self.queue.get()) is not None:
                try:
                    self.alerter._deliver(self.sink, alert)
                finally:
                    with self.alerter._idle:
                        self.pending -= 1
                        self.alerter._idle.notify_all()
        except BaseException as error:  # a delivery error is caught inside; this is a bug
            with self.alerter._idle:
                self.dead = True  # flush() waits for it no more
                self.alerter._idle.notify_all()
            self.alerter.worker_failed(self.sink.name, error)


class Alerter:
    """De-duplicates and rate-limits alerts, then delivers them to every sink in the background.

    - De-duplication: an alert whose ``key`` was delivered less than ``dedupe_window_s`` ago is
      suppressed, unless its severity is higher than that delivery's. The window runs from the
      last *delivered* alert, so a condition that keeps firing yields one alert per window, each
      saying how many were suppressed in between.
    - Rate limit: at most ``max_per_minute`` alerts are delivered in any sliding 60 s; beyond
      that alerts are suppressed (and counted) whatever their severity, a critical one with an
      error log line, since an alert storm must not become a mail storm.

    ``clock`` is injectable so tests need not sleep. A failing delivery is retried ``retries``
    times, ``retry_delay_s`` apart, doubling each time, then recorded in ``failures``.
    """

    def __init__(
        self,
        sinks: list[AlertSink],
        *,
        dedupe_window_s: float = 300.0,
        max_per_minute: int = 20,
        clock: Callable[[], float] = time.monotonic,
        retries: int = 2,
        retry_delay_s: float = 1.0,
        max_queued: int = 1000,
    ) -> None:
        self.dedupe_window_s = dedupe_window_s
        self.max_per_minute = max_per_minute
        self.clock = clock
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.suppressed: dict[str, int] = {}
        self.delivered: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str, str]] = []
        self._lock = threading.RLock()  # re-entered when a full queue records a failure
        self._idle = threading.Condition()
        self._closing = threading.Event()
        self._last: dict[str, tuple[float, int]] = {}  # key -> (clock, severity rank) delivered
        self._recent: deque[float] = deque()  # clock readings of deliveries in the rate window
        self._closed = False
        # told when a sink's delivery thread dies (the runner fails stop); until then, logged
        self.on_worker_failure: Callable[[str, BaseException], None] = _log_worker_failure
        self._workers = [_SinkWorker(self, sink, max_queued) for sink in sinks]

    def worker_failed(self, sink_name: str, error: BaseException) -> None:
        """A sink's delivery thread died: its alerts would queue unseen from now on."""
        self.on_worker_failure(f"alerts ({sink_name})", error)

    def send(self, alert: Alert) -> bool:
        """Queue ``alert`` for every sink; False if suppressed. Never blocks on a sink."""
        with self._lock:
            if self._closed:
                log.error("alert after the alerter was closed, not delivered: %s", alert.headline)
                return False
            now = self.clock()
            rank = _RANK[alert.severity]
            last = self._last.get(alert.key)
            if last is not None and now - last[0] < self.dedupe_window_s and rank <= last[1]:
                self.suppressed[alert.key] = self.suppressed.get(alert.key, 0) + 1
                log.debug("alert %s suppressed as a duplicate", alert.key)
                return False
            while self._recent and now - self._recent[0] >= RATE_WINDOW_S:
                self._recent.popleft()
            if len(self._recent) >= self.max_per_minute:
                self.suppressed[alert.key] = self.suppressed.get(alert.key, 0) + 1
                log.log(
                    logging.ERROR if alert.severity == "critical" else logging.DEBUG,
                    "alert rate limit (%d per minute) reached, suppressed: %s",
                    self.max_per_minute,
                    alert.headline,
                )
                return False
            self._last[alert.key] = (now, rank)
            self._recent.append(now)
            alert = replace(alert, suppressed=self.suppressed.pop(alert.key, 0))
            for worker in self._workers:
                self._enqueue(worker, alert)
            return True

    def _enqueue(self, worker: _SinkWorker, alert: Alert) -> None:
        with self._idle:
            try:
                worker.queue.put_nowait(alert)
            except queue.Full:
                self._record_failure(worker.sink.name, alert.key, "queue full: sink too slow")
                return
            worker.pending += 1

    def _deliver(self, sink: AlertSink, alert: Alert) -> None:
        for attempt in range(self.retries + 1):
            try:
                sink.deliver(alert)
            except Exception as err:
                # our sinks' errors are phrased to be logged; anything else gets its type
                error = (
                    str(err)
                    if isinstance(err, AlertDeliveryError)
                    else f"{type(err).__name__}: {err}"
                )
                if attempt == self.retries:
                    self._record_failure(sink.name, alert.key, error)
                    return
                log.warning("alert %s to %s failed, retrying: %s", alert.key, sink.name, error)
                if self._closing.wait(self.retry_delay_s * 2**attempt):
                    self._record_failure(sink.name, alert.key, f"{error} (closed before a retry)")
                    return
            else:
                with self._lock:
                    self.delivered.append((sink.name, alert.key))
                return

    def _record_failure(self, sink_name: str, key: str, error: str) -> None:
        log.error("alert %s not delivered to %s: %s", key, sink_name, error)
        with self._lock:
            self.failures.append((sink_name, key, error))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        with self._idle:
            return self._idle.wait_for(
                lambda: all(w.pending == 0 or w.dead for w in self._workers), timeout=timeout
            )

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the workers; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._closing.set()  # cuts retry waits short
        for worker in self._workers:
            worker.queue.put(None)
        for worker in self._workers:
            worker.thread.join(timeout=1.0)


# --------------------------------------------------------------------------------------------


def build_sinks(
    configs: list[Mapping[str, Any]], env: Mapping[str, str] = os.environ
) -> list[AlertSink]:
    """Sinks from a deployment's ``alerts`` entries.

    ``{kind: log}``, ``{kind: webhook, url: ${oc.env:SLACK_WEBHOOK_URL}}``, ``{kind: email, to:
    [...], smtp_host: ..., smtp_port: 25}``. Secrets (the webhook URL, an SMTP password) must be
    ``${oc.env:...}`` references: a literal is refused, because config is committed and printed.
    """
    sinks: list[AlertSink] = []
    names: set[str] = set()
    for index, config in enumerate(configs):
        where = f"alerts[{index}]"
        kind = config.get("kind")
        allowed = {"kind", "name"} | _OPTIONS.get(kind, set())
        if kind not in _OPTIONS:
            raise AlertConfigError(f"{where}.kind: expected log, webhook or email, got {kind!r}")
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise AlertConfigError(f"{where}: unknown key(s) for kind {kind}: {', '.join(unknown)}")
        name = str(config.get("name") or kind)
        if name in names:  # keep names unique so delivered/failures are unambiguous
            name = f"{name}#{index}"
        names.add(name)
        if kind == "log":
            sinks.append(LogSink(name=name))
        elif kind == "webhook":
            url = str(_secret(config, "url", env, where, required=True))
            sinks.append(WebhookSink(url, timeout_s=float(config.get("timeout_s", 5.0)), name=name))
        else:
            to = config.get("to")
            if isinstance(to, str):
                to = [to]
            host = resolve(config.get("smtp_host"), env, what=f"{where}.smtp_host")
            if not to or not host:
                raise AlertConfigError(f"{where}: an email sink needs 'to' and 'smtp_host'")
            sinks.append(
                EmailSink(
                    [str(address) for address in to],
                    host,
                    int(config.get("smtp_port", 25)),
                    sender=config.get("from"),
                    username=resolve(config.get("username"), env, what=f"{where}.username"),
                    password=_secret(config, "password", env, where, required=False),
                    starttls=bool(config.get("starttls", False)),
                    timeout_s=float(config.get("timeout_s", 10.0)),
                    name=name,
                )
            )
    return sinks


_OPTIONS: dict[Any, set[str]] = {
    "log": set(),
    "webhook": {"url", "timeout_s"},
    "email": {
        "to",
        "smtp_host",
        "smtp_port",
        "from",
        "username",
        "password",
        "starttls",
        "timeout_s",
    },
}


def _secret(
    config: Mapping[str, Any], key: str, env: Mapping[str, str], where: str, *, required: bool
) -> str | None:
    value = config.get(key)
    if value is None:
        if required:
            raise AlertConfigError(f"{where}.{key}: required")
        return None
    if reference_name(str(value)) is None:
        raise AlertConfigError(
            f"{where}.{key}: is a secret and must be an ${{oc.env:NAME}} reference, "
            "never the value itself"
        )
    resolved = resolve(str(value), env, what=f"{where}.{key}")
    if required and not resolved:
        raise AlertConfigError(f"{where}.{key}: the referenced environment variable is empty")
    return resolved
