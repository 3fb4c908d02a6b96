"""The build: runs the stages in order and owns the manifest that connects one build to the next.

    conf/ -compose-> config -validate-> diagnostics -lock-> pins -plan-> artefacts -render-> text
          -write-> generated/ (+ manifest.json)

Before any of that, a digest of every input (conf/ bytes, templates, signal sources, data content
hashes via the stat cache, evidence files, overrides, qcompile's version) is compared with the
manifest: when nothing changed and generated/ is intact, the build ends there, without importing
Hydra. The public functions here are what the CLI calls; they never print.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from qcompile import __version__
from qcompile.compiler.fingerprint import (
    DataFingerprint,
    FingerprintCache,
    data_files,
    file_sha256,
    fingerprint,
)
from qcompile.compiler.rules.review_due import CODES, REVIEW_KEY, review_diagnostic, today
from qcompile.compiler.write import StagedWrite, WriteReport, stale_files
from qcompile.errors import Diagnostic, DiagnosticsError, QcompileError, StaleError
from qcompile.hashing import sha256_bytes, sha256_file, sha256_json
from qcompile.project import PRIMARY_CONFIG, Project

MANIFEST = "manifest.json"
UNTESTED = "rule.param_untested"  # a parameter value that is not one of its tested values


@dataclass
class BuildOutcome:
    report: WriteReport
    up_to_date: bool = False  # the input digest matched: nothing was compiled
    strategies: list[str] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)


def read_manifest(project: Project) -> dict[str, Any]:
    try:
        manifest = json.loads((project.generated_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _raw_yaml(path: Path) -> Any:
    """A config file's data, or None when it cannot be read safely (the read stage says why)."""
    from qcompile.compiler.read import MAX_BYTES, bounds_problem

    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(path.read_text(encoding="utf-8"))
        try:  # yaml.load's own steps, with the bounds checked between parsing and constructing
            node = loader.get_single_node()
            if node is None or bounds_problem(node):
                return None  # empty, or expanding its aliases is the attack: never construct it
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8 (read reports it)
        return None


def project_settings(project: Project) -> dict[str, Any]:
    """conf/qcompile.yaml's ``project`` mapping as written (empty when unreadable)."""
    primary = _raw_yaml(project.conf_dir / PRIMARY_CONFIG)
    settings = primary.get("project") if isinstance(primary, dict) else None
    return settings if isinstance(settings, dict) else {}


