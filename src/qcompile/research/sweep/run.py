"""Parameter-sensitivity sweeps: Hydra sweep overrides -> jobs -> batched backtests -> a table.

Consumes a strategy and overrides in Hydra's sweep grammar (``a=1,2``, ``range``, ``choice``,
``glob`` over a config group, group sweeps such as ``costs=retail,zero``); produces one row of
metrics per job under ``reports/<id>/sweeps/<name>/`` (``results.parquet``, ``results.csv``,
``summary.md``), byte-identical when run again.

Jobs are expanded by Hydra's own override parser and sweeper logic, so the grammar is exactly
Hydra's. They are then grouped into batches by everything that is not a signal parameter; all of
a batch's signal-parameter combinations run as one batched grid inside the engine. Each distinct
group selection (``costs=zero``) compiles once, in this process; a batch's other overrides are
leaf values (``strategy.backtest.initial_capital=...``) applied to that compiled strategy and
checked by the compiler's own schema and cross-field rules, without composing again. Overrides
that could change a pin or an interpolation compile the batch on its own. A batch that fails (a
config error, missing data) records its error on its jobs and the sweep goes on.

Batches run in a process pool started before the sweep is expanded (``local``), in this process
(``serial``), or through a Hydra launcher plugin (``submitit_local``, ``joblib``, a project's
``conf/hydra/launcher/slurm.yaml``...: see ``launch``); all of them run ``batches.run_batches``.

Like ``workflows``, this is a research command: it compiles the strategy (the compiler) and runs
the backtest engine; the engine itself never imports the compiler.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcompile.errors import QcompileError
from qcompile.hashing import sha256_json
from qcompile.project import CONFIG_GROUPS, Project
from qcompile.research.sweep.batches import (
    Batch,
    Curve,
    Job,
    Pool,
    compile_batch,
    interpolates,
    run_batches,
)

SIGNAL_PARAM = "strategy.signal.params."
METRICS = ("total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "trade_count")
# Leaf keys applied to a compiled strategy without composing again: the runtime parameters take
# them as they are, and no pin the engine checks depends on them (plan.runtime_parameters,
# lock.lock_strategy). Any other override compiles its batch on its own.
PATCHABLE = ("strategy.backtest.", "strategy.rules.", "costs.")
BUILTIN_LAUNCHERS = ("local", "serial")


@dataclass
class SweepResult:
    directory: Path
    rows: list[dict[str, Any]]
    failures: int
    swept_keys: list[str]
    batches: int = 0
    skipped: int = 0
    statistics: dict[str, Any] = field(default_factory=dict)
    minimum_trades: int = 0  # a job needs this many trades to be named best
    minimum_from: str = ""  # where that number comes from: the strategy type or --min-trades
    base: str = ""  # the configuration the overrides were applied to, for the summary


def _parser(project: Project) -> Any:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    search_path = create_config_search_path(str(project.conf_dir.resolve()))
    return OverridesParser.create(config_loader=ConfigLoaderImpl(config_search_path=search_path))


def launcher_settings(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(sweep overrides, ``hydra.*`` / ``hydra/*`` overrides): the latter configure a launcher."""
    hydra = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return [o for o in overrides if o not in hydra], hydra


def expand(project: Project, overrides: list[str]) -> tuple[list[Job], list[str]]:
    """Every job of the sweep, in Hydra's expansion order (the cartesian product, as its basic
    sweeper makes it), and the keys that take more than one value, in the order given.
    ``hydra.*`` overrides are not jobs. Each override is parsed once, not once per job."""
    from hydra.errors import HydraException

    from qcompile.compiler.compose import override_kind

    overrides = launcher_settings(overrides)[0]
    try:
        parsed = _parser(project).parse_overrides(overrides)
        keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
        choices: dict[str, list[tuple[str, Any, Any]]] = {}  # key -> (text, value, parsed)
        for override in parsed:
            choices[override.get_key_element()] = [
                (text, value, override) for text, value in _enumerate(override)
            ]
    except HydraException as error:
        raise QcompileError(f"sweep overrides: {str(error).splitlines()[0]}") from None
    jobs = []
    for number, combination in enumerate(itertools.product(*choices.values())):
        params, context, parts = {}, [], []
        for text, value, override in combination:
            key = override.get_key_element()
            if (
                key.startswith(SIGNAL_PARAM)
                and not override.is_add()
                and "." not in key[len(SIGNAL_PARAM) :]
            ):
                params[key[len(SIGNAL_PARAM) :]] = value
            else:
                context.append(text)
                parts.append((key, override_kind(override), value))
        texts = tuple(text for text, _, _ in combination)
        jobs.append(Job(number, texts, params, tuple(context), tuple(parts)))
    return jobs, keys


