"""Occurrences across real DST transitions, each checked against an independent computation.

The independent rule (``expected_runs``) never asks a zone to resolve a local time: it walks the
UTC minutes of a window, converts each to local time (which is unambiguous), and then applies
DESIGN.md section 14 by hand:

* a matching wall time reached for the first time (the first UTC minute showing it) runs then;
* a matching wall time that no UTC minute shows (skipped by a gap) runs at the first UTC minute
  whose wall time is later than it (the first instant after the gap);
* runs at the same instant are one run.

The product computes the same thing the other way round (cronsim over wall times, each resolved
with ``fold=0`` and a gap bisection), so agreement means both readings of the rule agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

import pytest

from jobman_cli.errors import InvalidInput
from jobman_cli.schedules import occurrences as occ
from jobman_cli.schedules.occurrences import next_occurrence, upcoming

UTC = timezone.utc
Match = Callable[[datetime], bool]


def expected_runs(match: Match, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """The rule applied by hand over every UTC minute in [start, end) (see the module doc)."""
    zone = ZoneInfo(tz)
    minutes: list[tuple[datetime, datetime]] = []  # (utc, naive wall time)
    u = start - timedelta(hours=4)  # margin: wall times seen before the window count as seen
    while u < end + timedelta(hours=4):
        minutes.append((u, u.astimezone(zone).replace(tzinfo=None)))
        u += timedelta(minutes=1)
    seen: set[datetime] = set()
    runs: set[datetime] = set()
    for u, wall in minutes:
        if match(wall) and wall not in seen:
            runs.add(u)
        seen.add(wall)
    # skipped wall times: every wall minute between the lowest and highest seen that no UTC minute showed
    walls = [w for _, w in minutes]
    w, last = min(walls), max(walls)
    while w <= last:
        if w not in seen and match(w):
            runs.add(next(u for u, wall in minutes if wall > w))
        w += timedelta(minutes=1)
    return sorted(r for r in runs if start < r < end)


def daily_0230(w: datetime) -> bool:
    return (w.hour, w.minute) == (2, 30)


def hours_1_to_3(w: datetime) -> bool:
    return w.minute == 0 and 1 <= w.hour <= 3


def hourly(w: datetime) -> bool:
    return w.minute == 0


def midnight(w: datetime) -> bool:
    return (w.hour, w.minute) == (0, 0)


def quarter_past_2(w: datetime) -> bool:
    return w.hour == 2 and w.minute % 15 == 0


def sunday_midnight(w: datetime) -> bool:
    return w.isoweekday() == 7 and (w.hour, w.minute) == (0, 0)


def first_of_month_midnight(w: datetime) -> bool:
    return w.day == 1 and (w.hour, w.minute) == (0, 0)


def new_year_midnight(w: datetime) -> bool:
    return (w.month, w.day, w.hour, w.minute) == (1, 1, 0, 0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


CASES = [
    # (cron, zone, window start, window end, hand-written matcher)
    ("30 2 * * *", "Europe/Berlin", utc(2027, 3, 26), utc(2027, 3, 31), daily_0230),
    ("30 2 * * *", "Europe/Berlin", utc(2027, 10, 29), utc(2027, 11, 3), daily_0230),
    ("0 1-3 * * *", "America/New_York", utc(2027, 3, 12), utc(2027, 3, 17), hours_1_to_3),
    ("0 1-3 * * *", "America/New_York", utc(2027, 11, 5), utc(2027, 11, 10), hours_1_to_3),
    ("@hourly", "America/New_York", utc(2027, 3, 13), utc(2027, 3, 16), hourly),
    ("@hourly", "America/New_York", utc(2027, 11, 6), utc(2027, 11, 9), hourly),
    ("@hourly", "Europe/Berlin", utc(2027, 3, 27), utc(2027, 3, 29), hourly),
    ("@hourly", "Europe/Berlin", utc(2027, 10, 30), utc(2027, 11, 1), hourly),
    # harder zones: a 30-minute shift (Lord Howe), a change at midnight (Santiago: 00:00 skipped)
    ("*/15 2 * * *", "Australia/Lord_Howe", utc(2027, 4, 1), utc(2027, 4, 6), quarter_past_2),
    ("*/15 2 * * *", "Australia/Lord_Howe", utc(2027, 9, 30), utc(2027, 10, 5), quarter_past_2),
    ("@daily", "America/Santiago", utc(2027, 9, 1), utc(2027, 9, 10), midnight),
    ("@daily", "America/Santiago", utc(2027, 4, 1), utc(2027, 4, 8), midnight),
    ("*/15 2 * * *", "Europe/Berlin", utc(2027, 3, 27), utc(2027, 3, 30), quarter_past_2),
    # the names mean what cron means by them (not only "something periodic")
    ("@weekly", "Europe/Berlin", utc(2027, 3, 1), utc(2027, 4, 15), sunday_midnight),
    ("@monthly", "America/Santiago", utc(2027, 1, 15), utc(2027, 12, 20), first_of_month_midnight),
    ("@yearly", "UTC", utc(2026, 12, 30), utc(2027, 1, 3), new_year_midnight),
]


@pytest.mark.parametrize("cron,tz,start,end,match", CASES, ids=[f"{c[0]}@{c[1]}@{c[2]:%Y-%m}" for c in CASES])
def test_occurrences_agree_with_the_rule_applied_by_hand(cron, tz, start, end, match):
    expected = expected_runs(match, tz, start, end)
    assert expected, "the window must contain runs"
    got = upcoming(cron, None, tz, start, len(expected) + 1)
    assert got[:-1] == expected
    assert got[-1] >= end  # and nothing more inside the window
    assert len(set(got)) == len(got)


def test_berlin_0230_gap_runs_once_at_0300_and_repeat_runs_once_at_the_first_0230():
    spring = upcoming("30 2 * * *", None, "Europe/Berlin", utc(2027, 3, 27, 12), 2)
    assert spring == [utc(2027, 3, 28, 1, 0), utc(2027, 3, 29, 0, 30)]  # 03:00 CEST, then 02:30 CEST
    assert spring[0].astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z") == "03:00 CEST"
    autumn = upcoming("30 2 * * *", None, "Europe/Berlin", utc(2027, 10, 30, 12), 2)
    assert autumn == [utc(2027, 10, 31, 0, 30), utc(2027, 11, 1, 1, 30)]  # the first 02:30 (CEST), once
    assert autumn[0].astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z") == "02:30 CEST"


def test_new_york_repeated_hour_runs_once_and_hourly_skips_the_second_0100():
    fall = upcoming("0 1-3 * * *", None, "America/New_York", utc(2027, 11, 7, 0), 3)
    assert fall == [utc(2027, 11, 7, 5), utc(2027, 11, 7, 7), utc(2027, 11, 7, 8)]  # 01 EDT, 02 EST, 03 EST
    spring = upcoming("0 1-3 * * *", None, "America/New_York", utc(2027, 3, 14, 0), 3)
    assert spring == [utc(2027, 3, 14, 6), utc(2027, 3, 14, 7), utc(2027, 3, 15, 5)]  # 01 EST, 03 EDT (02 skipped: once)
    hourly_fall = upcoming("@hourly", None, "America/New_York", utc(2027, 11, 7, 4, 30), 3)
    assert hourly_fall == [utc(2027, 11, 7, 5), utc(2027, 11, 7, 7), utc(2027, 11, 7, 8)]  # no run at 06:00Z


def test_after_is_strict_even_inside_the_repeated_hour():
    # 01:30 EST, the *second* 01:30 (06:30Z): 01:00 already ran at its first occurrence, next is 02:00 EST
    assert next_occurrence("0 1-3 * * *", None, "America/New_York", utc(2027, 11, 7, 6, 30)) == utc(2027, 11, 7, 7)
    assert next_occurrence("30 2 * * *", None, "Europe/Berlin", utc(2027, 3, 28, 1)) == utc(2027, 3, 29, 0, 30)
    assert next_occurrence("30 2 * * *", None, "Europe/Berlin", utc(2027, 3, 28, 0, 59)) == utc(2027, 3, 28, 1)


def test_every_is_elapsed_time_from_the_anchor_whatever_the_zone():
    anchor = utc(2027, 3, 28, 0, 10)
    got = upcoming(None, 3600, "Europe/Berlin", anchor, 4, anchor=anchor)
    assert got == [anchor + timedelta(hours=h) for h in (1, 2, 3, 4)]
    assert next_occurrence(None, 900, "UTC", utc(2027, 1, 1, 0, 31), anchor=utc(2027, 1, 1)) == utc(2027, 1, 1, 0, 45)


@pytest.mark.parametrize("text,normal", [("0 6 * * mon-fri", "0 6 * * MON-FRI"), ("  @Daily ", "@daily"),
                                         ("*/5  * * * *", "*/5 * * * *"), ("0 0 1 jan *", "0 0 1 JAN *")])
def test_expressions_are_normalized(text, normal):
    assert occ.normalize_cron(text) == normal


@pytest.mark.parametrize("text,fragment", [
    ("0 0 * * * *", "seconds are not supported"), ("0 6 * *", "4 fields"), ("61 * * * *", "not a valid cron"),
    ("@reboot", "unknown name"), ("0 0 30 2 *", "day-of-month"), ("0 6 * * Mon;rm", "characters"), ("", "five-field"),
])
def test_bad_expressions_are_usage_errors_naming_the_field(text, fragment):
    with pytest.raises(InvalidInput) as err:
        occ.normalize_cron(text)
    assert err.value.field == "--cron" and fragment in str(err.value)


def test_unknown_zone_and_short_every_name_their_field():
    with pytest.raises(InvalidInput) as err:
        occ.normalize_tz("Mars/Olympus")
    assert err.value.field == "--tz"
    with pytest.raises(InvalidInput) as err:
        occ.validate_every(59)
    assert err.value.field == "--every"
    assert occ.validate_every(60) == 60


def test_the_end_of_the_calendar_ends_the_list_instead_of_crashing():
    """Past 9999-12-31 Python has no datetime: the preview ends there (it was an OverflowError)."""
    start = utc(9999, 6, 1)
    assert upcoming("0 0 1 1 *", None, "UTC", start, 3) == []
    assert upcoming(None, 366 * 86400, "UTC", start, 3) == []
    with pytest.raises(ValueError, match="9999"):
        next_occurrence("0 0 1 1 *", None, "Europe/Berlin", start)
