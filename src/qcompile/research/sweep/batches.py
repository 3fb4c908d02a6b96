"""Running a sweep's batches: the jobs, the work each runner does, and the local process pool.

Every way of running a sweep (the pool here, this process, a Hydra launcher in ``launch``) calls
``run_batches`` on its share of the batches; a batch compiles where it runs when it was not
prepared (``compile_batch``) or applies leaf values to a compiled strategy (``patched``), then
runs all of its signal-parameter combinations as one engine grid.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from qcompile.errors import DiagnosticsError, QcompileError
from qcompile.project import Project

CHUNKS_PER_WORKER = 4  # pool tasks per worker: fewer round trips, still balanced


@dataclass(frozen=True)
class Job:
    """One point of the sweep: its overrides, split into what batches and what does not."""

    number: int
    overrides: tuple[str, ...]
    signal_params: dict[str, Any]  # strategy.signal.params.<name> -> value
    context: tuple[str, ...]  # every other override: its batch
    parsed: tuple[tuple[str, str, Any], ...] = ()  # context's (key, kind, value), kind as compose

    @property
    def label(self) -> str:
        return " ".join(self.overrides)


@dataclass
class Batch:
    """Jobs that share every override but signal parameters: one engine grid."""

    context: tuple[str, ...]
    jobs: list[Job]
    params: dict[str, Any] | None = None  # runtime parameters; None: compile where it runs
    error: str = ""  # found while preparing: every job records it
    # or: the strategy compiled for the batch's group selections, and leaf values to apply to it
    # where the batch runs (checking them costs more than running a one-job batch)
    compiled: Any = None
    leaves: list[tuple[str, Any]] = field(default_factory=list)


Curve = tuple[Any, Any]  # (timestamps, equity) of one job


# per job: its metrics and equity curve, or None for both and the error that stopped it
BatchResults = list[tuple[Job, dict[str, Any] | None, Curve | None, str]]


def compile_batch(project: Project, strategy: str, overrides: list[str]) -> tuple[Any | None, str]:
    """The strategy compiled with ``overrides``, or None and why not. Gates are not enforced: a
    sweep is an experiment, not evidence, and may vary what the evidence was produced from."""
    from qcompile.compiler.build import compile_project

    try:
        found = compile_project(
            project, overrides, [strategy], enforce_gates=False, untested_values=True
        ).strategies
    except DiagnosticsError as error:
        return None, error_summary(error.errors or error.diagnostics)
    except (QcompileError, TypeError, ValueError) as error:
        return None, first_line(error)
    if not found:
        return None, f"no strategy {strategy!r}"
    return found[0], ""


def error_summary(problems: list[Any]) -> str:
    """A job's error from a batch's diagnostics: the first, and how many more there are."""
    first, more = problems[0], len(problems) - 1
    return f"{first.key}: {first.message}" + (f" (+{more} more)" if more else "")


def first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def patched(compiled: Any, leaves: list[tuple[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """Runtime parameters of ``compiled`` with ``leaves`` set, after the compiler's schema,
    cross-field and secret checks; (None, "") when they must be composed instead (a key that is
    not there: composing says why)."""
    from qcompile.compiler.plan import runtime_parameters
    from qcompile.compiler.validate import (
        cross_field_diagnostics,
        schema_diagnostics,
        secret_problem,
    )

    if not leaves:
        return runtime_parameters(compiled), ""
    data = dict(compiled.data)  # copied along each changed path only: the rest is shared, as is
    for key, value in leaves:
        *path, leaf = key.split(".")
        node = data
        for part in path:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                return None, ""
            node[part] = node = dict(child)
        if leaf not in node or isinstance(node[leaf], dict):
            return None, ""
        problem = secret_problem(key, value)
        if problem:
            return None, f"{key}: {problem}"
        node[leaf] = value
    problems = schema_diagnostics(compiled.composed, data)
    problems += cross_field_diagnostics(compiled.composed, data)
    errors = [d for d in problems if d.severity == "error"]
    if errors:
        return None, error_summary(errors)
    return runtime_parameters(replace(compiled, data=data)), ""


def interpolates(data: Any) -> bool:
    if isinstance(data, dict):
        return any(interpolates(value) for value in data.values())
    if isinstance(data, list):
        return any(interpolates(value) for value in data)
    return isinstance(data, str) and "${" in data and not data.startswith("${oc.env:")


def run_batches(
    project: Project, strategy: str, work: list[Batch], threads: int | None = None
) -> BatchResults:
    """Every job of ``work``: what each runner (the pool, this process, a launcher) calls.
    ``threads``: the engine's threads (None: as configured)."""
    if threads is not None:
        import numba

        numba.set_num_threads(threads)
    results: BatchResults = []
    for batch in work:
        results.extend(_run_batch(project, strategy, batch))
    return results


