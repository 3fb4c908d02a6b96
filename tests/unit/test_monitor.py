"""The strategy's own alerts, and the engine bookkeeping they rely on: each alert once per breach,
re-armed only when its condition clears; closed-trade results; marks and sizes after a restart."""

from __future__ import annotations

import pytest

from qcompile.runtime.monitor import Monitor, MonitorState

DAY = 86_400_000


def keys(breaches: list) -> list[str]:
    return [b.key for b in breaches]


def test_drawdown_fires_once_per_breach_and_rearms_above_the_line() -> None:
    monitor = Monitor({"max_drawdown_pct": 10})
    assert keys(monitor.observe(100_000, 0, 0)) == []
    assert keys(monitor.observe(91_000, 0, 0)) == []  # 9 %: under the threshold
    (breach,) = monitor.observe(90_000, 0, 0)  # exactly 10 %
    assert breach.key == "strategy.drawdown" and breach.severity == "critical"
    assert "drawdown 10.00 % from the equity peak 100,000.00" in breach.summary
    assert keys(monitor.observe(85_000, 0, 0)) == []  # still in the same breach: silent
    assert keys(monitor.observe(93_000, 0, 0)) == []  # above the line, not halfway back
    assert keys(monitor.observe(89_000, 0, 0)) == []  # so this is the same breach
    assert keys(monitor.observe(96_000, 0, 0)) == []  # within 5 % of the peak: re-armed
    assert keys(monitor.observe(89_000, 0, 0)) == ["strategy.drawdown"]  # a second breach
    assert monitor.state.peak_equity == 100_000


def test_daily_loss_is_measured_from_the_days_first_mark_and_resets_each_day() -> None:
    monitor = Monitor({"max_daily_loss_pct": 2})
    monitor.observe(100_000, 0, 0)
    assert keys(monitor.observe(97_900, 0, 0)) == ["strategy.daily_loss"]
    assert keys(monitor.observe(97_000, 0, 0)) == []
    assert keys(monitor.observe(100_000, 0, 0) + monitor.observe(97_000, 0, 0)) == []  # once a day
    assert keys(monitor.observe(96_000, 0, DAY)) == []  # a new day: measured from 96,000
    assert keys(monitor.observe(94_000, 0, DAY)) == ["strategy.daily_loss"]


def test_a_losing_streak_counts_closed_trades_and_a_win_resets_it() -> None:
    monitor = Monitor({"max_losing_streak": 3})
    assert keys(monitor.closed_trade(-10)) == []
    assert keys(monitor.closed_trade(-5)) == []
    (breach,) = monitor.closed_trade(-1)
    assert breach.key == "strategy.losing_streak" and "3 losing trades in a row" in breach.summary
    assert keys(monitor.closed_trade(-1)) == []  # the same run goes on
    assert keys(monitor.closed_trade(20)) == [] and monitor.state.losing_streak == 0
    assert keys(monitor.closed_trade(-1) + monitor.closed_trade(-1) + monitor.closed_trade(-1)) == [
        "strategy.losing_streak"
    ]


def test_exposure_above_its_limit() -> None:
    monitor = Monitor({"max_exposure_pct": 100})
    assert keys(monitor.observe(100_000, 100_000, 0)) == []  # exactly at the limit
    assert keys(monitor.observe(100_000, 150_000, 0)) == ["strategy.exposure"]
    assert (
        "gross exposure 150.0 % of equity"
        in Monitor({"max_exposure_pct": 100}).observe(100_000, 150_000, 0)[0].summary
    )


def test_what_was_said_survives_a_restart() -> None:
    first = Monitor({"max_drawdown_pct": 5})
    first.observe(100_000, 0, 0)
    assert keys(first.observe(90_000, 0, 0)) == ["strategy.drawdown"]
    restored = Monitor({"max_drawdown_pct": 5}, MonitorState.from_dict(first.state.to_dict()))
    assert keys(restored.observe(90_000, 0, 0)) == []  # not said twice for one breach
    assert restored.state.peak_equity == 100_000


