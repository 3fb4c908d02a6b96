"""`qcompile parity`: the production runner replays the backtest's window and must reproduce it.

Glue, like the weekly review: it compiles the project (the built parameters of one strategy),
runs the pinned backtest in memory (``research.backtest.runner.simulate``), serves the same
window through the protocol emulator, and runs the real runner as a separate process against
it, with the paper broker, in a scratch directory. Then it compares, leg by leg, every fill the
backtest made with every fill the runner journaled (symbol, bar, quantity, price) and the daily
equity marks.

What is compared, and how exactly (docs/parity.md):

- The emulator pushes each bar as the vendor would: four ticks (open, the nearer extreme, the
  farther one, close) with prices as decimal strings, and serves the bars before the window over
  its REST endpoint, so the runner's signal sees the same history as the backtest's.
- Whole-share quantities must be equal, fractional ones to a relative 1e-9; prices to within
  half a unit of the wire's eighth decimal (scaled by the slippage); equity marks to a relative
  1e-9 (the order of summation differs).
- A symbol's last bar in the window is left out on both sides: the backtest never opens there
  and closes what is open at its close (the end of the data), which no live runner can know.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from qcompile.compiler.rules.checklist import PARITY_FILE, parity_inputs
from qcompile.errors import QcompileError
from qcompile.project import Project

PRICE_DECIMALS = 8  # the vendor's decimal strings (emulator.replay.format_decimal)
EQUITY_TOLERANCE = 1e-9  # relative
FRACTION_TOLERANCE = 1e-9  # relative, for fractional share counts
DEFAULT_SPEED = 2_000.0  # messages per second: well inside what the runner keeps up with
DEFAULT_KILLS = 3  # restarts are part of parity: SIGKILLs at seeded moments of the replay
RUNNER_TIMEOUT_S = 600.0
PARITY_KEY = "QCOMPILE_PARITY_API_KEY"  # the scratch run's key, in its environment only


class ParityError(QcompileError):
    """The parity run could not be carried out (as opposed to: it ran and diverged)."""


@dataclass(frozen=True)
class Leg:
    """One fill: the unit both sides are compared by."""

    symbol: str
    bar_ms: int
    quantity: float  # signed: positive buys
    price: float

    def describe(self) -> str:
        side = "buys" if self.quantity > 0 else "sells"
        return f"{side} {abs(self.quantity):g} {self.symbol} at {self.price:.6f}"


@dataclass
class Parity:
    strategy_id: str
    version: str
    window: tuple[str, str]
    backtest_legs: list[Leg]
    runner_legs: list[Leg]
    marks_compared: int
    max_equity_deviation: float  # relative
    first_divergence: str | None
    messages: int
    runner_summary: str
    restarts: list[dict[str, int]] = field(default_factory=list)  # each SIGKILL and resumption
    inputs: dict[str, str] = field(default_factory=dict)
    slice_from: str | None = None  # strategy.backtest.parity_from, when a slice was declared

    @property
    def passed(self) -> bool:
        return self.first_divergence is None


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def backtest_legs(trades: list[Any], last_bar: dict[str, int]) -> list[Leg]:
    """Each trade's entry and exit as fills, without the legs of a symbol's last bar."""
    legs = []
    for trade in trades:
        legs.append(
            Leg(trade.symbol, trade.entry_time, trade.side * trade.shares, trade.entry_price)
        )
        legs.append(
            Leg(trade.symbol, trade.exit_time, -trade.side * trade.shares, trade.exit_price)
        )
    return sorted(
        (leg for leg in legs if leg.bar_ms < last_bar[leg.symbol]),
        key=lambda leg: (leg.bar_ms, leg.symbol),
    )


def runner_legs(
    journal: list[dict[str, Any]], last_bar: dict[str, int], interval_ms: int
) -> list[Leg]:
    """The journal's fills as legs, each order once: a fill journaled just before a SIGKILL is
    journaled again when the restart recovers it from the broker."""
    legs: dict[str, Leg] = {}
    for record in journal:
        if record.get("type") != "fill":
            continue
        bar = int(record["bar_ms"]) // interval_ms * interval_ms
        symbol = str(record["symbol"])
        if bar < last_bar.get(symbol, 0):
            leg = Leg(symbol, bar, float(record["quantity"]), float(record["price"]))
            legs.setdefault(str(record["order_id"]), leg)
    return sorted(legs.values(), key=lambda leg: (leg.bar_ms, leg.symbol))


def _price_tolerance(slippage_bps: float) -> float:
    return 0.5 * 10.0**-PRICE_DECIMALS * (1.0 + slippage_bps / 10_000.0) + 1e-12


def same_quantity(expected: float, actual: float) -> bool:
    """Whole shares exactly; fractional ones to a relative 1e-9 (a fractional count is the
    budget divided by the fill, and the wire's prices carry at most eight decimals)."""
    if float(expected).is_integer() and float(actual).is_integer():
        return expected == actual
    return abs(expected - actual) <= FRACTION_TOLERANCE * max(abs(expected), 1e-12)


def first_leg_divergence(
    expected: list[Leg], actual: list[Leg], price_tolerance: float
) -> str | None:
    """The first fill where the runner did not do what the backtest did, explained."""
    for index in range(max(len(expected), len(actual))):
        want = expected[index] if index < len(expected) else None
        got = actual[index] if index < len(actual) else None
        if want is None:
            assert got is not None
            return (
                f"fill {index + 1}: on {_day(got.bar_ms)} the runner {got.describe()}; "
                "the backtest made no further fill"
            )
        if got is None:
            return (
                f"fill {index + 1}: on {_day(want.bar_ms)} the backtest {want.describe()}; "
                "the runner made no further fill"
            )
        what = [
            name
            for name, differs in (
                ("symbol", want.symbol != got.symbol),
                ("bar", want.bar_ms != got.bar_ms),
                ("quantity", not same_quantity(want.quantity, got.quantity)),
                ("price", abs(want.price - got.price) > price_tolerance),
            )
            if differs
        ]
        if what:
            return (
                f"fill {index + 1} differs in {', '.join(what)}: on {_day(want.bar_ms)} the "
                f"backtest {want.describe()}; on {_day(got.bar_ms)} the runner {got.describe()}"
            )
    return None


def compare_marks(
    equity: pl.DataFrame, journal: list[dict[str, Any]]
) -> tuple[int, float, str | None]:
    """The runner's daily marks against the backtest's equity at the same day's close."""
    expected = {
        _day(int(stamp)): float(value)
        for stamp, value in zip(equity["timestamp"], equity["equity"], strict=True)
    }
    marks: dict[str, float] = {}  # a day marked again after a restart counts once: the last
    for record in journal:
        if record.get("type") == "daily" and str(record["date"]) in expected:
            marks[str(record["date"])] = float(record["equity"])
    compared, worst, divergence = 0, 0.0, None
    for day in sorted(marks):
        live, want = marks[day], expected[day]
        deviation = abs(live - want) / max(abs(want), 1e-12)
        compared += 1
        worst = max(worst, deviation)
        if deviation > EQUITY_TOLERANCE and divergence is None:
            divergence = (
                f"equity on {day}: backtest {want:,.6f}, runner {live:,.6f} "
                f"({deviation:.2e} relative, tolerance {EQUITY_TOLERANCE:.0e})"
            )
    return compared, worst, divergence


def run_parity(
    project: Project,
    strategy: str,
    *,
    speed: float = DEFAULT_SPEED,
    kills: int = DEFAULT_KILLS,
    seed: int = 0,
    progress: Callable[[str], None] = lambda line: None,
) -> Parity:
    """Replay ``strategy``'s backtest window into its runner and compare; writes parity.md and
    parity.json beside its backtest report."""
    from qcompile.compiler.build import built_params_file, compile_project
    from qcompile.compiler.plan import runtime_parameters
    from qcompile.emulator import Emulator, ticks_from_bars
    from qcompile.marketdata.intervals import INTERVAL_MS
    from qcompile.research.backtest.runner import simulate
    from qcompile.runtime.runner import local_api_key
    from qcompile.runtime.state import FileStateStore

    # a gate that waits for this very evidence must not stop it from being produced
    compilation = compile_project(project, [], [strategy], enforce_gates=False)
    if not compilation.strategies:
        raise ParityError(f"no strategy {strategy!r}")
    (compiled,) = compilation.strategies
    params = runtime_parameters(compiled)
    params_file = built_params_file(project, compiled.id, params)
    data = params["data"]
    interval_ms = INTERVAL_MS[data["interval"]]
    parity_from = compiled.data["strategy"]["backtest"].get("parity_from")
    if parity_from:  # a declared recent slice: both sides start flat on its first day
        params = {**params, "backtest": {**params["backtest"], "start_date": str(parity_from)}}
    progress(
        f"{compiled.id}: backtest of the "
        + (f"slice from {parity_from}" if parity_from else "window")
        + ", in memory"
    )
    bars, result = simulate(params, project.root)
    if parity_from:
        _check_slice(compiled, str(parity_from), len(result.trades))
    start, end = result.equity["timestamp"].min(), result.equity["timestamp"].max()
    window = bars.filter(pl.col("timestamp").is_between(start, end))
    history = bars.filter(pl.col("timestamp") <= end)
    last_bar = dict(window.group_by("symbol").agg(pl.col("timestamp").max()).iter_rows())
    suffix = data.get("symbol_suffix", "") or ""
    events = ticks_from_bars(window, interval_ms, suffix)
    key = local_api_key()  # a throwaway key the emulator accepts; no vendor key is read

    # the seeded moments (shares of the replay) at which the runner is killed with SIGKILL
    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))
    with tempfile.TemporaryDirectory(prefix="qcompile-parity-") as scratch:
        root = Path(scratch)
        live_params = json.loads(json.dumps(params))  # a copy: the scratch run's own state store
        live_params["deployment"]["state_store"] = {"kind": "file", "path": "state"}
        live_params["deployment"]["alerts"] = [{"kind": "log"}]
        live_params["data"]["api_key"] = "${oc.env:" + PARITY_KEY + "}"
        scratch_params = root / "params.yaml"
        scratch_params.write_text(yaml.safe_dump(live_params, sort_keys=False), encoding="utf-8")

        def serve(replayed: list[dict[str, Any]]) -> Any:
            return Emulator(
                replayed,
                api_keys=[key],
                messages_per_second=speed,
                bars=history,
                interval=data["interval"],
                replay_start="first_subscribe",
                symbol_suffix=suffix,
            ).start()

        progress(
            f"{compiled.id}: {len(events):,} pushes of {window.height:,} bars through the "
            f"emulator into the runner process, {speed:,.0f}/s"
            + (f", killed with SIGKILL {kills} time(s) (seed {seed})" if kills else "")
        )
        live = _LiveRun(root, scratch_params, compiled.id, events, suffix, serve, {PARITY_KEY: key})
        summary, restarts = live.run(moments)
        journal = FileStateStore(root / "state", compiled.id, "parity").read_journal()

    expected = backtest_legs(result.trades, last_bar)
    actual = runner_legs(journal, last_bar, interval_ms)
    tolerance = _price_tolerance(float(params["costs"].get("slippage_bps") or 0.0))
    divergence = first_leg_divergence(expected, actual, tolerance)
    marks, worst, mark_divergence = compare_marks(result.equity, journal)
    parity = Parity(
        strategy_id=compiled.id,
        version=str(params["strategy"]["version"]),
        window=(_day(start), _day(end)),
        backtest_legs=expected,
        runner_legs=actual,
        marks_compared=marks,
        max_equity_deviation=worst,
        first_divergence=divergence or mark_divergence,
        messages=len(events),
        runner_summary=summary,
        restarts=restarts,
        inputs=parity_inputs(compiled.lock.backtest_inputs, compiled.data["deployment"]),
        slice_from=str(parity_from) if parity_from else None,
    )
    _write_report(project, params, params_file, parity)
    return parity


