"""Run one strategy's backtest from its generated parameters file and write the report.

Consumes ``generated/<id>/params.yaml`` (the only strategy-specific input) and the local data it
names; produces ``reports/<id>/<version>/report.md`` and ``evidence.json``. Before anything runs,
the signal's source and the data's content are checked against the pins: a report is only ever
produced from exactly the inputs the lock describes, so its evidence can be trusted by the gates.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from qcompile import __version__
from qcompile.dailystats import bar_returns, daily_statistics
from qcompile.errors import QcompileError
from qcompile.hashing import files_sha256
from qcompile.research.backtest import robustness
from qcompile.research.backtest.benchmark import EQUAL_WEIGHT, buy_and_hold, describe, relative
from qcompile.research.backtest.engine import Costs, Result, Settings
from qcompile.research.backtest.fast import run
from qcompile.research.backtest.grid import GridResult, compile_beside, run_grid
from qcompile.research.backtest.kernel import GRID_COLUMNS
from qcompile.research.backtest.metrics import FORMULAS, Metrics, compute
from qcompile.research.backtest.overfitting import summarise
from qcompile.research.data import Convention, load_bars
from qcompile.research.datalayout import loaded_symbols, symbol_files
from qcompile.signals import SignalError, SignalSpec
from qcompile.signals.pinning import event_calendar, events_on, pinned_signal

MINIMUM_SAMPLE = {"intraday": (500, 1), "daily": (200, 3), "weekly": (100, 5)}  # trades, years
DAY_MS = 86_400_000
YEAR_MS = 365.25 * DAY_MS


def minimum_sample(kind: str, trades: int, years: float) -> dict[str, Any]:
    """The source document's minimum sample (§3.2): both the trade count and the span in years
    of its strategy type, or the sample is insufficient."""
    needed_trades, needed_years = MINIMUM_SAMPLE[kind]
    return {
        "trades": trades,
        "years": round(years, 2),
        "required_trades": needed_trades,
        "required_years": needed_years,
        "met": trades >= needed_trades and years >= needed_years,
    }


class BacktestError(QcompileError):
    """The backtest cannot run as pinned (signal or data changed, missing data)."""


@dataclass(frozen=True)
class Report:
    directory: Path
    markdown: Path
    evidence: Path
    metrics: Metrics
    eligible: bool


def _ms(day: str, end_of_day: bool = False) -> int:
    moment = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000) + (DAY_MS - 1 if end_of_day else 0)


def _date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()


def periods_per_year(interval: str) -> float:
    """Bars per year: 252 trading days; intraday bars over a 6.5-hour US session."""
    if interval == "1d":
        return 252.0
    if interval == "1w":
        return 52.0
    if interval == "1M":
        return 12.0
    minutes = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "12h": 720}[interval]
    return 252.0 * max(1.0, 390.0 / minutes)


def _signal_spec(params: dict[str, Any], root: Path) -> SignalSpec:
    try:
        return pinned_signal(params["signal"], params["signal"]["packages"], root)
    except SignalError as error:
        raise BacktestError(str(error)) from None


def _load_events(pin: dict[str, Any] | None, root: Path, bars: pl.DataFrame) -> pl.DataFrame | None:
    """The pinned event calendar as (symbol, timestamp) rows on the bars' own timestamps."""
    try:
        calendar = event_calendar(pin, root)
    except SignalError as error:
        raise BacktestError(str(error)) from None
    return None if calendar is None else events_on(calendar, bars)


def _check_data(params: dict[str, Any], root: Path) -> tuple[Path, str]:
    source = params["data"]
    local = source.get("local") or {}
    if not local.get("path"):
        raise BacktestError(
            f"data source {source['vendor']} declares no local history (data.local)"
        )
    directory = root / local["path"]
    files = list(symbol_files(directory, local["format"]).values())
    if not files:
        # Only a source with a REST API can be downloaded; a bundled or private one is copied.
        fetch = (
            f"fetch them with `qcompile download {params['strategy']['id']}` (or copy them there)"
            if source.get("rest_base")
            else "copy them there"
        )
        raise BacktestError(
            f"no {local['format']} files in {local['path']}; {fetch}, then `qcompile build`"
        )
    fingerprint = params["pins"]["data"]["fingerprint"] or {}
    actual = files_sha256(directory, files)
    if fingerprint.get("content_sha256") != actual:
        raise BacktestError(
            f"the data in {local['path']} changed since it was pinned; run `qcompile build`"
        )
    return directory, actual


