"""The data fingerprint pins schema, rows, time range and content of the local history."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from tests.conftest import cli, edit

DAY_MS = 86_400_000


def _on_tickdb_source(root: Path) -> Path:
    """Point the MA-trend strategy at the TickDB source, whose data/us_daily the tests write; in
    ideation, where data that does not cover its backtest is a warning, not an error."""
    strategy = root / "conf/strategy/ma_trend.yaml"
    edit(strategy, "status: research", "status: ideation")
    edit(strategy, "/data: sample_us_daily", "/data: tickdb_us_daily")
    edit(strategy, "/universe: us_sample_stocks", "/universe: us_megacap")
    return root


def _write_bars(root: Path, symbol: str, days: int, start_ms: int = 1_700_006_400_000) -> None:
    directory = root / "data/us_daily"
    directory.mkdir(parents=True, exist_ok=True)
    prices = [100.0 + i for i in range(days)]
    pl.DataFrame(
        {
            "timestamp": [start_ms + i * DAY_MS for i in range(days)],
            "open": prices,
            "high": [p + 1 for p in prices],
            "low": [p - 1 for p in prices],
            "close": prices,
            "volume": [1_000.0] * days,
        }
    ).write_parquet(directory / f"{symbol}.parquet")


def _fingerprint(root: Path) -> dict:
    passport = yaml.safe_load((root / "generated/STR-2026-0007/passport.yaml").read_text())
    return passport["pins"]["data"]["fingerprint"]


def test_fingerprint_pins_the_local_data_and_follows_its_changes(example: Path) -> None:
    _on_tickdb_source(example)
    _write_bars(example, "AAPL", 10)
    _write_bars(example, "MSFT", 5)
    assert cli(example, "build").exit_code == 0
    first = _fingerprint(example)
    assert first["files"] == 2 and first["rows"] == 15
    assert first["first_timestamp"] == 1_700_006_400_000
    assert first["last_timestamp"] == 1_700_006_400_000 + 9 * DAY_MS
    assert first["schema"] == {  # every column of any file, sorted
        "close": "Float64",
        "high": "Float64",
        "low": "Float64",
        "open": "Float64",
        "timestamp": "Int64",
        "volume": "Float64",
    }
    assert len(first["content_sha256"]) == 64
    assert "up to date" in cli(example, "build").output  # cached: nothing recomputed

    _write_bars(example, "MSFT", 6)  # one more bar
    result = cli(example, "build")
    assert "update  generated/STR-2026-0007/passport.yaml" in result.output
    second = _fingerprint(example)
    assert second["rows"] == 16 and second["content_sha256"] != first["content_sha256"]


def test_a_column_only_some_files_have_is_marked(example: Path) -> None:
    passport = example / "generated/STR-2026-0007/passport.yaml"
    assert cli(example, "build").exit_code == 0
    schema = yaml.safe_load(passport.read_text())["pins"]["data"]["fingerprint"]["schema"]
    assert schema["adj_close"] == "Float64 (in 3 of 4 files)"  # the sample's MSFT has none
    assert list(schema) == sorted(schema)


def test_no_local_data_is_an_unpinned_fingerprint(example: Path) -> None:
    _on_tickdb_source(example)
    assert cli(example, "build").exit_code == 0
    assert _fingerprint(example) is None
    index = (example / "generated/index.md").read_text()
    assert "no local data" in index
