"""`qcompile data import`: bar files you already have, into the project's canonical layout.

Consumes CSV or Parquet files in any common shape (one symbol per file or a symbol column, ISO
dates or times or integer epochs in any unit, naive times in a named timezone, columns named as
the vendor named them) and the target data source's layout and timestamp convention; produces
one file per symbol in that source's ``local.path`` and format, timestamps as integer epochs in
its declared unit, rows sorted by time. Every input row is checked against the data contract on
the way in (research/data.py) and, for a source stamped by session date, against 00:00 UTC; any
problem in any file stops the import before anything is written, and each one names the input
file, the symbol and the input row.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from qcompile.errors import QcompileError
from qcompile.research.data import (
    OPTIONAL_COLUMNS,
    PRICE_COLUMNS,
    REQUIRED_COLUMNS,
    UNIT_NAMES,
    Convention,
    detect_unit,
    display_path,
    frame_violations,
    stamp_text,
)
from qcompile.research.datalayout import SUFFIXES, symbol_files

# Names vendors give the canonical columns, compared case-insensitively with spaces as "_".
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "date", "datetime", "time", "ts", "date_time", "trade_date"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "last"),
    "volume": ("volume", "v", "vol"),
    "adj_close": ("adj_close", "adjclose", "adjusted_close", "adj_close_price"),
}
SYMBOL_ALIASES = ("symbol", "ticker", "code", "instrument")
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^=+-]{0,39}")  # a safe file name
NANOSECONDS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DAY_NS = 86_400 * NANOSECONDS["s"]


class DataImportError(QcompileError):
    """The files cannot be imported as they are; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s); nothing was written:\n" + "\n".join(problems)
        )


@dataclass(frozen=True)
class Target:
    """Where and how the project keeps a data source's bars."""

    directory: Path
    file_format: str  # parquet or csv
    convention: Convention
    symbols: tuple[str, ...] = ()  # the source's declared symbols, if it lists them


@dataclass(frozen=True)
class ImportOptions:
    symbol: str | None = None  # every row is this symbol
    symbol_column: str | None = None  # or split the rows by this column
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> input column
    timestamp_unit: str | None = None  # s, ms, us or ns for integer epochs; None: recognised
    timestamp_format: str | None = None  # strptime format for text times; None: ISO 8601
    timezone: str = "UTC"  # of naive date-times in the input
    replace: bool = False  # overwrite a symbol's existing file
    dry_run: bool = False  # check and report, write nothing


@dataclass(frozen=True)
class Imported:
    """One symbol's bars as written (or as they would be, in a dry run)."""

    symbol: str
    rows: int
    first: str  # ISO time of the first bar
    last: str
    path: Path
    action: str  # created, replaced, or "would create" / "would replace"
    sources: tuple[str, ...]
    note: str = ""  # e.g. the symbol is not among the source's declared symbols


@dataclass
class _Input:
    display: str  # as the user named it
    frame: pl.DataFrame  # canonical columns, plus _row (the input's 1-based row) and _symbol
    csv: bool


