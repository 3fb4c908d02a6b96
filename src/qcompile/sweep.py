"""Parameter-sensitivity sweeps: Hydra sweep overrides -> jobs -> batched backtests -> a table.

Consumes a strategy and overrides in Hydra's sweep grammar (``a=1,2``, ``range``, ``choice``,
``glob`` over a config group, group sweeps such as ``costs=retail,zero``); produces one row of
metrics per job under ``reports/<id>/sweeps/<name>/`` (``results.parquet``, ``results.csv``,
``summary.md``), byte-identical when run again.

Jobs are expanded by Hydra's own override parser and sweeper logic, so the grammar is exactly
Hydra's. They are then grouped by everything that is not a signal parameter: each group compiles
once (one compose for its group selections) and all of its signal-parameter combinations run as
one batched grid inside the engine. A group that fails (a config error, missing data) records its
error on its jobs and the sweep goes on.

Like ``workflows``, this module joins the compiler and the runtime; neither imports the other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qcompile.errors import DiagnosticsError, QcompileError
from qcompile.hashing import sha256_json
from qcompile.project import Project

SIGNAL_PARAM = "strategy.signal.params."
METRICS = ("total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "trade_count")


@dataclass(frozen=True)
class Job:
    """One point of the sweep: its overrides, split into what batches and what does not."""

    number: int
    overrides: tuple[str, ...]
    signal_params: dict[str, Any]  # strategy.signal.params.<name> -> value
    context: tuple[str, ...]  # every other override: needs its own compose

    @property
    def label(self) -> str:
        return " ".join(self.overrides)


@dataclass
class SweepResult:
    directory: Path
    rows: list[dict[str, Any]]
    failures: int
    swept_keys: list[str]
    batches: int = 0
    skipped: int = 0
    statistics: dict[str, Any] = field(default_factory=dict)


def _parser(project: Project) -> Any:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    search_path = create_config_search_path(str(project.conf_dir.resolve()))
    return OverridesParser.create(config_loader=ConfigLoaderImpl(config_search_path=search_path))


def expand(project: Project, overrides: list[str]) -> tuple[list[Job], list[str]]:
    """Every job of the sweep, in Hydra's expansion order (the cartesian product), and the keys
    that take more than one value, in the order given."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    parser = _parser(project)
    try:
        parsed = parser.parse_overrides(overrides)
        combinations = BasicSweeper.split_arguments(parsed, None)[0]
        keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    except HydraException as error:
        raise QcompileError(f"sweep overrides: {str(error).splitlines()[0]}") from None
    jobs = []
    for number, job in enumerate(combinations):
        params, context = {}, []
        for text in job:
            override = parser.parse_override(text)
            key = override.get_key_element()
            if (
                key.startswith(SIGNAL_PARAM)
                and not override.is_add()
                and "." not in key[len(SIGNAL_PARAM) :]
            ):
                params[key[len(SIGNAL_PARAM) :]] = override.value()
            else:
                context.append(text)
        jobs.append(Job(number, tuple(job), params, tuple(context)))
    return jobs, keys


def batches(jobs: list[Job]) -> dict[tuple[str, ...], list[Job]]:
    """Jobs grouped by their non-batchable overrides, first appearance first."""
    grouped: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        grouped.setdefault(job.context, []).append(job)
    return grouped


def sweep_name(strategy: str, overrides: list[str]) -> str:
    return sha256_json({"strategy": strategy, "overrides": overrides})[:12]


