"""Production runner speed: messages through feed -> signal -> decision -> durable state.

The runner trades the MA-trend example against the local protocol emulator over a real loopback
socket, with the file state store on this disk, at fixed push rates. For each rate it prints the
rate achieved and the latency from a push's receipt on the feed thread to the end of the durable
save of the cycle that decided it (p50, p99, max). Goal (issue 5): p99 <= 5 ms at 1,000 msg/s.

References measured in the same run, on the same disk: the raw latency of write + fsync of a
small file, and of the store's atomic save (temp file, fsync, rename, fsync of the directory) of
a state the size the runner writes. The runner cannot be faster than one atomic save per cycle.

Then the time from a dropped connection (the emulator aborts the TCP connection) to the safe
state being complete (working orders cancelled, signals suspended, state saved). Goal <= 100 ms.

    python benchmarks/runner_speed.py [--seconds 10] [--rates 1000,2000,4000] [--drops 20]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from qcompile.emulator import Emulator, load_bars, ticks_from_bars
from qcompile.live.runner import Runner, Session
from qcompile.live.state import FileStateStore

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "generated/STR-2026-0007/params.yaml"
KEY = "bench-key"
DAY = 86_400_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, values_s: list[float], extra: str = "") -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"{label:<44} {statistics.median(ms):>8.3f} {percentile(ms, 0.99):>8.3f} "
        f"{max(ms):>8.3f}  {extra}"
    )


def raw_fsync(directory: Path, size: int, count: int = 500) -> list[float]:
    path = directory / "raw.bin"
    payload = os.urandom(size)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(descriptor, payload)
        os.fsync(descriptor)
        os.close(descriptor)
        times.append(time.perf_counter() - start)
    return times


def atomic_saves(directory: Path, state: dict, count: int = 500) -> list[float]:
    store = FileStateStore(directory, "BENCH", "bench")
    store.acquire()
    times = []
    for seq in range(count):
        state = {**state, "seq": seq}
        start = time.perf_counter()
        store.save(state)
        times.append(time.perf_counter() - start)
    store.release()
    return times


def events_for(bars: pl.DataFrame, count: int) -> list[dict]:
    per_symbol = -(-count // (4 * bars["symbol"].n_unique()))
    cut = bars.group_by("symbol").agg(
        pl.col("timestamp").sort().tail(per_symbol).first().alias("c")
    )
    tail = bars.join(cut, on="symbol").filter(pl.col("timestamp") >= pl.col("c")).drop("c")
    return ticks_from_bars(tail, DAY)[:count]


def start(emulator: Emulator, state_dir: Path, **settings: object) -> Runner:
    session = Session(
        ws_base=f"ws://127.0.0.1:{emulator.port}",
        rest_base=emulator.rest_url,
        api_key=KEY,
        settings={
            "state_store": {"kind": "file", "path": str(state_dir)},
            "alerts": [{"kind": "log"}],
            **settings,
        },
    )
    return Runner(yaml.safe_load(PARAMS.read_text()), REPO, session, env={}).start()


def throughput(bars: pl.DataFrame, rate: float, seconds: float, state_dir: Path) -> str:
    events = events_for(bars, int(rate * seconds))
    with Emulator(
        events, api_keys=[KEY], messages_per_second=rate, bars=bars, replay_start="first_subscribe"
    ) as emulator:
        runner = start(emulator, state_dir)
        emulator.wait_exhausted(seconds * 10 + 30)
        runner.wait_idle(60)
        summary = runner.stop()
    latencies = list(runner.latencies)[200:]  # the first cycles load history and compiled code
    achieved = summary.accepted / seconds
    return row(
        f"runner at {rate:,.0f} msg/s ({len(events):,} msgs)",
        latencies,
        f"{achieved:,.0f} msg/s decided, {summary.seq:,} saves, {summary.decisions:,} decisions",
    )


def safe_state_times(bars: pl.DataFrame, drops: int, state_dir: Path) -> list[float]:
    events = events_for(bars, 400_000)
    with Emulator(events, api_keys=[KEY], messages_per_second=500, bars=bars) as emulator:
        runner = start(
            emulator,
            state_dir,
            heartbeat_interval_s=5,
            reconnect={"initial_s": 0.05, "cap_s": 0.05, "jitter": 0.0, "stable_s": 1},
        )
        times = []
        for _ in range(drops):
            deadline = time.monotonic() + 10
            while not (runner.feed.connected.is_set() and not runner.engine.state.suspended):
                if time.monotonic() > deadline:
                    raise SystemExit("the runner did not resume after a drop")
                time.sleep(0.005)
            before = len(runner.engine.safe_state_at)
            dropped_at = time.perf_counter()
            emulator.inject("drop")
            while len(runner.engine.safe_state_at) == before:
                time.sleep(0.0005)
            times.append(runner.engine.safe_state_at[before] - dropped_at)
        runner.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of pushes per rate")
    parser.add_argument("--rates", default="1000,2000,4000", help="push rates, msg/s")
    parser.add_argument("--drops", type=int, default=20, help="dropped connections to time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("qcompile").setLevel(logging.CRITICAL)  # the drops alert on purpose

    bars = load_bars(REPO / "data/sample_us_daily", None)
    scratch = Path(tempfile.mkdtemp(prefix=".bench-runner-", dir=REPO))  # this repo's disk
    try:
        print(f"runner speed, {os.cpu_count()} cores, state on {scratch.parent}")
        print(f"{'latency (ms)':<44} {'p50':>8} {'p99':>8} {'max':>8}")
        state_size = 0
        rows = []
        for rate in (float(r) for r in args.rates.split(",")):
            directory = scratch / f"rate-{rate:.0f}"
            rows.append(throughput(bars, rate, args.seconds, directory))
            state_size = max(state_size, (directory / "STR-2026-0007/state.json").stat().st_size)
        state = FileStateStore(scratch / "rate-1000", "STR-2026-0007", "x").load() or {}
        print(row(f"reference: write+fsync, {state_size:,} B", raw_fsync(scratch, state_size)))
        print(row("reference: atomic save of the runner's state", atomic_saves(scratch, state)))
        for line in rows:
            print(line)
        drops = safe_state_times(bars, args.drops, scratch / "drops")
        print(row(f"dropped connection -> safe state ({args.drops} drops)", drops))
        print("goals: p99 <= 5 ms at 1,000 msg/s; safe state <= 100 ms")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