def import_files(
    paths: list[Path], target: Target, options: ImportOptions, display_root: Path
) -> list[Imported]:
    """Read, convert and check every file, then write every symbol, or raise DataImportError."""
    problems: list[str] = []
    zone = _zone(options.timezone, problems)
    if options.timestamp_unit not in (None, *NANOSECONDS):
        problems.append(f"--timestamp-unit must be s, ms, us or ns, was {options.timestamp_unit}")
    unknown = sorted(set(options.columns) - set(ALIASES) - {"symbol"})
    if unknown:
        problems.append(
            f"--column: unknown column(s) {', '.join(unknown)}; the canonical columns are "
            + ", ".join([*ALIASES, "symbol"])
        )
    if options.symbol is not None and not SYMBOL_PATTERN.fullmatch(options.symbol):
        problems.append(
            f"--symbol {options.symbol!r} is not a usable symbol (letters, digits, ._^=+-)"
        )
    if target.convention.timezone != "UTC":
        problems.append(
            f"the data source declares timestamp.timezone {target.convention.timezone}; "
            "integer epochs are UTC"
        )
    if problems:
        raise DataImportError(problems)
    inputs = [
        read
        for path in paths
        if (
            read := _read_input(
                path, display_path(path, display_root), target, options, zone, problems
            )
        )
    ]
    by_symbol: dict[str, list[_Input]] = {}
    for item in inputs:
        for symbol in item.frame["_symbol"].unique(maintain_order=True).to_list():
            by_symbol.setdefault(symbol, []).append(item)
    existing = symbol_files(target.directory, target.file_format)
    plans: list[tuple[str, pl.DataFrame, list[_Input]]] = []
    for symbol, sources in by_symbol.items():
        frame = _symbol_frame(symbol, sources, target, problems)
        if frame is not None:
            plans.append((symbol, frame, sources))
        if symbol in existing and not options.replace:
            problems.append(
                f"{display_path(existing[symbol], display_root)}: {symbol}: already exists; "
                "pass --replace to overwrite it"
            )
    if not by_symbol and not problems:
        problems.append("no rows to import")
    if problems:
        raise DataImportError(problems)
    written = []
    for symbol, frame, sources in plans:
        path = target.directory / f"{symbol}{SUFFIXES[target.file_format]}"
        action = "replaced" if symbol in existing else "created"
        if options.dry_run:
            action = f"would {action.removesuffix('d')}"
        else:
            _write(frame, path, target.file_format)
        unit = target.convention.unit
        first, last = (stamp_text(frame["timestamp"][i], unit) for i in (0, -1))
        listed = not target.symbols or symbol in target.symbols
        written.append(
            Imported(
                symbol,
                frame.height,
                first,
                last,
                path,
                action,
                tuple(s.display for s in sources),
                "" if listed else "not among the data source's symbols",
            )
        )
    return written


def _zone(name: str, problems: list[str]) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"--timezone {name!r} is not an IANA timezone (e.g. America/New_York)")
        return None


def _read_input(
    path: Path,
    shown: str,
    target: Target,
    options: ImportOptions,
    zone: ZoneInfo | None,
    problems: list[str],
) -> _Input | None:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        problems.append(f"{shown}: not a .csv or .parquet file")
        return None
    try:
        # a CSV is read as text: the conversions below say what a value is, polars does not guess
        csv = suffix == ".csv"
        raw = pl.read_csv(path, infer_schema_length=0) if csv else pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        problems.append(f"{shown}: unreadable: {str(exc).splitlines()[0]}")
        return None
    mapping, missing = _map_columns(raw.columns, options)
    symbol_column = options.symbol_column or mapping.pop("symbol", None)
    if options.symbol_column and options.symbol_column not in raw.columns:
        missing.append(f"--symbol-column {options.symbol_column!r}")
    if missing:
        problems.append(
            f"{shown}: no column for {', '.join(missing)} (columns: {', '.join(raw.columns)}); "
            "name it with --column CANONICAL=NAME"
        )
        return None
    frame = raw.select(
        pl.int_range(1, raw.height + 1, dtype=pl.Int64).alias("_row"),
        *(pl.col(source).alias(canonical) for canonical, source in mapping.items()),
    )
    if options.symbol:
        symbol = pl.lit(options.symbol)
    elif symbol_column:
        symbol = raw[symbol_column].cast(pl.String).str.strip_chars()
    else:
        symbol = pl.lit(path.stem)
    frame = frame.with_columns(_symbol=symbol)
    bad_symbols = [
        s
        for s in frame["_symbol"].unique(maintain_order=True).to_list()
        if s is None or not SYMBOL_PATTERN.fullmatch(s)
    ]
    if bad_symbols:
        row = int(
            frame.filter(pl.col("_symbol").is_in(bad_symbols) | pl.col("_symbol").is_null())[
                "_row"
            ][0]
        )
        problems.append(
            f"{shown}: {_where(row, csv)}: symbol {bad_symbols[0]!r} is not usable as a file "
            "name (letters, digits, ._^=+-); pass --symbol for a one-symbol file"
        )
        return None
    before = len(problems)
    frame = _numbers(frame, shown, csv, problems)
    if zone is not None:
        frame = _timestamps(frame, shown, csv, target.convention, options, zone, problems)
    return _Input(shown, frame, csv) if len(problems) == before else None


