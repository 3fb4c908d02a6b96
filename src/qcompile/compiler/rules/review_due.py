"""The one-year rule (source document §6): a strategy 12 months in production without a full
review enters mandatory review.

The last full review is the passport's ``deployment_record.last_review_date``, else its
``deployment_date`` (deploying counts as the first review). The rule depends on the date, which
no build input records, so it is evaluated on every build, also when generated/ is up to date.
"Today" is the UTC date unless ``QCOMPILE_TODAY=YYYY-MM-DD`` fixes it (tests, or checking ahead).

Compiler module: it reads configs and passports, never the runtime.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qcompile.errors import Diagnostic, QcompileError

TODAY_ENV = "QCOMPILE_TODAY"
REVIEW_MONTHS = 12
REVIEW_KEY = "strategy.deployment_record.last_review_date"
OVERDUE = "ops.review_overdue"
UNDATED = "ops.review_undated"
CODES = frozenset({OVERDUE, UNDATED})  # what `build --check` fails on


def today(env: Mapping[str, str] = os.environ) -> dt.date:
    """``QCOMPILE_TODAY`` when set, else today's UTC date."""
    fixed = env.get(TODAY_ENV)
    if not fixed:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(fixed)
    except ValueError:
        raise QcompileError(f"{TODAY_ENV} must be a date YYYY-MM-DD, got {fixed!r}") from None


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by ``months`` calendar months, clamped to the month's end (Feb 29 -> 28)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def _as_date(value: Any) -> dt.date | None:
    """Config dates are strings; a passport read back with PyYAML may hold ``date`` objects."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None  # the schema reports malformed dates; nothing to add here
    return None


@dataclass(frozen=True)
class Review:
    """When a strategy was last reviewed and when the next full review is due."""

    last: dt.date | None
    basis: str | None  # "last_review_date", "deployment_date" or None (no date recorded)
    due: dt.date | None
    overdue: bool  # in production and today is past ``due``


def review_of(phase: str, record: Mapping[str, Any] | None, on: dt.date) -> Review:
    """The review state of a strategy in ``phase`` with this ``deployment_record`` on ``on``."""
    record = record or {}
    for basis in ("last_review_date", "deployment_date"):
        last = _as_date(record.get(basis))
        if last is not None:
            due = add_months(last, REVIEW_MONTHS)
            return Review(last, basis, due, phase == "production" and on > due)
    return Review(None, None, None, False)


def review_diagnostic(
    strategy_id: str,
    phase: str,
    record: Mapping[str, Any] | None,
    on: dt.date,
    where: tuple[str, int],
) -> Diagnostic | None:
    """A warning when a production strategy is overdue for review or has no date to tell."""
    if phase != "production":
        return None
    review = review_of(phase, record, on)
    hint = (
        "do the full review (docs/operations.md), then set "
        f"{REVIEW_KEY} to its date and run `qcompile build`"
    )
    if review.last is None:
        return Diagnostic(
            *where,
            REVIEW_KEY,
            f"{strategy_id} is in production with neither last_review_date nor deployment_date: "
            "the one-year rule cannot tell when it was last reviewed",
            UNDATED,
            hint,
            severity="warning",
        )
    if not review.overdue:
        return None
    return Diagnostic(
        *where,
        REVIEW_KEY,
        f"{strategy_id} needs its mandatory full review: last reviewed {review.last} "
        f"({review.basis}), due by {review.due}, today is {on}",
        OVERDUE,
        hint,
        severity="warning",
    )
