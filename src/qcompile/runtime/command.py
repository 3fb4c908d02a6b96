"""`qcompile run` and `qcompile emulator`: argument parsing and printing around the runtime.

Shared by the top-level CLI and the generated ``generated/<id>/runner.py``, so both accept the
same options. Logic lives in :mod:`qcompile.runtime.runner` and :mod:`qcompile.emulator`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from qcompile.errors import QcompileError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(verbose: bool) -> None:
    logging.Formatter.converter = time.gmtime  # log times are UTC, like the feed's
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
        datefmt="%Y-%m-%dT%H:%M:%SZ",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("websockets", "qcompile.emulator"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--feed",
            type=click.Choice(["vendor", "emulator"]),
            default="vendor",
            show_default=True,
            help="vendor: the data source's ws_base with its API key; emulator: a local "
            "protocol emulator replaying the strategy's local data (no key needed).",
        ),
        click.option(
            "--replay",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Replay this bar directory through the emulator (implies --feed emulator).",
        ),
        click.option(
            "--bars",
            type=click.IntRange(min=1),
            default=60,
            show_default=True,
            help="Emulator: replay the last N bars per symbol (earlier ones warm the signal up).",
        ),
        click.option(
            "--speed",
            type=click.FloatRange(min=1),
            default=200.0,
            show_default=True,
            help="Emulator: messages per second.",
        ),
        click.option(
            "--scenario",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Emulator: a fault scenario YAML (docs/emulator.md).",
        ),
        click.option(
            "--paper",
            is_flag=True,
            help="Trade against the paper broker whatever deployment.broker names (a rehearsal "
            "of a strategy that routes to a real broker).",
        ),
        click.option(
            "--duration",
            type=click.FloatRange(min=0),
            help="Stop after this many seconds (default: until Ctrl-C, or the replay's end).",
        ),
        click.option(
            "--acks",
            type=click.Path(dir_okay=False, path_type=Path),
            hidden=True,
            help="Append 'seq sha256' per acknowledged state (crash-recovery tests).",
        ),
        click.option(
            "--history-replay",
            is_flag=True,
            hidden=True,
            help="The feed replays history (qcompile parity): push times are not compared with "
            "this host's clock.",
        ),
        click.option(
            "--ws-url",
            metavar="URL",
            help="Read the feed from this WebSocket base instead of the data source's (a staging "
            "or recorded feed); logged and alerted. A production strategy also needs --i-know.",
        ),
        click.option(
            "--rest-url",
            metavar="URL",
            help="History from this REST base instead of the data source's; as --ws-url.",
        ),
        click.option(
            "--i-know",
            "override_production",
            is_flag=True,
            help="Confirm a feed override on a strategy in production.",
        ),
        click.option("--verbose", "-v", is_flag=True, help="Log every decision."),
        click.option(
            "--check-state",
            is_flag=True,
            help="Only check that the persisted state can be resumed with these parameters "
            "(exit 0) or not (exit 2); start nothing.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def execute(
    params_file: Path,
    root: Path,
    *,
    feed: str,
    replay: Path | None,
    bars: int,
    speed: float,
    scenario: Path | None,
    paper: bool,
    duration: float | None,
    acks: Path | None,
    verbose: bool,
    check_state: bool = False,
    ws_url: str | None = None,
    rest_url: str | None = None,
    override_production: bool = False,
    history_replay: bool = False,
) -> None:
    """Run the strategy until stopped; prints a summary. Ctrl-C and SIGTERM stop it cleanly."""
    from qcompile.runtime.runner import Runner, Session, emulator_for, load_params

    if check_state:
        from qcompile.runtime.control import check_state as check

        for line in check(load_params(params_file), root):
            click.echo(line)
        return
    configure_logging(verbose)
    params = load_params(params_file)
    if history_replay and not ws_url:  # never against the vendor: its clock check stays on
        raise click.UsageError("--history-replay needs --ws-url: a feed that replays history")
    session = Session(
        acks=acks, ws_base=ws_url, rest_base=rest_url, replay=history_replay, paper_broker=paper
    )
    emulator = None
    if ws_url or rest_url:
        _check_feed_override(params_file, feed, replay, scenario, override_production)
    if feed == "emulator" or replay is not None or scenario is not None:
        emulator, session = emulator_for(params, root, session, replay, bars, speed, scenario)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    runner = Runner(params, root, session)
    try:
        runner.start()
        click.echo(
            f"{runner.strategy_id}: running on {runner.feed.endpoint}, state in "
            f"{runner.store.location if runner.store else '?'} (Ctrl-C stops)",
            err=True,
        )
        if emulator is not None and duration is None:
            threading.Thread(
                target=lambda: (emulator.wait_exhausted(10**9), runner.wait_idle(30), stop.set()),
                daemon=True,
            ).start()
        deadline = None if duration is None else time.monotonic() + duration
        # wake twice a second: a signal that lands while the process was paused (SIGSTOP, a VM
        # pause) can be taken by another thread, and a long wait would never see its flag
        while not stop.wait(0.5):
            if runner.failed.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        summary = runner.stop() if runner.started else None
        if emulator is not None:
            emulator.stop()
    if summary is not None:
        click.echo(
            f"{summary.strategy_id}: {summary.accepted} messages"
            + (f" ({summary.coalesced} coalesced under load)" if summary.coalesced else "")
            + f", {summary.decisions} decisions, "
            f"{summary.orders} orders, {summary.fills} fills, {summary.safe_states} safe states, "
            f"{summary.reconnects} reconnects; equity {summary.equity:,.2f}; "
            f"state seq {summary.seq} in {summary.state_location}"
        )
        for symbol, quantity in summary.positions.items():
            click.echo(f"  {symbol:>8} {quantity:+,.4g}")
    if runner.failure is not None:  # exit non-zero: the process manager restarts it
        from qcompile.runtime.runner import RunnerFailed

        raise RunnerFailed(
            f"{runner.failure}; the safe state was entered and the alert sent "
            "(docs/runner.md: restarts resume from the durable state)"
        )


def _check_feed_override(
    params_file: Path, feed: str, replay: Path | None, scenario: Path | None, confirmed: bool
) -> None:
    """A feed override is for operators: not with the emulator, and on a strategy in production
    only when confirmed (the phase is the built passport's)."""
    if feed == "emulator" or replay is not None or scenario is not None:
        raise click.UsageError("--ws-url/--rest-url point at a real feed; not with the emulator")
    import yaml

    try:
        passport = yaml.safe_load((params_file.parent / "passport.yaml").read_text("utf-8"))
        phase = (passport.get("lifecycle") or {}).get("phase")
    except (OSError, AttributeError, yaml.YAMLError):
        phase = None  # unknown: treated as production
    if phase in (None, "production") and not confirmed:
        raise QcompileError(
            f"{params_file.parent.name} is in {phase or 'an unknown phase'}: pointing its runner "
            "at another feed needs --i-know (the override is logged and alerted either way)"
        )


def stop_runner(params_file: Path, root: Path, timeout: float) -> None:
    """Stop the strategy's running instance and wait until its lease is free."""
    from qcompile.runtime.control import stop
    from qcompile.runtime.runner import load_params

    click.echo(stop(load_params(params_file), root, timeout))


def reconcile_runner(params_file: Path, root: Path, accept_broker: bool, operator: str) -> None:
    """Print how the stopped runner's books compare with its broker's; exit 1 if they differ
    and were not accepted."""
    from qcompile.runtime.control import reconcile
    from qcompile.runtime.runner import load_params

    lines, agree = reconcile(load_params(params_file), root, accept_broker, operator)
    for line in lines:
        click.echo(line)
    if not agree:
        click.echo("differences remain: --accept-broker adopts the broker's positions", err=True)
        raise SystemExit(1)


def await_heartbeat(params_file: Path, root: Path, wait: float, since: str | None) -> None:
    """Print the latest heartbeat of a connected runner, waiting up to ``wait`` seconds for
    one newer than ``since``."""
    import json
    from datetime import datetime

    from qcompile.runtime.control import wait_heartbeat
    from qcompile.runtime.runner import load_params

    try:
        after = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {since}", param_hint="--since") from None
    beat = wait_heartbeat(load_params(params_file), root, wait, after)
    click.echo(json.dumps(beat, sort_keys=True))


def journal(params_file: Path, root: Path, kind: str | None, detail: str) -> None:
    """Print the strategy's journal, or append an operator's event to it."""
    import json

    from qcompile.runtime.control import journal_event, read_store
    from qcompile.runtime.runner import load_params

    params = load_params(params_file)
    if kind:
        click.echo(json.dumps(journal_event(params, root, kind, detail), sort_keys=True))
        return
    for record in read_store(params, root, "read_journal"):
        click.echo(json.dumps(record, sort_keys=True))


def run_selftest(output: Path) -> None:
    """Run the runner's safety checks against the emulator and record the result in ``output``."""
    from qcompile.runtime import selftest

    logging.basicConfig(level=logging.ERROR, force=True)
    logging.getLogger("qcompile").setLevel(
        logging.CRITICAL + 1
    )  # the checks trip alerts on purpose

    def report(name: str, passed: bool, detail: str) -> None:
        click.echo(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")

    document = selftest.run(report)
    selftest.write(document, output)
    click.echo(f"wrote {output}")
    if not document["passed"]:
        raise QcompileError("a runtime check failed: the checklist items it proves stay open")


def emulator_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--data",
            "data_dir",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            default=Path("data/sample_us_daily"),
            show_default=True,
            help="Directory of per-symbol Parquet bars to replay.",
        ),
        click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True),
        click.option("--speed", type=click.FloatRange(min=1), default=100.0, show_default=True),
        click.option("--interval", default="1d", show_default=True, help="Bar interval."),
        click.option("--suffix", default="", help="Vendor symbol suffix, e.g. .US."),
        click.option(
            "--scenario",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Fault scenario YAML (docs/emulator.md).",
        ),
        click.option(
            "--key",
            "keys",
            multiple=True,
            help="Accepted API key (repeatable); default: $TICKDB_API_KEY or a printed local key.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def serve_emulator(
    data_dir: Path,
    port: int,
    speed: float,
    interval: str,
    suffix: str,
    scenario: Path | None,
    keys: tuple[str, ...],
) -> None:
    """Serve the emulator on loopback until Ctrl-C."""
    import os

    from qcompile.emulator import Emulator, load_bars, load_scenario, ticks_from_bars
    from qcompile.marketdata.intervals import INTERVAL_MS
    from qcompile.runtime.runner import local_api_key

    configure_logging(False)
    accepted = list(keys) or [os.environ.get("TICKDB_API_KEY") or local_api_key()]
    bars = load_bars(data_dir, None)
    events = ticks_from_bars(bars, INTERVAL_MS[interval], suffix)
    emulator = Emulator(
        events,
        api_keys=accepted,
        scenario=load_scenario(scenario) if scenario else None,
        messages_per_second=speed,
        port=port,
        bars=bars,
        interval=interval,
    ).start()
    click.echo(f"WebSocket: {emulator.ws_url}?api_key=<key>")
    click.echo(f"REST:      {emulator.rest_url}/v1/market/kline")
    if not keys and not os.environ.get("TICKDB_API_KEY"):
        click.echo(f"Local key: {accepted[0]}  (throwaway; accepted by this emulator only)")
    click.echo(
        f"Replaying {len(events)} messages at {emulator.messages_per_second:g}/s. Ctrl-C stops."
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    emulator.stop()


def main(params_file: Path, root: Path, argv: list[str]) -> int:
    """Entry point of the generated runner.py: the same options as `qcompile run`."""

    @click.command(name=f"python {params_file.parent.name}/runner.py")
    @run_options
    def command(**options: Any) -> None:
        execute(params_file, root, **options)

    try:
        command.main(argv, standalone_mode=False)
    except click.exceptions.Abort:
        return 1
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except QcompileError as error:
        click.echo(f"error: {error}", err=True)
        return 2
    return 0
