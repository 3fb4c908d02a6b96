"""Shared fixtures: throwaway projects built from the example conf/ or from scratch.

Tests never edit the repository's own conf/ or generated/: each copies what it needs into a
temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite golden files from the current output (review the diff!).",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example project (generated/ is built fresh)."""
    return copy_example_project(tmp_path / "project")


def copy_example_project(root: Path) -> Path:
    """conf/, the bundled sample data and the committed backtest evidence the gates read."""
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copytree(REPO / "data/sample_us_daily", root / "data/sample_us_daily")
    shutil.copytree(
        REPO / "reports", root / "reports", ignore=shutil.ignore_patterns("report.html", "runs")
    )
    return root


PRODUCTION_EXAMPLE = "conf/strategy/fast_reversion.yaml"  # STR-2026-0088, signed into production


def without_production_example(root: Path) -> Path:
    """Drop the production example from a copy whose test changes project-wide evidence.

    A coverage report or a runtime self-test result changes every strategy's checklist, so the
    production example's checklist sign-off would go stale and fail the build; that interaction
    has its own test (test_signoff.py), the others test something else.
    """
    (root / PRODUCTION_EXAMPLE).unlink(missing_ok=True)
    return root


def signed_into_production(strategy_file: Path, engineer: str = "j.chen@quantfund.com") -> None:
    """A validation-phase strategy file (ending in its sign-offs) declared in production with
    every sign-off production needs written by hand: the peer's validation sign-off, every
    manual checklist item (the automatic ones are verified from the committed evidence) and the
    engineer's checklist sign-off, none with a hash. For tests of what happens to production
    strategies; the gate's floor cannot be relaxed in conf/ instead."""
    from qcompile.compiler.rules.checklist import MANUAL_ITEMS

    text = strategy_file.read_text(encoding="utf-8")
    assert "  status: validation\n" in text and text.rstrip().endswith('Z"'), strategy_file

    def signature(indent: str) -> str:
        return f'{indent}by: {engineer}\n{indent}at: "2026-08-20T10:00:00Z"\n'

    text = text.replace("  status: validation\n", "  status: production\n").rstrip("\n") + "\n"
    text += "    validation:\n" + signature(" " * 6) + "    checklist:\n" + signature(" " * 6)
    text += "  checklist:\n" + "".join(
        f"    {item}:\n" + signature(" " * 6) for item in sorted(MANUAL_ITEMS)
    )
    # production promises an alert the runner watches (the automatic alert-thresholds item)
    text += "  monitoring:\n    max_drawdown_pct: 20\n"
    text += "  deployment_record:\n    monitoring_alerts: [drawdown_threshold]\n"
    strategy_file.write_text(text, encoding="utf-8")
    routed_to_alpaca(strategy_file)  # production trades at a real broker


def routed_to_alpaca(strategy_file: Path) -> None:
    """Route a strategy's orders to Alpaca's paper endpoint (keys from the environment), in its
    own file: the rest of its deployment stays as it was."""
    with strategy_file.open("a", encoding="utf-8") as out:
        out.write(
            "deployment:\n  broker:\n    kind: alpaca\n    account: PA-TEST\n"
            "    api_key: ${oc.env:ALPACA_API_KEY_ID}\n"
            "    secret: ${oc.env:ALPACA_API_SECRET_KEY}\n"
        )


def tree_digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with its content hash: equal digests mean untouched trees."""
    if not directory.exists():
        return {}
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the qcompile CLI in-process with ``root`` as the project."""
    from qcompile.cli import main

    runner = CliRunner()
    return runner.invoke(
        main, list(args), env={"QCOMPILE_PROJECT": str(root), **(env or {})}, catch_exceptions=False
    )


def cli_process(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``qcompile`` as a real process, as a user would."""
    full_env = {**os.environ, "QCOMPILE_PROJECT": str(root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qcompile.cli", *args],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def write_random_walk_bars(
    root: Path,
    symbols: list[str],
    start: str = "2013-01-02",
    end: str = "2025-12-31",
    seed: int = 7,
    folder: str = "data/us_daily",
) -> Path:
    """Deterministic synthetic daily bars (weekdays, UTC ms) for tests that need local data."""
    import datetime as dt
    import random

    import polars as pl

    directory = root / folder
    directory.mkdir(parents=True, exist_ok=True)
    day, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    days = []
    while day <= last:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    for number, symbol in enumerate(symbols):
        rng = random.Random(seed * 1000 + number)
        price, rows = 50.0 + 10 * number, []
        for day in days:
            opening = price * (1 + rng.gauss(0, 0.004))
            closing = opening * (1 + rng.gauss(0.0003, 0.015))
            high = max(opening, closing) * (1 + abs(rng.gauss(0, 0.004)))
            low = min(opening, closing) * (1 - abs(rng.gauss(0, 0.004)))
            stamp = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
            rows.append((stamp, opening, high, low, closing, float(rng.randint(10_000, 90_000))))
            price = closing
        pl.DataFrame(
            rows, schema=["timestamp", "open", "high", "low", "close", "volume"], orient="row"
        ).write_parquet(directory / f"{symbol}.parquet")
    return directory


@pytest.fixture
def team_project(example: Path) -> Path:
    """The example project plus a team signal package in its root and a strategy using it."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "team_signals", example / "team_signals")
    edit(
        example / "conf/qcompile.yaml",
        "signal_packages: [qcompile.signals]",
        "signal_packages: [qcompile.signals, team_signals]",
    )
    text = (example / "conf/strategy/breakout.yaml").read_text()
    text = text.replace(
        "name: breakout\n    version: 1.0.0", "name: team_momentum\n    version: 1.0.0"
    )
    text = text.replace("      lookback: 40\n      exit_lookback: 20", "      window: 20")
    text = text.replace(
        "      lookback: [20, 40, 60]\n      exit_lookback: [10, 20]", "      window: [10, 20]"
    )
    (example / "conf/strategy/breakout.yaml").write_text(text)
    result = cli(example, "build")
    assert result.exit_code == 0, result.output
    return example
