"""The data contract at build time: every defect of the local data a strategy pins is a diagnostic
naming file, symbol, row and time, from `qcompile validate` on; none of them yields a report."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import cli, edit, tree_digest

SAMPLE = "data/sample_us_daily"
ROW = 6000  # MSFT's 6001st bar, 2009-12-29: inside every example's backtest window


def _damage(root: Path, column: str, value: float | None, symbol: str = "MSFT") -> None:
    path = root / SAMPLE / f"{symbol}.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == ROW).then(value).otherwise(pl.col(column)).alias(column)
    ).write_parquet(path)


@pytest.mark.parametrize(
    ("column", "value", "what"),
    [
        ("close", float("nan"), "close is NaN or infinite"),
        ("close", None, "close is null"),
        ("high", float("inf"), "high is NaN or infinite"),
        ("low", -1.0, "price <= 0"),
        ("volume", -5.0, "negative volume"),
    ],
)
def test_a_bad_value_is_named_by_validate_and_yields_no_report(
    example: Path, column: str, value: float | None, what: str
) -> None:
    _damage(example, column, value)
    reports = tree_digest(example / "reports")
    validated = cli(example, "validate")
    assert validated.exit_code == 2 and "Traceback" not in validated.output
    assert (
        f"{SAMPLE}/MSFT.parquet: error: MSFT: row {ROW + 1} (2009-12-29T00:00:00Z): {what} ("
        in validated.output
    ), validated.output
    assert "[data.contract]" in validated.output
    backtest = cli(example, "backtest", "STR-2026-0007")
    assert backtest.exit_code == 2 and what in backtest.output
    assert tree_digest(example / "reports") == reports  # nothing written, nothing replaced


def test_a_declared_unit_the_files_do_not_have_is_a_diagnostic(example: Path) -> None:
    edit(example / "conf/data/sample_us_daily.yaml", "  unit: ms", "  unit: s")
    validated = cli(example, "validate")
    assert validated.exit_code == 2 and "Traceback" not in validated.output
    assert (
        f"{SAMPLE}/MSFT.parquet: error: MSFT: timestamps look like milliseconds "
        in validated.output
    )
    assert "the source declares seconds [data.contract]" in validated.output


def test_a_csv_with_iso_dates_for_timestamps_is_a_diagnostic(example: Path) -> None:
    target = example / "data/csv_daily"
    target.mkdir()
    for path in sorted((example / SAMPLE).glob("*.parquet")):
        frame = pl.read_parquet(path)
        frame.with_columns(
            pl.from_epoch("timestamp", time_unit="ms").dt.strftime("%Y-%m-%d").alias("timestamp")
        ).write_csv(target / f"{path.stem}.csv")
    source = (example / "conf/data/sample_us_daily.yaml").read_text()
    (example / "conf/data/csv_daily.yaml").write_text(
        source.replace(f"path: {SAMPLE}", "path: data/csv_daily").replace(
            "format: parquet", "format: csv"
        )
    )
    edit(example / "conf/strategy/ma_trend.yaml", "/data: sample_us_daily", "/data: csv_daily")
    validated = cli(example, "validate")
    assert validated.exit_code == 2 and "Traceback" not in validated.output
    assert (
        "data/csv_daily/MSFT.csv: error: MSFT: column timestamp must hold integer epoch ms, was "
        "String (row 1: '1986-03-13') [data.contract]" in validated.output
    ), validated.output


def test_missing_data_is_an_error_from_research_on_and_a_warning_in_ideation(
    example: Path,
) -> None:
    validated = cli(example, "validate")  # STR-2026-0042 (ideation) reads data/us_daily: absent
    assert validated.exit_code == 0
    assert (
        "warning: data.local.path: no local data in data/us_daily for STR-2026-0042, which is "
        "in ideation [data.missing]" in validated.output
    )
    edit(example / "conf/strategy/earnings_gap.yaml", "status: ideation", "status: research")
    refused = cli(example, "validate")
    assert refused.exit_code == 2
    assert (
        "conf/data/tickdb_us_daily.yaml:16: error: data.local.path: no local data in "
        "data/us_daily for STR-2026-0042, which is in research [data.missing]"
    ) in refused.output


def test_a_universe_member_without_a_file_is_named(example: Path) -> None:
    (example / SAMPLE / "SPX.parquet").unlink()
    validated = cli(example, "validate")
    assert validated.exit_code == 2
    assert (
        f"{SAMPLE}/SPX.parquet: error: SPX: no data file for this member of the universe"
        in validated.output
    )


def test_a_backtest_window_the_data_does_not_cover_is_an_error(example: Path) -> None:
    edit(
        example / "conf/strategy/ma_trend.yaml", 'end_date: "2017-10-31"', 'end_date: "2024-06-28"'
    )
    validated = cli(example, "validate")
    assert validated.exit_code == 2
    assert (
        "strategy.backtest.end_date: the backtest window is not covered by the local data: it "
        "ends 2024-06-28, the data 2018-12-31 [data.window]"
    ) in validated.output


def test_a_checked_data_set_is_not_read_again(example: Path) -> None:
    """The contract's verdict is cached with each file's content hash: a second compile of
    unchanged data reads no file, and a changed file is checked again."""
    assert cli(example, "validate").exit_code == 0
    cache = (example / ".qcompile/fingerprints.json").read_text()
    assert '"contract"' in cache
    shutil.copy(example / SAMPLE / "GOOGL.parquet", example / "GOOGL.bak")
    _damage(example, "close", float("nan"), symbol="GOOGL")
    assert cli(example, "validate").exit_code == 2
    shutil.copy(example / "GOOGL.bak", example / SAMPLE / "GOOGL.parquet")
    assert cli(example, "validate").exit_code == 0


@pytest.mark.parametrize("content", [b"", b"not a parquet file"], ids=["empty", "garbage"])
def test_an_unreadable_data_file_is_named(example: Path, content: bytes) -> None:
    (example / SAMPLE / "SPX.parquet").write_bytes(content)
    validated = cli(example, "validate")
    assert validated.exit_code == 2 and "Traceback" not in validated.output
    assert f"{SAMPLE}/SPX.parquet: error: SPX: unreadable: " in validated.output
    assert "[data.contract]" in validated.output


def _ms(day: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def _in_research(root: Path) -> None:
    """Changed data makes the validation and production examples' evidence stale (a gate
    error, which would hide the warnings under test): move them back to research."""
    edit(root / "conf/strategy/zscore_reversion.yaml", "status: validation", "status: research")
    edit(root / "conf/strategy/fast_reversion.yaml", "status: production", "status: research")


def test_sessions_without_bars_are_warned_with_the_largest_gaps(example: Path) -> None:
    """A week of MSFT removed inside the windows, one more day elsewhere: the XNYS calendar says
    which sessions are missing. The calendar knows holidays and the 2012 hurricane closure, so
    the untouched sample (which has neither) gets no warning inside the windows."""
    assert "data.calendar_gap" not in cli(example, "build").output
    _in_research(example)
    path = example / SAMPLE / "MSFT.parquet"
    dropped = ["2013-03-04", "2013-03-05", "2013-03-06", "2013-03-07", "2013-03-08", "2014-06-02"]
    frame = pl.read_parquet(path)
    frame.filter(~pl.col("timestamp").is_in([_ms(d) for d in dropped])).write_parquet(path)
    built = cli(example, "build")
    assert built.exit_code == 0, built.output  # a warning: the bars that exist are sound
    assert (
        f"{SAMPLE}/MSFT.parquet: warning: MSFT: 6 XNYS sessions without a bar in 2 gaps: "
        "2013-03-04..2013-03-08 (5 sessions), 2014-06-02 (1 session) (inside the backtest "
        "windows 2009-06-01..2017-10-31"
    ) in built.output, built.output
    assert "[data.calendar_gap]" in built.output and "read by STR-2026-0007" in built.output


def test_a_bar_on_a_day_the_exchange_was_closed_is_warned(example: Path) -> None:
    _in_research(example)
    path = example / SAMPLE / "MSFT.parquet"
    frame = pl.read_parquet(path)
    christmas = frame.filter(pl.col("timestamp") == _ms("2012-12-24")).with_columns(
        timestamp=pl.lit(_ms("2012-12-25"))
    )
    pl.concat([frame, christmas]).sort("timestamp").write_parquet(path)
    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    assert "MSFT: bars on 1 day XNYS was closed: 2012-12-25 (inside the backtest windows" in (
        built.output
    )


def test_gaps_outside_every_window_are_not_warned(example: Path) -> None:
    """MSFT's sample really lacks two sessions (1998-10-29, 1999-11-16), before every window."""
    edit(
        example / "conf/strategy/ma_trend.yaml",
        'start_date: "2009-06-01"',
        'start_date: "1998-01-02"',
    )
    built = cli(example, "validate")
    assert (
        "MSFT: 2 XNYS sessions without a bar in 2 gaps: 1998-10-29 (1 session), 1999-11-16 "
        "(1 session)"
    ) in built.output, built.output
