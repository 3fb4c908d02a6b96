"""`qcompile data import`: outside files into the canonical layout, checked on the way in."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import REPO, cli, cli_process, tree_digest

SOURCE = """\
vendor: Broker export
api_version: v1
endpoints: [csv-export]
markets: [US.EQUITY]
interval: {interval}
symbols: [GOOGL, IXIC, MSFT, SPX]
adjustment: split_dividend
timestamp:
  unit: {unit}
  timezone: UTC
  stamping: {stamping}
local:
  path: data/{name}
  format: {file_format}
"""


def add_source(
    root: Path,
    name: str = "broker",
    unit: str = "ms",
    stamping: str = "session_date",
    file_format: str = "parquet",
    interval: str = "1d",
) -> Path:
    path = root / "conf/data" / f"{name}.yaml"
    path.write_text(
        SOURCE.format(
            name=name, unit=unit, stamping=stamping, file_format=file_format, interval=interval
        )
    )
    return root / "data" / name


def sample(symbol: str) -> pl.DataFrame:
    return pl.read_parquet(REPO / "data/sample_us_daily" / f"{symbol}.parquet")


def test_a_vendor_csv_round_trips_to_the_bundled_sample(example: Path, tmp_path: Path) -> None:
    """The sample data exported as a vendor would (ISO dates, its column names, newest first)
    imports back into exactly the bundled bars, and a strategy switched to the imported source
    builds and back-tests to the committed report's figures."""
    target = add_source(example)
    symbols = ("GOOGL", "IXIC", "MSFT", "SPX")
    paths = []
    for symbol in symbols:
        vendor = (
            sample(symbol)
            .sort("timestamp", descending=True)
            .select(
                pl.from_epoch("timestamp", time_unit="ms").dt.strftime("%Y-%m-%d").alias("Date"),
                pl.col("open").alias("Open"),
                pl.col("high").alias("High"),
                pl.col("low").alias("Low"),
                pl.col("close").alias("Close"),
                pl.col("volume").alias("Volume"),
            )
        )
        path = tmp_path / f"{symbol}.csv"  # the file name is the symbol
        vendor.write_csv(path)
        paths.append(str(path))
    result = cli(example, "data", "import", *paths, "--source", "broker")
    assert result.exit_code == 0, result.output
    for symbol in symbols:
        assert f"data/broker/{symbol}.parquet" in result.output
        imported = pl.read_parquet(target / f"{symbol}.parquet")
        assert imported.schema["timestamp"] == pl.Int64
        assert imported.equals(sample(symbol).select(imported.columns)), symbol

    strategy = example / "conf/strategy/ma_trend.yaml"
    strategy.write_text(strategy.read_text().replace("/data: sample_us_daily", "/data: broker"))
    built = cli(example, "build")
    assert built.exit_code == 0, built.output
    passport = (example / "generated/STR-2026-0007/passport.yaml").read_text()
    assert "vendor: Broker export" in passport and "rows: 20380" in passport
    ran = cli(example, "backtest", "STR-2026-0007")
    assert ran.exit_code == 0, ran.output
    evidence = "reports/STR-2026-0007/2.1.0/evidence.json"
    got = json.loads((example / evidence).read_text())["metrics"]
    committed = json.loads((REPO / evidence).read_text())["metrics"]
    for name in ("total_return", "sharpe", "max_drawdown", "trade_count"):
        assert got[name] == pytest.approx(committed[name], rel=1e-12), name


