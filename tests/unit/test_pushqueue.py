"""The push queue and the batched decisions: coalescing under load and deciding a cycle's closes
together must give the books that handling every push on its own gives."""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any

import numpy as np
import polars as pl
import pytest

from qcompile.runtime.alerts import Alerter
from qcompile.runtime.broker import PaperBroker
from qcompile.runtime.engine import BarHistory, Engine, EngineConfig, Fragment
from qcompile.runtime.pushqueue import PushQueue

DAY = 86_400_000
START = 1_704_067_200_000  # 2024-01-01
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


def momentum(bars: pl.DataFrame, **params: Any) -> pl.DataFrame:
    """Long after an up bar, short after a down bar: trades often, per symbol, any history."""
    up = pl.col("close") > pl.col("open")
    return bars.with_columns(signal=pl.when(up).then(1).otherwise(-1).cast(pl.Int8))


def engine() -> tuple[Engine, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    config = EngineConfig(
        strategy_id="STR-Q",
        strategy_version="1",
        signal_pin={"name": "momentum", "version": "1", "source_sha256": "0"},
        signal_params={},
        symbols=list(SYMBOLS),
        symbol_suffix="",
        interval_ms=DAY,
        timestamp_unit="ms",
        sizing={"method": "equal_weight", "fractional_shares": False},
        initial_capital=100_000.0,
        costs={"slippage_bps": 5, "commission_per_share": 0.01, "min_commission": 1.0},
        clock_tolerance_ms=None,  # pushes from 2024, not now
    )
    broker = PaperBroker(config.costs, config.initial_capital)
    built = Engine(
        config,
        momentum,
        broker,
        Alerter([]),
        lambda snapshot, wait, saved: records.extend(saved),
        lambda symbol, before_ms, count: [],
        journal=lambda *journaled: records.extend(journaled),
    )
    built.connected(1)
    return built, records


def push(symbol: str, price: float, stamp: int, quantity: float = 10.0) -> dict[str, Any]:
    data = {"symbol": symbol, "last_price": f"{price:.4f}", "timestamp": stamp}
    return {"cmd": "ticker", "data": {**data, "quantity": f"{quantity:g}"}}


def stream(days: int, seed: int, hostile: bool) -> list[dict[str, Any]]:
    """Interleaved pushes of every symbol, several a day each; with ``hostile``, a repeated
    push, a late one, a malformed one and another symbol's now and then."""
    rng = random.Random(seed)
    prices = dict.fromkeys(SYMBOLS, 100.0)
    pushes = []
    for day in range(days):
        for offset in range(0, DAY, DAY // 8):
            for symbol in rng.sample(SYMBOLS, len(SYMBOLS)):
                prices[symbol] *= 1 + rng.gauss(0, 0.01)
                stamp = START + day * DAY + offset + rng.randrange(1000)
                pushes.append(push(symbol, prices[symbol], stamp, rng.randrange(1, 50)))
                if hostile and rng.random() < 0.03:
                    pushes.append(
                        rng.choice(
                            [
                                pushes[-1],  # repeated
                                push(symbol, prices[symbol], stamp - 5),  # late
                                {"cmd": "ticker", "data": {**pushes[-1]["data"], "quantity": "x"}},
                                push("ZZZ", 1.0, stamp),  # not traded
                            ]
                        )
                    )
    return pushes


def books(built: Engine, records: list[dict[str, Any]]) -> dict[str, Any]:
    state = built.state
    return {
        "cash": state.cash,
        "positions": state.positions,
        "sleeves": state.sleeves,
        "cursor": state.cursor,
        "building": state.building,
        "targets": state.targets,
        "last_prices": state.last_prices,
        "bars": {s: h.window().tolist() for s, h in built.bars.items()},
        "fills": sorted(
            (r["order_id"], r["quantity"], r["price"]) for r in records if r["type"] == "fill"
        ),
        "marks": [(r["date"], r["equity"]) for r in records if r["type"] == "daily"],
        "accepted": built.counters.accepted,
        "duplicates": built.counters.duplicates,
        "out_of_order": built.counters.out_of_order,
        "malformed": built.counters.malformed,
        "decisions": built.counters.decisions,
    }


def one_by_one(pushes: list[dict[str, Any]]) -> dict[str, Any]:
    built, records = engine()
    for item in pushes:
        built.cycle([(1, item)])
    return books(built, records)


def queued(pushes: list[dict[str, Any]], soft_limit: int, drain_every: int) -> tuple:
    built, records = engine()
    queue = PushQueue(built.peek, built.stamp, built.state.cursor.get, DAY, soft_limit, 10**9)
    for index, item in enumerate(pushes, 1):
        queue.put(1, item, 0.0)
        if index % drain_every == 0:
            built.cycle([(entry.epoch, entry.payload) for entry in queue.drain(0)])
    built.cycle([(entry.epoch, entry.payload) for entry in queue.drain(0)])
    return books(built, records), queue


@pytest.mark.parametrize("hostile", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_coalesced_and_batched_pushes_give_the_books_of_one_at_a_time(
    seed: int, hostile: bool
) -> None:
    pushes = stream(days=12, seed=seed, hostile=hostile)
    expected = one_by_one(pushes)
    assert expected["fills"] and expected["marks"]  # it traded: the comparison means something
    batched, queue = queued(pushes, soft_limit=10**6, drain_every=97)  # closes decided together
    assert queue.coalesced == 0
    assert batched == expected
    coalesced, queue = queued(pushes, soft_limit=1, drain_every=97)  # everything it may fold
    assert queue.coalesced > len(pushes) // 2
    assert coalesced == expected


def test_a_backlog_is_bounded_by_symbols_and_bars_not_pushes() -> None:
    built, _ = engine()
    queue = PushQueue(built.peek, built.stamp, built.state.cursor.get, DAY, 50)
    many = [push(s, 100 + i / 100, START + i, 1) for i in range(5_000) for s in SYMBOLS]
    for item in many:
        queue.put(1, item, 0.0)
    assert len(queue) <= 50 + len(SYMBOLS)  # the soft limit, then one entry a symbol
    assert queue.overloaded and queue.coalesced == len(many) - len(queue)
    fragments = [e.payload for e in queue.drain(0) if isinstance(e.payload, Fragment)]
    assert sum(f.count for f in fragments) + 50 == len(many)


def test_nothing_is_folded_past_a_push_that_may_reach_beyond_its_symbol() -> None:
    built, _ = engine()
    queue = PushQueue(built.peek, built.stamp, built.state.cursor.get, DAY, 1, 10)
    queue.put(1, push("AAA", 100, START), 0.0)
    queue.put(1, push("AAA", 101, START + 1), 0.0)  # folded into the first
    queue.put(1, {"cmd": "ticker", "data": {"symbol": "BBB", "last_price": 5}}, 0.0)  # breach
    queue.put(1, push("AAA", 102, START + 2), 0.0)  # after the breach: a new entry
    queue.put(1, push("AAA", 102, START + 2), 0.0)  # a repeat: handled in order, not folded
    entries = queue.drain(0)
    assert [type(e.payload).__name__ for e in entries] == [
        "dict",
        "Fragment",
        "dict",
        "Fragment",
        "dict",
    ]
    assert entries[1].payload.count == 1 and entries[3].payload.first.price == 102


def test_a_full_queue_makes_the_feed_thread_wait_until_drained_or_closed() -> None:
    built, _ = engine()
    queue = PushQueue(built.peek, built.stamp, built.state.cursor.get, DAY, 2, 4)
    garbage = {"cmd": "ticker", "data": "not an object"}  # never folded
    for _ in range(3):
        queue.put(1, garbage, 0.0)
    blocked = threading.Thread(target=queue.put, args=(1, garbage, 0.0))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and len(queue) == 4  # enqueued, then waits for room
    assert len(queue.drain(0)) == 4
    blocked.join(2)
    assert not blocked.is_alive()
    for _ in range(3):
        queue.put(1, garbage, 0.0)
    waiting = threading.Thread(target=queue.put, args=(1, garbage, 0.0))
    waiting.start()
    queue.close()  # a stopping runner never leaves the feed thread stuck
    waiting.join(2)
    assert not waiting.is_alive()


def test_bar_history_keeps_the_newest_rows_in_order() -> None:
    reference: deque[list[float]] = deque(maxlen=7)
    rows = [[float(i), i + 0.5, i + 1.0, i - 1.0, i + 0.25, 10.0] for i in range(40)]
    history = BarHistory(rows[:3], 7)
    reference.extend(rows[:3])
    for row in rows[3:]:
        history.append(row)
        reference.append(row)
        assert history.window().tolist() == list(reference)
    assert len(BarHistory(np.array(rows), 7)) == 7
    assert BarHistory([], 7).window().shape == (0, 6)
