"""An HTTP API on 127.0.0.1 in a thread of its own, for the broker emulators.

An aiohttp application runs on its own event loop in a daemon thread, so that synchronous tests
and runners can use it as a context manager. Besides the life cycle it keeps what every broker
emulator does alike: the log of requests, the next answers that are a rate limit (429 with a
Retry-After header, in the API's own error body), the next order whose answer is lost, and a
restart (gone for a while, then back on the same port with the account as it was).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web


class LoopbackApi:
    """Subclasses add their routes (``routes``) and their API's 429 body (``rate_limited``)."""

    name = "loopback-api"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._limited: list[int] = []  # Retry-After seconds of the next 429s
        self._lose_next = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- what a subclass provides -----------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def rate_limited(self, retry_after: int) -> web.Response:
        raise NotImplementedError

    def refused(self, request: web.Request) -> web.Response | None:
        """The answer to a request the API refuses before any handler (credentials), or None."""
        return None

    # -- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as error:  # reported to the caller, not swallowed
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *_: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)  # 0 the first time: any
        await site.start()
        self.port = self._runner.addresses[0][1]

    def restart(self, down_s: float) -> None:
        """Go away for ``down_s`` seconds (connections refused, open ones closed), then serve
        again on the same port with everything the account held, as a broker's restart does.
        Returns once it serves again."""
        loop = self._loop
        if loop is None or self._runner is None:
            raise RuntimeError("start the server first")

        async def bounce() -> None:
            await self._stopping()
            await self._runner.cleanup()
            await asyncio.sleep(down_s)
            await self._start()

        asyncio.run_coroutine_threadsafe(bounce(), loop).result(down_s + 10)

    async def _stopping(self) -> None:
        """Close what a shutdown would otherwise wait for (a subclass's open streams)."""

    # -- faults -----------------------------------------------------------------------------

    def rate_limit(self, requests: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``requests`` requests 429, asking to wait ``retry_after`` seconds."""
        with self._lock:
            self._limited += [retry_after] * requests

    def lose_next_response(self) -> None:
        """Process the next order, then drop the connection before answering."""
        with self._lock:
            self._lose_next = True

    def _take_lost(self) -> bool:
        """(Under the lock.) Whether this order's answer is to be lost."""
        lose, self._lose_next = self._lose_next, False
        return lose

    @staticmethod
    def _drop(request: web.Request) -> None:
        """End the request with no answer at all: the client cannot tell what happened."""
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        with self._lock:
            self.requests.append((request.method, request.path))
            limited = self._limited.pop(0) if self._limited else None
        if limited is not None:
            return self.rate_limited(limited)
        return self.refused(request) or await handler(request)