def test_a_long_file_is_split_per_symbol_and_epochs_convert(example: Path, tmp_path: Path) -> None:
    target = add_source(example, unit="ms")
    frame = pl.DataFrame(
        {
            "Ticker": ["MSFT", "GOOGL", "MSFT", "GOOGL"],
            "ts": [1_578_009_600, 1_577_923_200, 1_577_923_200, 1_578_009_600],  # seconds
            "o": [2.0, 1.0, 2.0, 1.0],
            "h": [3.0, 2.0, 3.0, 2.0],
            "l": [1.0, 0.5, 1.0, 0.5],
            "c": [2.5, 1.5, 2.5, 1.5],
            "v": [10, 20, 30, 40],
        }
    )
    path = tmp_path / "long.parquet"
    frame.write_parquet(path)
    result = cli(example, "data", "import", str(path), "--source", "broker")
    assert result.exit_code == 0, result.output
    msft = pl.read_parquet(target / "MSFT.parquet")
    assert msft["timestamp"].to_list() == [1_577_923_200_000, 1_578_009_600_000]  # sorted, ms
    assert msft["volume"].to_list() == [30.0, 10.0]
    assert pl.read_parquet(target / "GOOGL.parquet")["volume"].to_list() == [20.0, 40.0]
    assert "adj_close" not in msft.columns


def test_naive_times_are_read_in_the_named_timezone(example: Path, tmp_path: Path) -> None:
    target = add_source(example, unit="s", stamping="bar_open", file_format="csv", interval="1h")
    path = tmp_path / "MSFT.csv"
    path.write_text(
        "Datetime,Open,High,Low,Close,Volume\n"
        "2020-01-02 09:30:00,1,2,0.5,1.5,100\n"
        "2020-07-01T09:30,1,2,0.5,1.5,100\n"
        "2020-07-01T10:30:00-04:00,1,2,0.5,1.5,100\n"
    )
    result = cli(
        example, "data", "import", str(path), "--source", "broker", "--timezone", "America/New_York"
    )
    assert result.exit_code == 0, result.output
    stamps = pl.read_csv(target / "MSFT.csv")["timestamp"].to_list()
    expected = [
        dt.datetime(2020, 1, 2, 14, 30, tzinfo=dt.UTC),  # EST: UTC-5
        dt.datetime(2020, 7, 1, 13, 30, tzinfo=dt.UTC),  # EDT: UTC-4
        dt.datetime(2020, 7, 1, 14, 30, tzinfo=dt.UTC),  # its own offset wins
    ]
    assert stamps == [int(moment.timestamp()) for moment in expected]


def test_other_date_formats_need_a_format(example: Path, tmp_path: Path) -> None:
    target = add_source(example)
    path = tmp_path / "MSFT.csv"
    path.write_text("Date,Open,High,Low,Last,Volume\n01/02/2020,1,2,0.5,1.5,10\n")
    refused = cli(example, "data", "import", str(path), "--source", "broker")
    assert refused.exit_code == 2
    assert "no column for close (columns: Date, Open, High, Low, Last, Volume)" not in (
        refused.output
    )  # `last` is a known name for the close
    assert f"{path}: line 2: timestamp '01/02/2020' is not an ISO 8601 date" in refused.output
    done = cli(
        example,
        "data",
        "import",
        str(path),
        "--source",
        "broker",
        "--timestamp-format",
        "%m/%d/%Y",
        "--column",
        "close=Last",
    )
    assert done.exit_code == 0, done.output
    (stamp,) = pl.read_parquet(target / "MSFT.parquet")["timestamp"].to_list()
    assert stamp == int(dt.datetime(2020, 1, 2, tzinfo=dt.UTC).timestamp() * 1000)  # January