def built_params_file(
    project: Project, strategy_id: str, compiled: dict[str, Any], data_may_differ: bool = False
) -> Path:
    """generated/<id>/params.yaml, when it is exactly what conf/ compiles to now (``compiled``:
    the strategy's runtime parameters as just compiled). Otherwise the pinned backtest or the
    refresh would run, and cite, a file that says something else (or nothing): stop and say so.
    (The runner runs the committed file regardless: a rollback depends on it.)
    ``data_may_differ``: the local data's fingerprint is not compared (the refresh exists to run
    the pinned configuration on data that changed, and reports that itself)."""
    built = project.generated_dir / strategy_id / "params.yaml"
    where = f"generated/{strategy_id}/params.yaml"
    if not built.is_file():
        raise QcompileError(
            f"{where} does not exist: qcompile runs only what was built; run `qcompile build` first"
        )
    try:
        recorded = yaml.safe_load(built.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise QcompileError(f"{where} is unreadable ({error}); run `qcompile build`") from None
    if data_may_differ:
        recorded, compiled = _without_data_pins(recorded), _without_data_pins(compiled)
    if sha256_json(recorded) != sha256_json(compiled):
        raise QcompileError(
            f"{where} is not what conf/ compiles to now (conf/, the signal code or the data "
            "changed since the last build): qcompile runs only what was built; run "
            "`qcompile build`, review generated/'s diff, then run again"
        )
    return built


def _without_data_pins(params: Any) -> Any:
    """Runtime parameters without what pins the local data's content."""
    if not isinstance(params, dict):
        return params
    trimmed = json.loads(json.dumps(params, default=str))
    data_pin = (trimmed.get("pins") or {}).get("data")
    if isinstance(data_pin, dict):
        data_pin.pop("fingerprint", None)
    if isinstance(trimmed.get("evidence_inputs"), dict):
        trimmed["evidence_inputs"].pop("data_sha256", None)
    return trimmed


def inputs_digest(project: Project, overrides: list[str], only: list[str] | None) -> str | None:
    """Digest of everything a build reads, or None when it cannot be known without compiling."""
    from qcompile.compiler.generator import generator_pin
    from qcompile.signals.source import package_files

    primary = _raw_yaml(project.conf_dir / PRIMARY_CONFIG)
    if not isinstance(primary, dict) or not isinstance(primary.get("project"), dict):
        return None
    settings = primary["project"]
    packages = settings.get("signal_packages")
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        return None
    parts: dict[str, Any] = {
        "generator": generator_pin(),
        "overrides": list(overrides),
        "only": sorted(only or []),
        "conf": {project.rel(p): sha256_file(p) for p in project.config_files()},
        "signals": [sha256_file(p) for p in package_files(packages, project.root)],
    }
    cache = FingerprintCache(project.cache_dir / "fingerprints.json")
    data: dict[str, Any] = {}
    for path in sorted((project.conf_dir / "data").glob("*.yaml")):
        if b"@package" in path.read_bytes():
            return None  # placed elsewhere than data.*: only a full compose knows where
        source = _raw_yaml(path)
        local = source.get("local") if isinstance(source, dict) else None
        if not isinstance(local, dict):
            continue
        if "${" in str(local):
            return None  # interpolated location: only a full compose knows where the data is
        directory = project.root / str(local.get("path"))
        if not project.contains(directory):
            return None  # outside the project: the compile refuses it, with the file and line
        files = data_files(directory, str(local.get("format"))) if directory.is_dir() else []
        if not all(project.contains(f) for f in files):
            return None  # a file linked out of the project: likewise
        data[str(local.get("path"))] = [(project.rel(f), file_sha256(f, cache)) for f in files]
    cache.save()
    parts["data"] = data
    events = _event_files(project, overrides)
    if events is None:
        return None
    parts["events"] = events
    reports = project.root / str(settings.get("reports_dir", "reports"))
    # reports too: a sign-off records the report's hash, and a changed report makes it stale
    parts["evidence"] = (
        {
            project.rel(p): sha256_file(p)
            for p in sorted(
                [
                    *reports.rglob("evidence.json"),
                    *reports.rglob("report.md"),
                    *reports.rglob("parity.json"),  # ticks or opens a checklist item
                ]
            )
        }
        if reports.is_dir()
        else {}
    )
    from qcompile.compiler.rules.checklist import selftest_path

    runtime_tests = selftest_path(settings, project.root)
    parts["runtime_tests"] = sha256_file(runtime_tests) if runtime_tests.is_file() else None
    coverage = settings.get("coverage_report")
    coverage_file = project.root / str(coverage) if coverage else None
    parts["coverage"] = (
        sha256_file(coverage_file) if coverage_file and coverage_file.is_file() else None
    )
    return sha256_json(parts)


def _event_files(project: Project, overrides: list[str]) -> dict[str, str | None] | None:
    """Hashes of the event calendars strategies name, or None when only a compose can tell."""
    if any("events" in override for override in overrides):
        return None
    files: dict[str, str | None] = {}
    for path in sorted((project.conf_dir / "strategy").glob("*.yaml")):
        if b"events" not in path.read_bytes():
            continue  # no key named events: nothing to parse (most strategies)
        raw = _raw_yaml(path)
        strategy = raw.get("strategy") if isinstance(raw, dict) else None
        signal = strategy.get("signal") if isinstance(strategy, dict) else None
        value = signal.get("events") if isinstance(signal, dict) else None
        if value is None:
            continue
        if not isinstance(value, str) or "${" in value:
            return None
        file = project.root / value
        files[value] = sha256_file(file) if file.is_file() else None
    return files


def _outputs_intact(project: Project, manifest: dict[str, Any], existing: list[str]) -> bool:
    expected = dict(manifest.get("files", {}))
    for entry in manifest.get("strategies", {}).values():
        expected.update(entry.get("outputs", {}))
    expected[MANIFEST] = None
    present = set(existing)
    if present != set(expected):
        return False
    return all(
        sha is None or sha256_file(project.generated_dir / p) == sha for p, sha in expected.items()
    )


def _existing(project: Project) -> list[str]:
    from qcompile.compiler.write import existing_files

    return existing_files(project.generated_dir)


@dataclass
class Compilation:
    """The result of compose, validate, lock and the gates, before anything is rendered."""

    strategies: list[Any]  # list[CompiledStrategy]
    project_settings: dict[str, Any]
    signals: dict[str, Any]  # name -> SignalSource
    warnings: list[Diagnostic] = field(default_factory=list)
    gates: dict[str, list[str]] = field(default_factory=dict)  # effective: the floor applied


def compile_project(
    project: Project,
    overrides: list[str],
    only: list[str] | None = None,
    enforce_gates: bool = True,
    untested_values: bool = False,
) -> Compilation:
    """Compose, validate, lock and check gates; raise DiagnosticsError listing every problem.
    ``enforce_gates=False`` compiles a strategy whose declared phase's gate fails (to show what
    its next build would write, e.g. the checklist an engineer re-signs), every other check kept.
    ``untested_values`` admits signal parameters outside their tested values: a sweep exists to
    try other values, and says so in its own report."""
    from qcompile.compiler.compose import compose_strategies, read_conf_tree
    from qcompile.compiler.datacheck import data_diagnostics
    from qcompile.compiler.lock import drift_diagnostics, lock_strategy
    from qcompile.compiler.plan import CompiledStrategy, checklist_bytes
    from qcompile.compiler.rules.checklist import (
        PARITY_FILE,
        WAIVER_PREFIX,
        ParityCheck,
        evaluate_checklist,
        load_parity,
        parity_inputs,
        shared_evidence,
        waived_items,
    )
    from qcompile.compiler.rules.gates import (
        NO_BACKTEST,
        Unmet,
        active_waivers,
        effective_gates,
        evaluate,
        evidence_path,
        expected_daily,
        floor_gaps,
        load_evidence,
        next_phase,
        requirements_for,
        signoff_staleness,
        stale_inputs,
    )
    from qcompile.compiler.rules.signoffs import resign_command, signed_artefacts
    from qcompile.compiler.validate import (
        containment_diagnostics,
        cross_field_diagnostics,
        duplicate_id_diagnostics,
        resolve,
        schema_diagnostics,
        secret_diagnostics,
    )
    from qcompile.signals.source import scan_packages

    tree = read_conf_tree(project)
    composed_list = compose_strategies(project, tree, overrides, set(only) if only else None)
    diagnostics: list[Diagnostic] = secret_diagnostics(tree, overrides)
    resolved = []
    valid: dict[int, bool] = {}
    for composed in composed_list:
        data, problems = resolve(composed)
        problems += schema_diagnostics(composed, data)
        if not problems:  # lock and gates read these paths: refuse one that leaves the project
            problems += containment_diagnostics(project, composed, data)
        valid[id(composed)] = not problems  # lock and gates need schema-valid data, nothing more
        diagnostics += problems + [
            d
            for d in cross_field_diagnostics(composed, data)
            if not (untested_values and d.code == UNTESTED)  # a sweep tests other values
        ]
        resolved.append((composed, data))
    diagnostics += duplicate_id_diagnostics(resolved)

    primary = tree.files["qcompile"]
    settings: dict[str, Any] = next((d["project"] for c, d in resolved if valid[id(c)]), {})
    # the project's gates, as any schema-valid strategy composed them (none valid: unknown)
    configured = next((d["gates"] for c, d in resolved if valid[id(c)]), None)
    gates = effective_gates(configured or {})  # the floor applies whatever the project lists
    warnings = _floor_warnings(primary, floor_gaps(configured) if configured is not None else [])
    packages = list(settings.get("signal_packages", []))
    signals, missing = scan_packages(packages, project.root)
    for package in missing:
        diagnostics.append(
            Diagnostic(
                primary.path,
                primary.line_of("project.signal_packages"),
                "project.signal_packages",
                f"package {package!r} not found",
                "lock.package_missing",
                "install it, or put it in the project root or src/",
            )
        )
    previous = read_manifest(project).get("signals", {})
    cache = FingerprintCache(project.cache_dir / "fingerprints.json")
    fingerprints: dict[tuple[str, str], DataFingerprint | None] = {}
    reports_dir = project.root / settings.get("reports_dir", "reports")
    on = today()
    shared = shared_evidence(settings, project.root)  # the self-test and coverage reports
    compiled = []
    for composed, data in resolved:
        if not valid[id(composed)]:
            continue
        local = data["data"].get("local") or {}
        key = (str(local.get("path", "")), str(local.get("format", "")))
        if key not in fingerprints:
            fingerprints[key] = (
                fingerprint(project.root / key[0], key[1], cache) if key[0] else None
            )
        lock = lock_strategy(composed, data, signals, fingerprints[key], project.root)
        diagnostics += lock.diagnostics
        strategy = data["strategy"]
        path = evidence_path(reports_dir, strategy["id"], strategy["version"])
        backtest = load_evidence(path, project.rel(path), strategy["id"])
        ran = load_parity(
            path.with_name(PARITY_FILE), project.rel(path.with_name(PARITY_FILE)), strategy["id"]
        )
        malformed = [f.problem for f in (backtest, ran) if f.problem] + shared.problems
        if malformed:  # the gates and the checklist would judge evidence that does not read
            diagnostics += malformed
            continue
        evidence, why = backtest.document, NO_BACKTEST
        artefacts = signed_artefacts(project.root, data)
        waivers, expired = active_waivers(strategy, on)
        parity = ParityCheck(ran.document, parity_inputs(lock.backtest_inputs, data["deployment"]))
        items = evaluate_checklist(data, lock.pins, evidence, shared, waivers, parity)
        unticked = [item.id for item in items if not item.ticked]
        warnings += _ignored_signatures(composed, strategy)
        if "checklist" in artefacts:  # signed: compare with the checklist this build writes
            rendered = checklist_bytes(
                CompiledStrategy(composed, data, lock, project.rel(path), False, [], items, gates)
            )
            artefacts["checklist"] = artefacts["checklist"]._replace(sha256=sha256_bytes(rendered))
        gate = partial(
            evaluate,
            gates=gates,
            strategy=strategy,
            pins=lock.pins,
            evidence=evidence,
            evidence_problem=why,
            expected_inputs=lock.backtest_inputs,
            artefacts=artefacts,
            unticked=unticked,
            waivers=waivers,
            deployment=data["deployment"],
        )
        declared = gate(strategy["status"])
        waived = [u for u in declared if u.waived] + [
            Unmet(
                "production",
                WAIVER_PREFIX + item.id,
                item.evidence,
                "strategy.waivers",
                item.waiver,
            )
            for item in waived_items(items)
        ]
        warnings += _waiver_warnings(composed, strategy["status"], waived, expired)
        unmet = [u for u in declared if not u.waived] if enforce_gates else []
        for item in unmet:
            file, line = composed.locate("strategy.status")
            detail = item.detail + (
                f" ({project.rel(path)})" if item.requirement == "evidence.backtest" else ""
            )
            diagnostics.append(
                Diagnostic(
                    file,
                    line,
                    "strategy.status",
                    f"phase '{strategy['status']}' requires {item.requirement}: {detail}",
                    f"gate.{item.requirement}",
                    f"needed since {item.phase}; see docs/lifecycle.md",
                )
            )
        stale = stale_inputs(evidence, lock.backtest_inputs) if evidence is not None else []
        if stale:
            warnings.append(
                Diagnostic(
                    project.rel(path),
                    0,
                    "",
                    f"report is stale: {', '.join(stale)} changed since it ran; "
                    f"re-run `qcompile backtest {strategy['id']}`",
                    "report.stale",
                    severity="warning",
                )
            )
        # a stale sign-off the declared phase needs is a gate error above; any other is a warning
        gated = {r for _, r in requirements_for(strategy["status"], gates)}
        for name, current in artefacts.items():
            detail = signoff_staleness(name, strategy["signoffs"][name], current)
            if detail and f"signoff.{name}" not in gated:
                file, line = composed.locate(f"strategy.signoffs.{name}")
                warnings.append(
                    Diagnostic(
                        file,
                        line,
                        f"strategy.signoffs.{name}",
                        detail,
                        "signoff.stale",
                        f"review it and sign again: {resign_command(strategy['id'], name)}",
                        severity="warning",
                    )
                )
        review = review_diagnostic(
            strategy["id"],
            strategy["status"],
            strategy.get("deployment_record"),
            on,
            composed.locate(REVIEW_KEY),
        )
        if review is not None:
            warnings.append(review)
        following = next_phase(strategy["status"])
        unmet_next = [u for u in gate(following) if u.phase == following] if following else []
        compiled.append(
            CompiledStrategy(
                composed,
                data,
                lock,
                project.rel(path),
                evidence is not None,
                unmet_next,
                items,
                gates,
                waived,
                expected_daily(evidence),
            )
        )
    checked = data_diagnostics(
        project, [(c, d) for c, d in resolved if valid[id(c)]], fingerprints, cache
    )
    diagnostics += [d for d in checked if d.severity == "error"]
    warnings += [d for d in checked if d.severity != "error"]
    cache.save()
    used = {c.data["strategy"]["signal"]["name"] for c in compiled}
    diagnostics += drift_diagnostics(signals, used, previous)
    if any(d.severity == "error" for d in diagnostics):
        # a floor the project left out, or a waiver that expired, explains a gate error: say so
        raise DiagnosticsError(diagnostics + [w for w in warnings if w.code.startswith("gate.")])
    return Compilation(compiled, settings, signals, sorted(warnings), gates)


def _floor_warnings(primary: Any, gaps: list[tuple[str, str]]) -> list[Diagnostic]:
    """A warning per floor requirement the project's gates leave out (it applies anyway)."""
    return [
        Diagnostic(
            primary.path,
            primary.line_of(f"gates.{phase}"),
            f"gates.{phase}",
            f"does not ask for {requirement}: the source document requires it by {phase}, "
            "so it applies anyway",
            "gate.floor",
            "a project may add requirements, never remove or postpone them; see docs/lifecycle.md",
            severity="warning",
        )
        for phase, requirement in gaps
    ]


def _ignored_signatures(composed: Any, strategy: dict[str, Any]) -> list[Diagnostic]:
    """A warning per hand signature on an automatic checklist item: it ticks nothing."""
    from qcompile.compiler.rules.checklist import AUTOMATIC_ITEMS

    warnings = []
    for item in AUTOMATIC_ITEMS:
        if item in (strategy.get("checklist") or {}):
            file, line = composed.locate(f"strategy.checklist.{item}")
            warnings.append(
                Diagnostic(
                    file,
                    line,
                    f"strategy.checklist.{item}",
                    "is checked automatically by the build; a hand signature does not tick it",
                    "checklist.signature_ignored",
                    "remove the signature; if the check cannot pass, waive "
                    f"checklist.{item} in strategy.waivers (docs/lifecycle.md)",
                    severity="warning",
                )
            )
    return warnings


def _waiver_warnings(
    composed: Any, phase: str, waived: list[Any], expired: list[str]
) -> list[Diagnostic]:
    """Every waiver in force that passed a requirement, and every expired one: shown on every
    build, at the strategy's waivers."""
    file, line = composed.locate("strategy.waivers")

    def warning(message: str, code: str, hint: str) -> Diagnostic:
        return Diagnostic(file, line, "strategy.waivers", message, code, hint, severity="warning")

    return [
        warning(
            f"phase '{phase}' requires {u.requirement} ({u.detail}); {u.waived}",
            "gate.waived",
            "a waiver is an exception, shown wherever the strategy is: see docs/lifecycle.md",
        )
        for u in waived
    ] + [
        warning(
            f"expired, it waives nothing: {text}",
            "gate.waiver_expired",
            "renew it (a new signed entry) or meet the requirement",
        )
        for text in expired
    ]


def render_outputs(
    project: Project,
    compilation: Compilation,
    overrides: list[str],
    only: list[str] | None,
    digest: str | None,
    emit: Callable[[str, bytes], None] | None = None,
    reuse: bool = True,
) -> dict[str, bytes]:
    """Every file of the new generated/ tree, manifest included; ``emit`` is handed each
    strategy's files as soon as they are rendered (the writer stages them meanwhile). With
    ``reuse``, a strategy whose render inputs match the manifest keeps its files unrendered."""
    from qcompile.compiler.plan import plan_index, plan_strategy
    from qcompile.compiler.quoting import shared_blocks
    from qcompile.compiler.render import render

    with shared_blocks():  # strategies share option objects: render their YAML once
        previous = read_manifest(project)
        old_entries: dict[str, Any] = previous.get("strategies", {})
        outputs: dict[str, bytes] = {}
        entries: dict[str, Any] = {}
        if only:  # strategies not selected keep their files and index rows as they are
            selected = {c.id for c in compilation.strategies}
            for strategy_id, entry in old_entries.items():
                if strategy_id in selected:
                    continue
                files = {
                    p: (project.generated_dir / p).read_bytes()
                    for p in entry.get("outputs", {})
                    if (project.generated_dir / p).is_file()
                }
                if len(files) == len(entry.get("outputs", {})):
                    outputs.update(files)
                    entries[strategy_id] = entry
        for compiled in compilation.strategies:
            plan = plan_strategy(compiled)
            old = old_entries.get(plan.id, {})
            reusable = (
                reuse
                and old.get("inputs_sha256") == plan.inputs_sha256
                and all(
                    (project.generated_dir / p).is_file()
                    and sha256_file(project.generated_dir / p) == sha
                    for p, sha in old.get("outputs", {}).items()
                )
            )
            rendered = {}
            for artefact in plan.artefacts:
                path = f"{artefact.path}"
                if reusable and path in old.get("outputs", {}):
                    rendered[path] = (project.generated_dir / path).read_bytes()
                else:
                    rendered[path] = render(artefact.template, artefact.context)
            outputs.update(rendered)
            if emit is not None:
                for path, content in rendered.items():
                    emit(path, content)
            entries[plan.id] = {
                "source": plan.source,
                "inputs_sha256": plan.inputs_sha256,
                "outputs": {p: sha256_bytes(b) for p, b in sorted(rendered.items())},
                "summary": plan.summary,
            }
        index = plan_index(
            compilation.project_settings.get("name", "Portfolio"),
            [e["summary"] for e in entries.values()],
            compilation.gates,
        )
        outputs[index.path] = render(index.template, index.context)
        signals = dict(previous.get("signals", {}))
        for compiled in compilation.strategies:
            found = compiled.lock.signal
            if found is not None:
                signals[found.name] = {
                    "version": found.version,
                    "sha256": found.source_sha256,
                    "module": found.module,
                }
        manifest = {
            "generator": f"qcompile {__version__}",
            "regenerate": "qcompile build",
            "inputs_sha256": digest,
            "overrides": list(overrides),
            "signals": dict(sorted(signals.items())),
            "strategies": dict(sorted(entries.items())),
            "files": {index.path: sha256_bytes(outputs[index.path])},
        }
        outputs[MANIFEST] = (
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode()
        return outputs


def entry_named(strategy_id: str, entry: dict[str, Any], names: list[str]) -> bool:
    """Whether a manifest entry is one of ``names``: by id, or by the stem of its file under
    conf/strategy/, as the command line names strategies."""
    return strategy_id in names or Path(str(entry.get("source", ""))).stem in names


def _generated_reviews(
    project: Project, manifest: dict[str, Any], only: list[str] | None
) -> list[Diagnostic]:
    """The one-year rule without compiling: when the input digest matched, the passports in
    generated/ are exactly what conf/ compiles to, and the date is not an input of the digest."""
    from qcompile.compiler.read import read_config_file

    on = today()
    warnings = []
    for strategy_id, entry in sorted(manifest.get("strategies", {}).items()):
        if only and not entry_named(strategy_id, entry, only):
            continue
        source = str(entry.get("source", ""))
        if (entry.get("summary") or {}).get("phase") != "production":
            continue
        passport = _raw_yaml(project.generated_dir / strategy_id / "passport.yaml")
        record = passport.get("deployment") if isinstance(passport, dict) else None
        record = record if isinstance(record, dict) else None
        line = 0
        if source and (project.root / source).is_file():
            config, _ = read_config_file(project.root, project.root / source, project.conf_dir)
            line = config.line_of(REVIEW_KEY)
        found = review_diagnostic(strategy_id, "production", record, on, (source, line))
        if found is not None:
            warnings.append(found)
    return warnings


def _enforce_reviews(warnings: list[Diagnostic]) -> None:
    """``--check`` fails on the one-year rule so that CI enforces it; a plain build only warns.
    Like any configuration error, it is reported before staleness."""
    if any(w.code in CODES for w in warnings):
        raise DiagnosticsError(
            [replace(w, severity="error") if w.code in CODES else w for w in warnings]
        )


def current_params_file(project: Project, strategy: str) -> tuple[str, Path] | None:
    """(id, generated/<id>/params.yaml) when generated/ is exactly what a full build of conf/
    writes now, by the build's own no-op test (the same inputs digest: conf/, signal code, data;
    the same compiler; every output intact), and ``strategy`` (an id or a config name) is one of
    its strategies. None when only compiling can tell: the caller compiles."""
    from qcompile.compiler.generator import rendered_with_this_source

    digest = inputs_digest(project, [], None)
    manifest = read_manifest(project)
    if digest is None or manifest.get("inputs_sha256") != digest:
        return None
    if not rendered_with_this_source(project.cache_dir):
        return None
    if not _outputs_intact(project, manifest, _existing(project)):
        return None
    for strategy_id, entry in sorted(manifest.get("strategies", {}).items()):
        if strategy in (strategy_id, Path(str(entry.get("source", ""))).stem):
            return strategy_id, project.generated_dir / strategy_id / "params.yaml"
    return None


def build(
    project: Project,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    check: bool = False,
) -> BuildOutcome:
    """Compile conf/ into generated/ (or, with ``check``, raise StaleError if it is out of date)."""
    from qcompile.compiler.generator import remember_source, rendered_with_this_source

    overrides = list(overrides or [])
    digest = inputs_digest(project, overrides, only)
    manifest = read_manifest(project)
    same_compiler = rendered_with_this_source(project.cache_dir)
    existing = _existing(project) if digest is not None and same_compiler else []
    if (
        digest is not None
        and same_compiler
        and manifest.get("inputs_sha256") == digest
        and _outputs_intact(project, manifest, existing)
    ):
        warnings = _generated_reviews(project, manifest, only)
        if check:
            _enforce_reviews(warnings)
        return BuildOutcome(
            WriteReport(unchanged=existing),
            up_to_date=True,
            strategies=sorted(manifest.get("strategies", {})),
            warnings=warnings,
        )
    compilation = compile_project(project, overrides, only)
    strategies = sorted(c.id for c in compilation.strategies)
    if not check:
        with StagedWrite(project.generated_dir) as staged:
            outputs = render_outputs(
                project, compilation, overrides, only, digest, staged.add, reuse=same_compiler
            )
            written = staged.commit(outputs)
        remember_source(project.cache_dir)
        return BuildOutcome(written, strategies=strategies, warnings=compilation.warnings)
    outputs = render_outputs(project, compilation, overrides, only, digest, reuse=same_compiler)
    _enforce_reviews(compilation.warnings)
    stale = stale_files(project.generated_dir, outputs)
    if only:  # a partial build's manifest and index differ by construction: judge its folders
        stale = [p for p in stale if p.split("/", 1)[0] in strategies]
    if stale:
        raise StaleError([f"generated/{p}" for p in stale])
    remember_source(project.cache_dir)  # generated/ is what this compiler renders
    return BuildOutcome(
        WriteReport(unchanged=sorted(outputs)), strategies=strategies, warnings=compilation.warnings
    )


__all__ = [
    "BuildOutcome",
    "Compilation",
    "DiagnosticsError",
    "build",
    "compile_project",
    "inputs_digest",
    "project_settings",
]
