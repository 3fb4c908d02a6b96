"""`qcompile selftest`: prove the runner's safety behaviour on this machine, and record it.

The deployment checklist asks that state persistence, the safe state, heartbeat and reconnection,
rate-limit handling and state recovery were tested for the qcompile version in use. This runs
those tests against the real protocol emulator over loopback sockets, with a synthetic strategy
(a moving-average crossover on a random walk, nothing from the project), a real file store and a
process killed with SIGKILL, and writes the results with the qcompile version and a hash of the
runtime's source. The build reads that file: a checklist item is verified only by a passing
check of exactly the runtime that would trade.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from qcompile import __version__
from qcompile.hashing import runtime_sha256
from qcompile.runtime.broker import Order
from qcompile.runtime.runner import Runner, Session
from qcompile.runtime.state import FileStateStore

DAY = 86_400_000
KEY = "selftest-key"
SYMBOLS = ["AAA", "BBB"]


def _bars(days: int = 2400, seed: int = 11) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for symbol in SYMBOLS:
        price = 100.0
        for day in range(days):
            change = rng.gauss(0, 0.015)
            close = price * (1 + change)
            high, low = max(price, close) * 1.004, min(price, close) * 0.996
            rows.append(
                (symbol, 1_500_000_000_000 // DAY * DAY + day * DAY, price, high, low, close, 1e6)
            )
            price = close
    return pl.DataFrame(
        rows, schema=["symbol", "timestamp", "open", "high", "low", "close", "volume"], orient="row"
    )


def _params(signal_pin: dict[str, Any]) -> dict[str, Any]:
    return {
        "strategy": {"id": "SELFTEST", "version": "0.0.0", "type": "daily"},
        "signal": {"packages": ["qcompile.signals"], "params": {"fast": 5, "slow": 20}},
        "universe": {"symbols": SYMBOLS},
        "costs": {"slippage_bps": 5, "commission_per_share": 0.005, "min_commission": 1.0},
        "backtest": {
            "initial_capital": 100_000,
            "sizing": {"method": "fixed_fraction", "fraction": 0.4},
        },
        "data": {
            "interval": "1d",
            "timestamp": {"unit": "ms", "timezone": "UTC", "stamping": "bar_open"},
            "local": {"path": "data", "format": "parquet"},
        },
        "deployment": {
            "broker": "paper",
            "state_store": {"kind": "file", "path": "state"},
            "heartbeat_interval_s": 1,
            "alerts": [{"kind": "log"}],
        },
        "pins": {"signal": signal_pin},
    }


def _wait(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class _Bench:
    """One emulator and a runner factory over a scratch project."""

    def __init__(self, root: Path):
        from qcompile.emulator import Emulator, ticks_from_bars
        from qcompile.signals import get_signal
        from qcompile.signals.source import function_sha256

        self.root = root
        bars = _bars()
        (root / "data").mkdir(parents=True)
        cut = bars["timestamp"].unique().sort()[300]  # 300 days of history, the rest is live
        history = bars.filter(pl.col("timestamp") < cut)
        for symbol in SYMBOLS:
            history.filter(pl.col("symbol") == symbol).drop("symbol").write_parquet(
                root / "data" / f"{symbol}.parquet"
            )
        live = bars.filter(pl.col("timestamp") >= cut)
        # pin the installed signal's source: the runner checks it against the code at start
        spec = get_signal("ma_crossover", None, ["qcompile.signals"])
        source = function_sha256(Path(inspect.getsourcefile(spec.function)), spec.function.__name__)
        pin = {"name": "ma_crossover", "version": spec.version, "source_sha256": source}
        self.params = _params(pin)
        self.emulator = Emulator(
            ticks_from_bars(live, DAY),
            api_keys=[KEY],
            messages_per_second=200,
            bars=bars,
            replay_start="first_subscribe",
            loop_replay=True,
        ).start()

    def runner(self, state: str, **settings: Any) -> Runner:
        """A started runner with its own state directory (each check starts from nothing)."""
        session = Session(
            ws_base=f"ws://127.0.0.1:{self.emulator.port}",
            rest_base=self.emulator.rest_url,
            api_key=KEY,
            replay=True,  # synthetic history: not compared with the clock
            settings={
                "heartbeat_interval_s": 0.25,
                "reconnect": {"initial_s": 0.05, "cap_s": 0.4, "jitter": 0.1, "stable_s": 30},
                "rate_limit_default_s": 0.5,
                "state_store": {"kind": "file", "path": f"state/{state}"},
                **settings,
            },
        )
        return Runner(self.params, self.root, session, env={}).start()

    def close(self) -> None:
        self.emulator.stop()


def check_heartbeat(bench: _Bench) -> str:
    runner = bench.runner("heartbeat")
    try:
        assert _wait(lambda: not runner.engine.state.suspended), "never resumed after start"
        bench.emulator.inject("silence", duration_s=1.0)
        assert _wait(lambda: any(r.startswith("heartbeat") for r in runner.feed.stats.disconnects))
        assert _wait(lambda: not runner.engine.state.suspended), "no resume after the silence"
        assert _wait(lambda: runner.feed.stats.pongs > 0), "no pong ever answered a ping"
        return "half-open silence detected after 2 intervals; resumed after reconnect"
    finally:
        runner.stop()


def check_safe_state(bench: _Bench) -> str:
    runner = bench.runner("safe_state")
    try:
        assert _wait(lambda: not runner.engine.state.suspended)
        bench.emulator.inject("silence", duration_s=5.0)  # no quote can fill the order below
        with runner.engine.lock:
            runner.engine.submit(Order("selftest-1", SYMBOLS[0], 1.0, 0))
        bench.emulator.inject("drop")
        assert _wait(lambda: runner.engine.counters.safe_states >= 1)
        assert runner.broker.working_orders() == [], "a working order survived the safe state"
        saved = runner.store.load() if runner.store else None
        assert saved and saved["suspended"] and not saved["pending_orders"]
        return (
            f"order cancelled, signals suspended, saved in {runner.engine.safe_state_ms[0]:.1f} ms"
        )
    finally:
        bench.emulator.inject("clear")
        runner.stop()


def check_reconnect(bench: _Bench) -> str:
    runner = bench.runner("reconnect")
    most_open, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most_open
        while not done.is_set():
            most_open = max(most_open, bench.emulator.stats.connections_open)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert _wait(runner.feed.connected.is_set)
        stats = runner.feed.stats
        bench.emulator.inject("connection_limit", count=1)
        bench.emulator.inject("drop")
        assert _wait(lambda: len(stats.disconnects) >= 2 and runner.feed.connected.is_set())
        runner.feed.reconnect("selftest")
        bench.emulator.inject("drop")
        assert _wait(lambda: len(stats.disconnects) >= 3 and runner.feed.connected.is_set())
        for attempt, delay in enumerate(stats.delays):
            nominal = min(0.4, 0.05 * 2**attempt)
            assert nominal * 0.9 - 1e-9 <= delay <= nominal * 1.1 + 1e-9, stats.delays
        assert most_open <= 1, f"{most_open} connections at once"
        delays = ", ".join(f"{d:.2f}" for d in stats.delays)
        return f"{len(stats.disconnects)} faults, one connection at a time, waits {delays} s"
    finally:
        done.set()
        runner.stop()


def check_rate_limits(bench: _Bench, scratch: Path) -> str:
    bench.emulator.inject("rate_limit", retry_after=1, count=1)
    runner = bench.runner("rate_limits")
    try:
        assert _wait(lambda: runner.feed.stats.rate_limit_pauses == [1.0])
        assert _wait(runner.feed.connected.is_set), "never resubscribed after the pause"
        assert runner.feed.stats.pongs > 0, "the receive path stalled during the pause"
    finally:
        runner.stop()
    from qcompile.marketdata.rest import RestClient

    bench.emulator.inject("http_429", retry_after=1, count=1)
    waits: list[float] = []
    client = RestClient(bench.emulator.rest_url, KEY, sleep=waits.append)
    bars = list(client.klines(SYMBOLS[0], "1d", 0, 2**41, limit=100))
    assert waits == [1.0] and bars, f"429 not honoured: waits {waits}"
    bench.emulator.inject("upgrade_429", retry_after=1, count=1)
    runner = bench.runner("retry_after")
    try:
        assert _wait(runner.feed.connected.is_set), "never connected after the refused upgrade"
        first = runner.feed.stats.delays[0] if runner.feed.stats.delays else 0.0
        # measured from the refusal to the next attempt: never sooner than told; the jitter
        # (10 %) and a busy machine's scheduling may add a little
        assert 1.0 <= first <= 1.6, f"upgrade 429 Retry-After 1 s, waited {first:.2f} s"
    finally:
        runner.stop()
    return (
        "3001 paused the sender 1 s while pongs kept arriving; 429 Retry-After honoured on REST "
        "and on the WebSocket upgrade"
    )


def check_fail_stop(bench: _Bench) -> str:
    runner = bench.runner("fail_stop")
    try:
        assert _wait(lambda: not runner.engine.state.suspended), "never resumed after start"

        def broken(*args: object, **kwargs: object) -> int:
            raise RuntimeError("selftest: a failing decision")

        runner.engine._signal_targets = broken  # the next bar close raises in the decision thread
        assert _wait(runner.failed.is_set), "a failing decision thread went unnoticed"
        assert runner.engine.state.suspended and not runner.engine.state.pending
        assert runner.failure and runner.failure.startswith("decisions thread failed")
        keys = [r.get("key") for r in runner.store.read_journal()] if runner.store else []
        assert "runner.failed" in keys, "no runner.failed alert"
    finally:
        runner.stop()
    return "a failing worker thread: safe state, runner.failed alert, the process told to exit"


CRASH_CHILD = """
import sys
from pathlib import Path
from qcompile.runtime.state import FileStateStore
store = FileStateStore(Path(sys.argv[1]), "CRASH", "child")
store.acquire()
seq = int((store.load() or {}).get("seq", 0))
while True:
    seq += 1
    store.save({"seq": seq, "payload": "x" * 2000})
    print(seq, flush=True)