def run(
    project: Project,
    strategy: str,
    overrides: list[str],
    name: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    launcher: str = "local",
) -> SweepResult:
    """Run every job; ``progress(done, total)`` is called as batches finish. ``launcher``:
    ``local`` runs batches in a process pool over all cores, ``serial`` in this process."""
    from qcompile.build import compile_project
    from qcompile.plan import runtime_parameters

    jobs, keys = expand(project, overrides)
    base = compile_project(project, [], [strategy]).strategies
    if not base:
        raise QcompileError(f"no strategy {strategy!r}")
    (compiled,) = base
    params = runtime_parameters(compiled)
    directory = (
        project.root
        / params["backtest"]["reports_dir"]
        / compiled.id
        / "sweeps"
        / (name or sweep_name(strategy, overrides))
    )
    done = _finished(directory) if resume else {}
    stored = _stored_curves(directory, done) if resume else {}
    rows: dict[int, dict[str, Any]] = {}
    curves: dict[int, Curve] = {}
    grouped = batches(jobs)
    work: list[tuple[tuple[str, ...], list[Job]]] = []
    for context, members in grouped.items():
        for job in members:
            if job.label in done:
                rows[job.number] = {**done[job.label], "job": job.number}
                if job.label in stored:
                    curves[job.number] = stored[job.label]
        pending = [job for job in members if job.label not in done]
        if pending:
            work.append((context, pending))
    finished = len(rows)
    if progress:
        progress(finished, len(jobs))
    for results in _execute(project, strategy, work, launcher, params):
        for job, metrics, curve, error in results:
            rows[job.number] = _row(job, keys, metrics, error)
            if curve is not None:
                curves[job.number] = curve
        finished += len(results)
        if progress:
            progress(finished, len(jobs))
    ordered = [rows[number] for number in sorted(rows)]
    result = SweepResult(
        directory,
        ordered,
        failures=sum(1 for row in ordered if row["error"]),
        swept_keys=keys,
        batches=len(grouped),
        skipped=len(done),
    )
    result.statistics = _statistics(result, curves, params)
    from qcompile.sweepreport import plateau

    chosen = result.statistics.get("chosen_job")
    if chosen is not None:
        result.statistics["plateau"] = plateau(result.rows, keys, chosen)
    _write(result, compiled.id, params, overrides, curves)
    return result


Curve = tuple[Any, Any]  # (timestamps, equity) of one job
# per job: its metrics and equity curve, or None for both and the error that stopped it
BatchResults = list[tuple[Job, dict[str, Any] | None, Curve | None, str]]


def _execute(
    project: Project,
    strategy: str,
    work: list[tuple[tuple[str, ...], list[Job]]],
    launcher: str,
    params: dict[str, Any],
) -> Iterator[BatchResults]:
    """Each batch's results, as batches finish. The pool is used only when there is more than
    one batch: a batch of signal parameters is already one parallel grid in the engine."""
    workers = min(os.cpu_count() or 1, len(work))
    if launcher == "serial" or workers < 2:
        for context, jobs in work:
            yield list(_run_batch(project, strategy, context, jobs, params))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: polars keeps a thread pool, and a forked child of a threaded parent can
    # deadlock on a lock some thread held at the fork. Each worker imports once and is reused.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_one_thread_per_worker,
    ) as pool:
        futures = [
            pool.submit(_batch_in_worker, project, strategy, context, jobs)
            for context, jobs in work
        ]
        for future in as_completed(futures):
            yield future.result()


def _one_thread_per_worker() -> None:
    """The pool already uses every core; the engine's own threads would only contend."""
    import numba

    numba.set_num_threads(1)


def _batch_in_worker(
    project: Project, strategy: str, context: tuple[str, ...], jobs: list[Job]
) -> BatchResults:
    return list(_run_batch(project, strategy, context, jobs))


def _run_batch(
    project: Project,
    strategy: str,
    context: tuple[str, ...],
    jobs: list[Job],
    compiled_params: dict[str, Any] | None = None,
) -> Iterator[tuple[Job, dict[str, Any] | None, Curve | None, str]]:
    """Compile once with the batch's overrides (or take ``compiled_params``, the strategy as
    configured, for a batch without any), then every job's signal parameters at once."""
    from qcompile.backtest.runner import grid_metrics
    from qcompile.build import compile_project
    from qcompile.plan import runtime_parameters

    try:
        if compiled_params is None or context:
            (compiled,) = compile_project(project, list(context), [strategy]).strategies
            params = runtime_parameters(compiled)
        else:
            params = compiled_params
        chosen = params["signal"]["params"]
        combos = [{**chosen, **job.signal_params} for job in jobs]
        with tempfile.TemporaryDirectory() as scratch:
            params_file = Path(scratch) / "params.yaml"
            params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
            tested = grid_metrics(params_file, project.root, combos)
    except DiagnosticsError as error:
        first = error.diagnostics[0]
        message = f"{first.key}: {first.message}" + (
            f" (+{len(error.diagnostics) - 1} more)" if len(error.diagnostics) > 1 else ""
        )
        yield from ((job, None, None, message) for job in jobs)
        return
    except (QcompileError, TypeError, ValueError) as error:  # a bad combination, missing data
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        yield from ((job, None, None, message) for job in jobs)
        return
    rows = tested.metrics.to_dicts()
    for number, job in enumerate(jobs):
        yield job, rows[number], (tested.clock, tested.equity[number]), ""


