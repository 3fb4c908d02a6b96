"""The TickDB REST adapter against a real HTTP server on loopback speaking the vendor protocol.

The fixture server implements the documented kline endpoint: X-API-Key authentication, the
envelope, string prices, ``limit`` capped at 1000 and time-range paging, and it injects rate
limits both ways the vendor signals them (HTTP 429 with Retry-After, and code 3001).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest

from qcompile.marketdata.rest import RestClient, TickDBError
from tests.conftest import cli, edit

KEY = "tk_test_5f1e2d3c4b5a69788796a5b4"
DAY = 86_400_000
FIRST = 1_609_459_200_000  # 2021-01-01T00:00:00Z


class Vendor(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []
    faults: ClassVar[list[str]] = []
    bars = 2500

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        Vendor.requests.append(
            {"path": url.path, "query": query, "key": self.headers.get("X-API-Key")}
        )
        if self.headers.get("X-API-Key") is None:
            return self._send(401, {"code": 1002, "message": "missing API key"})
        if self.headers.get("X-API-Key") != KEY:
            return self._send(401, {"code": 1001, "message": "invalid API key"})
        if Vendor.faults:
            fault = Vendor.faults.pop(0)
            if fault == "429":
                return self._send(
                    429, {"code": 3001, "message": "rate limit"}, {"Retry-After": "2"}
                )
            if fault == "3001":
                return self._send(200, {"code": 3001, "message": "rate limit"})
        if url.path != "/v1/market/kline":
            return self._send(404, {"code": 4001, "message": "unknown"})
        if not query.get("symbol", "").endswith(".US"):
            return self._send(200, {"code": 2002, "message": "symbol not found"})
        limit = int(query.get("limit", 100))
        if limit > 1000:
            return self._send(200, {"code": 2004, "message": "limit too large"})
        start, end = int(query.get("start_time", FIRST)), int(query.get("end_time", FIRST + 10**13))
        times = [FIRST + i * DAY for i in range(Vendor.bars) if start <= FIRST + i * DAY <= end][
            :limit
        ]
        klines = [
            {
                "time": t,
                "open": "10.5",
                "high": "11.25",
                "low": "10.0",
                "close": "11.0",
                "volume": "12345",
                "quote_volume": "1",
            }
            for t in times
        ]
        return self._send(
            200,
            {
                "code": 0,
                "message": "success",
                "data": {
                    "symbol": query["symbol"],
                    "interval": query["interval"],
                    "klines": klines,
                },
            },
        )


@pytest.fixture
def vendor() -> Iterator[str]:
    Vendor.requests, Vendor.faults = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Vendor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_klines_are_paged_by_time_with_the_key_in_a_header(vendor: str) -> None:
    client = RestClient(vendor, KEY)
    bars = list(client.klines("AAPL.US", "1d", FIRST, FIRST + 2499 * DAY))
    assert len(bars) == 2500 and bars[0]["time"] == FIRST and bars[-1]["time"] == FIRST + 2499 * DAY
    # each page starts one millisecond after the last bar of the previous one
    assert [int(r["query"]["start_time"]) for r in Vendor.requests] == [
        FIRST,
        FIRST + 999 * DAY + 1,
        FIRST + 1999 * DAY + 1,
    ]
    assert all(r["key"] == KEY and KEY not in json.dumps(r["query"]) for r in Vendor.requests)


def test_rate_limits_pause_for_retry_after_then_retry(vendor: str) -> None:
    Vendor.faults = ["429", "3001"]
    pauses: list[float] = []
    client = RestClient(vendor, KEY, sleep=pauses.append)
    bars = list(client.klines("MSFT.US", "1d", FIRST, FIRST + 9 * DAY))
    assert len(bars) == 10
    assert pauses == [2.0, 60.0]  # Retry-After honoured; the documented 60 s when absent
    assert len(Vendor.requests) == 3


def test_vendor_errors_raise_with_their_code(vendor: str) -> None:
    with pytest.raises(TickDBError) as error:
        list(RestClient(vendor, "wrong").klines("AAPL.US", "1d", FIRST, FIRST))
    assert error.value.code == 1001
    with pytest.raises(TickDBError) as error:
        list(RestClient(vendor, KEY).klines("AAPL", "1d", FIRST, FIRST))
    assert error.value.code == 2002


def test_qcompile_download_writes_the_backtest_layout(example: Path, vendor: str, caplog) -> None:
    edit(
        example / "conf/data/tickdb_us_daily.yaml",
        "rest_base: https://api.tickdb.ai",
        f"rest_base: {vendor}",
    )
    Vendor.bars, Vendor.faults = 1900, ["429"]
    try:
        result = cli(
            example,
            "download",
            "earnings_gap",
            "--start",
            "2021-01-01",
            "--end",
            "2025-12-31",
            env={"TICKDB_API_KEY": KEY},
        )
    finally:
        Vendor.bars = 2500
    assert result.exit_code == 0, result.output
    assert KEY not in result.output and KEY not in caplog.text
    assert "AAPL  1826 bars" in result.output  # 2021-01-01 .. 2025-12-31 of the vendor's 1900 days
    frame = pl.read_parquet(example / "data/us_daily/MSFT.parquet")
    assert frame.columns == ["timestamp", "open", "high", "low", "close", "volume"]
    assert frame["timestamp"][0] == FIRST and frame["close"][0] == 11.0
    assert sorted(p.name for p in (example / "data/us_daily").iterdir()) == [
        "AAPL.parquet",
        "GOOG.parquet",
        "MSFT.parquet",
    ]
    build = cli(example, "build")
    assert build.exit_code == 0
    assert (
        "fingerprint: null" not in (example / "generated/STR-2026-0042/passport.yaml").read_text()
    )


def test_download_without_the_key_is_a_clear_error(example: Path) -> None:
    result = cli(example, "download", "earnings_gap", env={"TICKDB_API_KEY": ""})
    assert result.exit_code == 2
    assert "environment variable TICKDB_API_KEY is not set" in result.output