def test_without_thresholds_nothing_is_watched() -> None:
    monitor = Monitor({})
    assert monitor.observe(1, 10**9, 0) == [] and monitor.closed_trade(-1) == []


def _engine(thresholds: dict, symbols: tuple = ("AAA",), state: object = None) -> tuple:
    from qcompile.runtime.alerts import Alerter
    from qcompile.runtime.broker import PaperBroker
    from qcompile.runtime.engine import Engine, EngineConfig

    alerts: list = []
    config = EngineConfig(
        strategy_id="STR-T",
        strategy_version="1",
        signal_pin={"name": "s", "version": "1", "source_sha256": "0"},
        signal_params={},
        symbols=list(symbols),
        symbol_suffix="",
        interval_ms=DAY,
        timestamp_unit="ms",
        sizing={"method": "equal_weight"},
        initial_capital=10_000.0,
        monitoring=thresholds,
        clock_tolerance_ms=None,  # pushes from 2024, not now
    )
    broker = PaperBroker({"commission_bps": 0, "slippage_bps": 0}, 10_000.0, None, lambda _: None)
    engine = Engine(
        config, lambda *a, **k: None, broker, Alerter([]), lambda *a: None, lambda *a: [], state
    )
    engine._alert = lambda key, severity, summary, details=None: alerts.append((key, summary))
    return engine, alerts


def test_the_engine_hands_each_closed_trade_its_result_costs_in() -> None:
    from qcompile.runtime.broker import Fill

    engine, alerts = _engine({"max_losing_streak": 2})
    engine._filled(Fill("o1", "AAA", 10, 100.0, 1.0, 0))  # long 10, 1,001 spent
    engine._filled(Fill("o2", "AAA", -4, 99.0, 1.0, 1))  # part out: the trade is still open
    assert engine.monitor.state.losing_streak == 0 and alerts == []
    engine._filled(Fill("o3", "AAA", -6, 99.9, 1.0, 2))  # flat: -1,001 + 395 + 598.4 = -7.6
    assert engine.monitor.state.losing_streak == 1 and "AAA" not in engine.state.trade_cash
    engine._filled(Fill("o4", "AAA", 10, 50.0, 0.0, 3))  # long 10 at 50
    engine._filled(Fill("o5", "AAA", -30, 49.0, 3.0, 4))  # flips: the long closes at a loss
    assert [key for key, _ in alerts] == ["strategy.losing_streak"]
    assert "2 losing trades in a row (the last -11.00" in alerts[0][1]  # -10 - a third of 3
    assert engine.state.trade_cash["AAA"] == pytest.approx(980.0 - 2.0)  # the short: 20 x 49 in
    assert engine.state.positions["AAA"] == -20


def test_a_restarted_engine_marks_and_sizes_as_an_uninterrupted_one() -> None:
    """Positions held, prices seen, then a restart from the saved state with no fresh price:
    the same equity, and the same size for the next order, as the engine that never stopped."""
    from qcompile.runtime.broker import Fill
    from qcompile.runtime.engine import EngineState

    running, _ = _engine({}, ("AAA", "BBB"))
    start = 1_704_153_600_000  # 2024-01-02, inside the plausible range of epoch milliseconds
    pushes = [
        (1, {"cmd": "ticker", "data": {"symbol": s, "last_price": p, "timestamp": start + i}})
        for i, (s, p) in enumerate([("AAA", "101.25"), ("BBB", "48.5"), ("AAA", "103.75")])
    ]
    running.cycle(pushes)
    running._filled(Fill("o1", "AAA", 30, 102.0, 1.5, start))
    running._filled(Fill("o2", "BBB", -40, 48.5, 1.0, start))
    assert running.counters.accepted == 3
    equity = running.equity()
    assert equity != running.state.cash  # the positions are worth something at their prices
    restarted, _ = _engine({}, ("AAA", "BBB"), EngineState.from_dict(running.snapshot()))
    assert restarted.equity() == pytest.approx(equity, rel=1e-15)
    for symbol in ("AAA", "BBB"):
        for target in (1, -1):
            assert restarted._target_quantity(symbol, target) == running._target_quantity(
                symbol, target
            )
