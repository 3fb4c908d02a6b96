"""Before and after: which metrics moved by how much, and which inputs changed."""

from __future__ import annotations

from qcompile.comparison import input_changes, metric_changes, stale, text


def evidence(total: float, trades: int, sharpe: float | None) -> dict:
    return {
        "metrics": {"total_return": total, "trade_count": trades, "sharpe": sharpe},
        "eligible_for_production": False,
        "inputs": {"config_sha256": "a"},
    }


def test_each_metric_shows_both_sides_and_the_change_in_its_unit() -> None:
    rows = {r["label"]: r for r in metric_changes(evidence(0.1, 10, 0.5), evidence(0.25, 7, None))}
    assert rows["total return"] == {
        "label": "total return",
        "before": "10.00 %",
        "after": "25.00 %",
        "change": "+15.00 pp",
    }
    assert rows["trades"]["change"] == "-3"
    assert rows["Sharpe ratio"]["after"] == "n/a" and rows["Sharpe ratio"]["change"] == "changed"
    assert rows["eligible for production"]["change"] == ""
    assert "beta" not in rows  # neither side has it


def test_a_value_of_the_wrong_type_is_shown_as_it_is_not_formatted() -> None:
    """A hand-edited evidence.json (a committed file) may hold anything where a metric was."""
    broken = evidence(0.1, 10, 0.5)
    broken["metrics"].update(total_return="x", trade_count=[3], sharpe=True)
    rows = {r["label"]: r for r in metric_changes(evidence(0.1, 10, 0.5), broken)}
    assert rows["total return"]["after"] == "'x' (not a number)"
    assert rows["trades"]["after"] == "[3] (not a number)"
    assert rows["Sharpe ratio"]["after"] == "True (not a number)"
    assert rows["total return"]["change"] == "changed"


def test_only_inputs_that_differ_are_named_and_bookkeeping_is_ignored() -> None:
    old = {
        "signal": {"params": {"fast": 20}, "packages": ["a"]},
        "costs": {"slippage_bps": 5},
        "backtest": {"reports_dir": "reports"},
    }
    new = {
        "signal": {"params": {"fast": 10, "slow": 100}, "packages": ["b"]},
        "costs": {"slippage_bps": 5},
        "backtest": {"reports_dir": "elsewhere"},
    }
    assert input_changes(old, new) == [
        ("signal.params.fast", "20", "10"),
        ("signal.params.slow", "(none)", "100"),
    ]


def test_evidence_from_other_inputs_is_stale() -> None:
    assert not stale(evidence(0.1, 1, 1.0), {"evidence_inputs": {"config_sha256": "a"}})
    assert stale(evidence(0.1, 1, 1.0), {"evidence_inputs": {"config_sha256": "b"}})


def test_a_side_without_a_report_is_named() -> None:
    both = (evidence(0.1, 1, 1.0), {})
    assert "no backtest report (x) before" in text(None, both, "x")[0]
    assert "on either side" in text(None, None, "x")[0]
