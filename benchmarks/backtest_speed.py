"""Backtest engine speed: the batched grid engine beside the reference engine in the same process.

Workloads (issue 3), engine time excluding data loading, signal computation included:

- one symbol with ~2,150 daily bars, one parameter pair (goal <= 5 ms);
- the 174-combination moving-average grid on it (goal <= 20 ms);
- 500 symbols x 5,000 bars with one pair (goal <= 50 ms);
- that grid over those 500 symbols, 87,000 backtests (goal <= 3 s within 1 GB).

References measured in the same run: the readable reference engine (engine.run, one backtest at a
time, signal computed per combination) and the compiled single-run engine (fast.run with its full
trade list). The 87,000-backtest reference is extrapolated from a sample of combinations, as its
full run would take tens of minutes; the column says so. Peak memory of the big grid is measured in
a child process (its own peak RSS, data included).

When vectorbt is installed (``pip install 'qcompile[reference]'``; it is an optional reference,
never a dependency), a fourth column times the same crossover with it: moving averages, signals
and ``Portfolio.from_signals`` with the same slippage and a fixed fee per order, each workload run
once first so that its JIT compilation (tens of seconds on a fresh machine) is not counted. It
executes at the signal bar's close rather than the next open, so its figures compare work, not
results. The 87,000-backtest grid is not run with it (the issue measured 181 s and 14.5 GB).

    python benchmarks/backtest_speed.py [--repeat 5] [--symbols 500] [--bars 5000]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from qcompile.research.backtest import engine, fast
from qcompile.research.backtest.engine import Costs, Settings
from qcompile.research.backtest.grid import run_grid
from qcompile.research.backtest.metrics import compute
from qcompile.signals.trend import _ma_grid, ma_crossover

DAY = 86_400_000
PPY = 252.0
SETTINGS = Settings(initial_capital=1e6, costs=Costs(5, 0.005, 1.0))
GRID = [(f, s) for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]  # 174 pairs
COMBOS = [{"fast": f, "slow": s} for f, s in GRID]
EVERYTHING = (0, 2**62)


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
    return pl.concat(frames).rechunk()  # contiguous, as the loader returns sorted bars


def timed(function: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``function`` over ``repeat`` runs."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def reference(bars: pl.DataFrame, combos: list[dict], run=engine.run) -> None:
    """One backtest per combination: signal, engine, metrics."""
    for combo in combos:
        result = run(ma_crossover(bars, **combo), SETTINGS)
        compute(
            result.equity["equity"].to_list(),
            [t.pnl for t in result.trades],
            result.equity["gross_exposure"].to_list(),
            PPY,
        )


def vectorbt_workload(bars: pl.DataFrame, combos: list[dict]) -> Callable[[], object] | None:
    """The workload as vectorbt runs it, its wide price table prepared here (untimed, like the
    other engines' data loading); None when vectorbt is not installed."""
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        return None
    wide = bars.pivot(on="symbol", index="timestamp", values="close").sort("timestamp")
    closes = pd.DataFrame(wide.drop("timestamp").to_numpy())
    tiled = np.tile(closes.to_numpy(), len(combos))  # combination-major, as MA.run orders columns

    def run() -> object:
        fast = vbt.MA.run(closes, window=[c["fast"] for c in combos]).ma.to_numpy()
        slow = vbt.MA.run(closes, window=[c["slow"] for c in combos]).ma.to_numpy()
        above = fast > slow
        portfolio = vbt.Portfolio.from_signals(
            tiled, above, ~above, slippage=SETTINGS.costs.slippage_bps / 10_000,
            fixed_fees=SETTINGS.costs.min_commission, init_cash=SETTINGS.initial_capital,
            freq="1D",
        )  # fmt: skip
        return portfolio.total_return(), portfolio.sharpe_ratio(), portfolio.max_drawdown()

    run()  # JIT compilation and vectorbt's caches, not counted
    return run


def batched(bars: pl.DataFrame, combos: list[dict]) -> None:
    run_grid(bars, EVERYTHING, combos, ma_crossover, _ma_grid, SETTINGS, PPY)


def big_grid_child(symbols: int, bars: int) -> None:
    """Run in a child process: the 87,000-backtest grid, printing seconds and peak RSS (MB)."""
    universe = random_walk(symbols, bars)
    batched(universe, COMBOS[:2])  # load the cached kernels
    start = time.perf_counter()
    batched(universe, COMBOS)
    seconds = time.perf_counter() - start
    print(f"{seconds} {peak_megabytes()}")


def peak_megabytes() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss does
    not, so a child forked from a large parent (one with vectorbt loaded) would report the
    parent's size."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--big-grid-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_grid_child:
        big_grid_child(args.symbols, args.bars)
        return
    single = random_walk(1, 2150)
    universe = random_walk(args.symbols, args.bars)
    pair = [{"fast": 20, "slow": 100}]
    batched(single, pair)  # load the cached compiled kernels before timing
    fast.run(ma_crossover(single, **pair[0]), SETTINGS)
    rows = []
    for label, data, combos, repeat in (
        ("1 symbol x 2,150 bars", single, pair, args.repeat),
        (f"{len(COMBOS)}-combination grid, 1 symbol", single, COMBOS, args.repeat),
        (f"{args.symbols} x {args.bars} bars, 1 pair", universe, pair, 3),
    ):
        ref = timed(
            lambda d=data, c=combos: reference(d, c),
            1 if data is universe or len(combos) > 1 else repeat,
        )
        compiled = timed(lambda d=data, c=combos: reference(d, c, fast.run), 1)
        grid = timed(lambda d=data, c=combos: batched(d, c), repeat)
        vectorbt = vectorbt_workload(data, combos)
        vbt_seconds = float("nan") if vectorbt is None else timed(vectorbt, min(repeat, 3))
        rows.append((label, ref, compiled, grid, vbt_seconds, ""))
    sample = COMBOS[:: len(COMBOS) // 6][:6]
    per_combo = timed(lambda: reference(universe, sample, fast.run), 1) / len(sample)
    child = subprocess.run(
        [sys.executable, __file__, "--big-grid-child", "--symbols", str(args.symbols),
         "--bars", str(args.bars)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds, peak_mb = (float(v) for v in child.stdout.split())
    rows.append(
        (
            f"{len(COMBOS)} x {args.symbols} symbols ({len(COMBOS) * args.symbols:,} runs)",
            float("nan"),
            per_combo * len(COMBOS),
            seconds,
            float("nan"),
            f"peak {peak_mb:.0f} MB; fast.run extrapolated from {len(sample)} pairs",
        )
    )
    print("backtest engine speed (median seconds, signal included, data loading excluded)")
    header = (
        f"{'workload':<40}{'reference':>11}{'fast.run':>10}{'grid':>9}{'vectorbt':>10}"
        f"{'vs fast.run':>13}{'vs vectorbt':>13}"
    )
    print(header)
    for label, ref, compiled, grid, vbt_seconds, note in rows:
        ref_text = "n/a" if ref != ref else f"{ref:.4f}"
        vbt_text, vbt_ratio = (
            ("n/a", "")
            if vbt_seconds != vbt_seconds
            else (f"{vbt_seconds:.4f}", f"{vbt_seconds / grid:.1f}x")
        )
        print(
            f"{label:<40}{ref_text:>11}{compiled:>10.4f}{grid:>9.4f}{vbt_text:>10}"
            f"{compiled / grid:>12.1f}x{vbt_ratio:>13}" + (f"  {note}" if note else "")
        )
    if all(row[4] != row[4] for row in rows):
        print("vectorbt: not installed (pip install 'qcompile[reference]' adds its column)")


if __name__ == "__main__":
    main()
