"""Trading calendars: which sessions a market held, to find the bars a data file lacks.

Consumes a data source's markets and a file's bar dates; produces the sessions of the market's
exchange calendar (exchange_calendars, the maintained calendars of ~50 exchanges, holidays and
unscheduled closures included) that have no bar, grouped into gaps, and the dates that have bars
although the exchange was closed. The build reports both as warnings (data.calendar_gap).

Sessions are kept in the user's cache per calendar and library version (a list of day numbers),
so only the first check on a machine imports exchange_calendars and pandas.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from qcompile.project import user_cache_dir

# A data source's market prefix (US.EQUITY -> US) -> the calendar its sessions follow.
MARKET_CALENDARS = {
    "US": "XNYS",
    "HK": "XHKG",
    "CN": "XSHG",
    "JP": "XTKS",
    "UK": "XLON",
    "DE": "XFRA",
    "FR": "XPAR",
    "CA": "XTSE",
    "AU": "XASX",
    "IN": "XBOM",
    "CRYPTO": "24/7",
    "FX": "24/5",
}
FIRST_DAY = 0  # 1970-01-01, as a day number
HORIZON_DAYS = 366  # sessions are listed up to a year after the cache was made


@dataclass(frozen=True)
class Sessions:
    """One calendar's sessions as day numbers (days since 1970-01-01)."""

    name: str
    timezone: str  # the exchange's, to date intraday bars
    days: frozenset[int]
    first: int  # the calendar's range: outside it nothing is known
    last: int


@dataclass(frozen=True)
class Gap:
    first: int  # day numbers of the first and last missing session
    last: int
    sessions: int


def calendar_for(markets: list[str]) -> str | None:
    """The one calendar all of a source's markets trade on, or None (unknown, or several)."""
    names = {MARKET_CALENDARS.get(str(m).split(".", 1)[0].upper()) for m in markets}
    return names.pop() if len(names) == 1 and None not in names else None


def library_version() -> str:
    try:
        return version("exchange_calendars")
    except PackageNotFoundError:
        return "absent"


def sessions(name: str, today: int) -> Sessions:
    """The calendar's sessions from 1970 (or its earliest) to a year after ``today``."""
    path = sessions_path(name)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["last"] >= today + 30:
            days = frozenset(cached["days"])
            return Sessions(name, cached["timezone"], days, cached["first"], cached["last"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import exchange_calendars  # pandas comes with it: only on a cache miss

    last = today + HORIZON_DAYS
    try:
        calendar = exchange_calendars.get_calendar(name, start=_date(FIRST_DAY), end=_date(last))
    except ValueError:  # a calendar that starts later than 1970: its own earliest date
        calendar = exchange_calendars.get_calendar(name, end=_date(last))
    days = sorted(_day(s) for s in calendar.sessions)
    result = Sessions(name, str(calendar.tz), frozenset(days), days[0], days[-1])
    document = {"timezone": result.timezone, "first": days[0], "last": days[-1], "days": days}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        temporary.replace(path)
    except OSError:
        pass  # a read-only cache: compute again next time
    return result


def gaps(bar_days: list[int], calendar: Sessions) -> tuple[list[Gap], list[int]]:
    """Sessions between the first and last bar that have no bar (as runs of consecutive
    sessions), and bar days on which the exchange was closed. Only the calendar's range is
    judged."""
    if not bar_days:
        return [], []
    have = set(bar_days)
    start, end = max(min(have), calendar.first), min(max(have), calendar.last)
    expected = sorted(d for d in calendar.days if start <= d <= end)
    found: list[Gap] = []
    run: list[int] = []
    for day in expected:
        if day in have:
            if run:
                found.append(Gap(run[0], run[-1], len(run)))
                run = []
        else:
            run.append(day)
    if run:
        found.append(Gap(run[0], run[-1], len(run)))
    closed = sorted(
        d for d in have if calendar.first <= d <= calendar.last and d not in calendar.days
    )
    return found, closed


def bar_days(
    path: Path, file_format: str, convention: tuple[str, str, str], timezone: str
) -> list[int]:
    """The day (number) of each bar of a contract-clean file: a session-date stamp is its UTC
    date; a bar stamped at its open or close is dated in the exchange's timezone."""
    import polars as pl

    if file_format == "parquet":
        stamps = pl.read_parquet(path, columns=["timestamp"])["timestamp"]
    else:
        stamps = pl.read_csv(path, columns=["timestamp"], schema_overrides={"timestamp": pl.Int64})[
            "timestamp"
        ]
    unit, _, stamping = convention
    moments = pl.from_epoch(stamps, time_unit=unit).dt.replace_time_zone("UTC")  # type: ignore[arg-type]
    if stamping != "session_date":
        moments = moments.dt.convert_time_zone(timezone)
    return moments.dt.date().cast(pl.Int32).unique().sort().to_list()


def _day(moment: object) -> int:
    """A pandas Timestamp (or date) as a day number."""
    date = moment.date() if hasattr(moment, "date") else moment  # type: ignore[union-attr]
    return (date - dt.date(1970, 1, 1)).days  # type: ignore[operator]


def _date(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def sessions_path(name: str) -> Path:
    """Where ``sessions`` keeps a calendar's sessions."""
    return user_cache_dir("calendars") / f"{name.replace('/', '-')}-{library_version()}.json"
