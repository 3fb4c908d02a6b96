"""Gate evaluation against known strategies and evidence documents."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from qcompile.compiler.rules.gates import (
    CHECKLIST_ITEMS,
    FLOORS,
    beyond_floor,
    effective_gates,
    evaluate,
    floor_gaps,
    load_evidence,
    requirements_for,
)
from tests.conftest import REPO

GATES = {
    "research": ["brief.alpha_thesis", "brief.expected_signal", "signoff.brief"],
    "validation": [
        "evidence.backtest",
        "evidence.fresh",
        "evidence.minimum_sample",
        "signoff.report",
    ],
    "production": [
        "evidence.out_of_sample",
        "evidence.robustness",
        "evidence.no_critical_failures",
        "signoff.validation",
        "checklist.complete",
        "pins.complete",
    ],
}
SIGNED = {"by": "a@x.com", "at": "2026-01-01T00:00:00Z"}
INPUTS = {"config_sha256": "c", "data_sha256": "d", "signal_source_sha256": "s"}
PINS = {
    "strategy": {"version": "1.0.0"},
    "signal": {"source_sha256": "s"},
    "data": {"fingerprint": {"x": 1}},
}


def _strategy(**extra) -> dict:
    return {
        "alpha_thesis": "t",
        "brief": {"expected_signal": "e", "data_requirements": "d"},
        "signoffs": {"brief": SIGNED},
        **extra,
    }


def _evidence(**extra) -> dict:
    return {
        "inputs": dict(INPUTS),
        "minimum_sample": {"met": True},
        "out_of_sample": {"sharpe": 1.0},
        "robustness": {"parameter_sensitivity": {}, "look_ahead_bias": {}},
        "critical_failures": [],
        **extra,
    }


def _unmet(phase: str, strategy: dict, evidence: dict | None, pins: dict = PINS) -> list[str]:
    return [
        u.requirement
        for u in evaluate(phase, GATES, strategy, pins, evidence, "no backtest", INPUTS)
    ]


def test_gates_are_cumulative() -> None:
    assert [r for _, r in requirements_for("research", GATES)] == GATES["research"]
    assert len(requirements_for("production", GATES)) == sum(len(v) for v in GATES.values())
    assert requirements_for("ideation", GATES) == []


def test_ideation_needs_nothing_and_research_needs_a_signed_brief() -> None:
    assert _unmet("ideation", {}, None) == []
    assert _unmet("research", _strategy(), None) == []
    assert _unmet("research", {"alpha_thesis": "  "}, None) == GATES["research"]


def test_missing_evidence_is_reported_not_invented() -> None:
    result = evaluate("validation", GATES, _strategy(), PINS, None, "no backtest has run", INPUTS)
    assert [(u.requirement, u.detail) for u in result] == [
        ("evidence.backtest", "no backtest has run"),
        ("evidence.fresh", "needs the backtest evidence first"),
        ("evidence.minimum_sample", "needs the backtest evidence first"),
        ("signoff.report", "no report sign-off with a timestamp"),
    ]


def test_validation_passes_with_fresh_sufficient_evidence_and_a_signed_report() -> None:
    assert (
        _unmet("validation", _strategy(signoffs={"brief": SIGNED, "report": SIGNED}), _evidence())
        == []
    )


def test_stale_and_insufficient_evidence_fail() -> None:
    stale = _evidence(
        inputs={**INPUTS, "data_sha256": "other"}, minimum_sample={"met": False, "trades": 12}
    )
    result = evaluate(
        "validation",
        GATES,
        _strategy(signoffs={"brief": SIGNED, "report": SIGNED}),
        PINS,
        stale,
        "",
        INPUTS,
    )
    assert [(u.requirement, u.detail) for u in result] == [
        ("evidence.fresh", "evidence is stale: data_sha256 changed since the report ran"),
        ("evidence.minimum_sample", "sample too small: 12 trades over ? years, needs ? over ?"),
    ]


def test_production_needs_checklist_pins_and_clean_validation() -> None:
    signoffs = {"brief": SIGNED, "report": SIGNED, "validation": SIGNED}
    checklist = dict.fromkeys(CHECKLIST_ITEMS, SIGNED)
    strategy = _strategy(
        signoffs=signoffs,
        checklist=checklist,
        validation={"robustness_checks": ["parameter_sensitivity", "monte_carlo"]},
    )
    failing = _evidence(critical_failures=["look-ahead bias at bar 17"])
    unpinned = {**PINS, "data": {"fingerprint": None}}
    assert _unmet("production", strategy, failing, unpinned) == [
        "evidence.robustness",
        "evidence.no_critical_failures",
        "pins.complete",
    ]
    strategy["validation"]["robustness_checks"] = ["parameter_sensitivity"]
    assert _unmet("production", strategy, _evidence()) == []
    del strategy["checklist"]["docs.runbook"]
    assert _unmet("production", strategy, _evidence()) == ["checklist.complete"]


def test_load_evidence_explains_what_is_wrong(tmp_path: Path) -> None:
    where = "reports/X/1.0.0/evidence.json"
    absent = load_evidence(tmp_path / "nope.json", where, "X")
    assert absent.document is None and absent.problem is None  # no evidence: the gates say so
    bad = tmp_path / "evidence.json"

    def problem(content: bytes) -> str:
        bad.write_bytes(content)
        found = load_evidence(bad, where, "X")
        assert found.document is None and found.problem is not None
        assert found.problem.code == "evidence.malformed" and found.problem.file == where
        assert found.problem.hint == "written by `qcompile backtest X`: run it again"
        return found.problem.render().partition("\n")[0]

    assert problem(b"[1, 2]") == (
        f"{where}: error: expected a mapping at the top, got a list [evidence.malformed]"
    )
    assert problem(b"{\n") == (
        f"{where}:2: error: not valid JSON: Expecting property name enclosed in double quotes "
        "[evidence.malformed]"
    )
    assert problem(b"") == f"{where}: error: empty: expected a JSON object [evidence.malformed]"
    assert problem(b'{"x": "caf\xe9"}') == (
        f"{where}:1: error: not UTF-8 text: byte 0xe9 at offset 10 [evidence.malformed]"
    )
    assert problem(b"[" * 100_000 + b"]" * 100_000).endswith(
        "nested too deeply [evidence.malformed]"
    )
    for key, value, expected in (
        ("minimum_sample", "[1]", "minimum_sample: expected a mapping, got a list"),
        ("inputs", "[1]", "inputs: expected a mapping, got a list"),
        ("critical_failures", "5", "critical_failures: expected a list, got a number"),
        ("robustness", '"all"', "robustness: expected a mapping, got a string"),
        ("daily", "true", "daily: expected a mapping, got true or false"),
        ("daily", '{"days": "many"}', "daily.days: expected a number, got a string"),
        ("metrics", '{"sharpe": [1]}', "metrics.sharpe: expected a number, got a list"),
    ):
        assert problem(f'{{"{key}": {value}}}'.encode()) == (
            f"{where}: error: {expected} [evidence.malformed]"
        )
    bad.write_text('{"inputs": {"a": 1}, "out_of_sample": null, "critical_failures": []}')
    good = load_evidence(bad, where, "X")
    assert good.problem is None and good.document == {
        "inputs": {"a": 1},
        "out_of_sample": None,
        "critical_failures": [],
    }


def test_evidence_shapes_reach_into_every_entry_of_a_mapping(tmp_path: Path) -> None:
    from qcompile.compiler.rules.evidence import COVERAGE_SHAPE, SELFTEST_SHAPE, read_evidence

    path = tmp_path / "report.json"
    path.write_text(json.dumps({"files": {"src/a.py": {"summary": {}}, "b": {"summary": [1]}}}))
    found = read_evidence(path, "cov.json", COVERAGE_SHAPE, "regenerate it")
    assert found.problem is not None
    assert found.problem.key == "files.b.summary"
    assert found.problem.message == "expected a mapping, got a list"
    path.write_text(json.dumps({"files": {"src/a.py": 3}}))
    found = read_evidence(path, "cov.json", COVERAGE_SHAPE, "regenerate it")
    assert found.problem is not None and found.problem.key == "files['src/a.py']"
    path.write_text(json.dumps({"checks": {"heartbeat": {"passed": True}, "reconnect": None}}))
    assert read_evidence(path, "t.json", SELFTEST_SHAPE, "").problem is None
    path.write_text(json.dumps({"checks": {"heartbeat": "passed"}}))
    found = read_evidence(path, "t.json", SELFTEST_SHAPE, "")
    assert found.problem is not None
    assert found.problem.render() == (
        "t.json: error: checks.heartbeat: expected a mapping, got a string [evidence.malformed]"
    )


def _ready_for_production() -> dict:
    return _strategy(
        signoffs={"brief": SIGNED, "report": SIGNED, "validation": SIGNED},
        checklist=dict.fromkeys(CHECKLIST_ITEMS, SIGNED),
        validation={"robustness_checks": ["parameter_sensitivity"]},
    )


def test_production_needs_the_peer_reviewers_sign_off() -> None:
    strategy = _ready_for_production()
    assert _unmet("production", strategy, _evidence()) == []
    del strategy["signoffs"]["validation"]
    assert _unmet("production", strategy, _evidence()) == ["signoff.validation"]
    strategy["signoffs"]["validation"] = {"by": "a@x.com"}  # no time: not a sign-off
    assert _unmet("production", strategy, _evidence()) == ["signoff.validation"]


def test_the_projects_own_production_gate_needs_the_peer_sign_off() -> None:
    """conf/qcompile.yaml as committed: dropping the peer review from it must fail a test, not
    only change a golden file."""
    gates = yaml.safe_load((REPO / "conf/qcompile.yaml").read_text(encoding="utf-8"))["gates"]
    assert "signoff.validation" in gates["production"]
    strategy = _ready_for_production()
    del strategy["signoffs"]["validation"]
    unmet = evaluate("production", gates, strategy, PINS, _evidence(), "", INPUTS)
    assert "signoff.validation" in [u.requirement for u in unmet]


# -- the floor: the source document's requirements, which a project may add to, never remove ----


def test_a_project_cannot_remove_or_postpone_a_floor_requirement() -> None:
    weakened = {
        "research": ["brief.alpha_thesis"],
        "validation": ["evidence.backtest", "signoff.report"],
        "production": ["evidence.no_critical_failures"],  # also moved later than its floor
    }
    effective = effective_gates(weakened)
    for phase, floor in FLOORS.items():
        assert set(floor) <= set(effective[phase]), phase
    assert "evidence.no_critical_failures" in effective["validation"]
    assert "evidence.no_critical_failures" not in effective["production"]  # once, earliest
    gaps = floor_gaps(weakened)
    assert ("research", "signoff.brief") in gaps and ("validation", "evidence.fresh") in gaps
    assert ("production", "signoff.validation") in gaps
    assert ("validation", "signoff.report") not in gaps


def test_a_project_may_add_requirements_or_ask_for_them_earlier() -> None:
    stricter = {phase: list(floor) for phase, floor in FLOORS.items()}
    stricter["validation"].append("evidence.minimum_sample")  # earlier than §3.2 asks
    stricter["validation"].append("evidence.out_of_sample")
    effective = effective_gates(stricter)
    assert "evidence.minimum_sample" in effective["validation"]
    assert "evidence.minimum_sample" not in effective["production"]
    assert floor_gaps(stricter) == []
    assert beyond_floor(effective) == [
        "validation: evidence.minimum_sample",
        "validation: evidence.out_of_sample",
    ]
    assert beyond_floor(effective_gates(dict(FLOORS))) == []


def test_a_short_sample_may_enter_validation_but_not_production() -> None:
    """Source document §3.2, applied by the floor whatever the project lists."""
    gates = effective_gates({})
    short = _evidence(minimum_sample={"met": False, "trades": 52})
    signed = _strategy(signoffs={"brief": SIGNED, "report": SIGNED})
    assert _unmet_with(gates, "validation", signed, short) == []
    production = _ready_for_production()
    assert "evidence.minimum_sample" in _unmet_with(gates, "production", production, short)


def test_a_critical_failure_bars_validation() -> None:
    gates = effective_gates({})
    failing = _evidence(critical_failures=["look-ahead: MSFT at 2016-03-01"])
    signed = _strategy(signoffs={"brief": SIGNED, "report": SIGNED})
    assert _unmet_with(gates, "validation", signed, failing) == ["evidence.no_critical_failures"]


def _unmet_with(gates: dict, phase: str, strategy: dict, evidence: dict) -> list[str]:
    return [u.requirement for u in evaluate(phase, gates, strategy, PINS, evidence, "", INPUTS)]
