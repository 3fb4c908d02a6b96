"""The deployment checklist (source document §5): each item verified from evidence, or signed.

Consumes a strategy's resolved config, its pins, its backtest evidence and the project's signal
coverage report; produces one :class:`ItemStatus` per item of ``gates.CHECKLIST_ITEMS``. An
automatic item names the evidence it was verified from, or says why it is not verified; a manual
item is ticked only by a sign-off (``qcompile signoff STRATEGY --item ID --by EMAIL``), which
records the item's wording it attests to. A signature never ticks an automatic item: what a
program can check is ticked only by the check, and a failing check is passed only by a waiver
(``checklist.<item>`` in ``strategy.waivers``), which the checklist, passport and index show.
The production gate requires every item ticked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcompile import __version__
from qcompile.compiler.rules.evidence import (
    COVERAGE_SHAPE,
    PARITY_SHAPE,
    SELFTEST_SHAPE,
    Evidence,
    read_evidence,
)
from qcompile.compiler.rules.gates import CHECKLIST_ITEMS, expected_daily
from qcompile.errors import Diagnostic
from qcompile.hashing import runtime_sha256, sha256_json
from qcompile.research.datalayout import epoch_time
from qcompile.runtimedefaults import ALERT_THRESHOLDS

COVERAGE_MINIMUM = 80.0
# Items the runner's behaviour proves for every strategy it runs: `qcompile selftest` runs those
# checks against the emulator and records them for the qcompile version and runtime source.
RUNTIME_ITEMS = {
    "code.state_persistence": ("state_recovery",),
    "code.safe_state": ("safe_state", "fail_stop"),
    "code.integration_tests": ("heartbeat", "reconnect"),
    "data.rate_limits_tested": ("rate_limits",),
    "data.state_recovery_verified": ("state_recovery",),
}
MANUAL_ITEMS = {
    "data.api_permissions",
    "data.stream_authenticated",
    "monitoring.heartbeat",
    "monitoring.alerts_tested",
    "monitoring.dashboard",
    "docs.on_call",
}
AUTOMATIC_ITEMS = tuple(item for item in CHECKLIST_ITEMS if item not in MANUAL_ITEMS)
WAIVER_PREFIX = "checklist."  # a waiver of automatic item X names requirement checklist.X


@dataclass(frozen=True)
class ItemStatus:
    id: str
    text: str
    section: str
    mode: str  # "auto" or "manual"
    ticked: bool
    evidence: str  # what verified it, who signed it, or what is missing
    waiver: str = ""  # the waiver that passed its failing check: who, until when, why


def _signed(record: Any, text: str) -> tuple[str | None, str]:
    """(who signed and when, or None; why a signature present does not count, or "")."""
    if not (isinstance(record, dict) and record.get("by") and record.get("at")):
        return None, ""
    attests = record.get("attests")
    if attests is not None and attests != text:  # the item's wording changed since
        return None, f"the signature attests to {attests!r}; the item now reads {text!r}"
    return f"signed by {record['by']} at {record['at']}", ""


def coverage_percent(report: dict[str, Any], source: str) -> float | None:
    """Line coverage of ``source`` (a path ending) in a coverage.py JSON report (read by
    ``shared_evidence``: ``files`` and each entry's ``summary`` are mappings), or None."""
    for name, entry in (report.get("files") or {}).items():
        if Path(name).as_posix().endswith(source):
            summary = (entry or {}).get("summary") or {}
            value = summary.get("percent_covered")
            return float(value) if isinstance(value, int | float) else None
    return None


PARITY_FILE = "parity.json"
# The deployment settings that change what the runner decides (not where it saves or alerts,
# nor where its orders go: parity always trades on the paper broker).
TRADING_SETTINGS = ("channel", "history_bars")


def parity_inputs(backtest_inputs: dict[str, Any], deployment: dict[str, Any]) -> dict[str, Any]:
    """What a parity run vouches for: the backtest's inputs (config, data, signal source), the
    runtime's source and the deployment settings that change what the runner trades. A change
    to any of them makes the run stale. ``qcompile parity`` records exactly this."""
    settings = {k: deployment.get(k) for k in TRADING_SETTINGS}
    return {
        **backtest_inputs,
        "runtime_sha256": runtime_sha256(),
        "trading_settings_sha256": sha256_json(settings),
    }


@dataclass(frozen=True)
class SharedEvidence:
    """The project-wide evidence files the checklist reads, each read once per build."""

    runtime_tests: Evidence  # `qcompile selftest`'s result for this qcompile version
    coverage: Evidence | None  # the signal tests' coverage report; None when none is configured

    @property
    def problems(self) -> list[Diagnostic]:
        """The ``evidence.malformed`` diagnostics of those that exist but do not read."""
        files = (self.runtime_tests, self.coverage)
        return [f.problem for f in files if f is not None and f.problem is not None]


def shared_evidence(project: dict[str, Any], root: Path) -> SharedEvidence:
    """Read the runtime self-test result and the coverage report ``project`` (the config's
    ``project`` settings) names."""
    tests = selftest_path(project, root)
    runtime = read_evidence(
        tests,
        tests.relative_to(root).as_posix(),
        SELFTEST_SHAPE,
        "written by `qcompile selftest`: run it again (or restore the committed file)",
    )
    report = project.get("coverage_report")
    coverage = (
        read_evidence(
            root / str(report),
            str(report),
            COVERAGE_SHAPE,
            "a coverage.py JSON report: regenerate it (docs/lifecycle.md, Signal coverage)",
        )
        if report
        else None
    )
    return SharedEvidence(runtime, coverage)


def load_parity(path: Path, where: str, strategy_id: str) -> Evidence:
    """A version's parity.json, read against the shape ``_parity`` reads."""
    return read_evidence(
        path, where, PARITY_SHAPE, f"written by `qcompile parity {strategy_id}`: run it again"
    )


@dataclass(frozen=True)
class ParityCheck:
    """A strategy's parity record (reports/<id>/<version>/parity.json, None if absent) and the
    inputs it must have been run with to count now."""

    record: dict[str, Any] | None
    expected: dict[str, Any]


def evaluate_checklist(
    config: dict[str, Any],
    pins: dict[str, Any],
    evidence: dict[str, Any] | None,
    shared: SharedEvidence,
    waivers: dict[str, str] | None = None,
    parity: ParityCheck | None = None,
) -> list[ItemStatus]:
    """Each item's status. ``waivers`` (requirement -> description, those in force) may pass a
    failing automatic item; nothing else can. ``evidence``, ``shared`` and ``parity`` were read
    by ``read_evidence``: of the shape this module reads."""
    strategy, source = config["strategy"], config["data"]
    signed = strategy.get("checklist") or {}
    results = []
    for item, text in CHECKLIST_ITEMS.items():
        section = item.partition(".")[0]
        if item in MANUAL_ITEMS:
            by_hand, why_not = _signed(signed.get(item), text)
            results.append(
                ItemStatus(
                    item,
                    text,
                    section,
                    "manual",
                    by_hand is not None,
                    by_hand or why_not or "not signed",
                )
            )
            continue
        verified, detail = _verify(item, strategy, source, pins, evidence, shared, parity)
        mode = "runtime tests" if item in RUNTIME_ITEMS else "auto"
        waiver = (waivers or {}).get(WAIVER_PREFIX + item)
        if not verified and waiver:
            results.append(ItemStatus(item, text, section, f"{mode}, WAIVED", True, detail, waiver))
            continue
        if not verified and item in signed:
            detail += "; a hand signature cannot tick an automatic item (waive it instead)"
        results.append(ItemStatus(item, text, section, mode, verified, detail))
    return results


def waived_items(items: list[ItemStatus]) -> list[ItemStatus]:
    """The automatic items ticked only because a waiver passed their failing check."""
    return [item for item in items if item.waiver]


def _verify(
    item: str,
    strategy: dict[str, Any],
    source: dict[str, Any],
    pins: dict[str, Any],
    evidence: dict[str, Any] | None,
    shared: SharedEvidence,
    parity: ParityCheck | None = None,
) -> tuple[bool, str]:
    signal = pins.get("signal") or {}
    label = f"{signal.get('name')}@{signal.get('version')}"
    sha = str(signal.get("source_sha256") or "")
    if item == "code.signal_matches_backtest":
        if evidence is None:
            return False, "no backtest evidence for this version"
        ran = (evidence.get("inputs") or {}).get("signal_source_sha256")
        if ran != sha:
            return False, f"the backtest ran signal source {str(ran)[:12]}, the pin is {sha[:12]}"
        return _parity(strategy, label, parity)
    if item == "code.parameters_externalised":
        return (
            True,
            "runner.py and backtest.py hold only the strategy id; values are in params.yaml",
        )
    if item == "code.no_hardcoded_secrets":
        return True, "the build scanned conf/ and the overrides: no literal secret"
    if item == "code.signal_coverage":
        return _coverage(shared.coverage, signal)
    if item in RUNTIME_ITEMS:
        return _selftest(RUNTIME_ITEMS[item], shared.runtime_tests)
    fingerprint = (pins.get("data") or {}).get("fingerprint") or {}
    if item == "data.endpoints_verified":
        if not fingerprint:
            return False, "no local data: run `qcompile download` and rebuild"
        endpoints = ", ".join(source.get("endpoints") or []) or "local files"
        return True, (
            f"{source['vendor']} {endpoints}: {fingerprint.get('files')} files, "
            f"{fingerprint.get('rows')} rows pinned ({str(fingerprint.get('content_sha256'))[:12]})"
        )
    if item == "data.lookback_covered":
        return _lookback(strategy, fingerprint, (pins.get("data") or {}).get("timestamp") or {})
    if item == "monitoring.alert_thresholds":
        return _alert_thresholds(strategy, evidence)
    if item == "docs.passport":
        missing = [
            k
            for k in ("alpha_thesis", "researcher", "hypothesis_date")
            if not str(strategy.get(k) or "").strip()
        ]
        return (not missing), (
            f"generated/{strategy['id']}/passport.yaml, every field filled"
            if not missing
            else f"passport lacks {', '.join(missing)}"
        )
    if item == "docs.report_linked":
        if evidence is None:
            return False, "no backtest report for this version"
        return (
            True,
            f"reports/{strategy['id']}/{strategy['version']}/report.md, linked from the passport",
        )
    if item == "docs.runbook":
        return True, f"generated/{strategy['id']}/runbook.md"
    if item == "docs.rollback":
        return True, (
            f"generated/{strategy['id']}/rollback.sh (shellcheck-clean; --dry-run prints each step)"
        )
    raise AssertionError(f"checklist item {item} has no verification")  # CHECKLIST_ITEMS grew


def _parity(strategy: dict[str, Any], label: str, parity: ParityCheck | None) -> tuple[bool, str]:
    """Ticked by a passing `qcompile parity` run for exactly these inputs: the runner, fed the
    backtest's window, made the backtest's fills and equity marks."""
    where = f"reports/{strategy['id']}/{strategy['version']}/{PARITY_FILE}"
    run = f"run `qcompile parity {strategy['id']}`"
    record = parity.record if parity else None
    if not isinstance(record, dict):
        return False, f"no parity run of the runner against the backtest ({where}): {run}"
    recorded = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    expected = parity.expected if parity else {}
    changed = sorted(k for k in expected if recorded.get(k) != expected[k])
    if changed:
        return False, f"{where} is stale ({', '.join(changed)} changed since): {run} again"
    if record.get("passed") is not True:
        return False, f"the runner diverged from the backtest: {record.get('first_divergence')}"
    fills = (record.get("fills") or {}).get("runner")
    window = "..".join(str(day) for day in record.get("window") or [])
    return True, (
        f"{where}: the runner ({label}) reproduced the backtest's {fills} fills and "
        f"{record.get('equity_marks_compared')} daily equity marks over {window}"
    )


def _alert_thresholds(
    strategy: dict[str, Any], evidence: dict[str, Any] | None
) -> tuple[bool, str]:
    """Ticked when the passport promises alerts and the runner will act on each: its threshold
    is configured (validation refuses a promise without one; the schema, an unknown kind), and
    the deviation alert has the backtest's daily statistics to compare with."""
    declared = (strategy.get("deployment_record") or {}).get("monitoring_alerts") or []
    if not declared:
        return False, "no alerts promised (strategy.deployment_record.monitoring_alerts)"
    thresholds = strategy.get("monitoring") or {}
    shown = []
    for alert in declared:
        key = ALERT_THRESHOLDS.get(alert)
        if key is None:
            shown.append(f"{alert} (the feed's silence alert, two heartbeat intervals)")
        elif thresholds.get(key) is None:
            return False, f"{alert} has no strategy.monitoring.{key}"
        elif alert == "backtest_deviation" and expected_daily(evidence) is None:
            return False, (
                f"{alert} has nothing to compare with: the backtest evidence carries no daily "
                "statistics (run `qcompile backtest` again)"
            )
        else:
            unit = "" if key == "max_losing_streak" else " %"
            shown.append(f"{alert} at {thresholds[key]:g}{unit}")
    return True, "the runner alerts on " + "; ".join(shown)


def selftest_path(project: dict[str, Any], root: Path) -> Path:
    return (
        root
        / str(project.get("reports_dir", "reports"))
        / "runtime"
        / f"qcompile-{__version__}.json"
    )


def _selftest(checks: tuple[str, ...], tests: Evidence) -> tuple[bool, str]:
    shown, result = tests.where, tests.document
    if result is None:
        return False, f"no runtime test evidence ({shown}): run `qcompile selftest`"
    if result.get("runtime_sha256") != runtime_sha256():
        return False, f"{shown} tested another runtime source: run `qcompile selftest` again"
    outcomes = result.get("checks") or {}
    failed = [c for c in checks if not (outcomes.get(c) or {}).get("passed")]
    if failed:
        return False, f"{shown}: {', '.join(failed)} did not pass"
    return True, f"{shown}: " + "; ".join(str(outcomes[c]["detail"]) for c in checks)


def _coverage(coverage: Evidence | None, signal: dict[str, Any]) -> tuple[bool, str]:
    if coverage is None:
        return False, "no coverage report configured (project.coverage_report)"
    report = coverage.where
    module = str(signal.get("module") or "")
    source = module.replace(".", "/") + ".py"
    percent = coverage_percent(coverage.document, source) if coverage.document else None
    if percent is None:
        return False, f"{report} has no coverage of {source}"
    if percent < COVERAGE_MINIMUM:
        return (
            False,
            f"{source}: {percent:.0f} % covered in {report}, needs {COVERAGE_MINIMUM:.0f} %",
        )
    return True, f"{source}: {percent:.0f} % covered in {report}"


def _lookback(
    strategy: dict[str, Any], fingerprint: dict[str, Any], convention: dict[str, Any]
) -> tuple[bool, str]:
    if not fingerprint:
        return False, "no local data fingerprint"
    unit = str(convention.get("unit", "ms"))
    span = [epoch_time(fingerprint[k], unit) for k in ("first_timestamp", "last_timestamp")]
    if span[0] is None or span[1] is None:  # the data contract says why
        return False, f"local data timestamps are not epoch {convention.get('unit')} in range"
    first, last = span[0].date().isoformat(), span[1].date().isoformat()
    start, end = str(strategy["backtest"]["start_date"]), str(strategy["backtest"]["end_date"])
    if first > start or last < end:
        return False, f"local data spans {first}..{last}, the backtest needs {start}..{end}"
    return True, f"local data spans {first}..{last}, covering the backtest's {start}..{end}"
