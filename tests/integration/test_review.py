"""Weekly review and quarterly refresh on a copy of the example with one production strategy.

STR-2026-0063 (zscore_reversion) is put in production (its copy's production gate lists what it
meets), its runner's journal is written by hand with known statistics, and alerts go to a real
local HTTP receiver configured as the deployment's webhook.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import cli, edit, signed_into_production

STRATEGY = "STR-2026-0063"
WEEK = "2026-W10"  # Monday 2026-03-02 .. Sunday 2026-03-08
STRATEGY_FILE = "conf/strategy/zscore_reversion.yaml"


def _production(root: Path) -> None:
    signed_into_production(root / STRATEGY_FILE)  # the gate is not what these tests are about
    # the copy's deployment: a file state store, alerts to the log and the webhook only
    live = root / "conf/deployment/live_redis.yaml"
    edit(live, "  kind: redis\n  url: ${oc.env:QCOMPILE_REDIS_URL}", "  kind: file\n  path: state")
    text = live.read_text()
    start = text.index("  - kind: email")
    live.write_text(text[:start] + text[text.index("on_call:") :])


@pytest.fixture
def production(example: Path) -> tuple[Path, dict[str, Any]]:
    """The copy, with its evidence re-run (so that it carries daily statistics); returns the
    root and those statistics."""
    _production(example)
    built = cli(example, "build")  # the pinned backtest runs what was built
    assert built.exit_code == 0, built.output
    result = cli(example, "backtest", STRATEGY)
    assert result.exit_code == 0, result.output
    evidence = json.loads((example / f"reports/{STRATEGY}/0.2.0/evidence.json").read_text())
    return example, evidence["daily"]


def _trading_days(count: int, last: str = "2026-03-06") -> list[str]:
    days, day = [], dt.date.fromisoformat(last)
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day.isoformat())
        day -= dt.timedelta(days=1)
    return sorted(days)


def _max_drawdown(returns: list[float]) -> float:
    equity, peak, worst = 1.0, 1.0, 0.0
    for r in returns:
        equity *= 1 + r
        peak = max(peak, equity)
        worst = min(worst, equity / peak - 1)
    return worst


def _returns_like(daily: dict[str, Any], days: int = 20) -> list[float]:
    """``days`` returns with the backtest's win rate, mean and volatility exactly (a two-point
    distribution), the losing days arranged so the drawdown comes closest to its expectation."""
    positives = round(daily["win_rate"] * days)
    p = positives / days
    spread = daily["volatility"] * math.sqrt((days - 1) / days)  # sample -> population stdev
    up = daily["mean_return"] + spread * math.sqrt((1 - p) / p)
    down = daily["mean_return"] - spread * math.sqrt(p / (1 - p))
    assert up > 0 > down
    negatives = days - positives
    best: list[float] = []
    for block in range(1, negatives + 1):  # ``block`` losing days in a row, the rest spread out
        series = [down] * block
        rest, ups = negatives - block, positives
        while rest or ups:
            if ups:
                series.append(up)
                ups -= 1
            if rest:
                series.append(down)
                rest -= 1
        gap = abs(_max_drawdown(series) - daily["max_drawdown"])
        if not best or gap < abs(_max_drawdown(best) - daily["max_drawdown"]):
            best = series
    return best


def _journal(root: Path, returns: list[float]) -> None:
    """25 daily records: 4 before the window (noise the review must ignore), then the base
    day and the 20 returns."""
    days = _trading_days(len(returns) + 5)
    equity, records = [250_000.0 * (1 + 0.05 * (i % 2)) for i in range(4)], []
    equity.append(250_000.0)
    for r in returns:
        equity.append(equity[-1] * (1 + r))
    for day, value in zip(days, equity, strict=True):
        records.append({"type": "daily", "bar_ms": 0, "date": day, "equity": value, "cash": value})
    records.insert(10, {"type": "fill", "order_id": "1", "symbol": "SPX", "quantity": 1})
    path = root / "state" / STRATEGY / "journal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_review_within_threshold_flags_nothing(production, http_receiver) -> None:
    root, daily = production
    _journal(root, _returns_like(daily))
    env = {"SLACK_WEBHOOK_URL": http_receiver.url}
    result = cli(root, "review", "weekly", "--week", WEEK, env=env)
    assert result.exit_code == 0, result.output
    assert f"{STRATEGY} {WEEK}: nothing flagged" in result.output
    page = (root / f"reports/{STRATEGY}/reviews/{WEEK}.md").read_text()
    assert "No statistic deviates by more than 20 %." in page
    assert "FLAGGED" not in page
    assert "2026-02-09 to 2026-03-06" in page  # 20 trading days ending on the week's Friday
    assert f"reports/{STRATEGY}/0.2.0/evidence.json" in page
    assert "<svg" in (root / f"reports/{STRATEGY}/reviews/{WEEK}.html").read_text()
    assert http_receiver.bodies == []
    # deterministic: a second run writes the same bytes
    cli(root, "review", "weekly", "--week", WEEK, env=env)
    assert (root / f"reports/{STRATEGY}/reviews/{WEEK}.md").read_text() == page


def test_review_flags_tripled_volatility_and_alerts(production, http_receiver) -> None:
    root, daily = production
    mean = daily["mean_return"]
    _journal(root, [mean + 3 * (r - mean) for r in _returns_like(daily)])
    env = {"SLACK_WEBHOOK_URL": http_receiver.url}
    result = cli(root, "review", "weekly", "--week", WEEK, env=env)
    assert result.exit_code == 0, result.output
    assert "daily volatility" in result.output
    page = (root / f"reports/{STRATEGY}/reviews/{WEEK}.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| daily volatility"))
    assert "**FLAGGED**" in row
    assert "200.0 %" in row  # 3x the expectation: 200 % above it
    win_rate = next(line for line in page.splitlines() if line.startswith("| win rate"))
    assert "FLAGGED" not in win_rate  # scaling around the mean keeps the up days up
    assert "The flags were sent to the strategy's alert sinks." in page
    (body,) = http_receiver.bodies
    assert body["alert"]["key"] == "review.deviation"
    assert body["alert"]["severity"] == "warning"
    assert body["alert"]["strategy_id"] == STRATEGY
    assert "daily volatility" in body["text"]
    assert body["alert"]["details"]["week"] == WEEK
    # a tighter threshold on the command line flags more
    tight = cli(root, "review", "weekly", "--week", WEEK, "--threshold", "0", env=env)
    assert "win rate" in tight.output


def test_review_of_evidence_without_daily_statistics_reruns_the_pinned_backtest(
    production, http_receiver
) -> None:
    root, daily = production
    evidence_file = root / f"reports/{STRATEGY}/0.2.0/evidence.json"
    evidence = json.loads(evidence_file.read_text())
    del evidence["daily"]  # evidence written before the backtest recorded daily statistics
    evidence_file.write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    _journal(root, _returns_like(daily))
    result = cli(
        root, "review", "weekly", "--week", WEEK, env={"SLACK_WEBHOOK_URL": http_receiver.url}
    )
    assert result.exit_code == 0, result.output
    assert f"{STRATEGY} {WEEK}: nothing flagged" in result.output  # the same expectation
    page = (root / f"reports/{STRATEGY}/reviews/{WEEK}.md").read_text()
    assert "a fresh run of the pinned backtest" in page
    assert "predates daily statistics" in page
    assert not list(root.glob(f"reports/{STRATEGY}/0.2.0/refresh"))  # scratch run, nothing kept
    assert "daily" not in json.loads(evidence_file.read_text())  # the evidence is not rewritten


def test_review_rejects_a_malformed_week(example) -> None:
    result = cli(example, "review", "weekly", "--week", "2026-10")
    assert result.exit_code == 2
    assert "--week must look like 2026-W10" in result.output


def _built(root: Path, extra: str = "") -> None:
    if extra:
        edit(root / "conf/qcompile.yaml", "gates:", f"{extra}gates:")
    result = cli(root, "build")
    assert result.exit_code == 0, result.output


def test_refresh_on_unchanged_data_keeps_production(example) -> None:
    _production(example)
    _built(example)
    before = (example / STRATEGY_FILE).read_text()
    result = cli(example, "refresh")
    assert result.exit_code == 0, result.output
    assert "consistent" in result.output
    after = (example / STRATEGY_FILE).read_text()
    assert "  status: production" in after
    assert after.startswith(before.split("  status:")[0])  # comments and layout unchanged
    history = yaml.safe_load(after)["strategy"]["deployment_record"]["refresh_history"]
    assert [h["result"] for h in history] == ["consistent"]
    refreshed = list((example / f"reports/{STRATEGY}/0.2.0/refresh").glob("*/evidence.json"))
    assert len(refreshed) == 1
    original = json.loads((example / f"reports/{STRATEGY}/0.2.0/evidence.json").read_text())
    assert json.loads(refreshed[0].read_text())["metrics"] == original["metrics"]


def test_refresh_divergence_demotes_to_validation(example) -> None:
    _production(example)
    # a refresh on identical data can only diverge under a negative-proof threshold: make the
    # trade-count tolerance zero and the original report claim one trade more than it has
    _built(example, "operations:\n  refresh_thresholds:\n    trade_count: 0.0\n\n")
    evidence_file = example / f"reports/{STRATEGY}/0.2.0/evidence.json"
    evidence = json.loads(evidence_file.read_text())
    evidence["metrics"]["trade_count"] += 1
    evidence_file.write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    result = cli(example, "refresh", "--strategy", STRATEGY)
    assert result.exit_code == 0, result.output
    assert "production -> validation" in result.output
    text = (example / STRATEGY_FILE).read_text()
    assert "  status: validation" in text
    assert text.startswith("# @package _global_\n# Short-horizon mean reversion")  # comments kept
    (entry,) = yaml.safe_load(text)["strategy"]["deployment_record"]["refresh_history"]
    assert entry["result"] == "diverged"
    assert entry["phase"] == "validation"
    assert entry["reason"].startswith("trade_count 327 -> 326")


def test_refresh_on_changed_data_reports_it_and_demotes_nothing(example) -> None:
    import polars as pl

    _production(example)
    _built(example)
    bars = example / "data/sample_us_daily/MSFT.parquet"
    frame = pl.read_parquet(bars)
    last = pl.int_range(pl.len()) == pl.len() - 1  # the data vendor revised one bar
    frame = frame.with_columns(
        [
            pl.when(last).then(pl.col(c) * 1.01).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ]
    )
    frame.write_parquet(bars)
    result = cli(example, "refresh", "--strategy", STRATEGY)
    assert result.exit_code != 0, result.output
    assert "data_changed" in result.output
    text = (example / STRATEGY_FILE).read_text()
    assert "  status: production" in text  # nothing says the strategy changed: no demotion
    (entry,) = yaml.safe_load(text)["strategy"]["deployment_record"]["refresh_history"]
    assert entry["result"] == "data_changed"
    assert entry["reason"].startswith("data changed since pinned:")
    assert "phase" not in entry


def test_refresh_runs_only_what_was_built(example) -> None:
    _production(example)
    _built(example)
    path = example / STRATEGY_FILE
    before = path.read_text()
    edit(path, "entry_z: 2.0", "entry_z: 2.5")
    refused = cli(example, "refresh")
    assert refused.exit_code == 2
    assert f"generated/{STRATEGY}/params.yaml is not what conf/ compiles to now" in refused.output
    assert not (example / f"reports/{STRATEGY}/0.2.0/refresh").exists()
    assert path.read_text() == before.replace("entry_z: 2.0", "entry_z: 2.5")  # nothing recorded


def test_refreshing_a_strategy_not_in_production_is_refused_by_name(example: Path) -> None:
    """-s names what to refresh: one that cannot be refreshed is an error naming it and its
    phase, not 'no strategy is in production' (STR-2026-0088 is), and nothing is refreshed."""
    conf = {p: p.read_bytes() for p in (example / "conf/strategy").iterdir()}
    for named in (("ma_trend",), ("STR-2026-0088", "STR-2026-0007", "STR-2026-0051")):
        result = cli(example, "refresh", *(f"--strategy={name}" for name in named))
        assert result.exit_code == 2, result.output
        assert "no strategy is in production" not in result.output
        assert "STR-2026-0007 is not in production (phase research)" in result.output
        assert "nothing was refreshed" in result.output
    assert "STR-2026-0051 is not in production (phase ideation)" in result.output
    assert "STR-2026-0088" not in result.output  # it is in production: nothing to say
    assert not list(example.glob("reports/*/*/refresh"))
    assert {p: p.read_bytes() for p in (example / "conf/strategy").iterdir()} == conf
