"""The ``qcompile`` command line: parses arguments, calls the library, prints results.

No logic lives here. Heavy modules (Hydra, polars, Jinja) are imported inside commands so that
``qcompile --help`` stays fast; a test checks it.

Exit codes: 0 success; 1 ``build --check`` found generated/ stale, or a sweep finished with
failed jobs; 2 the configuration (or the command line) has problems, all of which are printed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from qcompile import __version__
from qcompile.errors import COMMAND_LINE, DiagnosticsError, QcompileError, StaleError
from qcompile.runtime.command import emulator_options as live_emulator_options
from qcompile.runtime.command import run_options as live_run_options

EXIT_STALE = 1
EXIT_CONFIG = 2

_OVERRIDES = click.argument("overrides", nargs=-1, metavar="[OVERRIDES]...")
_STRATEGY = click.option(
    "--strategy",
    "-s",
    "only",
    multiple=True,
    metavar="ID",
    help="Only this strategy (id or file name); repeatable.",
)


def _print_diagnostics(error: DiagnosticsError) -> None:
    for diagnostic in error.diagnostics:
        click.echo(diagnostic.render(), err=True)
    files = {d.file for d in error.errors} - {COMMAND_LINE}
    count = len(error.errors)
    places = [f"{len(files)} file{'s' if len(files) != 1 else ''}"] if files else []
    if any(d.file == COMMAND_LINE for d in error.errors):
        places.append("the command line")
    click.echo(
        f"{count} error{'s' if count != 1 else ''} in {' and '.join(places)}; nothing was written.",
        err=True,
    )


def _handled(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn qcompile's own errors into messages and exit codes, never tracebacks."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DiagnosticsError as error:
            _print_diagnostics(error)
            sys.exit(EXIT_CONFIG)
        except StaleError as error:
            for path in error.paths:
                click.echo(f"stale: {path}", err=True)
            click.echo(f"{len(error.paths)} file(s) out of date; {error.remedy}.", err=True)
            sys.exit(EXIT_STALE)
        except QcompileError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_CONFIG)

    return run


def _params_file(project: Any, strategy: str) -> Any:
    """generated/<id>/params.yaml: what production runs is what was built and committed."""
    params_file = project.root / "generated" / strategy / "params.yaml"
    if not params_file.is_file():
        raise QcompileError(
            f"{params_file.relative_to(project.root)} not found; run `qcompile build` first"
        )
    return params_file


def _console() -> Any:
    """Where tables print: they fit a terminal (columns wrap); output piped to a file or grep
    keeps each row on one line, unless COLUMNS sets a width."""
    import os

    from rich.console import Console

    fits = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(width=None if fits else 200)


def _print_table(
    console: Any, columns: list[str], rows: list[list[Any]], drop_first: list[str]
) -> None:
    """A table that fits ``console``: when it is too narrow for every column whole, the columns
    of ``drop_first`` go, in that order, and a line under the table names them; no cell is cut
    short (long values wrap)."""
    from rich.table import Table
    from rich.text import Text

    def natural(index: int) -> int:  # widest cell plus padding and border
        cells = [columns[index], *(r[index] for r in rows)]
        return max(len(c.plain if isinstance(c, Text) else str(c)) for c in cells) + 3

    keep = list(range(len(columns)))
    dropped = []
    for name in drop_first:
        if sum(natural(i) for i in keep) + 1 <= console.width:
            break
        keep.remove(columns.index(name))
        dropped.append(name)
    table = Table()
    for index in keep:
        table.add_column(columns[index], overflow="fold", no_wrap=index == 0)
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    if dropped:
        console.print(
            f"({', '.join(dropped)} left out to fit {console.width} columns: widen the terminal)"
        )


def _project() -> Any:
    from qcompile.project import find_project

    return find_project()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qcompile")
def main() -> None:
    """Compile strategy configs in conf/ into pinned, reviewable artefacts in generated/."""


@main.command()
@_OVERRIDES
@_STRATEGY
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if generated/ is stale.")
@_handled
def build(overrides: tuple[str, ...], only: tuple[str, ...], check: bool) -> None:
    """Validate conf/, check gates, pin versions and render generated/.

    OVERRIDES follow Hydra's grammar (costs=zero, strategy.signal.params.fast=12, +key=value) and
    apply to every selected strategy.
    """
    from qcompile.compiler.build import build as run_build

    outcome = run_build(_project(), list(overrides), list(only) or None, check=check)
    for warning in outcome.warnings:
        click.echo(warning.render(), err=True)
    report = outcome.report
    if check:
        click.echo(f"generated/ is up to date ({len(outcome.strategies)} strategies).")
        return
    if outcome.up_to_date:
        click.echo(
            f"generated/ is up to date ({len(outcome.strategies)} strategies); nothing to do."
        )
        return
    for label, paths in (
        ("create", report.created),
        ("update", report.updated),
        ("remove", report.removed),
    ):
        for path in paths:
            click.echo(f"{label:>8}  generated/{path}")
    click.echo(
        f"Built {len(outcome.strategies)} strategies: {len(report.created)} created, "
        f"{len(report.updated)} updated, {len(report.removed)} removed, "
        f"{len(report.unchanged)} identical."
    )


@main.command()
@_OVERRIDES
@_STRATEGY
@_handled
def validate(overrides: tuple[str, ...], only: tuple[str, ...]) -> None:
    """Validate conf/ and check gates without writing anything."""
    from qcompile.compiler.build import compile_project

    compilation = compile_project(_project(), list(overrides), list(only) or None)
    for warning in compilation.warnings:
        click.echo(warning.render(), err=True)
    click.echo(f"{len(compilation.strategies)} strategies valid.")


@main.command()
@click.argument("strategy")
@_OVERRIDES
@_handled
def show(strategy: str, overrides: tuple[str, ...]) -> None:
    """Print STRATEGY's composed config; secrets are shown as references, never values."""
    from qcompile.compiler.views import composed_yaml

    click.echo(composed_yaml(_project(), strategy, list(overrides)), nl=False)


