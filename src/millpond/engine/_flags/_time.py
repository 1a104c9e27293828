"""Metric periods: calendar periods in UTC (days from midnight, weeks from Monday midnight,
months from the 1st at midnight)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc(moment: datetime) -> datetime:
    """The instant in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def period_start(period: str, now: datetime) -> datetime | None:
    """When the period containing ``now`` began: today's, this week's (Monday) or this
    month's UTC midnight; None for ``all_time`` (and unknown periods)."""
    day = utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "current_day":
        return day
    if period == "current_week":
        return day - timedelta(days=day.weekday())
    if period == "current_month":
        return day.replace(day=1)
    return None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The bucket of ``all_time`` counters."""

PERIODS = ("all_time", "current_day", "current_week", "current_month")


def bucket_start(period: str, moment: datetime) -> datetime:
    """The start of the counter bucket holding ``moment``: :func:`period_start`, or
    :data:`EPOCH` for ``all_time`` (usage counters are kept per bucket)."""
    start = period_start(period, moment)
    return start if start is not None else EPOCH


def period_reset_at(period: str, now: datetime) -> datetime | None:
    """When the period containing ``now`` ends and usage resets: the next UTC midnight, next
    Monday's or the next month's 1st UTC midnight; None for ``all_time`` (never) and unknown
    periods, or past the last representable day."""
    start = period_start(period, now)
    if start is None:
        return None
    try:
        if period == "current_day":
            return start + timedelta(days=1)
        if period == "current_week":
            return start + timedelta(days=7)
        if start.month == 12:
            return start.replace(year=start.year + 1, month=1)
        return start.replace(month=start.month + 1)
    except (OverflowError, ValueError):
        return None