def _run(
    bars: pl.DataFrame,
    signal: Any,
    signal_params: dict[str, Any],
    settings: Settings,
    start: int,
    end: int,
    what: str = "strategy.backtest: the window",
) -> tuple[pl.DataFrame, Result]:
    with_signal = signal(bars.filter(pl.col("timestamp") <= end), **signal_params)
    window = with_signal.filter(pl.col("timestamp") >= start)
    if window.height == 0:
        raise BacktestError(
            f"{what} {_date(start)}..{_date(end)} holds no bars of the local data: "
            "move it where the data has bars"
        )
    return with_signal, run(window, settings)


def simulate(params: dict[str, Any], root: Path) -> tuple[pl.DataFrame, Result]:
    """The pinned backtest's bars (all of them, the window's and the history before it) and its
    result over the window, without a report: what ``qcompile parity`` compares the runner with."""
    bars, spec, _, _ = _inputs(params, root)
    start, end = _window(params["backtest"])
    _, result = _run(bars, spec.function, params["signal"]["params"], _settings(params), start, end)
    return bars, result


def _metrics(result: Result, ppy: float) -> Metrics:
    return compute(
        result.equity["equity"].to_list(),
        [t.pnl for t in result.trades],
        result.equity["gross_exposure"].to_list(),
        ppy,
    )


def _settings(params: dict[str, Any]) -> Settings:
    backtest, costs = params["backtest"], params["costs"]
    sizing = backtest.get("sizing") or {}
    return Settings(
        initial_capital=float(backtest["initial_capital"]),
        costs=Costs.from_config(costs),
        execution=backtest.get("execution", "next_open"),
        sizing=sizing.get("method", "equal_weight"),
        fraction=sizing.get("fraction"),
        fractional_shares=bool(sizing.get("fractional_shares", False)),
    )


def _grid(
    bars: pl.DataFrame,
    spec: SignalSpec,
    combos: list[dict[str, Any]],
    settings: Settings,
    window: tuple[int, int],
    ppy: float,
) -> GridResult:
    """Every combination's metrics and equity curve in one batched pass (see grid.py)."""
    if not combos:
        empty = pl.DataFrame(schema={c: pl.Float64 for c in GRID_COLUMNS})
        return GridResult(empty, np.empty(0, dtype=np.int64), np.empty((0, 0)))
    return run_grid(bars, window, combos, spec.function, spec.grid, settings, ppy)


