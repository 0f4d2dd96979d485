"""Export date windows: complete UTC days, each starting ``lookback_days`` before the last end.

A window is ``[start, end)`` in UTC, both at midnight. The first window starts at
``initial_start_date`` (default: yesterday); every window ends at the latest UTC midnight; the
next starts at the previous end minus ``lookback_days`` so late-arriving events are exported again
(and replace the earlier copy of those days). When the previous end already is the latest midnight
there is nothing to do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    @property
    def start_epoch(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_epoch(self) -> int:
        return int(self.end.timestamp())

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def __str__(self) -> str:
        return f"[{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d})"

    @classmethod
    def from_iso(cls, start: str, end: str) -> Window:
        return cls(parse_utc(start), parse_utc(end))


def parse_utc(value: str) -> dt.datetime:
    d = dt.datetime.fromisoformat(value)
    return d.replace(tzinfo=dt.UTC) if d.tzinfo is None else d.astimezone(dt.UTC)


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def latest_midnight(now: dt.datetime) -> dt.datetime:
    """The most recent 00:00 UTC at or before ``now``: the end of the last complete day."""
    return midnight(now.astimezone(dt.UTC).date())


def next_quota_reset(now: dt.datetime) -> dt.datetime:
    return latest_midnight(now) + dt.timedelta(days=1)


def next_window(
    last_end: dt.datetime | None,
    initial_start_date: dt.date | None,
    lookback_days: int,
    now: dt.datetime,
) -> Window | None:
    """The next window to export, or None when the data is up to date.

    Args:
        last_end: end of the last loaded window, None before the first load.
        initial_start_date: first day of the first window; None means yesterday.
        lookback_days: days before ``last_end`` that the next window exports again.
        now: the current time (aware).
    """
    end = latest_midnight(now)
    if last_end is None:
        start = midnight(initial_start_date) if initial_start_date else end - dt.timedelta(days=1)
    else:
        if last_end >= end:
            return None
        start = last_end - dt.timedelta(days=lookback_days)
    if start >= end:
        return None
    return Window(start, end)


def split_window(window: Window) -> list[Window]:
    """Halve a window on a day boundary (a rejected export is retried as smaller pieces).

    A one-day window cannot be split: returns ``[window]``.
    """
    if window.days <= 1:
        return [window]
    middle = window.start + dt.timedelta(days=window.days // 2)
    return [Window(window.start, middle), Window(middle, window.end)]


def plan_windows(start: dt.date, end: dt.date, days: int) -> list[Window]:
    """Cut ``[start, end)`` into consecutive windows of at most ``days`` days (for backfills)."""
    out: list[Window] = []
    cursor = midnight(start)
    stop = midnight(end)
    while cursor < stop:
        nxt = min(cursor + dt.timedelta(days=days), stop)
        out.append(Window(cursor, nxt))
        cursor = nxt
    return out