"""


def check_state_recovery(bench: _Bench, scratch: Path) -> str:
    first = bench.runner("recovery")
    assert _wait(lambda: first.saver.seq > 10), "the runner saved nothing"
    summary = first.stop()
    second = bench.runner("recovery")
    try:
        assert second.saver.seq == summary.seq, "restart did not resume the saved state"
    finally:
        second.stop()
    rng, kills, directory = random.Random(7), 6, scratch / "crash"
    for _ in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(directory)],
            stdout=subprocess.PIPE,
            text=True,
        )
        acked = 0
        deadline = time.monotonic() + rng.uniform(0.05, 0.3)
        assert child.stdout is not None
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.strip():
                acked = int(line)
        child.send_signal(signal.SIGKILL)
        rest = child.communicate()[0]
        acked = max([acked, *(int(x) for x in rest.split())])
        store = FileStateStore(directory, "CRASH", "reader")
        saved = store.load()
        assert saved is not None and saved["seq"] in (acked, acked + 1), (saved, acked)
    return f"restart resumed seq {summary.seq}; {kills} kill -9 lost no acknowledged save"


CHECKS = ("heartbeat", "safe_state", "fail_stop", "reconnect", "rate_limits", "state_recovery")


def run(report: Callable[[str, bool, str], None] = lambda *_: None) -> dict[str, Any]:
    """Run every check; returns the result document (also for a failed check)."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qcompile-selftest-") as directory:
        scratch = Path(directory)
        bench = _Bench(scratch / "project")
        try:
            for name in CHECKS:
                check = globals()[f"check_{name}"]
                try:
                    arguments = (
                        (bench, scratch) if name in ("rate_limits", "state_recovery") else (bench,)
                    )
                    detail, passed = check(*arguments), True
                except AssertionError as failure:
                    detail, passed = f"failed: {failure}", False
                results[name] = {"passed": passed, "detail": detail}
                report(name, passed, detail)
        finally:
            bench.close()
    return {
        "qcompile_version": __version__,
        "runtime_sha256": runtime_sha256(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "ran_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checks": results,
        "passed": all(r["passed"] for r in results.values()),
    }


def write(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp-{os.getpid()}")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