def _walk_forward(
    bars: pl.DataFrame,
    spec: SignalSpec,
    params: dict[str, Any],
    settings: Settings,
    start: int,
    end: int,
    folds: int,
    ppy: float,
) -> tuple[dict[str, Any], list[tuple[list[int], list[float]]]]:
    """Anchored walk-forward: fold i picks the best-Sharpe parameters on segments [0, i) and trades
    segment i with them. Out-of-sample returns compound across folds. Also returns each fold's
    timestamps and growth of 1 (the report's chart)."""
    # segment edges on day boundaries, so that no calendar day is both trained on and tested
    edges = [start + (end - start) * k // (folds + 1) // DAY_MS * DAY_MS for k in range(folds + 2)]
    chosen = params["signal"]["params"]
    ranges = params["signal"].get("ranges") or {}
    grid = robustness.tested_grid(ranges, chosen, spec.invalid)[0] or [chosen]
    results, growth, curves = [], 1.0, []
    for fold in range(1, folds + 1):
        train_end, test_start, test_end = edges[fold] - 1, edges[fold], edges[fold + 1] - 1
        if fold == folds:
            test_end = end
        sharpes = _grid(bars, spec, grid, settings, (start, train_end), ppy).metrics["sharpe"]
        scores = [float("-inf") if v is None else v for v in sharpes.to_list()]
        best = grid[scores.index(max(scores))]  # ties keep the first: a deterministic choice
        traded = _run(bars, spec.function, best, settings, test_start, test_end)[1]
        tested = _metrics(traded, ppy)
        growth *= 1.0 + tested.total_return
        curve = traded.equity["equity"].to_numpy()
        curves.append((traded.equity["timestamp"].to_list(), (curve / curve[0]).tolist()))
        results.append(
            {
                "train": [_date(start), _date(train_end)],
                "test": [_date(test_start), _date(test_end)],
                "params": best,
                "total_return": tested.total_return,
                "sharpe": tested.sharpe,
                "trades": tested.trade_count,
            }
        )
    return {"folds": results, "out_of_sample_return": growth - 1.0}, curves


def backtest(
    params_file: Path,
    root: Path,
    output_dir: Path | None = None,
    html_report: bool = True,
    origin: str | None = None,
    overrides: tuple[str, ...] = (),
    baseline: tuple[str, dict[str, Any], dict[str, Any]] | None = None,
) -> Report:
    """Run the pinned backtest of one strategy and write its report and evidence to
    ``output_dir`` (default: <reports_dir>/<id>/<version>/, where the gates look). report.html
    compares the run with ``baseline`` (label, evidence, params: the committed report) if given."""
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    strategy, backtest_settings, source = params["strategy"], params["backtest"], params["data"]
    compile_beside()  # a first run: the grid's kernels compile on the other core meanwhile
    bars, spec, data_sha, loaded = _inputs(params, root)
    signal_function = spec.function
    start, end = _window(backtest_settings)
    settings = _settings(params)
    chosen = params["signal"]["params"]
    ppy = periods_per_year(source["interval"])
    full, result = _run(bars, signal_function, chosen, settings, start, end)
    metrics = _metrics(result, ppy)

    oos = backtest_settings.get("out_of_sample")
    in_sample = out_of_sample = None
    if oos:
        oos_start, oos_end = _ms(oos["start_date"]), _ms(oos["end_date"], end_of_day=True)
        in_sample = _metrics(
            _run(
                bars, signal_function, chosen, settings, start, oos_start - 1,
                "strategy.backtest.out_of_sample: the in-sample part before it",
            )[1],
            ppy,
        )  # fmt: skip
        out_of_sample = _metrics(
            _run(
                bars, signal_function, chosen, settings, oos_start, oos_end,
                "strategy.backtest.out_of_sample: the period",
            )[1],
            ppy,
        )  # fmt: skip

    traded = result.equity["timestamp"]
    years = (traded.max() - traded.min()) / YEAR_MS if traded.len() else 0.0  # type: ignore[operator]
    sample = minimum_sample(strategy["type"], metrics.trade_count, years)
    needed_trades = sample["required_trades"]

    seed = int(backtest_settings.get("seed", 0))
    walk = backtest_settings.get("walk_forward")
    window_bars = bars.filter(pl.col("timestamp").is_between(start, end))
    # what needs no grid first: on a first run the grid's kernels are compiling beside
    monte_carlo, fan = robustness.resample(bar_returns(result.equity["equity"].to_list()), seed)
    look_ahead = robustness.look_ahead(
        lambda b: signal_function(b, **chosen),
        bars.filter(pl.col("timestamp") <= end),
        full,
        start,
        seed,
    )
    benchmark, benchmark_equity = _benchmark(params, loaded, result, settings, (start, end), ppy)
    combos, skipped = robustness.tested_grid(
        params["signal"].get("ranges") or {}, chosen, spec.invalid
    )
    tested = _grid(bars, spec, combos, settings, (start, end), ppy)
    grid = [
        {"params": combo, "total_return": row[0], "sharpe": row[1], "trades": row[2]}
        for combo, row in zip(
            combos,
            tested.metrics.select("total_return", "sharpe", "trade_count").rows(),
            strict=True,
        )
    ]
    checks = {
        "parameter_sensitivity": {"grid": grid, "combinations": len(grid), "skipped": skipped},
        "monte_carlo": monte_carlo,
        "look_ahead_bias": look_ahead,
        "survivorship_bias": robustness.survivorship(
            window_bars, end, params["universe"]["survivorship"], params["universe"]["as_of"]
        ),
    }
    if len(grid) >= 2:  # the deflated Sharpe and PBO need several trials
        eligible = tested.metrics["trade_count"].to_numpy() >= needed_trades
        statistics = summarise(tested.equity, eligible)
        statistics["chosen_params"] = grid[int(statistics.pop("chosen"))]["params"]
        checks["overfitting"] = statistics
    walk_curves: list[tuple[list[int], list[float]]] = []
    if walk:
        checks["walk_forward"], walk_curves = _walk_forward(
            bars, spec, params, settings, start, end, int(walk["folds"]), ppy
        )
    critical = []
    if not checks["look_ahead_bias"]["passed"]:
        bar = checks["look_ahead_bias"]["first_offending_bar"]
        critical.append(
            f"look-ahead: {bar['symbol']} at {_date(bar['timestamp'])} changes when later data is removed"
        )

    evidence = {
        "strategy_id": strategy["id"],
        "strategy_version": strategy["version"],
        "qcompile_version": __version__,
        "seed": seed,
        "inputs": {**params["evidence_inputs"], "data_sha256": data_sha},
        "conventions": {
            "execution": settings.execution,
            "sizing": settings.sizing,
            "fractional_shares": settings.fractional_shares,
            "periods_per_year": ppy,
        },
        "metrics": metrics.as_dict(),
        "benchmark": benchmark,
        "daily": daily_statistics(
            [_date(ms) for ms in result.equity["timestamp"].to_list()],
            result.equity["equity"].to_list(),
        ),
        "in_sample": in_sample.as_dict() if in_sample else None,
        "out_of_sample": out_of_sample.as_dict() if out_of_sample else None,
        "minimum_sample": sample,
        "robustness": checks,
        "critical_failures": critical,
        "eligible_for_production": sample["met"] and not critical,
    }
    target = output_dir or root / report_directory(params)
    target.mkdir(parents=True, exist_ok=True)
    evidence_path = target / "evidence.json"
    _write(evidence_path, json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    from qcompile.research.backtest.report import markdown

    report_path = target / "report.md"
    text = markdown(params, evidence, result, bars, FORMULAS, _date, origin, overrides)
    _write(report_path, text)
    if html_report:
        from qcompile.research.backtest.tearsheet import Series, page

        series = Series(window_bars, benchmark_equity, fan, walk_curves, baseline)
        again = f"qcompile backtest {strategy['id']}{''.join(' ' + o for o in overrides)}"
        where = origin or f"generated/{strategy['id']}/params.yaml"
        told = f"Generated by qcompile {__version__} from {where}; re-run: {again}."
        _write(target / "report.html", page(params, evidence, result, series, text, _date, told))
    return Report(target, report_path, evidence_path, metrics, evidence["eligible_for_production"])


def report_directory(params: dict[str, Any]) -> str:
    """Where a strategy's pinned report lives, relative to the project: <reports_dir>/<id>/<version>
    (where the gates look for its evidence)."""
    backtest, strategy = params["backtest"], params["strategy"]
    return f"{backtest['reports_dir']}/{strategy['id']}/{strategy['version']}"


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(params_file: Path, root: Path) -> int:
    """Entry point of the generated harness: run, print where the report is, exit 0 or 2."""
    try:
        report = backtest(params_file, root)
    except QcompileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(report, root))
    return 0


def summary(report: Report, root: Path) -> str:
    m = report.metrics
    where = report.directory.resolve().relative_to(root.resolve()).as_posix()
    sharpe = "n/a" if m.sharpe is None else f"{m.sharpe:.2f}"
    return (
        f"wrote {where}/report.md, report.html and evidence.json: total return {m.total_return * 100:.2f} %, "
        f"Sharpe {sharpe}, {m.trade_count} trades, "
        f"{'eligible' if report.eligible else 'not eligible'} for production"
    )


_CHECKED_INPUTS: dict[str, Any] = {}  # per process: the last checked inputs, by what they are


def grid_metrics(params: dict[str, Any], root: Path, combos: list[dict[str, Any]]) -> GridResult:
    """Metrics of the strategy whose runtime parameters are ``params`` under each parameter
    combination, over its backtest window, in one batched pass: what a sweep needs per job,
    nothing written.

    The same checks as ``backtest`` run first (signal source and data against their pins, the data
    contract), so a sweep never reports numbers from inputs the lock does not describe. The checked
    inputs are kept for the next call with the same data, signal and pins (one set at a time: bars
    are large): a group sweep's batches differ in costs or capital, not in data."""
    pins = params["pins"]
    key = json.dumps(
        [
            str(root),
            params["data"],
            params["universe"]["symbols"],
            {k: v for k, v in params["signal"].items() if k not in ("params", "ranges")},
            pins["data"],
            pins["signal"],
        ],
        sort_keys=True,
        default=str,
    )
    if key not in _CHECKED_INPUTS:
        _CHECKED_INPUTS.clear()
        _CHECKED_INPUTS[key] = _inputs(params, root)
    bars, spec, _, _ = _CHECKED_INPUTS[key]
    ppy = periods_per_year(params["data"]["interval"])
    return _grid(bars, spec, combos, _settings(params), _window(params["backtest"]), ppy)


def _window(backtest_settings: dict[str, Any]) -> tuple[int, int]:
    """The backtest window as inclusive epoch milliseconds."""
    return (
        _ms(backtest_settings["start_date"]),
        _ms(backtest_settings["end_date"], end_of_day=True),
    )


def _inputs(
    params: dict[str, Any], root: Path
) -> tuple[pl.DataFrame, SignalSpec, str, pl.DataFrame]:
    """The traded symbols' bars, the signal (with its event calendar bound), the data hash and
    every loaded symbol's bars (the benchmarks' too), after every check against the pins: signal
    source, data content, the data contract, the events."""
    source = params["data"]
    spec = _signal_spec(params, root)
    directory, data_sha = _check_data(params, root)
    timestamp = source["timestamp"]
    loaded = load_bars(
        directory,
        source["local"]["format"],
        loaded_symbols(params["universe"]),
        Convention(timestamp["unit"], timestamp["timezone"], timestamp["stamping"]),
        root,
    )
    traded = params["universe"]["symbols"]
    bars = (
        loaded.filter(pl.col("symbol").is_in(traded))
        if params["universe"].get("benchmarks")
        else loaded
    )
    events = _load_events(params["pins"]["signal"].get("events"), root, bars)
    if events is not None:  # the calendar is data, not a parameter: bound once, never swept
        spec = replace(spec, function=partial(spec.function, events=events), grid=None, arrays=None)
    return bars, spec, data_sha, loaded


def _benchmark(
    params: dict[str, Any],
    loaded: pl.DataFrame,
    result: Result,
    settings: Settings,
    window: tuple[int, int],
    ppy: float,
) -> tuple[dict[str, Any], np.ndarray]:
    """The benchmark's evidence (what it is, its metrics, the strategy's statistics against it)
    and its equity on the strategy's timestamps."""
    choice = params["backtest"].get("benchmark") or EQUAL_WEIGHT
    held = list(params["universe"]["symbols"]) if choice == EQUAL_WEIGHT else [choice]
    stamps = result.equity["timestamp"].to_list()
    in_window = loaded.filter(pl.col("timestamp").is_between(*window))
    equity = buy_and_hold(in_window, held, stamps, settings.initial_capital)
    measured = compute(equity.tolist(), [], [1.0] * len(equity), ppy).as_dict()
    keep = ("total_return", "annualised_return", "sharpe", "sortino", "max_drawdown")
    return {
        "choice": choice,
        "symbols": held,
        "description": describe(choice, held),
        "metrics": {k: measured[k] for k in keep},
        "relative": relative(result.equity["equity"].to_list(), equity.tolist(), ppy),
    }, equity