def _normal(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _map_columns(columns: list[str], options: ImportOptions) -> tuple[dict[str, str], list[str]]:
    """canonical -> input column (explicit names first, then aliases), and what is missing."""
    by_normal = {_normal(c): c for c in columns}
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for canonical, aliases in (*ALIASES.items(), ("symbol", SYMBOL_ALIASES)):
        named = options.columns.get(canonical)
        if named is not None:
            if named in columns:
                mapping[canonical] = named
            else:
                missing.append(f"{canonical} (--column {canonical}={named}: no such column)")
            continue
        found = next((by_normal[a] for a in aliases if a in by_normal), None)
        if found is not None:
            mapping[canonical] = found
        elif canonical in REQUIRED_COLUMNS:
            missing.append(canonical)
    return mapping, missing


def _where(row: int, csv: bool) -> str:
    """An input row as its reader finds it: a CSV's line (the header is line 1), else the row."""
    return f"line {row + 1}" if csv else f"row {row}"


def _numbers(frame: pl.DataFrame, shown: str, csv: bool, problems: list[str]) -> pl.DataFrame:
    """Prices and volume as floats; a value that is there but is not a number is a problem."""
    for column in (*PRICE_COLUMNS, "volume", *OPTIONAL_COLUMNS):
        if column not in frame.columns:
            continue
        original = frame[column]
        text = original.cast(pl.String).str.strip_chars() if original.dtype == pl.String else None
        converted = (text if text is not None else original).cast(pl.Float64, strict=False)
        given = text.is_not_null() & (text != "") if text is not None else original.is_not_null()
        failed = given & converted.is_null()
        if failed.any():
            index = int(failed.arg_true()[0])
            problems.append(
                f"{shown}: {_where(int(frame['_row'][index]), csv)}: {column} is not a number: "
                f"{original[index]!r}"
            )
        frame = frame.with_columns(converted.alias(column))
    return frame


def _timestamps(
    frame: pl.DataFrame,
    shown: str,
    csv: bool,
    convention: Convention,
    options: ImportOptions,
    zone: ZoneInfo,
    problems: list[str],
) -> pl.DataFrame:
    """The timestamp column as integer epochs in the source's unit."""
    column = frame["timestamp"]
    rows = frame["_row"]
    if column.dtype == pl.String and options.timestamp_format is None:
        stripped = column.str.strip_chars()
        if stripped.str.contains(r"^-?\d+$").fill_null(True).all():
            column = stripped.cast(pl.Int64, strict=False)  # epochs written as text
    if column.dtype.is_float():
        whole = column.cast(pl.Int64, strict=False)
        fractional = (whole.cast(pl.Float64) != column).fill_null(False)
        if fractional.any():
            index = int(fractional.arg_true()[0])
            where = _where(int(rows[index]), csv)
            problems.append(f"{shown}: {where}: timestamp {column[index]} is not a whole epoch")
            return frame
        column = whole
    if column.dtype.is_integer():
        nanos = _epoch_nanos(column, shown, options.timestamp_unit, problems)
    elif column.dtype == pl.Date:
        nanos = column.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").dt.epoch("ns")
    elif isinstance(column.dtype, pl.Datetime):
        aware = column if column.dtype.time_zone else column.dt.replace_time_zone(zone.key)
        nanos = aware.dt.epoch("ns")
    elif column.dtype == pl.String:
        nanos = _parse_times(column, rows, shown, csv, options.timestamp_format, zone, problems)
    else:
        problems.append(f"{shown}: timestamp column has type {column.dtype}, not times or epochs")
        return frame
    if nanos is None:
        return frame
    unit = convention.unit
    finer = (nanos % NANOSECONDS[unit] != 0).fill_null(False)
    if finer.any():
        index = int(finer.arg_true()[0])
        problems.append(
            f"{shown}: {_where(int(rows[index]), csv)}: timestamp {column[index]!r} is finer "
            f"than the source's unit ({UNIT_NAMES[unit]}); it would be truncated"
        )
        return frame
    if convention.stamping == "session_date":
        off_midnight = (nanos % DAY_NS != 0).fill_null(False)
        if off_midnight.any():
            index = int(off_midnight.arg_true()[0])
            clock = EPOCH + dt.timedelta(microseconds=int(nanos[index]) // 1_000)
            problems.append(
                f"{shown}: {_where(int(rows[index]), csv)}: the data source stamps bars with "
                f"their session date (00:00 UTC); {column[index]!r} is {clock:%H:%M:%S} UTC: "
                "import dates, or into a source stamped bar_open or bar_close"
            )
            return frame
    return frame.with_columns(timestamp=(nanos // NANOSECONDS[unit]).cast(pl.Int64))


def _epoch_nanos(
    column: pl.Series, shown: str, declared: str | None, problems: list[str]
) -> pl.Series | None:
    """Integer epochs in nanoseconds, from the unit the user named or the one their size shows."""
    present = column.drop_nulls()
    if present.len() == 0:
        return column.cast(pl.Int64)
    smallest, largest = int(present.min()), int(present.max())  # type: ignore[arg-type]
    unit = detect_unit(largest)
    if unit is None or detect_unit(smallest) != unit:
        problems.append(
            f"{shown}: timestamps {smallest}..{largest} are not all epochs of one unit "
            "between 1971 and 2100"
        )
        return None
    if declared is not None and declared != unit:
        problems.append(
            f"{shown}: --timestamp-unit {declared}, but the timestamps look like "
            f"{UNIT_NAMES[unit]} (max {largest})"
        )
        return None
    return column.cast(pl.Int64) * NANOSECONDS[unit]


def _parse_times(
    column: pl.Series,
    rows: pl.Series,
    shown: str,
    csv: bool,
    fmt: str | None,
    zone: ZoneInfo,
    problems: list[str],
) -> pl.Series | None:
    """Text times as epoch nanoseconds: ISO 8601 (Python's reading of it), or ``fmt``. A date
    is 00:00 UTC of that day whatever the timezone; a naive date-time is in ``zone``."""
    out: list[int | None] = []
    for index, value in enumerate(column.to_list()):
        if value is None or not value.strip():
            out.append(None)
            continue
        text = value.strip()
        try:
            if fmt is not None:
                moment = dt.datetime.strptime(text, fmt)
                is_date = not any(c in fmt for c in ("%H", "%I", "%M", "%S"))
            else:
                is_date = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is not None
                moment = dt.datetime.fromisoformat(text)
        except ValueError:
            expected = f"the format {fmt!r}" if fmt else "an ISO 8601 date or time"
            problems.append(
                f"{shown}: {_where(int(rows[index]), csv)}: timestamp {value!r} is not {expected}"
                + ("" if fmt else " (pass --timestamp-format for others, e.g. '%m/%d/%Y')")
            )
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC if is_date else zone)
        out.append((moment - EPOCH) // dt.timedelta(microseconds=1) * 1_000)
    return pl.Series("timestamp", out, dtype=pl.Int64)


def _symbol_frame(
    symbol: str, sources: list[_Input], target: Target, problems: list[str]
) -> pl.DataFrame | None:
    """One symbol's rows from every input, sorted by time and checked against the contract."""
    keep = ["timestamp", *PRICE_COLUMNS, "volume"]
    with_adjusted = all("adj_close" in s.frame.columns for s in sources)
    if with_adjusted:
        keep.append("adj_close")
    parts = [
        s.frame.filter(pl.col("_symbol") == symbol)
        .select(*keep, "_row")
        .with_columns(_source=pl.lit(index, pl.Int32))
        for index, s in enumerate(sources)
    ]
    frame = pl.concat(parts).sort("timestamp", "_source", "_row", nulls_last=False)
    violations = frame_violations(frame.select(keep), symbol, target.convention)
    for violation in violations:
        if violation.row is None:
            problems.append(f"{sources[0].display}: {violation.message(target.convention.unit)}")
            continue
        at = frame.row(violation.row - 1, named=True)
        source = sources[at["_source"]]
        where = _where(int(at["_row"]), source.csv)
        what = violation.what
        if what.startswith("timestamp is not after"):
            what = "timestamp repeats an earlier row's (a duplicate bar)"
        when = stamp_text(at["timestamp"], target.convention.unit)
        problems.append(
            f"{source.display}: {symbol}: {where} ({when}): {what} ({violation.values})"
        )
    return None if violations else frame.select(keep)


def _write(frame: pl.DataFrame, path: Path, file_format: str) -> None:
    """Write beside the destination, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        if file_format == "parquet":
            frame.write_parquet(temporary)
        else:
            frame.write_csv(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