@main.command()
@click.argument("strategy")
@_OVERRIDES
@_handled
def backtest(strategy: str, overrides: tuple[str, ...]) -> None:
    """Backtest STRATEGY on its local data and write reports/<id>/<version>/report.md and
    evidence.json (with OVERRIDES: an experiment under .../runs/<hash>/)."""
    from qcompile.research.workflows import backtest as run_backtest

    _, summary = run_backtest(_project(), strategy, list(overrides))
    click.echo(summary)
    _exit_without_teardown()


def _exit_without_teardown() -> None:
    """Exit 0 now. The interpreter's teardown after a backtest takes ~0.5 s (numba's and polars'
    objects finalised one by one) and does nothing the command needs: every file is written,
    renamed into place and closed. In-process callers (tests, notebooks) keep their interpreter."""
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        return
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@main.command()
@click.argument("strategy")
@click.option(
    "--speed",
    type=click.FloatRange(min=1),
    default=2000.0,
    show_default=True,
    help="Pushes per second through the emulator.",
)
@click.option(
    "--kills",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="SIGKILL the runner this many times at seeded moments, restarting it each time.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the kill moments.")
@_handled
def parity(strategy: str, speed: float, kills: int, seed: int) -> None:
    """Replay STRATEGY's backtest window (or its declared recent slice,
    strategy.backtest.parity_from) through the protocol emulator into its production
    runner (a separate process, paper broker, scratch state) and compare every fill and daily
    equity mark with the backtest's; writes reports/<id>/<version>/parity.md and parity.json.
    Exits 1 when they diverge."""
    from qcompile.operations.parity import run_parity

    result = run_parity(
        _project(),
        strategy,
        speed=speed,
        kills=kills,
        seed=seed,
        progress=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"{result.strategy_id} v{result.version}: "
        f"{'parity holds' if result.passed else 'DIVERGED'} over {result.window[0]}..{result.window[1]}: "
        f"{len(result.backtest_legs)} backtest fills, {len(result.runner_legs)} runner fills, "
        f"{result.marks_compared} equity marks (max deviation {result.max_equity_deviation:.1e}), "
        f"{len(result.restarts)} SIGKILL restart(s)"
    )
    if not result.passed:
        click.echo(f"first divergence: {result.first_divergence}")
        sys.exit(1)


