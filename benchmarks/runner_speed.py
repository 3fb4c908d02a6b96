"""Production runner speed: messages through feed -> signal -> decision -> durable state.

The runner trades the MA-trend strategy against the local protocol emulator (in a process of its
own, as the vendor is) over a real loopback socket, with the file state store on this disk, at
fixed push rates. For each rate it prints the rate achieved and the latency from a push's receipt
on the feed thread to the end of the durable save that first contains its effect (p50, p99, max).

Two universes: the example's four symbols (STR-2026-0007), and a synthetic universe of 500
symbols (seeded random walks, daily bars) whose bar closes coincide: each day's first push of
every symbol closes its bar, so 500 decisions arrive as one burst. Goals (issue 17): p99 <= 5 ms
at 10,000 msg/s over the 500 symbols, and past saturation a bounded latency (pushes coalesced,
no unbounded backlog).

References measured in the same run, on the same disk: the raw latency of write + fsync of a
file the size of the runner's state; the store's checkpoint (the whole state: temp file opened
O_DSYNC, rename, fsync of the directory), written at the start of a run and when its log has
grown; and the store's usual save, one O_DSYNC line of changes written to its log (here one
symbol's row): no push can be acknowledged sooner than one such write.

Then the time from a dropped connection (the emulator aborts the TCP connection) to the safe
state being complete (working orders cancelled, signals suspended, state saved). Goal <= 100 ms.

    python benchmarks/runner_speed.py [--seconds 10] [--rates 1000] [--wide-rates 2000,10000,20000]
                                      [--symbols 500] [--drops 20]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from qcompile.emulator import Emulator, load_bars, ticks_from_bars
from qcompile.runtime.runner import Runner, Session
from qcompile.runtime.state import FileStateStore

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


def store_saves(directory: Path, state: dict, count: int = 500) -> tuple[list[float], list[float]]:
    """(checkpoint times, log line times) of the file store saving ``state``: a checkpoint
    whenever ``seq`` does not follow the last, a log line when it does (one row changed)."""
    store = FileStateStore(directory, "BENCH", "bench")
    store.acquire()
    checkpoints, lines = [], []
    building = dict(state.get("building") or {"S000": [0.0]})
    symbol = next(iter(building))
    for seq in range(1, 2 * count + 1):
        if seq % 2:  # seq jumps by two: a checkpoint
            seq_value, times = seq * 10, checkpoints
        else:  # the next seq, with one symbol's row replaced: a log line
            seq_value, times = seq * 10 - 9, lines
            building = {**building, symbol: [float(seq), *building[symbol][1:]]}
        snapshot = {**state, "building": building, "seq": seq_value}
        store.prepare()  # as the saver does after each acknowledgement, off the save's path
        start = time.perf_counter()
        store.save(snapshot)
        times.append(time.perf_counter() - start)
    store.release()
    return checkpoints, lines


def synthetic_universe(root: Path, symbols: int, days: int) -> tuple[dict, pl.DataFrame]:
    """``symbols`` seeded random walks of ``days`` daily bars, all on the same dates, written in
    qcompile's layout under ``root/data``; returns the example's parameters trading them."""
    rng = np.random.default_rng(17)
    directory = root / "data"
    directory.mkdir(parents=True)
    stamps = 1_420_070_400_000 + DAY * np.arange(days, dtype=np.int64)  # from 2015-01-01
    names = [f"S{n:03d}" for n in range(symbols)]
    frames = []
    for name in names:
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, days)))
        open_ = close * np.exp(rng.normal(0, 0.004, days))
        spread = np.abs(rng.normal(0, 0.006, days))
        frame = pl.DataFrame(
            {
                "timestamp": stamps,
                "open": open_,
                "high": np.maximum(open_, close) * (1 + spread),
                "low": np.minimum(open_, close) * (1 - spread),
                "close": close,
                "volume": rng.integers(100_000, 2_000_000, days).astype(np.float64),
            }
        )
        frame.write_parquet(directory / f"{name}.parquet")
        frames.append(frame.with_columns(pl.lit(name).alias("symbol")))
    params = copy.deepcopy(yaml.safe_load(PARAMS.read_text()))
    params["universe"]["symbols"] = params["data"]["symbols"] = names
    params["data"]["local"]["path"] = "data"
    params["backtest"]["sizing"] = {"method": "equal_weight", "fractional_shares": False}
    return params, pl.concat(frames).sort(["timestamp", "symbol"])


def events_for(bars: pl.DataFrame, count: int) -> list[dict]:
    per_symbol = -(-count // (4 * bars["symbol"].n_unique()))
    cut = bars.group_by("symbol").agg(
        pl.col("timestamp").sort().tail(per_symbol).first().alias("c")
    )
    tail = bars.join(cut, on="symbol").filter(pl.col("timestamp") >= pl.col("c")).drop("c")
    return ticks_from_bars(tail, DAY)[:count]


def serve(
    connection: Connection, events: list[dict], rate: float, start: str, bars_dir: Path
) -> None:
    """The emulator in a process of its own, as the vendor is: its work must not share the
    runner's interpreter lock. Answers commands from the benchmark over a pipe."""
    bars = load_bars(bars_dir, None)
    with Emulator(
        events, api_keys=[KEY], messages_per_second=rate, bars=bars, replay_start=start
    ) as emulator:
        connection.send(emulator.port)
        while True:
            command = connection.recv()
            if command == "stop":
                return
            if command == "drop":
                emulator.inject("drop")
                connection.send(True)
            elif command == "wait_exhausted":
                connection.send(emulator.wait_exhausted(600))