def _check_slice(compiled: Any, parity_from: str, trades: int) -> None:
    """A declared slice must hold the strategy type's minimum sample of trades (the gate
    policy's): a parity run over a handful of trades proves little."""
    from qcompile.research.backtest.runner import MINIMUM_SAMPLE

    kind = compiled.data["strategy"]["type"]
    needed = MINIMUM_SAMPLE[kind][0]
    if trades < needed:
        where, line = compiled.composed.locate("strategy.backtest.parity_from")
        raise ParityError(
            f"{where}:{line}: strategy.backtest.parity_from: the slice from {parity_from} holds "
            f"{trades} backtest trades; the minimum sample for {kind} strategies is {needed}: "
            "declare an earlier day, or remove it to replay the whole window"
        )


def _pushed(emulator: Any, count: int) -> bool:
    return bool(emulator.stats.messages_pushed >= count)


def _symbol(event: dict[str, Any], suffix: str) -> str:
    return event["symbol"].removesuffix(suffix) if suffix else event["symbol"]


class _LiveRun:
    """The runner as its own process, as production runs it, fed ``events`` by an emulator;
    killed with SIGKILL at the given moments and restarted each time from its durable state
    (the emulator replaying what the saved cursor has not seen), then stopped with SIGTERM, its
    orderly stop, once it has decided the last push."""

    def __init__(
        self,
        root: Path,
        params_file: Path,
        strategy_id: str,
        events: list[dict[str, Any]],
        suffix: str,
        serve: Callable[[list[dict[str, Any]]], Any],
        env: dict[str, str],
    ):
        self.root, self.params_file, self.strategy_id = root, params_file, strategy_id
        self.events, self.suffix, self.serve, self.env = events, suffix, serve, env
        self.last: dict[str, int] = {}
        for event in events:
            self.last[_symbol(event, suffix)] = event["timestamp"]
        self.log = root / "runner.log"

    def saved_cursor(self) -> dict[str, int]:
        from qcompile.runtime.state import FileStateStore, StateError

        try:  # the checkpoint with its log replayed: what a restart resumes from
            saved = FileStateStore(self.root / "state", self.strategy_id, "parity").load()
        except StateError:
            return {}
        return (saved or {}).get("cursor") or {}

    def run(self, moments: list[float]) -> tuple[str, list[dict[str, int]]]:
        remaining, restarts, summary = self.events, [], ""
        for index in range(len(moments) + 1):
            emulator = self.serve(remaining)
            try:
                process = self._start(emulator)
                if index == len(moments):
                    summary = self._finish(process, emulator)
                    break
                done = len(self.events) - len(remaining)
                target = min(len(remaining), max(1, int(moments[index] * len(self.events)) - done))
                self._wait(process, partial(_pushed, emulator, target))
                process.kill()  # SIGKILL: no handler, no last save
                process.wait(timeout=30)
                cursor = self.saved_cursor()
                remaining = [
                    e
                    for e in self.events
                    if e["timestamp"] > cursor.get(_symbol(e, self.suffix), -1)
                ]
                restarts.append(
                    {
                        "killed_after_pushes": done + emulator.stats.messages_pushed,
                        "resumed_at_push": len(self.events) - len(remaining),
                    }
                )
            finally:
                emulator.stop()
        return summary, restarts

    def _start(self, emulator: Any) -> subprocess.Popen[str]:
        code = (
            "import sys; from pathlib import Path; from qcompile.runtime.command import main; "
            "sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))"
        )
        command = [
            sys.executable,
            "-c",
            code,
            str(self.params_file),
            str(self.root),
            "--ws-url",
            f"ws://127.0.0.1:{emulator.port}",
            "--rest-url",
            emulator.rest_url,
            "--i-know",
            "--history-replay",
            "--paper",  # fills at the backtest's cost model: never a real broker's
        ]
        with self.log.open("a", encoding="utf-8") as log_file:
            return subprocess.Popen(
                command,
                cwd=self.root,
                env={**os.environ, **self.env, "QCOMPILE_PROJECT": str(self.root)},
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )

    def _wait(self, process: subprocess.Popen[str], done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + RUNNER_TIMEOUT_S
        while not done():
            if process.poll() is not None:
                self._failed(process)
            if time.monotonic() > deadline:
                process.kill()
                raise ParityError(
                    f"the runner did not finish the replay in {RUNNER_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.05)

    def _finish(self, process: subprocess.Popen[str], emulator: Any) -> str:
        def caught_up() -> bool:
            cursor = self.saved_cursor()
            return emulator.stats.exhausted and all(
                cursor.get(symbol) == stamp for symbol, stamp in self.last.items()
            )

        self._wait(process, caught_up)
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise ParityError("the runner did not stop within 60 s of SIGTERM") from None
        if process.returncode != 0:
            self._failed(process)
        line = output.strip().splitlines()[0] if output.strip() else ""
        return line.partition("; state seq")[0]  # the rest names the scratch directory

    def _failed(self, process: subprocess.Popen[str]) -> None:
        tail = self.log.read_text(encoding="utf-8").splitlines()[-15:]
        raise ParityError(
            f"the runner exited {process.returncode} during the replay:\n" + "\n".join(tail)
        )


def _write_report(
    project: Project, params: dict[str, Any], params_file: Path, parity: Parity
) -> None:
    directory = (
        project.root / params["backtest"]["reports_dir"] / parity.strategy_id / parity.version
    )
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "strategy": {"id": parity.strategy_id, "version": parity.version},
        "passed": parity.passed,
        "window": list(parity.window),
        "slice_from": parity.slice_from,
        "messages": parity.messages,
        "fills": {"backtest": len(parity.backtest_legs), "runner": len(parity.runner_legs)},
        "equity_marks_compared": parity.marks_compared,
        "max_equity_deviation": parity.max_equity_deviation,
        "first_divergence": parity.first_divergence,
        "restarts": parity.restarts,
        "tolerances": {
            "quantity": "exact (fractional shares: relative 1e-9)",
            "price_decimals": PRICE_DECIMALS,
            "equity_relative": EQUITY_TOLERANCE,
        },
        "inputs": parity.inputs,
        "params_file": project.rel(params_file),
    }
    (directory / PARITY_FILE).write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (directory / "parity.md").write_text(_markdown(parity, project.rel(params_file)), "utf-8")


def _markdown(parity: Parity, params_file: str) -> str:
    verdict = "PASSED" if parity.passed else "DIVERGED"
    lines = [
        f"# Backtest–live parity: {parity.strategy_id} v{parity.version}: {verdict}",
        "",
        f"- Window: {parity.window[0]} to {parity.window[1]}"
        + (
            f" (the declared recent slice from {parity.slice_from}, "
            "`strategy.backtest.parity_from`: backtest and runner both start flat on its first day)"
            if parity.slice_from
            else ""
        )
        + f"; {parity.messages:,} pushes "
        "through the protocol emulator (four ticks per bar: open, the nearer extreme, the "
        "farther one, close; prices as the vendor's decimal strings), history before each "
        "close from its REST endpoint.",
        f"- Runner: the production runner as its own process, from {params_file}, with the "
        "paper broker, in a scratch directory: " + (parity.runner_summary or "(no summary)"),
        f"- Fills compared: {len(parity.backtest_legs)} in the backtest, "
        f"{len(parity.runner_legs)} by the runner (symbol, bar and whole-share quantity exact, "
        f"fractional shares to a relative {FRACTION_TOLERANCE:.0e}; price within half a unit of "
        f"the {PRICE_DECIMALS}th decimal). A symbol's last bar is left out on "
        "both sides: the backtest closes there at the end of its data, which a runner cannot "
        "know.",
        "- Restarts: "
        + (
            "; ".join(
                f"SIGKILL after push {r['killed_after_pushes']:,}, resumed from the durable "
                f"state at push {r['resumed_at_push']:,}"
                for r in parity.restarts
            )
            if parity.restarts
            else "none (--kills 0)"
        )
        + ". The emulator replays what the saved cursor has not seen; fills the broker made "
        "after the last save are recovered from it, and an order decided again is not sent "
        "twice.",
        f"- Daily equity marks compared: {parity.marks_compared} (largest relative deviation "
        f"{parity.max_equity_deviation:.2e}; tolerance {EQUITY_TOLERANCE:.0e}, the order of "
        "summation differs).",
        "",
    ]
    if parity.first_divergence:
        lines += ["## First divergence", "", parity.first_divergence, ""]
    else:
        lines += ["Every fill and every mark agrees.", ""]
    lines += ["## Inputs", ""]
    lines += [f"- {name}: `{value}`" for name, value in sorted(parity.inputs.items())]
    return "\n".join(lines) + "\n"
