"""Loading bars: the declared contract is enforced, every violation named with file, symbol, row."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from qcompile.research.data import Convention, DataContractError, detect_unit, load_bars

MS = Convention("ms", "UTC", "bar_open")
START = 1_700_006_400_000
DAY = 86_400_000


def write(directory: Path, symbol: str, rows: int = 4, fmt: str = "parquet", **changes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "timestamp": [START + i * DAY for i in range(rows)],
        "open": [10.0 + i for i in range(rows)],
        "high": [11.0 + i for i in range(rows)],
        "low": [9.0 + i for i in range(rows)],
        "close": [10.5 + i for i in range(rows)],
        "volume": [100.0] * rows,
    }
    for column, (row, value) in changes.items():
        data[column][row] = value
    frame = pl.DataFrame(data)
    path = directory / f"{symbol}.{fmt}"
    frame.write_parquet(path) if fmt == "parquet" else frame.write_csv(path)
    return path


def test_good_data_loads_sorted_for_the_whole_universe(tmp_path: Path) -> None:
    write(tmp_path, "MSFT", 3)
    write(tmp_path, "AAPL", 2)
    bars = load_bars(tmp_path, "parquet", ["MSFT", "AAPL"], MS)
    assert bars.columns == ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    assert bars["symbol"].to_list() == ["AAPL", "AAPL", "MSFT", "MSFT", "MSFT"]
    assert bars["timestamp"].dtype == pl.Int64


def test_csv_and_unit_conversion_to_milliseconds(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    directory.mkdir()
    pl.DataFrame(
        {
            "timestamp": [1_700_006_400, 1_700_092_800],
            "open": [1.0, 1.0],
            "high": [1.0, 1.0],
            "low": [1.0, 1.0],
            "close": [1.0, 1.0],
            "volume": [0.0, 0.0],
        }
    ).write_csv(directory / "X.csv")
    bars = load_bars(directory, "csv", ["X"], Convention("s", "UTC", "bar_open"))
    assert bars["timestamp"].to_list() == [1_700_006_400_000, 1_700_092_800_000]


def test_seconds_where_milliseconds_were_declared_is_refused(tmp_path: Path) -> None:
    seconds = tmp_path / "sec"
    seconds.mkdir()
    pl.DataFrame(
        {
            "timestamp": [1_700_006_400, 1_700_092_800],
            "open": [1.0] * 2,
            "high": [1.0] * 2,
            "low": [1.0] * 2,
            "close": [1.0] * 2,
            "volume": [0.0] * 2,
        }
    ).write_parquet(seconds / "IBM.parquet")
    with pytest.raises(DataContractError) as error:
        load_bars(seconds, "parquet", ["IBM"], MS)
    assert error.value.problems == [
        f"{seconds.as_posix()}/IBM.parquet: IBM: timestamps look like seconds (max 1700092800), "
        "the source declares milliseconds"
    ]


def test_every_violation_is_reported_with_file_symbol_and_first_bad_row(tmp_path: Path) -> None:
    write(tmp_path, "AAPL", 5, high=(2, 5.0))  # high below open and close on row 3
    write(
        tmp_path, "MSFT", 5, timestamp=(3, START + 2 * DAY), volume=(4, -1.0)
    )  # duplicate time; negative volume
    write(tmp_path, "GOOG", 3, open=(0, -1.0))
    with pytest.raises(DataContractError) as error:
        load_bars(tmp_path, "parquet", ["AAPL", "MSFT", "GOOG", "AMZN"], MS, display_root=tmp_path)
    assert error.value.problems == [
        "AAPL.parquet: AAPL: row 3 (2023-11-17T00:00:00Z): high < max(open, close) "
        "(timestamp=1700179200000, open=12.0, high=5.0, low=11.0, close=12.5, volume=100.0)",
        "MSFT.parquet: MSFT: row 4 (2023-11-17T00:00:00Z): timestamp is not after the previous "
        "row (unsorted or duplicate) "
        "(timestamp=1700179200000, open=13.0, high=14.0, low=12.0, close=13.5, volume=100.0)",
        "MSFT.parquet: MSFT: row 5 (2023-11-19T00:00:00Z): negative volume "
        "(timestamp=1700352000000, open=14.0, high=15.0, low=13.0, close=14.5, volume=-1.0)",
        "GOOG.parquet: GOOG: row 1 (2023-11-15T00:00:00Z): low > min(open, close) "
        "(timestamp=1700006400000, open=-1.0, high=11.0, low=9.0, close=10.5, volume=100.0)",
        "GOOG.parquet: GOOG: row 1 (2023-11-15T00:00:00Z): price <= 0 "
        "(timestamp=1700006400000, open=-1.0, high=11.0, low=9.0, close=10.5, volume=100.0)",
        "AMZN.parquet: AMZN: no data file",
    ]


def test_missing_columns_and_wrong_types(tmp_path: Path) -> None:
    pl.DataFrame({"timestamp": ["2024-01-01"], "open": [1.0]}).write_parquet(tmp_path / "A.parquet")
    pl.DataFrame(
        {
            "timestamp": [START],
            "open": ["x"],
            "high": [1.0],
            "low": [1.0],
            "close": [1.0],
            "volume": [1.0],
        }
    ).write_parquet(tmp_path / "B.parquet")
    with pytest.raises(DataContractError) as error:
        load_bars(tmp_path, "parquet", ["A", "B"], MS, display_root=tmp_path)
    assert error.value.problems == [
        "A.parquet: A: missing column(s) high, low, close, volume",
        "B.parquet: B: column open must be numeric, was String",
    ]


def test_detect_unit_from_magnitudes() -> None:
    assert [
        detect_unit(v)
        for v in (
            1_700_000_000,
            1_700_000_000_000,
            1_700_000_000_000_000,
            1_700_000_000_000_000_000,
            12,
        )
    ] == ["s", "ms", "us", "ns", None]


@pytest.mark.parametrize(
    ("column", "value", "what"),
    [
        ("close", float("nan"), "close is NaN or infinite"),
        ("close", None, "close is null"),
        ("open", float("inf"), "open is NaN or infinite"),
        ("high", float("-inf"), "high is NaN or infinite"),
        ("volume", float("nan"), "volume is NaN or infinite"),
        ("low", None, "low is null"),
    ],
)
def test_a_missing_or_non_finite_value_is_refused_with_its_row(
    tmp_path: Path, column: str, value: float | None, what: str
) -> None:
    """One bad value used to pass and give a silently wrong report (NaN compares as largest)."""
    write(tmp_path, "MSFT", 6, **{column: (3, value)})
    with pytest.raises(DataContractError) as error:
        load_bars(tmp_path, "parquet", ["MSFT"], MS, display_root=tmp_path)
    assert error.value.problems[0].startswith(
        f"MSFT.parquet: MSFT: row 4 (2023-11-18T00:00:00Z): {what} ("
    )