@contextlib.contextmanager
def emulator_process(
    events: list[dict], rate: float, start: str, bars_dir: Path = REPO / "data/sample_us_daily"
) -> Iterator[Connection]:
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(theirs, events, rate, start, bars_dir), daemon=True
    )
    process.start()
    try:
        yield ours
    finally:
        ours.send("stop")
        process.join(30)


def start(
    port: int, state_dir: Path, params: dict | None = None, root: Path = REPO, **settings: object
) -> Runner:
    session = Session(
        ws_base=f"ws://127.0.0.1:{port}",
        rest_base=f"http://127.0.0.1:{port}",
        api_key=KEY,
        replay=True,  # the sample's history, not live times
        settings={
            "state_store": {"kind": "file", "path": str(state_dir)},
            "alerts": [{"kind": "log"}],
            **settings,
        },
    )
    params = params or yaml.safe_load(PARAMS.read_text())
    return Runner(params, root, session, env={}).start()


@dataclass
class Universe:
    label: str
    params: dict
    root: Path  # where the params' paths are relative to
    bars: pl.DataFrame  # what the emulator replays the tail of
    bars_dir: Path


def throughput(universe: Universe, rate: float, seconds: float, state_dir: Path) -> str:
    events = events_for(universe.bars, int(rate * seconds))
    with emulator_process(events, rate, "first_subscribe", universe.bars_dir) as emulator:
        runner = start(emulator.recv(), state_dir, universe.params, universe.root)
        emulator.send("wait_exhausted")
        emulator.recv()
        runner.wait_idle(300)
        summary = runner.stop()
    latencies = list(runner.latencies)
    # the first day's closes load each symbol's history: start-up, not steady state
    skip = 8 * len(universe.params["universe"]["symbols"])
    latencies = latencies[min(skip, len(latencies) // 10) :]
    return row(
        f"{universe.label} at {rate:,.0f} msg/s",
        latencies,
        f"{summary.accepted:,} of {len(events):,} msgs decided, {summary.seq:,} saves, "
        f"{summary.decisions:,} decisions, {runner.coalesced:,} coalesced",
    )


def safe_state_times(bars: pl.DataFrame, drops: int, state_dir: Path) -> list[float]:
    events = events_for(bars, 400_000)
    with emulator_process(events, 500, "immediately") as emulator:
        runner = start(
            emulator.recv(),
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
            dropped_at = time.perf_counter()  # before the request: the pipe's time counts too
            emulator.send("drop")
            while len(runner.engine.safe_state_at) == before:
                time.sleep(0.0005)
            times.append(runner.engine.safe_state_at[before] - dropped_at)
            emulator.recv()
        runner.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of pushes per rate")
    parser.add_argument("--rates", default="1000", help="push rates for the example, msg/s")
    parser.add_argument(
        "--wide-rates", default="2000,10000,20000", help="push rates for the wide universe"
    )
    parser.add_argument("--symbols", type=int, default=500, help="symbols in the wide universe")
    parser.add_argument("--drops", type=int, default=20, help="dropped connections to time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("qcompile").setLevel(logging.CRITICAL)  # the drops alert on purpose

    sample = REPO / "data/sample_us_daily"
    scratch = Path(tempfile.mkdtemp(prefix=".bench-runner-", dir=REPO))  # this repo's disk
    try:
        wide_root = scratch / "wide"
        # enough days for the history the runner loads (400 bars) and the fastest rate's replay
        most = max(float(r) for r in args.wide_rates.split(",")) * args.seconds
        days = 420 + int(most // (4 * args.symbols)) + 2
        wide_params, wide_bars = synthetic_universe(wide_root, args.symbols, days)
        universes = [
            (
                Universe(
                    "example, 4 symbols",
                    yaml.safe_load(PARAMS.read_text()),
                    REPO,
                    load_bars(sample, None),
                    sample,
                ),
                args.rates,
            ),
            (
                Universe(
                    f"{args.symbols} symbols", wide_params, wide_root, wide_bars, wide_root / "data"
                ),
                args.wide_rates,
            ),
        ]
        print(f"runner speed, {os.cpu_count()} cores, state on {scratch.parent}")
        print(f"{'latency (ms)':<44} {'p50':>8} {'p99':>8} {'max':>8}")
        state_size = 0
        rows = []
        state: dict = {}
        run = 0
        for universe, rates in universes:
            for rate in (float(r) for r in rates.split(",") if r):
                run += 1
                directory = scratch / f"run-{run}"  # a fresh state each: no resume
                rows.append(throughput(universe, rate, args.seconds, directory))
                state_file = directory / "STR-2026-0007/state.json"
                if state_file.stat().st_size > state_size:
                    state_size = state_file.stat().st_size
                    state = FileStateStore(directory, "STR-2026-0007", "x").load() or {}
        print(row(f"reference: write+fsync, {state_size:,} B", raw_fsync(scratch, state_size)))
        checkpoints, lines = store_saves(scratch, state)
        print(row("reference: checkpoint of the runner's state", checkpoints))
        print(row("reference: log line (one row changed)", lines))
        for line in rows:
            print(line)
        drops = safe_state_times(load_bars(sample, None), args.drops, scratch / "drops")
        print(row(f"dropped connection -> safe state ({args.drops} drops)", drops))
        print(
            f"goals: p99 <= 5 ms at 10,000 msg/s over {args.symbols} symbols, bounded past "
            "saturation; safe state <= 100 ms"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
