"""Window arithmetic: complete UTC days, lookback, up to date."""

from __future__ import annotations

import datetime as dt

import pytest

from insider_source.window import Window, latest_midnight, next_quota_reset, next_window

UTC = dt.UTC


def at(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, mi, tzinfo=UTC)


def test_latest_midnight_is_start_of_current_utc_day() -> None:
    assert latest_midnight(at(2026, 3, 5, 17, 30)) == at(2026, 3, 5)
    assert latest_midnight(at(2026, 3, 5)) == at(2026, 3, 5)
    # 01:30 at +02:00 is 23:30 UTC on the day before
    local = dt.datetime(2026, 3, 5, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert latest_midnight(local) == at(2026, 3, 4)


def test_first_window_starts_at_initial_start_date_and_ends_at_latest_midnight() -> None:
    w = next_window(None, dt.date(2026, 3, 1), 2, at(2026, 3, 5, 8))
    assert w == Window(at(2026, 3, 1), at(2026, 3, 5))
    assert w.days == 4
    assert w.end_epoch - w.start_epoch == 4 * 86400


def test_first_window_without_initial_start_is_yesterday() -> None:
    assert next_window(None, None, 2, at(2026, 3, 5, 8)) == Window(at(2026, 3, 4), at(2026, 3, 5))


def test_next_window_starts_lookback_days_before_previous_end() -> None:
    w = next_window(at(2026, 3, 5), dt.date(2026, 1, 1), 2, at(2026, 3, 6, 1))
    assert w == Window(at(2026, 3, 3), at(2026, 3, 6))


def test_zero_lookback_continues_exactly() -> None:
    w = next_window(at(2026, 3, 5), None, 0, at(2026, 3, 8, 1))
    assert w == Window(at(2026, 3, 5), at(2026, 3, 8))


@pytest.mark.parametrize("now", [at(2026, 3, 5, 0, 1), at(2026, 3, 5, 23, 59)])
def test_up_to_date_when_previous_end_is_latest_midnight(now: dt.datetime) -> None:
    assert next_window(at(2026, 3, 5), None, 3, now) is None


def test_initial_start_today_has_no_complete_day() -> None:
    assert next_window(None, dt.date(2026, 3, 5), 1, at(2026, 3, 5, 12)) is None


def test_quota_resets_at_next_utc_midnight() -> None:
    assert next_quota_reset(at(2026, 3, 5, 13)) == at(2026, 3, 6)