@main.command()
@click.argument("strategy")
@_OVERRIDES
@click.option("--name", metavar="NAME", help="Sweep folder name (default: a hash of the sweep).")
@click.option("--dry-run", is_flag=True, help="List the jobs and their batches; run nothing.")
@click.option("--resume", is_flag=True, help="Reuse jobs a previous run of this sweep finished.")
@click.option(
    "--launcher",
    metavar="NAME",
    default="local",
    show_default=True,
    help="local: batches in a process pool over all cores; serial: one after another here; or a "
    "Hydra launcher (pip install 'qcompile[slurm|joblib|ray]'): submitit_local, submitit_slurm, "
    "joblib, ray, or conf/hydra/launcher/NAME.yaml such as slurm.",
)
@click.option(
    "--tasks",
    type=click.IntRange(min=1),
    metavar="N",
    help="With a Hydra launcher: at most N launcher jobs (default: one per batch).",
)
@click.option(
    "--min-trades",
    type=click.IntRange(min=0),
    metavar="N",
    help="Trades a job needs to be ranked, named best and coloured in the heatmaps "
    "(default: the strategy type's minimum sample, 200 for daily).",
)
@_handled
def sweep(
    strategy: str,
    overrides: tuple[str, ...],
    name: str | None,
    dry_run: bool,
    resume: bool,
    launcher: str,
    tasks: int | None,
    min_trades: int | None,
) -> None:
    """Backtest STRATEGY at every point of a Hydra sweep, e.g.
    'strategy.signal.params.fast=range(5,50,5)' costs=retail,institutional.
    hydra.launcher.KEY=VALUE overrides configure a Hydra launcher. The overrides apply to the
    strategy as built (generated/<id>/params.yaml): refused while that is stale.

    Writes reports/<id>/sweeps/<name>/: results.parquet, results.csv and summary.md."""
    from qcompile.research.sweep import run as sweeps

    project = _project()
    if dry_run:
        jobs, _ = sweeps.expand(project, list(overrides))
        grouped = sweeps.batches(jobs)
        for number, (context, members) in enumerate(grouped.items()):
            click.echo(f"batch {number}: {' '.join(context) or '(the strategy as configured)'}")
            for job in members:
                click.echo(f"  job {job.number}: {job.label}")
        click.echo(f"{len(jobs)} job(s) in {len(grouped)} batch(es); nothing was run.")
        sweeps.built_base(project, strategy, jobs)  # a run would stop when the build is stale
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("sweep"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} jobs"),
        TimeRemainingColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("sweep", total=None)
        result = sweeps.run(
            project,
            strategy,
            list(overrides),
            name=name,
            resume=resume,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            launcher=launcher,
            tasks=tasks,
            min_trades=min_trades,
        )
    where = project.rel(result.directory)
    click.echo(
        f"wrote {where}/summary.md, results.csv and results.parquet: {len(result.rows)} job(s), "
        f"{result.failures} failed" + (f", {result.skipped} reused" if result.skipped else "")
    )
    if result.failures:  # a table with holes is not a clean run: scripts and CI must see it
        click.echo(
            f"error: {result.failures} of {len(result.rows)} job(s) failed; each one's error is in "
            f"the error column of {where}/results.csv",
            err=True,
        )
        sys.exit(1)


@main.command()
@click.argument("strategy")
@click.option(
    "--start", metavar="YYYY-MM-DD", help="First day (default: backtest start minus lookback)."
)
@click.option("--end", metavar="YYYY-MM-DD", help="Last day (default: backtest end).")
@_handled
def download(strategy: str, start: str | None, end: str | None) -> None:
    """Download STRATEGY's universe from its data source's REST API into its local data path.

    The API key comes from the environment variable that data.api_key references."""
    from qcompile.research.workflows import download as run_download

    rows = run_download(_project(), strategy, start, end)
    for symbol, count in rows.items():
        click.echo(f"{symbol:>10}  {count} bars")
    click.echo("Run `qcompile build` to pin the new data's fingerprint.")


@main.group()
def data() -> None:
    """Local market data: bring files you have into the project's layout (docs/data.md)."""