def _run_batch(project: Project, strategy: str, batch: Batch) -> BatchResults:
    """All of a batch's signal parameters at once, on its runtime parameters (compiled here when
    they were not prepared)."""
    params, error = batch.params, batch.error
    if batch.compiled is not None:
        params, error = patched(batch.compiled, batch.leaves)
    if params is None and not error:  # to be composed: compiling says what is wrong, if anything
        compiled, error = compile_batch(project, strategy, list(batch.context))
        if compiled is not None:
            from qcompile.compiler.plan import runtime_parameters

            params = runtime_parameters(compiled)
    if params is None:
        return [(job, None, None, error) for job in batch.jobs]
    from qcompile.research.backtest.runner import grid_metrics

    chosen = params["signal"]["params"]
    combos = [{**chosen, **job.signal_params} for job in batch.jobs]
    try:
        tested = grid_metrics(params, project.root, combos)
    except (QcompileError, TypeError, ValueError) as failure:  # a bad combination, missing data
        return [(job, None, None, first_line(failure)) for job in batch.jobs]
    rows = tested.metrics.to_dicts()
    return [
        (job, rows[number], (tested.clock, tested.equity[number]), "")
        for number, job in enumerate(batch.jobs)
    ]


def warm_up() -> dict[str, Any]:
    """A pool worker's first task: import the engine and start numba's compiler, which the first
    compiled call in a process pays for (a fifth of a second) whether its code is cached or not:
    here that happens while this process expands and compiles the sweep. The call loads a kernel
    every grid runs, from numba's cache, rather than compiling a throwaway function. Returns the
    engine's minimum-sample rule, which the report needs: importing the engine for it would cost
    more."""
    import numpy as np

    from qcompile.research.backtest.kernel import shared_calendar
    from qcompile.research.backtest.runner import MINIMUM_SAMPLE

    shared_calendar(np.zeros(2, dtype=np.int64), np.array([0, 1, 2], dtype=np.int64))
    return MINIMUM_SAMPLE


def _report_imports() -> None:
    """What the report needs, imported while the workers run the batches."""
    import polars  # noqa: F401

    import qcompile.research.backtest.overfitting
    import qcompile.research.backtest.report
    import qcompile.research.sweep.summary  # noqa: F401


class Pool:
    """A spawn process pool over all cores, started at once so that its first worker imports the
    engine while this process expands and compiles; more workers start only when there is more
    than one batch. Spawn, not fork: polars keeps a thread pool, and a forked child of a threaded
    parent can deadlock on a lock some thread held at the fork."""

    def __init__(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = os.cpu_count() or 1
        self.executor = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
        )
        self.warming = [self.executor.submit(warm_up)]

    def start_all(self) -> None:
        """Start every worker now (each submitted task finding no idle worker starts one)."""
        self.warming += [self.executor.submit(warm_up) for _ in range(self.workers - 1)]

    def run(
        self, project: Project, strategy: str, work: Iterator[Batch], sizes: list[int]
    ) -> Iterator[BatchResults]:
        """Each chunk's results as chunks finish, a chunk submitted as soon as its batches are
        prepared. One batch runs alone with the engine's own threads (its grid is already
        parallel); several run one engine thread per worker, in a few chunks per worker rather
        than one round trip per batch. ``sizes``: the job count of each batch ``work`` yields."""
        import threading
        from concurrent.futures import as_completed

        # the report's imports, on a thread: while the first worker warms up, this process only
        # waits for it (a task submitted before it is idle would start a second worker)
        importing = threading.Thread(target=_report_imports, daemon=True)
        importing.start()
        threads = None if len(sizes) == 1 else 1
        if len(self.warming) == 1:  # a task submitted while no worker is idle starts another
            self.warming[0].exception()
        futures = []
        for length in chunk_lengths(sizes, self.workers * CHUNKS_PER_WORKER):
            chunk = list(itertools.islice(work, length))
            futures.append(self.executor.submit(run_batches, project, strategy, chunk, threads))
        importing.join()
        for future in as_completed(futures):
            yield future.result()

    def close(self) -> None:
        """Stop the workers. Nothing of theirs is pending by now: they are ended rather than
        waited for while their interpreters tear the engine's libraries down (half a second)."""
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()


def chunk_lengths(sizes: list[int], count: int) -> list[int]:
    """How many consecutive batches (of ``sizes`` jobs each) go in each of at most ``count``
    chunks of about equal job counts."""
    count = max(1, min(count, len(sizes)))
    total = max(1, sum(sizes))
    lengths = [0] * count
    seen = 0
    for size in sizes:
        lengths[min(count - 1, seen * count // total)] += 1
        seen += size
    return [length for length in lengths if length]


def chunks(work: list[Batch], count: int) -> list[list[Batch]]:
    """``work`` cut into at most ``count`` consecutive chunks of about equal job counts."""
    cut, start = [], 0
    for length in chunk_lengths([len(batch.jobs) for batch in work], count):
        cut.append(work[start : start + length])
        start += length
    return cut
