"""TickDB REST client: historical klines, paginated, honouring rate limits.

Follows the vendor's public protocol (shared reference/tickdb-protocol.md): the key travels in the
``X-API-Key`` header (never in a URL, never in a log line); responses are ``{"code", "message",
"data"}`` envelopes with prices as decimal strings and times as integer milliseconds at bar open;
``limit`` is at most 1000, so longer ranges are paged by ``start_time``. A rate limit (HTTP 429,
or code 3001 in the envelope) pauses this client for ``Retry-After`` seconds (60 when absent, as
the vendor's examples do) and retries the same request; other errors raise with the vendor's code.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from qcompile.errors import QcompileError

log = logging.getLogger("qcompile.marketdata")

MAX_LIMIT = 1000
DEFAULT_RETRY_AFTER = 60.0
RATE_LIMITED = 3001


class TickDBError(QcompileError):
    """The vendor refused a request; ``code`` is its error code (or the HTTP status)."""

    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(f"TickDB error {code}: {message}")


@dataclass
class RestClient:
    base_url: str
    api_key: str = field(repr=False)
    timeout: float = 30.0
    max_retries: int = 8
    sleep: Callable[[float], None] = time.sleep
    rate_limit_waits: list[float] = field(default_factory=list)  # each pause taken, for reports

    def _get(self, path: str, query: dict[str, Any]) -> Any:
        url = f"{self.base_url.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(
            url, headers={"X-API-Key": self.api_key, "Accept": "application/json"}
        )
        for _ in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    envelope = json.loads(response.read().decode("utf-8"))
                    retry_after = response.headers.get("Retry-After")
            except urllib.error.HTTPError as error:
                body = error.read().decode("utf-8", "replace")
                if error.code == 429:
                    self._pause(error.headers.get("Retry-After"), path)
                    continue
                raise TickDBError(
                    _code(body) or error.code, _message(body) or error.reason
                ) from None
            if envelope.get("code") == RATE_LIMITED:
                self._pause(retry_after or (envelope.get("data") or {}).get("retry_after"), path)
                continue
            if envelope.get("code") != 0:
                raise TickDBError(int(envelope.get("code", -1)), str(envelope.get("message", "")))
            return envelope.get("data")
        raise TickDBError(RATE_LIMITED, f"still rate limited after {self.max_retries} retries")

    def _pause(self, retry_after: Any, path: str) -> None:
        try:
            seconds = float(retry_after) if retry_after is not None else DEFAULT_RETRY_AFTER
        except ValueError:
            seconds = DEFAULT_RETRY_AFTER
        self.rate_limit_waits.append(seconds)
        log.warning("rate limited on %s; retrying in %.0f s", path, seconds)
        self.sleep(seconds)

    def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = MAX_LIMIT
    ) -> Iterator[dict[str, Any]]:
        """Bars of ``symbol`` with open time in [start_ms, end_ms], oldest first, page by page."""
        cursor = start_ms
        while cursor <= end_ms:
            data = self._get(
                "/v1/market/kline",
                {
                    "symbol": symbol,
                    "interval": interval,
                    "limit": limit,
                    "start_time": cursor,
                    "end_time": end_ms,
                },
            )
            page = (data or {}).get("klines") or []
            yield from page
            if len(page) < limit:
                return
            cursor = int(page[-1]["time"]) + 1


def _code(body: str) -> int | None:
    try:
        return int(json.loads(body).get("code"))
    except (ValueError, TypeError, AttributeError):
        return None


def _message(body: str) -> str | None:
    try:
        return str(json.loads(body).get("message"))
    except (ValueError, AttributeError):
        return None