def _row(job: Job, keys: list[str], metrics: dict[str, Any] | None, error: str) -> dict[str, Any]:
    values = dict(text.split("=", 1) for text in job.overrides)
    row: dict[str, Any] = {"job": job.number, "overrides": job.label}
    for key in keys:
        row[key] = values.get(key, values.get(f"+{key}", ""))
    for metric in METRICS:
        row[metric] = (metrics or {}).get(metric)
    row["error"] = error or None  # null when the job ran
    return row


def _finished(directory: Path) -> dict[str, dict[str, Any]]:
    """Rows of a previous run of this sweep that completed without error, by their overrides."""
    table = directory / "results.parquet"
    if not table.is_file():
        return {}
    import polars as pl

    return {
        row["overrides"]: row for row in pl.read_parquet(table).to_dicts() if not row.get("error")
    }


def _stored_curves(directory: Path, done: dict[str, dict[str, Any]]) -> dict[str, Curve]:
    """Equity curves a previous run kept for its reusable jobs, by their overrides."""
    table = directory / "curves.parquet"
    if not table.is_file():
        return {}
    import polars as pl

    frame = pl.read_parquet(table)
    clock = frame["timestamp"].to_numpy()
    return {
        label: (clock, frame[str(row["job"])].to_numpy())
        for label, row in done.items()
        if str(row["job"]) in frame.columns
    }


def _statistics(
    result: SweepResult, curves: dict[int, Curve], params: dict[str, Any]
) -> dict[str, Any]:
    """Deflated Sharpe of the best eligible job and PBO over every job that ran, when the jobs
    share one clock (a sweep over universes or windows does not)."""
    import numpy as np

    from qcompile.backtest.overfitting import summarise
    from qcompile.backtest.runner import MINIMUM_SAMPLE

    ran = sorted(curves)
    succeeded = sum(1 for row in result.rows if not row["error"])
    if len(ran) < succeeded:  # resumed jobs whose curves the previous run did not keep
        return {"computed": False, "reason": f"{succeeded - len(ran)} job(s) have no equity curve"}
    if len(ran) < 2:
        return {"computed": False, "reason": "fewer than two jobs ran"}
    clock = curves[ran[0]][0]
    if any(not np.array_equal(curves[n][0], clock) for n in ran):
        return {"computed": False, "reason": "the jobs cover different bars"}
    equity = np.array([curves[n][1] for n in ran])
    minimum = MINIMUM_SAMPLE[params["strategy"]["type"]][0]
    by_job = {row["job"]: row for row in result.rows}
    eligible = np.array([(by_job[n]["trade_count"] or 0) >= minimum for n in ran])
    statistics = summarise(equity, eligible)
    statistics["chosen_job"] = ran[int(statistics.pop("chosen"))]
    return statistics


def _write(
    result: SweepResult,
    strategy_id: str,
    params: dict[str, Any],
    overrides: list[str],
    curves: dict[int, Curve],
) -> None:
    import json

    import polars as pl

    result.directory.mkdir(parents=True, exist_ok=True)
    if result.statistics.get("computed"):
        ran = sorted(curves)
        columns = {"timestamp": curves[ran[0]][0]}
        columns.update({str(n): curves[n][1] for n in ran})
        pl.DataFrame(columns).write_parquet(result.directory / "curves.parquet", statistics=False)
    (result.directory / "statistics.json").write_text(
        json.dumps(result.statistics, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    schema = {"job": pl.Int64, "overrides": pl.String}
    schema.update({key: pl.String for key in result.swept_keys})
    schema.update({metric: pl.Float64 for metric in METRICS})
    schema["trade_count"] = pl.Int64
    schema["error"] = pl.String
    frame = pl.DataFrame(result.rows, schema=schema, orient="row")
    frame.write_parquet(result.directory / "results.parquet", statistics=False)
    frame.write_csv(result.directory / "results.csv")
    from qcompile.sweepreport import summary_html, summary_markdown

    text = summary_markdown(strategy_id, params, overrides, result, frame)
    (result.directory / "summary.md").write_text(text, encoding="utf-8")
    title = f"Sweep: {params['strategy']['name']} ({strategy_id})"
    page = summary_html(title, result.swept_keys, frame, text)
    (result.directory / "summary.html").write_text(page, encoding="utf-8")