@data.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--source",
    required=True,
    metavar="NAME",
    help="The data source (conf/data/NAME.yaml) whose local.path, format and timestamp "
    "convention the files are written in.",
)
@click.option("--symbol", metavar="SYM", help="Every row is this symbol (default: the file name).")
@click.option(
    "--symbol-column", metavar="COL", help="Split the rows by this column (default: symbol/ticker)."
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="CANONICAL=NAME",
    help="Which input column holds a canonical one (timestamp, open, high, low, close, volume, "
    "adj_close, symbol), when its name is not a usual one; repeatable.",
)
@click.option(
    "--timestamp-unit",
    type=click.Choice(["s", "ms", "us", "ns"]),
    help="Unit of integer epoch timestamps (default: recognised from their size, and checked).",
)
@click.option(
    "--timestamp-format",
    metavar="FORMAT",
    help="strptime format of text times that are not ISO 8601, e.g. '%m/%d/%Y'.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA timezone of naive date-times (dates are always 00:00 UTC of the day).",
)
@click.option("--replace", is_flag=True, help="Overwrite a symbol's existing file.")
@click.option(
    "--dry-run", is_flag=True, help="Check and show what would be written; write nothing."
)
@_handled
def data_import(
    files: tuple[Path, ...], source: str, columns: tuple[str, ...], **options: Any
) -> None:
    """Import CSV or Parquet bar FILES into data source --source's local layout: columns mapped,
    timestamps converted to its declared unit, rows split per symbol and sorted, every row checked
    against the data contract first. Any problem in any file: exit 2, nothing written."""
    from qcompile.research.dataimport import ImportOptions
    from qcompile.research.workflows import import_data

    mapping: dict[str, str] = {}
    for pair in columns:
        canonical, separator, name = pair.partition("=")
        if not separator or not canonical.strip() or not name:
            raise click.BadParameter(f"{pair!r} is not CANONICAL=NAME", param_hint="--column")
        mapping[canonical.strip()] = name
    project = _project()
    written, config = import_data(
        project, source, list(files), ImportOptions(columns=mapping, **options)
    )
    from rich.table import Table

    table = Table()
    for column in ("symbol", "rows", "first", "last", "file", "", "from"):
        table.add_column(column)
    for item in written:
        table.add_row(
            item.symbol,
            str(item.rows),
            item.first,
            item.last,
            project.rel(item.path) if project.contains(item.path) else str(item.path),
            item.action,
            ", ".join(item.sources),
        )
    _console().print(table)
    for item in written:
        if item.note:
            click.echo(f"warning: {item.symbol}: {item.note} ({config})", err=True)
    if options["dry_run"]:
        click.echo("dry run: nothing was written.")
    else:
        click.echo("Run `qcompile build` to check the data against each strategy and pin it.")


@main.command()
@click.argument("strategy")
@live_run_options
@_handled
def run(strategy: str, **options: Any) -> None:
    """Run STRATEGY's production runner from generated/<id>/params.yaml (paper broker).

    `--feed emulator` replays the strategy's local data through the local protocol emulator: a
    live-like session with no API key. Ctrl-C stops it cleanly (safe state, state saved, exit 0)."""
    from qcompile.runtime.command import execute

    project = _project()
    execute(_params_file(project, strategy), project.root, **options)


@main.command()
@live_emulator_options
@_handled
def emulator(**options: Any) -> None:
    """Serve the TickDB protocol emulator on loopback (WebSocket and REST on one port), replaying
    local bars, with faults scripted by --scenario (docs/emulator.md)."""
    from qcompile.runtime.command import serve_emulator

    serve_emulator(**options)


@main.command()
@click.argument("strategy")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True)
@_handled
def stop(strategy: str, timeout: float) -> None:
    """Stop STRATEGY's running instance on this host (SIGTERM: safe state, final save) and wait
    until its lease is free."""
    from qcompile.runtime.command import stop_runner

    project = _project()
    stop_runner(_params_file(project, strategy), project.root, timeout)


@main.command()
@click.argument("strategy")
@click.option(
    "--accept-broker",
    is_flag=True,
    help="Cancel working orders at the broker, adopt its positions and lift the hold.",
)
@click.option("--by", "operator", metavar="EMAIL", help="Who accepts (recorded in the journal).")
@_handled
def reconcile(strategy: str, accept_broker: bool, operator: str | None) -> None:
    """Compare STRATEGY's stopped runner's books with its broker's (exit 1 if they differ); with
    --accept-broker, adopt the broker's positions so a held runner can trade again."""
    from qcompile.runtime.command import reconcile_runner

    if accept_broker and not operator:
        raise click.UsageError("--accept-broker needs --by EMAIL: the journal records who")
    project = _project()
    reconcile_runner(_params_file(project, strategy), project.root, accept_broker, operator or "")


@main.command()
@click.argument("strategy")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, help="Seconds to wait.")
@click.option("--since", metavar="ISO8601", help="Only a heartbeat written after this time.")
@_handled
def heartbeat(strategy: str, wait: float, since: str | None) -> None:
    """Print the liveness heartbeat of STRATEGY's connected runner (exit 2 if none in time)."""
    from qcompile.runtime.command import await_heartbeat

    project = _project()
    await_heartbeat(_params_file(project, strategy), project.root, wait, since)


@main.command()
@click.option("--output", type=click.Path(dir_okay=False), help="Where to record the result.")
@_handled
def selftest(output: str | None) -> None:
    """Test the runner's safety behaviour (heartbeat, safe state, reconnect, rate limits, state
    recovery) against the local emulator; the result ticks the deployment checklist's items for
    this qcompile version (reports/runtime/qcompile-<version>.json)."""
    from pathlib import Path

    from qcompile.compiler.build import project_settings
    from qcompile.compiler.rules.checklist import selftest_path
    from qcompile.runtime.command import run_selftest

    project = _project()
    run_selftest(Path(output) if output else selftest_path(project_settings(project), project.root))