def _enumerate(override: Any) -> list[tuple[str, Any]]:
    """(``key=value`` text, Python value) of each value ``override`` takes: the texts Hydra's
    basic sweeper writes (``BasicSweeper.split_arguments``), the values its parser gives."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.types import Override, ValueType
    from hydra.errors import HydraException

    key = override.get_key_element()
    if not override.is_sweep_override():
        return [(f"{key}={override.get_value_element_as_str()}", override.value())]
    if not override.is_discrete_sweep():
        raise HydraException(
            f"{BasicSweeper.__name__} does not support sweep type : {override.value_type.name}"
        )
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:  # option names, as they are
        return [(f"{key}={name}", name) for name in override.sweep_iterator()]
    return [  # enumerated once: a shuffled sweep is shuffled once
        (f"{key}={Override._get_value_element_as_str(item)}", Override._convert_value(item))
        for item in override.sweep_iterator()
    ]


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
    tasks: int | None = None,
    min_trades: int | None = None,
) -> SweepResult:
    """Run every job; ``progress(done, total)`` is called as batches finish. ``launcher``:
    ``local`` runs batches in a process pool over all cores, ``serial`` in this process, any
    other name is an option of Hydra's ``hydra/launcher`` group (``tasks``: at most this many
    launcher jobs, default one per batch). ``min_trades``: the trades a job needs to be ranked
    (default: the strategy type's minimum sample)."""
    overrides, hydra_overrides = launcher_settings(overrides)
    if launcher not in BUILTIN_LAUNCHERS:
        from qcompile.research.sweep.launch import check_launcher

        check_launcher(project, launcher)  # a missing extra fails before any work
    elif hydra_overrides:
        raise QcompileError(
            f"{hydra_overrides[0]}: hydra.* overrides configure a Hydra launcher; "
            f"--launcher {launcher} takes none"
        )
    elif tasks is not None:
        raise QcompileError(
            f"--tasks counts a Hydra launcher's jobs; --launcher {launcher} has none"
        )
    pool = Pool() if launcher == "local" else None  # its workers import while this composes
    try:
        return _run(
            project, strategy, overrides, name, resume, progress, launcher, pool, tasks,
            hydra_overrides, min_trades,
        )  # fmt: skip
    finally:
        if pool is not None:
            pool.close()


def _run(
    project: Project,
    strategy: str,
    overrides: list[str],
    name: str | None,
    resume: bool,
    progress: Callable[[int, int], None] | None,
    launcher: str,
    pool: Pool | None,
    tasks: int | None,
    hydra_overrides: list[str],
    min_trades: int | None = None,
) -> SweepResult:
    jobs, keys = expand(project, overrides)
    params, compiled = built_base(project, strategy, jobs)
    strategy_id = str(params["strategy"]["id"])
    base_text = f"generated/{strategy_id}/params.yaml, as built"
    directory = (
        project.root
        / params["backtest"]["reports_dir"]
        / strategy_id
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
    if pool is not None and len(work) > 1:
        pool.start_all()  # the other workers import while this process compiles
    work = _by_selection(project, compiled, work)
    prepared = _prepare(project, strategy, compiled, params, work)
    if pool is not None:
        results = pool.run(project, strategy, prepared, [len(jobs) for _, jobs in work])
    elif launcher == "serial":
        results = (run_batches(project, strategy, [batch]) for batch in prepared)
    else:
        from qcompile.research.sweep.launch import launch

        results = launch(
            project, strategy, list(prepared), directory, launcher, hydra_overrides, tasks
        )
    for outcome in results:
        for job, metrics, curve, failure in outcome:
            rows[job.number] = _row(job, keys, metrics, failure)
            if curve is not None:
                curves[job.number] = curve
        finished += len(outcome)
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
        base=base_text,
    )
    rule = pool.warming[0].result() if pool is not None else None
    return _report(result, strategy_id, params, overrides, curves, rule, min_trades)


def _report(
    result: SweepResult,
    strategy_id: str,
    params: dict[str, Any],
    overrides: list[str],
    curves: dict[int, Curve],
    minimum_sample: dict[str, Any] | None = None,
    min_trades: int | None = None,
) -> SweepResult:
    """The statistics, the plateau reading and every file of the sweep's folder.
    ``minimum_sample``: the engine's minimum-sample rule, when it is at hand without importing
    the engine here."""
    from qcompile.research.sweep.summary import plateau

    if minimum_sample is None:
        from qcompile.research.backtest.runner import MINIMUM_SAMPLE as minimum_sample

    default = minimum_sample[params["strategy"]["type"]][0]
    result.minimum_trades = default if min_trades is None else min_trades
    result.minimum_from = (
        f"the {params['strategy']['type']} minimum sample" if min_trades is None else "--min-trades"
    )
    result.statistics = _statistics(result, curves)
    chosen = result.statistics.get("chosen_job")
    if chosen is not None:
        result.statistics["plateau"] = plateau(result.rows, result.swept_keys, chosen)
    _write(result, strategy_id, params, overrides, curves)
    return result


def built_base(project: Project, strategy: str, jobs: list[Job]) -> tuple[dict[str, Any], Any]:
    """(runtime parameters, the compiled strategy or None): what the sweep's overrides apply to,
    the strategy as built in generated/<id>/params.yaml. A sweep runs what was built, as a
    backtest does: when generated/ is stale for the strategy, or it was never built, this
    raises the backtest's QcompileError (``built_params_file``) before any job runs. The
    compiled strategy is at hand when checking took a compile (group sweeps need it)."""
    from qcompile.compiler.build import built_params_file

    params = None if any(job.context for job in jobs) else _built_params(project, strategy)
    if params is not None:  # the build's own no-change test passed: current by construction
        return params, None
    from qcompile.compiler.build import compile_project
    from qcompile.compiler.plan import runtime_parameters

    # its problems are the command's (printed in full, exit 2)
    base = compile_project(
        project, [], [strategy], enforce_gates=False, untested_values=True
    ).strategies
    if not base:
        raise QcompileError(f"no strategy {strategy!r}")
    (compiled,) = base
    params = runtime_parameters(compiled)
    built_params_file(project, compiled.id, params)
    return params, compiled


def _built_params(project: Project, strategy: str) -> dict[str, Any] | None:
    """The runtime parameters ``qcompile build`` wrote to generated/<id>/params.yaml, when
    generated/ is what conf/ compiles to now (the build's own no-change test: the digest of
    every input, and the file as the manifest recorded it); None otherwise. A sweep of signal
    parameters alone then needs no compile."""
    import yaml

    from qcompile.compiler.build import entry_named, inputs_digest, read_manifest
    from qcompile.hashing import sha256_file

    manifest = read_manifest(project)
    built = manifest.get("strategies") or {}
    ident, entry = next(
        ((i, e) for i, e in sorted(built.items()) if entry_named(i, e, [strategy])), (None, None)
    )
    if not isinstance(entry, dict) or manifest.get("overrides"):
        return None
    path = project.generated_dir / str(ident) / "params.yaml"
    recorded = (entry.get("outputs") or {}).get(f"{ident}/params.yaml")
    if not recorded or not path.is_file() or sha256_file(path) != recorded:
        return None
    digest = inputs_digest(project, [], None)
    if digest is None or digest != manifest.get("inputs_sha256"):
        return None
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    return params if isinstance(params, dict) else None


# --- preparing batches: one compile per group selection, leaf values applied after ---------


def _prepare(
    project: Project,
    strategy: str,
    base: Any,
    base_params: dict[str, Any],
    work: list[tuple[tuple[str, ...], list[Job]]],
) -> Iterator[Batch]:
    """Each batch of ``work`` (in ``_by_selection`` order) with its runtime parameters, or the
    compiled strategy and leaf values to apply where it runs (the rest compile there), or the
    error that stops its jobs; in order, as they are ready."""
    groups = _groups(project)
    compiled: dict[tuple[str, ...], tuple[Any | None, str]] = {(): (base, "")}
    configured = _configured(base)
    interpolating: dict[int, bool] = {}
    for context, jobs in work:
        if not context:
            yield Batch(context, jobs, base_params)
            continue
        split = _selection(context, jobs, groups, configured)
        if split is None:
            yield Batch(context, jobs)
            continue
        selection, leaves = split
        if selection not in compiled:  # the batches before it are running meanwhile
            compiled[selection] = compile_batch(project, strategy, list(selection))
        found, error = compiled[selection]
        if found is None:
            yield Batch(context, jobs, error=error)
            continue
        if id(found) not in interpolating:
            interpolating[id(found)] = interpolates(found.composed.data)
        if leaves and interpolating[id(found)]:  # a changed value might be read elsewhere
            yield Batch(context, jobs)
            continue
        yield Batch(context, jobs, compiled=found, leaves=leaves)


def _groups(project: Project) -> set[str]:
    return {*CONFIG_GROUPS, *(p.name for p in project.conf_dir.iterdir() if p.is_dir())}


def _configured(base: Any) -> set[str]:
    """The strategy's own group selections as overrides (``costs=retail``); none without it."""
    selected = base.composed.selection if base is not None else {}
    return {f"{group}={option}" for group, option in selected.items()}


def _by_selection(
    project: Project, base: Any, work: list[tuple[tuple[str, ...], list[Job]]]
) -> list[tuple[tuple[str, ...], list[Job]]]:
    """``work`` with the batches that need no compile of their own first, then those of each
    group selection together, in order of first appearance: the pool starts on the first while
    this process compiles the next. The order of the table is the jobs' own, whatever this is."""
    groups, configured = _groups(project), _configured(base)
    order: dict[tuple[str, ...], int] = {(): 0}

    def rank(item: tuple[tuple[str, ...], list[Job]]) -> int:
        split = _selection(*item, groups, configured)
        return order.setdefault(() if split is None else split[0], len(order))

    return sorted(work, key=rank)


def _selection(
    context: tuple[str, ...], jobs: list[Job], groups: set[str], configured: set[str]
) -> tuple[tuple[str, ...], list[tuple[str, Any]]] | None:
    """(group selections to compile with, leaf values) of a batch, no selection when the strategy
    selects those options already; None when the batch must be composed on its own."""
    if not context:
        return (), []
    split = _split(context, jobs[0].parsed, groups)
    if split is None:
        return None
    selection, leaves = split
    return (() if set(selection) <= configured else selection), leaves


def _split(
    context: tuple[str, ...], parsed: tuple[tuple[str, str, Any], ...], groups: set[str]
) -> tuple[tuple[str, ...], list[tuple[str, Any]]] | None:
    """(group selections, patchable leaf values) of a batch's overrides, or None when one of them
    must be composed (an addition, a deletion, a key outside PATCHABLE, a mapping value)."""
    if len(parsed) != len(context):
        return None
    selection, leaves = [], []
    for text, (key, kind, value) in zip(context, parsed, strict=True):
        if key.lstrip("+~").split("@")[0] in groups or "/" in key:
            selection.append(text)
        elif key.startswith(PATCHABLE) and kind == "change" and not isinstance(value, dict):
            leaves.append((key, value))
        else:
            return None
    return tuple(selection), leaves


# --- running batches ------------------------------------------------------------------------


# --- the table, the statistics and the report -----------------------------------------------


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


SIGNAL_PARAMETERS = "strategy.signal.params."


def is_signal_parameter(key: str) -> bool:
    """Whether a swept key is one of the signal's parameters (``+`` or ``~`` prefix aside)."""
    return key.lstrip("+~").startswith(SIGNAL_PARAMETERS)


def _statistics(result: SweepResult, curves: dict[int, Curve]) -> dict[str, Any]:
    """Deflated Sharpe of the best eligible job and PBO over every job that ran, when the sweep
    varies signal parameters only and the jobs share one clock (a sweep over universes or
    windows does not)."""
    import numpy as np

    from qcompile.research.backtest.overfitting import summarise

    varied = [key for key in result.swept_keys if not is_signal_parameter(key)]
    if varied:
        return {
            "computed": False,
            "reason": f"the sweep varies {', '.join(varied)}, not only signal parameters; the "
            "deflated Sharpe and PBO ask how much of the best result a search over signals "
            "explains by luck, which says nothing about a choice of costs, capital or data",
        }
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
    by_job = {row["job"]: row for row in result.rows}
    eligible = np.array([(by_job[n]["trade_count"] or 0) >= result.minimum_trades for n in ran])
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
    from qcompile.research.sweep.summary import summary_html, summary_markdown

    text = summary_markdown(strategy_id, params, overrides, result, frame)
    (result.directory / "summary.md").write_text(text, encoding="utf-8")
    title = f"Sweep: {params['strategy']['name']} ({strategy_id})"
    page = summary_html(title, result.swept_keys, frame, text, result.minimum_trades)
    (result.directory / "summary.html").write_text(page, encoding="utf-8")
