"""The feed's message parsing: orjson first, Python's JSON for what only it reads."""

from __future__ import annotations

import math

import pytest

from qcompile.runtime.feed import _parse


def test_a_push_parses_as_json_would() -> None:
    payload = b'{"cmd":"ticker","data":{"symbol":"MSFT","last_price":"412.5","timestamp":1}}'
    assert _parse(payload) == {
        "cmd": "ticker",
        "data": {"symbol": "MSFT", "last_price": "412.5", "timestamp": 1},
    }


def test_what_orjson_refuses_but_json_reads_reaches_the_engine_to_judge() -> None:
    assert math.isnan(_parse(b'{"last_price": NaN}')["last_price"])
    assert _parse(b'{"symbol": "\\ud800"}')["symbol"] == "\ud800"  # a lone surrogate
    # past 64 bits orjson reads an integer as a float: refused as a time all the same
    assert (
        _parse(b'{"timestamp": 123456789012345678901234567890}')["timestamp"]
        == 1.2345678901234568e29
    )


@pytest.mark.parametrize(
    "payload",
    [b"{", b"\xff\xfe{}", b"[" * 200_000, b'{"a": 1} trailing'],
)
def test_malformed_text_raises_what_the_feed_counts_as_malformed(payload: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        _parse(payload)