def test_every_problem_in_every_file_is_listed_and_nothing_is_written(
    example: Path, tmp_path: Path
) -> None:
    target = add_source(example)
    files = {
        "intraday.csv": "time,open,high,low,close,volume\n2020-01-02 09:30,1,2,0.5,1.5,10\n",
        "nocols.csv": "when,open,high,low,close\n2020-01-02,1,2,0.5,1.5\n",
        "words.csv": "date,open,high,low,close,volume\n2020-01-02,1,2,0.5,abc,10\n",
        "broken.parquet": "\x00\x01 not parquet",
        "MSFT.csv": (
            "date,open,high,low,close,volume\n"
            "2020-01-02,1,2,0.5,nan,10\n"
            "2020-01-06,1,0.9,0.5,1.5,10\n"
            "2020-01-02,1,2,0.5,1.5,10\n"
            "2020-01-07,1,2,0.5,1.5,-5\n"
        ),
        "epochs.csv": "timestamp,open,high,low,close,volume\n1577923200000,1,2,0.5,1.5,10\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in files]
    before = tree_digest(example)
    result = cli_process(
        example, "data", "import", *paths, "--source", "broker", "--timestamp-unit", "s"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    text = result.stderr
    expected = [
        f"{tmp_path}/intraday.csv: line 2: the data source stamps bars with their session date",
        f"{tmp_path}/nocols.csv: no column for timestamp, volume (columns: when, open, high",
        f"{tmp_path}/words.csv: line 2: close is not a number: 'abc'",
        f"{tmp_path}/broken.parquet: unreadable:",
        f"{tmp_path}/MSFT.csv: MSFT: line 2 (2020-01-02T00:00:00Z): close is NaN or infinite",
        f"{tmp_path}/MSFT.csv: MSFT: line 4 (2020-01-02T00:00:00Z): timestamp repeats an earlier",
        f"{tmp_path}/MSFT.csv: MSFT: line 3 (2020-01-06T00:00:00Z): high < max(open, close)",
        f"{tmp_path}/MSFT.csv: MSFT: line 5 (2020-01-07T00:00:00Z): negative volume",
        f"{tmp_path}/epochs.csv: --timestamp-unit s, but the timestamps look like milliseconds",
    ]
    for line in expected:
        assert line in text, (line, text)
    assert f"{len(expected)} problem(s); nothing was written" in text
    assert tree_digest(example) == before and not target.exists()


def test_existing_files_are_kept_unless_replaced(example: Path, tmp_path: Path) -> None:
    target = add_source(example)
    path = tmp_path / "MSFT.csv"
    path.write_text("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1.5,10\n")
    assert cli(example, "data", "import", str(path), "--source", "broker").exit_code == 0
    first = (target / "MSFT.parquet").read_bytes()
    path.write_text("date,open,high,low,close,volume\n2020-01-03,1,2,0.5,1.7,10\n")
    refused = cli(example, "data", "import", str(path), "--source", "broker")
    assert refused.exit_code == 2
    assert "data/broker/MSFT.parquet: MSFT: already exists; pass --replace" in refused.output
    dry = cli(example, "data", "import", str(path), "--source", "broker", "--replace", "--dry-run")
    assert dry.exit_code == 0 and "would replace" in dry.output
    assert (target / "MSFT.parquet").read_bytes() == first
    replaced = cli(example, "data", "import", str(path), "--source", "broker", "--replace")
    assert replaced.exit_code == 0 and "replaced" in replaced.output
    assert pl.read_parquet(target / "MSFT.parquet")["close"].to_list() == [1.7]
    assert [p.name for p in target.iterdir()] == ["MSFT.parquet"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--source", "brokr"), "no data source 'brokr' in conf/data/; did you mean 'broker'?"),
        (("--source", "broker", "--timezone", "Mars/Olympus"), "is not an IANA timezone"),
        (("--source", "broker", "--column", "clos=Last"), "--column: unknown column(s) clos"),
        (("--source", "broker", "--column", "close"), "'close' is not CANONICAL=NAME"),
        (("--source", "broker", "--symbol", "../../x"), "is not a usable symbol"),
    ],
)
def test_bad_options_are_named(
    example: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    add_source(example)
    path = tmp_path / "MSFT.csv"
    path.write_text("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1.5,10\n")
    result = cli_process(example, "data", "import", str(path), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (example / "data/broker").exists()


def test_finer_times_than_the_source_keeps_are_refused(example: Path, tmp_path: Path) -> None:
    add_source(example, unit="s", stamping="bar_close", interval="1m")
    path = tmp_path / "MSFT.csv"
    path.write_text("time,open,high,low,close,volume\n2020-01-02T14:30:00.250Z,1,2,0.5,1.5,10\n")
    result = cli(example, "data", "import", str(path), "--source", "broker")
    assert result.exit_code == 2
    assert "is finer than the source's unit (seconds); it would be truncated" in result.output
