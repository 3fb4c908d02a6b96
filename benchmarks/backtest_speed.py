"""Backtest engine speed: the compiled engine beside the reference engine in the same process.

Workloads (issue 3): one symbol with ~2,150 daily bars; the 174-combination moving-average grid on
it; 500 symbols x 5,000 bars with one parameter pair. Engine time excludes data loading and
signal computation. Goals: single run <= 5 ms, 174-grid <= 20 ms, 500 x 5,000 <= 50 ms.

    python benchmarks/backtest_speed.py [--repeat 5] [--symbols 500] [--bars 5000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

import polars as pl

from qcompile.backtest import engine, fast
from qcompile.backtest.engine import Costs, Settings
from qcompile.signals.trend import ma_crossover

DAY = 86_400_000
SETTINGS = Settings(initial_capital=1e6, costs=Costs(5, 0.005, 1.0))
GRID = [(f, s) for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]  # 174 pairs


def random_walk(symbols: int, bars: int, seed: int = 1) -> pl.DataFrame:
    rng = random.Random(seed)
    frames = []
    for number in range(symbols):
        price, opens, closes = 100.0, [], []
        for _ in range(bars):
            opening = price * (1 + rng.gauss(0, 0.003))
            price = opening * (1 + rng.gauss(0.0002, 0.015))
            opens.append(opening)
            closes.append(price)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": f"S{number:04d}",
                    "timestamp": [i * DAY for i in range(bars)],
                    "open": opens,
                    "high": [max(o, c) * 1.002 for o, c in zip(opens, closes, strict=True)],
                    "low": [min(o, c) * 0.998 for o, c in zip(opens, closes, strict=True)],
                    "close": closes,
                    "volume": 1e5,
                }
            )
        )
    return pl.concat(frames)


def timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds and peak traced memory (MB) of ``function``."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return statistics.median(samples), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=5000)
    args = parser.parse_args()
    single = ma_crossover(random_walk(1, 2150), fast=20, slow=100)
    grid_inputs = [ma_crossover(single.drop("signal"), fast=f, slow=s) for f, s in GRID]
    universe = ma_crossover(random_walk(args.symbols, args.bars), fast=20, slow=100)
    rows = []
    for label, workload, repeat in (
        ("1 symbol x 2,150 bars", lambda run: run(single, SETTINGS), args.repeat),
        (
            f"{len(GRID)}-combination grid, 1 symbol",
            lambda run: [run(g, SETTINGS) for g in grid_inputs],
            1,
        ),
        (f"{args.symbols} symbols x {args.bars} bars", lambda run: run(universe, SETTINGS), 1),
    ):
        fast.run(single, SETTINGS)  # load the cached compiled kernel before timing
        reference = timed(lambda w=workload: w(engine.run), repeat)
        compiled = timed(lambda w=workload: w(fast.run), repeat)
        rows.append((label, reference, compiled))
    print("backtest engine speed (median seconds; peak traced memory of the compiled engine, MB)")
    print(f"{'workload':<32}{'reference':>11}{'compiled':>10}{'speed-up':>10}{'peak MB':>9}")
    for label, (ref_s, _), (fast_s, fast_mb) in rows:
        print(f"{label:<32}{ref_s:>11.4f}{fast_s:>10.4f}{ref_s / fast_s:>9.1f}x{fast_mb:>9.1f}")


if __name__ == "__main__":
    main()