@main.command(name="journal")
@click.argument("strategy")
@click.option("--add", "kind", type=click.Choice(["rollback", "note"]), help="Append an event.")
@click.option("--detail", default="", help="What happened (with --add).")
@_handled
def journal_command(strategy: str, kind: str | None, detail: str) -> None:
    """Print STRATEGY's runner journal (fills, daily equity, alerts, rollbacks), or --add an
    operator's event to it (the rollback script records itself this way)."""
    from qcompile.runtime.command import journal

    project = _project()
    journal(_params_file(project, strategy), project.root, kind, detail)


@main.command(name="signals")
@click.argument("name", required=False)
@_handled
def signals_command(name: str | None) -> None:
    """List the signals the project's packages define (version, parameters with types and
    defaults, what each does); with NAME, show that signal's reference (docs/signals.md)."""
    import difflib

    from qcompile.compiler.reference import project_signals, signal_page, signal_summary

    found, _ = project_signals(_project())
    if name is not None:
        if name not in found:
            close = difflib.get_close_matches(name, list(found), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise QcompileError(f"no signal {name!r} in the project's packages{hint}")
        from rich.markdown import Markdown

        _console().print(Markdown(signal_page(found[name])))
        return
    from rich.table import Table

    table = Table()
    table.add_column("signal", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("parameters")
    table.add_column("description")
    for source in (found[key] for key in sorted(found)):
        row = signal_summary(source)
        table.add_row(row["name"], row["version"], row["parameters"], row["description"])
    console = _console()
    console.print(table)
    console.print("`qcompile signals NAME` shows one in full; docs/signals.md lists them all.")


@main.command(name="list")
@_OVERRIDES
@_handled
def list_strategies(overrides: tuple[str, ...]) -> None:
    """List every strategy with its phase and pinned versions."""
    from qcompile.compiler.views import strategy_rows

    rows = strategy_rows(_project(), list(overrides))
    columns = ["id", "name", "phase", "version", "signal", "data", "next gate"]
    cells = [[row[c] for c in columns] for row in rows]
    _print_table(_console(), columns, cells, ["data", "name", "signal"])


@main.command()
@click.option(
    "--output",
    "-o",
    default="docs/config-reference.md",
    show_default=True,
    help="Where to write the reference, relative to the project root.",
)
@click.option(
    "--signals-output",
    default="docs/signals.md",
    show_default=True,
    help="Where to write the signal library reference, relative to the project root.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a file is out of date.")
@_handled
def docs(output: str, signals_output: str, check: bool) -> None:
    """Write the config reference (from the validation schemas) and the signal library
    reference (from the source of the project's signal packages)."""
    from qcompile.compiler.reference import config_reference, project_signal_reference

    project = _project()
    documents = {output: config_reference(), signals_output: project_signal_reference(project)}
    if check:
        stale = [
            name
            for name, text in documents.items()
            if not (project.root / name).is_file()
            or (project.root / name).read_text(encoding="utf-8") != text
        ]
        if stale:
            raise StaleError(stale, remedy="run `qcompile docs`")
        click.echo(f"{' and '.join(documents)} are up to date.")
        return
    for name, text in documents.items():
        path = project.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {name}")


@main.command(name="release")
@click.argument("strategy")
@click.option("--note", metavar="TEXT", help="Why this release; kept in its record.")
@click.option("--by", metavar="EMAIL", help="Who releases (default: git config user.email).")
@_handled
def release_command(strategy: str, note: str | None, by: str | None) -> None:
    """Record STRATEGY's committed generated/<id>/ as a release in releases/<id>.jsonl.

    Refused while generated/ is stale or generated/<id>/ or conf/ has uncommitted changes."""
    import datetime as dt

    from qcompile.lifecycle.releases import history_file, release

    project = _project()
    done = release(project, strategy, note=note, by=by, clock=lambda: dt.datetime.now(dt.UTC))
    if done.repeated:
        click.echo(
            f"{done.strategy_id} {done.version} was already released with these artefacts "
            f"(commit {done.commit[:12]}, {done.released_at}); nothing was written."
        )
        return
    click.echo(
        f"released {done.strategy_id} {done.version} ({done.phase}) at commit {done.commit[:12]}: "
        f"signal {done.signal_pin}, data {done.data_pin}"
    )
    where = project.rel(history_file(project, done.strategy_id))
    click.echo(f"recorded in {where}; commit it.")


@main.command(name="history")
@click.argument("strategy")
@click.option(
    "--release", "selected", metavar="VERSION", help="One release: a version, latest or previous."
)
@click.option(
    "--field",
    metavar="NAME",
    help="Print only this field (commit, pins.signal.version, ...) of --release (default latest).",
)
@_handled
def history_command(strategy: str, selected: str | None, field: str | None) -> None:
    """List STRATEGY's releases, oldest first, from releases/<id>.jsonl."""
    from qcompile.lifecycle import releases as history

    project = _project()
    strategy_id = history.resolve_strategy(project, strategy)
    releases = history.load_history(project, strategy_id)
    if selected or field:
        chosen = history.select_release(releases, strategy_id, selected or "latest")
        if field:
            click.echo(history.field_value(chosen, field))
            return
        for name, value in history.release_fields(chosen).items():
            click.echo(f"{name}: {value}")
        return
    if not releases:
        click.echo(f"{strategy_id}: no releases yet.")
        return
    from rich.table import Table

    table = Table()
    for column in ("version", "phase", "released at", "by", "commit", "signal", "data", "note"):
        table.add_column(column)
    for item in releases:
        table.add_row(
            item.version,
            item.phase,
            item.released_at,
            item.released_by,
            item.commit[:12],
            item.signal_pin,
            item.data_pin,
            item.note or "",
        )
    _console().print(table)


@main.command(name="diff")
@click.argument("strategy")
@click.option(
    "--from",
    "from_rev",
    metavar="REV",
    help="A release version, latest, previous or a git revision (default: the latest release).",
)
@click.option(
    "--to",
    "to_rev",
    metavar="REV",
    help="A release version, latest, previous or a git revision (default: the working tree).",
)
@_handled
def diff_command(strategy: str, from_rev: str | None, to_rev: str | None) -> None:
    """Show what changed in STRATEGY's pins and generated/<id>/ files, as a unified diff."""
    from qcompile.lifecycle.releases import diff

    click.echo(diff(_project(), strategy, from_rev, to_rev), nl=False)


@main.command()
@click.argument("strategy")
@click.option(
    "--role",
    type=click.Choice(["researcher", "peer_reviewer", "quant_engineer"]),
    help="Sign this role's artefact: researcher the report (or --artefact brief), peer_reviewer "
    "the validation evidence, quant_engineer the deployment checklist.",
)
@click.option(
    "--artefact",
    type=click.Choice(["brief", "report", "validation", "checklist"]),
    help="What the role signs, when not its default (the researcher's brief).",
)
@click.option(
    "--item",
    "items",
    multiple=True,
    metavar="ITEM_ID",
    help="Sign a manual deployment-checklist item; repeat to sign several at once.",
)
@click.option("--by", "by", required=True, metavar="EMAIL", help="Email of the person signing.")
@_handled
def signoff(
    strategy: str, role: str | None, artefact: str | None, items: tuple[str, ...], by: str
) -> None:
    """Record a sign-off in STRATEGY's YAML file: who, when (UTC) and the sha256 of what was
    signed. A sign-off whose artefact changes afterwards is stale and no longer meets the gate."""
    from qcompile.lifecycle.signoff import sign, sign_items

    if len(items) > 1:
        if role is not None or artefact is not None:
            raise QcompileError("give either --role (to sign an artefact) or --item, not both")
        signatures = sign_items(_project(), strategy, by, items)
        for signature in signatures:
            click.echo(f"signed {signature.key} of {signature.strategy_id}: {signature.what}")
        moment = signatures[0].record["at"]
        click.echo(f"  by {by} at {moment}")
        click.echo(f"wrote {signatures[0].file}; run `qcompile build` to update generated/.")
        return
    item = items[0] if items else None
    signature = sign(_project(), strategy, by, role=role, artefact=artefact, item=item)
    click.echo(f"signed {signature.key} of {signature.strategy_id}: {signature.what}")
    click.echo(f"  by {signature.record['by']} at {signature.record['at']}")
    if "sha256" in signature.record:
        click.echo(f"  sha256 {signature.record['sha256']}")
    if signature.replaced:
        click.echo(
            f"  replaces the sign-off by {signature.replaced.get('by')} "
            f"at {signature.replaced.get('at')}"
        )
    if signature.changes:
        click.echo("  signed the checklist as the next build writes it; it differs from the file:")
        click.echo(signature.changes, nl=False)
    click.echo(f"wrote {signature.file}; run `qcompile build` to update generated/.")


@main.command()
@click.argument("strategy")
@click.option(
    "--to",
    "to_phase",
    required=True,
    type=click.Choice(["ideation", "research", "validation", "production"]),
    help="The next phase, or an earlier one (a demotion).",
)
@_handled
def promote(strategy: str, to_phase: str) -> None:
    """Move STRATEGY to phase --to if that phase's gate is met (else list what is missing), by
    rewriting strategy.status in its YAML file."""
    from qcompile.lifecycle.signoff import promote as run_promote

    moved = run_promote(_project(), strategy, to_phase)
    verb = "demoted" if moved.demotion else "promoted"
    click.echo(f"{verb} {moved.strategy_id}: {moved.previous} -> {moved.phase} in {moved.file}")
    click.echo("Run `qcompile build` to update generated/.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the rows and mismatches as JSON.")
@_handled
def status(as_json: bool) -> None:
    """Every strategy in generated/: phase, pinned versions, last and next full review (one-year
    rule; QCOMPILE_TODAY=YYYY-MM-DD fixes the date) and runner liveness from its heartbeat.
    Version mismatches (between strategies, or runner versus generated/) are marked and listed."""
    import datetime as dt
    import json

    from qcompile.compiler.rules.review_due import today
    from qcompile.operations.status import status_rows

    on = today()
    rows, mismatches = status_rows(_project(), on, dt.datetime.now(dt.UTC))
    if as_json:
        document = {"today": on.isoformat(), "strategies": rows, "mismatches": mismatches}
        click.echo(json.dumps(document, indent=2))
        return
    from rich.text import Text

    liveness_style = {"up": "green", "stale": "yellow", "down": "red", "never": "dim"}
    columns = ["id", "phase", "version", "signal", "data", "last review", "next review", "runner"]

    def cell(text: str, mismatch: bool) -> Text:
        return Text(f"{text} *", "red") if mismatch else Text(text)

    cells = []
    for row in rows:
        due = row["next_review"] or ("no date" if row["phase"] == "production" else "")
        waived = row["waived_requirements"]
        cells.append(
            [
                row["id"],
                Text(f"{row['phase']} (waived: {', '.join(waived)})", "yellow")
                if waived
                else Text(str(row["phase"])),
                cell(row["version"], "version" in row["mismatch"]),
                cell(row["signal"], "signal" in row["mismatch"]),
                row["data"],
                row["last_review"] or "",
                Text(f"{due} overdue", "bold red") if row["review_overdue"] else Text(due),
                Text(row["liveness"]["text"], liveness_style.get(row["liveness"]["state"], "")),
            ]
        )
    console = _console()
    _print_table(console, columns, cells, ["data", "last review", "signal"])
    for note in mismatches:
        console.print(Text(f"* {note}", "red"))
    for row in rows:
        for waiver in row["waived"]:
            console.print(Text(f"{row['id']}: {waiver}", "yellow"), soft_wrap=True)
    overdue = sum(1 for row in rows if row["review_overdue"])
    if overdue:
        console.print(
            Text(
                f"{overdue} strateg{'y' if overdue == 1 else 'ies'} overdue for review.", "bold red"
            )
        )


@main.command()
@click.option("--month", metavar="YYYY-MM", help="Which month (default: the previous one).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write it to FILE.")
@_handled
def retro(month: str | None, output: str | None) -> None:
    """Print, as Markdown, what broke in a month: alerts by severity, safe-state transitions and
    rollbacks from each runner's journal, and the releases made (docs/retrospective-template.md)."""
    from pathlib import Path

    from qcompile.compiler.rules.review_due import today
    from qcompile.operations.retro import collect, previous_month, render_markdown

    chosen = month or previous_month(today())
    text = render_markdown(chosen, collect(_project(), chosen))
    click.echo(text, nl=False)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@main.group()
def review() -> None:
    """Operations reviews of the production strategies (docs/reviews.md)."""


@review.command()
@click.option("--week", metavar="YYYY-Www", help="ISO week to review (default: the current one).")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    help="Relative deviation that flags a statistic (default: operations.review_threshold, 0.2).",
)
@_STRATEGY
@_handled
def weekly(week: str | None, threshold: float | None, only: tuple[str, ...]) -> None:
    """Compare each production strategy's trailing 20 live days with its backtest; write
    reports/<id>/reviews/<week>.md and .html and send flags to its alert sinks."""
    from qcompile.operations.review import STATISTICS
    from qcompile.operations.review import weekly as run_weekly

    project = _project()
    overdue: list[Any] = []
    try:
        reviews = run_weekly(project, week, threshold, only=list(only) or None, overdue=overdue)
    finally:
        for diagnostic in overdue:  # the one-year rule: flagged here as in `qcompile build`
            click.echo(diagnostic.render(), err=True)
    if not reviews:
        click.echo("no strategy is in production; nothing to review.")
        return
    failed = False
    for item in reviews:
        flags = ", ".join(STATISTICS[key] for key in item.flags) or "nothing flagged"
        click.echo(f"{item.strategy_id} {item.week}: {flags}; wrote {project.rel(item.markdown)}")
        for failure in item.alert_failures:
            failed = True
            click.echo(f"error: alert not delivered: {failure}", err=True)
    if failed:
        sys.exit(EXIT_CONFIG)


@main.command()
@_STRATEGY
@_handled
def refresh(only: tuple[str, ...]) -> None:
    """Re-run every production strategy's pinned backtest on the current local data into
    reports/<id>/<version>/refresh/<date>/ and compare it with the original report; a material
    divergence moves the strategy back to validation. The outcome is recorded in its YAML."""
    from rich.table import Table

    from qcompile.operations.refresh import refresh as run_refresh
    from qcompile.operations.refresh import summary_rows

    results = run_refresh(_project(), list(only) or None)
    if not results:
        click.echo("no strategy is in production; nothing to refresh.")
        return
    columns = ("id", "version", "result", "sharpe", "phase", "report", "reason")
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in summary_rows(results):
        table.add_row(*(row[c] for c in columns))
    _console().print(table)
    click.echo("Commit the strategy files; run `qcompile build` to update generated/.")
    if any(item.result == "data_changed" for item in results):
        click.echo(
            "error: local data changed since it was pinned; run `qcompile build`, then refresh",
            err=True,
        )
        sys.exit(EXIT_CONFIG)


@main.command()
@click.option(
    "--strategy",
    "-s",
    "only",
    multiple=True,
    metavar="ID",
    help="Watch this strategy whatever its phase (default: every production strategy); repeatable.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    help="Seconds between passes (default: half the shortest heartbeat interval, 0.2-30 s).",
)
@click.option("--once", is_flag=True, help="One pass (for cron): exit 1 while a runner is down.")
@_handled
def watch(only: tuple[str, ...], interval: float | None, once: bool) -> None:
    """Alert through each strategy's own sinks when its runner's heartbeat is older than two
    heartbeat intervals (runner.down, once per incident), and when it comes back
    (runner.recovered). One per host, under systemd or cron (docs/operations.md)."""
    import signal
    import threading

    from qcompile.operations.watch import Watchdog, default_poll

    dog = Watchdog(_project(), list(only))
    if not dog.strategies:
        click.echo("no strategy is in production; nothing to watch.")
        return

    def announce(event: Any) -> None:
        undelivered = "" if event.delivered else " (NOT delivered to every sink)"
        click.echo(f"{event.strategy_id}: {event.kind}: {event.text}{undelivered}")

    try:
        if once:
            events = dog.check()
            for event in events:
                if event.kind:
                    announce(event)
                elif event.strategy_id in dog.incidents:
                    click.echo(f"{event.strategy_id}: still down: {event.text}")
            if dog.incidents:
                sys.exit(1)
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        poll = interval or default_poll(dog.intervals())
        click.echo(
            f"watching {', '.join(i for i, _ in dog.strategies)} every {poll:g} s (Ctrl-C stops)",
            err=True,
        )
        dog.run(stop, poll, announce)
    finally:
        dog.close()


@main.group()
def alert() -> None:
    """Alert sinks: check that they deliver."""


@alert.command(name="test")
@click.argument("strategy")
@_handled
def alert_test_command(strategy: str) -> None:
    """Send one test alert (alert.test, info) through each sink of STRATEGY's deployment and say
    which delivered: the evidence for the checklist's "alerts confirmed" item."""
    from qcompile.operations.watch import alert_test

    results = alert_test(_project(), strategy)
    for sink, outcome in results:
        click.echo(f"{sink}: {outcome}")
    if any(outcome != "sent" for _, outcome in results):
        sys.exit(EXIT_CONFIG)


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8780, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes positions without authentication.",
)
@click.option(
    "--strategy", "-s", "only", multiple=True, metavar="ID", help="Only this strategy; repeatable."
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between page refreshes.",
)
@_handled
def dashboard(port: int, host: str, only: tuple[str, ...], refresh: float) -> None:
    """Serve a read-only local web page of every built strategy's live state: positions, daily
    PnL, open orders, signal cursor and heartbeat age, read from the state stores (no lease)."""
    from qcompile.operations.dashboard import serve

    project = _project()
    serve(project.root, host=host, port=port, only=only, refresh_s=refresh, announce=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
