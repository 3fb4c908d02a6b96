"""Research commands: compile a strategy, then hand its parameters to the backtest or the downloader.

``qcompile backtest`` and ``qcompile download``. Like ``sweep/``, these compile first; the engine
and the market-data client they call never import the compiler. The CLI calls these functions and
prints what they return.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from qcompile.errors import QcompileError
from qcompile.hashing import sha256_json
from qcompile.project import Project
from qcompile.research.datalayout import loaded_symbols

if TYPE_CHECKING:  # the import's own types; the module loads only when data is imported
    from qcompile.research.dataimport import Imported, ImportOptions


def backtest(project: Project, strategy: str, overrides: list[str]) -> tuple[object, str]:
    """Backtest one strategy as its config (plus overrides) stands now; returns (report, summary).

    Without overrides the report goes to reports/<id>/<version>/, where the gates look for it.
    With overrides it goes to reports/<id>/<version>/runs/<hash of the overrides>/: an experiment
    never replaces the evidence of the configuration as committed.
    """
    from qcompile.compiler.build import built_params_file, compile_project, current_params_file
    from qcompile.research.backtest.runner import backtest as run_backtest
    from qcompile.research.backtest.runner import report_directory, summary

    current = None if overrides else current_params_file(project, strategy)
    if current is not None:  # generated/ is what conf/ compiles to now: no need to compile
        strategy_id, params_file = current
        params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        baseline = committed_report(project, strategy_id, params)
        before = _evidence_bytes(project, params)
        report = run_backtest(params_file, project.root, baseline=baseline)
        return report, summary(report, project.root) + _rebuild_note(report, before)
    from qcompile.compiler.plan import runtime_parameters

    compilation = compile_project(project, overrides, [strategy])
    if not compilation.strategies:
        raise QcompileError(f"no strategy {strategy!r}")
    (compiled,) = compilation.strategies
    params = runtime_parameters(compiled)
    baseline = committed_report(project, compiled.id, params)
    if not overrides:  # the evidence the gates read: only from what was built and committed
        params_file = built_params_file(project, compiled.id, params)
        before = _evidence_bytes(project, params)
        report = run_backtest(params_file, project.root, baseline=baseline)
        return report, summary(report, project.root) + _rebuild_note(report, before)
    target = project.root / report_directory(params) / "runs" / sha256_json(overrides)[:12]
    with tempfile.TemporaryDirectory() as scratch:
        params_file = Path(scratch) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        report = run_backtest(
            params_file,
            project.root,
            target,
            origin=f"conf/ as compiled with overrides, not generated/{compiled.id}/params.yaml",
            overrides=tuple(overrides),
            baseline=baseline,
        )
    return report, summary(report, project.root)


def _evidence_bytes(project: Project, params: dict) -> bytes | None:
    from qcompile.research.backtest.runner import report_directory

    path = project.root / report_directory(params) / "evidence.json"
    return path.read_bytes() if path.is_file() else None


def _rebuild_note(report: Any, before: bytes | None) -> str:
    """generated/ reads the evidence (the checklist, the passport's gate status, the runner's
    monitoring baseline): new evidence leaves it stale until the next build, so say so."""
    if report.evidence.read_bytes() == before:
        return ""
    return (
        "\nthe evidence changed: generated/ reads it (checklist, passport, monitoring baseline); "
        "run `qcompile build` and commit both"
    )


def committed_report(
    project: Project, strategy_id: str, params: dict
) -> tuple[str, dict, dict] | None:
    """The strategy's report as committed at HEAD, what report.html compares a new run with:
    (label, evidence, params); None outside git or before a report was committed."""
    import json

    from qcompile.research.backtest.runner import report_directory
    from qcompile.vcs import committed_file

    where = report_directory(params)
    evidence = committed_file(project.root, f"{where}/evidence.json")
    built = committed_file(project.root, f"generated/{strategy_id}/params.yaml")
    if evidence is None or built is None:
        return None
    try:
        old_evidence, old_params = json.loads(evidence[1]), yaml.safe_load(built[1])
    except (ValueError, yaml.YAMLError):
        return None  # a committed file that does not parse is no baseline
    if not isinstance(old_evidence, dict) or not isinstance(old_params, dict):
        return None
    return f"{where}/evidence.json at {evidence[0]}", old_evidence, old_params


def download(project: Project, strategy: str, start: str | None, end: str | None) -> dict[str, int]:
    """Download a strategy's universe from its data source's REST API into its local path.

    The window defaults to the backtest window plus ``lookback_years`` before it, for indicator
    warm-up. The API key is read from the environment variable its config references.
    """
    import datetime as dt
    import os

    from qcompile.compiler.build import compile_project
    from qcompile.compiler.validate import SECRET_REFERENCE
    from qcompile.marketdata.download import download as run_download
    from qcompile.marketdata.rest import RestClient

    (compiled,) = compile_project(project, [], [strategy]).strategies
    data, backtest = compiled.data["data"], compiled.data["strategy"]["backtest"]
    if not data.get("rest_base") or not (data.get("local") or {}).get("path"):
        raise QcompileError(
            f"data source {data['vendor']} needs rest_base and local.path to download"
        )
    reference = SECRET_REFERENCE.match(str(data.get("api_key") or ""))
    if not reference:
        raise QcompileError("data.api_key must reference an environment variable: ${oc.env:NAME}")
    key = os.environ.get(reference.group(1))
    if not key:
        raise QcompileError(f"environment variable {reference.group(1)} is not set")

    def ms(day: str) -> int:
        return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)

    first = dt.date.fromisoformat(backtest["start_date"])
    lookback = float(data.get("lookback_years") or 0)
    default_start = (first - dt.timedelta(days=round(365.25 * lookback))).isoformat()
    client = RestClient(data["rest_base"], key)
    return run_download(
        client,
        loaded_symbols(compiled.data["universe"]),
        data.get("symbol_suffix", ""),
        data["interval"],
        ms(start or default_start),
        ms(end or backtest["end_date"]) + 86_399_999,
        project.root / data["local"]["path"],
    )


def import_data(
    project: Project, source: str, paths: list[Path], options: ImportOptions
) -> tuple[list[Imported], str]:
    """Import bar files into data source ``source``'s local layout (conf/data/<source>.yaml);
    returns what was written and the source's config file. See research/dataimport.py."""
    from qcompile.compiler.compose import did_you_mean, read_conf_tree
    from qcompile.compiler.read import load_data
    from qcompile.errors import DiagnosticsError
    from qcompile.research.data import Convention
    from qcompile.research.dataimport import DataImportError, Target, import_files

    tree = read_conf_tree(project)
    config = tree.get("data", source)
    if config is None:
        hint = did_you_mean(source, tree.options("data"))
        known = ", ".join(tree.options("data")) or "none"
        raise QcompileError(
            f"no data source {source!r} in conf/data/"
            + (f"; {hint}" if hint else f" (there are: {known})")
        )
    broken = [d for d in tree.diagnostics if d.file == config.path]
    if broken:
        raise DiagnosticsError(broken)
    data = load_data(config)
    local, stamp = data.get("local") or {}, data.get("timestamp") or {}
    problems = [
        f"{config.path}:{config.line_of('data.' + key)}: data.{key}: required to import here"
        for key, value in (
            ("local.path", local.get("path")),
            ("local.format", local.get("format")),
            ("timestamp.unit", stamp.get("unit")),
            ("timestamp.stamping", stamp.get("stamping")),
        )
        if not isinstance(value, str) or not value
    ]
    if local.get("format") not in (None, "parquet", "csv"):
        line = config.line_of("data.local.format")
        problems.append(f"{config.path}:{line}: data.local.format: must be parquet or csv")
    directory = project.root / str(local.get("path", ""))
    if local.get("path") and not project.contains(directory):
        line = config.line_of("data.local.path")
        problems.append(f"{config.path}:{line}: data.local.path: resolves outside the project")
    if problems:
        raise DataImportError(problems)
    convention = Convention(
        str(stamp["unit"]), str(stamp.get("timezone", "UTC")), str(stamp["stamping"])
    )
    symbols = tuple(str(s) for s in data.get("symbols") or [])
    target = Target(directory, str(local["format"]), convention, symbols)
    return list(import_files(paths, target, options, project.root)), config.path
