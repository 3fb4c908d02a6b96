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
    broker = PaperBroker({"commission_bps": 0, "slippage_bps": 0}, 10_000.0)
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
            # sized at the price each engine marks the symbol at: the restored one
            assert restarted._legs(symbol, target, restarted.last_price[symbol]) == running._legs(
                symbol, target, running.last_price[symbol]
            )
    legs = restarted._legs("AAA", -1, restarted.last_price["AAA"])
    assert legs.exit == -30 and legs.entry < 0


# -- live against the backtest, as the day goes ------------------------------------------------


def _days(count: int) -> list[str]:
    import datetime as dt

    first = dt.date(2024, 1, 1)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(count)]


def _equity(returns: list[float]) -> list[float]:
    values = [100_000.0]
    for value in returns:
        values.append(values[-1] * (1 + value))
    return values


# 21 daily closes whose statistics are the expectation: two up days for each down day
PATTERN = [0.004, 0.002, -0.003] * 7


def test_the_deviation_is_the_weekly_reviews_statistics_over_the_last_20_days() -> None:
    from qcompile.dailystats import daily_statistics

    closes = _equity(PATTERN[:20])
    expected = daily_statistics(_days(21), closes)
    monitor = Monitor({"max_backtest_deviation_pct": 20}, expected=expected)
    for day, equity in zip(_days(21), closes, strict=True):
        assert monitor.day_closed(day, equity) == []  # the same days: nothing off
    assert len(monitor.state.closes) == 21
    # a run of losing days: the first already pulls the mean and the drawdown 33 % off
    fired = []
    for day in _days(40)[21:]:
        fired.append(monitor.day_closed(day, monitor.state.closes[-1][1] * (1 - 0.004)))
        assert len(monitor.state.closes) == 21  # only the window is kept
    assert keys(fired[0]) == ["strategy.backtest_deviation"] and fired[1:] == [[]] * 18
    breaches = fired[0]
    summary = breaches[0].summary
    assert summary.startswith("live vs backtest over the last 20 days (to 2024-01-22): mean daily")
    assert "(33 % off)" in summary and summary.endswith("threshold 20 %")
    assert breaches[0].details["backtest_mean_return"] == pytest.approx(
        expected["mean_return"], abs=1e-6
    )


def test_no_deviation_is_judged_on_fewer_than_20_live_days() -> None:
    expected = {"win_rate": 0.9, "mean_return": 0.01, "volatility": 0.001, "max_drawdown": -0.001}
    monitor = Monitor({"max_backtest_deviation_pct": 1}, expected=expected)
    closes = _equity([-0.01] * 20)
    fired = [monitor.day_closed(day, equity) for day, equity in zip(_days(21), closes, strict=True)]
    assert fired[:20] == [[]] * 20 and keys(fired[20]) == ["strategy.backtest_deviation"]


def test_a_day_marked_twice_counts_once_and_the_window_survives_a_restart() -> None:
    expected = {"win_rate": 0.5, "mean_return": 0.0, "volatility": 0.01, "max_drawdown": -0.02}
    monitor = Monitor({"max_backtest_deviation_pct": 20}, expected=expected)
    monitor.day_closed("2024-01-02", 100.0)
    monitor.day_closed("2024-01-02", 101.0)  # an intraday mark, or a restart's
    assert monitor.state.closes == [["2024-01-02", 101.0]]
    restored = MonitorState.from_dict(monitor.state.to_dict())
    assert restored.closes == [["2024-01-02", 101.0]]


def test_without_the_backtests_statistics_the_deviation_is_not_judged() -> None:
    monitor = Monitor({"max_backtest_deviation_pct": 1})
    closes = _equity([-0.01] * 25)
    assert all(
        monitor.day_closed(day, equity) == [] for day, equity in zip(_days(26), closes, strict=True)
    )


def test_a_restart_applies_the_fills_it_missed_and_cancels_what_was_left_working() -> None:
    """The broker filled an order after the runner's last save (a kill between the two), and
    another order was still working: the restarted engine books the fill as if received (its
    sleeve too) and cancels the orphan, to be decided again on fresh data."""
    from qcompile.runtime.broker import Order, PaperBroker

    engine, _ = _engine({}, ("AAA", "BBB"))
    saved = engine.snapshot()
    broker = PaperBroker({"slippage_bps": 0}, 10_000.0, saved["paper_ledger"])
    broker.submit(Order("STR-T-1-AAA-entry", "AAA", 20, 1))
    broker.on_quote("AAA", 100.0, 2)
    broker.submit(Order("STR-T-2-BBB-entry", "BBB", 5, 2))  # working when the process died
    from qcompile.runtime.engine import EngineState

    restarted, alerts = _engine({}, ("AAA", "BBB"), EngineState.from_dict(saved))
    restarted.broker = broker
    differences = restarted.reconcile()
    assert restarted.state.positions == {"AAA": 20.0} and restarted.state.fill_seq == 1
    assert restarted.state.sleeves["AAA"] == pytest.approx(5_000.0 - 20 * 100.0)
    assert differences == ["order STR-T-2-BBB-entry: left working by the last process, cancelled"]
    assert broker.working_orders() == []
    assert [key for key, _ in alerts] == ["runner.recovered_fills", "runner.reconciled"]
    # the same entry decided again is not sent twice
    restarted.submit(Order("STR-T-1-AAA-entry", "AAA", 20, 1))
    assert restarted.state.positions == {"AAA": 20.0} and restarted.state.pending == {}
