"""Table-driven tests of the WHEN grammar. ``now`` is always fixed; the real clock is never read."""

from __future__ import annotations

import time
import zoneinfo
from datetime import datetime, timedelta, timezone

import pytest

from jobman_cli.errors import InvalidInput
from jobman_cli.timeparse import parse_when, resolve_tz

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_ambient_zone(monkeypatch):
    """Each test states its zone; JOBMAN_TZ from the developer's shell must not leak in."""
    monkeypatch.delenv("JOBMAN_TZ", raising=False)


def when(text, tz="UTC", now=NOW, **kwargs):
    result = parse_when(text, now=now, tz=tz, **kwargs)
    assert result.tzinfo is UTC
    return result


def refuse(text, tz="UTC", field="date-time", now=NOW, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_when(text, now=now, tz=tz, field=field, **kwargs)
    err = info.value
    assert str(err).startswith(f"{err.field}: ") and "\n" not in str(err)
    assert err.exit_code == 2
    return err


# --------------------------------------------------------------------------- relative
@pytest.mark.parametrize("text, delta", [
    ("now", 0), ("NOW", 0), (" now ", 0), ("Now", 0),
    ("+30s", 30), ("+10m", 600), ("+2h", 7200), ("+1d", 86400), ("+1h30m", 5400), ("+1d2h3m4s", 93784),
    ("+90", 90), ("+0s", 0), ("+30d", 30 * 86400),
    ("in 10 minutes", 600), ("in 1 minute", 60), ("in 2 hours", 7200), ("in 1 day", 86400),
    ("in 3 days", 3 * 86400), ("in 30 seconds", 30), ("in 1 second", 1), ("in 90 secs", 90),
    ("in 1 sec", 1), ("in 5 mins", 300), ("in 1 min", 60), ("in 2 hrs", 7200), ("in 1 hr", 3600),
    ("IN 10 MINUTES", 600), ("In 2 Hours", 7200), ("in   10   minutes", 600), ("in 10minutes", 600),
    ("in 1h30m", 5400), ("in 45", 45), ("in 10 m", 600),
])
def test_relative(text, delta):
    assert when(text) == NOW + timedelta(seconds=delta)


def test_relative_ignores_the_zone():
    assert when("+1h", tz="Pacific/Kiritimati") == NOW + timedelta(hours=1)


def test_now_is_converted_to_utc_and_naive_now_is_utc():
    berlin_now = NOW.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert when("now", now=berlin_now) == NOW
    assert when("+1m", now=NOW.replace(tzinfo=None)) == NOW + timedelta(minutes=1)


# --------------------------------------------------------------------------- absolute
@pytest.mark.parametrize("text, tz, expected", [
    ("2026-12-01 09:00:00", "UTC", datetime(2026, 12, 1, 9, 0, 0)),
    ("2026-12-01 09:00:00", "Europe/Berlin", datetime(2026, 12, 1, 8, 0, 0)),
    ("2026-07-01 09:00:00", "Europe/Berlin", datetime(2026, 7, 1, 7, 0, 0)),
    ("2026-12-01 09:00:00", "America/New_York", datetime(2026, 12, 1, 14, 0, 0)),
    ("2026-12-01 09:00", "UTC", datetime(2026, 12, 1, 9, 0, 0)),
    ("2026-12-01T09:00", "Europe/Berlin", datetime(2026, 12, 1, 8, 0, 0)),
    ("2026-12-01T09:00:00Z", "Europe/Berlin", datetime(2026, 12, 1, 9, 0, 0)),
    ("2026-12-01t09:00:00z", "Europe/Berlin", datetime(2026, 12, 1, 9, 0, 0)),
    ("2026-12-01 09:00:00 UTC", "Europe/Berlin", datetime(2026, 12, 1, 9, 0, 0)),
    ("2026-12-01T09:00:00+02:00", "UTC", datetime(2026, 12, 1, 7, 0, 0)),
    ("2026-12-01T09:00:00-05:30", "UTC", datetime(2026, 12, 1, 14, 30, 0)),
    ("2026-12-01T09:00+0200", "UTC", datetime(2026, 12, 1, 7, 0, 0)),
    ("2026-12-01T09:00+02", "UTC", datetime(2026, 12, 1, 7, 0, 0)),
    ("2026-12-01 09:00:00 +02:00", "UTC", datetime(2026, 12, 1, 7, 0, 0)),
    ("2026-12-01T09:00:00.5Z", "UTC", datetime(2026, 12, 1, 9, 0, 0, 500000)),
    ("2026-12-01T09:00:00,25Z", "UTC", datetime(2026, 12, 1, 9, 0, 0, 250000)),
    ("2026-12-01T09:00:00.123Z", "UTC", datetime(2026, 12, 1, 9, 0, 0, 123000)),
    ("2026-12-01T09:00:00.123456789Z", "UTC", datetime(2026, 12, 1, 9, 0, 0, 123456)),
    ("2026-12-01T09:00:00.123+01:00", "UTC", datetime(2026, 12, 1, 8, 0, 0, 123000)),
    ("  2026-12-01 09:00:00  ", "UTC", datetime(2026, 12, 1, 9, 0, 0)),
    ("9999-12-31T23:59:59Z", "UTC", datetime(9999, 12, 31, 23, 59, 59)),
    ("2028-02-29 12:00:00", "UTC", datetime(2028, 2, 29, 12, 0, 0)),
])
def test_absolute(text, tz, expected):
    assert when(text, tz=tz) == expected.replace(tzinfo=UTC)


def test_explicit_offset_resolves_dst_gap_and_overlap():
    berlin = "Europe/Berlin"
    assert when("2026-03-29T02:30:00+01:00", tz=berlin) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert when("2026-10-25T02:30:00+02:00", tz=berlin) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert when("2026-10-25T02:30:00+01:00", tz=berlin) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_times_next_to_the_dst_changes_are_fine():
    berlin = "Europe/Berlin"
    assert when("2026-03-29 01:59:59", tz=berlin) == datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)
    assert when("2026-03-29 03:00:00", tz=berlin) == datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC)
    assert when("2026-10-25 01:59:59", tz=berlin) == datetime(2026, 10, 24, 23, 59, 59, tzinfo=UTC)
    assert when("2026-10-25 03:00:00", tz=berlin) == datetime(2026, 10, 25, 2, 0, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- DST refusals
def test_nonexistent_local_time_is_refused():
    err = refuse("2026-03-29 02:30:00", tz="Europe/Berlin", field="--at")
    assert err.field == "--at"
    assert "2026-03-29 02:30:00 does not exist in Europe/Berlin" in err.rule
    assert "explicit offset (+01:00 or +02:00)" in err.rule


def test_ambiguous_local_time_is_refused():
    err = refuse("2026-10-25 02:30:00", tz="Europe/Berlin")
    assert "2026-10-25 02:30:00 is ambiguous in Europe/Berlin" in err.rule
    assert "explicit offset (+02:00 or +01:00)" in err.rule


@pytest.mark.parametrize("text, word", [("2026-03-29T02:30", "does not exist"), ("2026-10-25T02:00:00", "ambiguous")])
def test_jobman_tz_is_the_default_zone(monkeypatch, text, word):
    monkeypatch.setenv("JOBMAN_TZ", "Europe/Berlin")
    err = refuse(text, tz=None)
    assert word in err.rule and "Europe/Berlin" in err.rule
    assert when("2026-12-01 09:00:00", tz=None) == datetime(2026, 12, 1, 8, tzinfo=UTC)


def test_explicit_tz_beats_jobman_tz(monkeypatch):
    monkeypatch.setenv("JOBMAN_TZ", "Europe/Berlin")
    assert when("2026-12-01 09:00:00", tz="America/New_York") == datetime(2026, 12, 1, 14, tzinfo=UTC)
    assert when("2026-03-29 02:30:00", tz="UTC") == datetime(2026, 3, 29, 2, 30, tzinfo=UTC)


def test_bad_jobman_tz_is_reported_on_jobman_tz(monkeypatch):
    monkeypatch.setenv("JOBMAN_TZ", "Mars/Olympus_Mons")
    err = refuse("2026-12-01 09:00:00", tz=None)
    assert err.field == "JOBMAN_TZ" and "unknown time zone 'Mars/Olympus_Mons'" in err.rule
    # A time that needs no zone does not trip over it.
    assert when("+5m", tz=None) == NOW + timedelta(minutes=5)


@pytest.fixture
def system_zone(monkeypatch):
    """Switch the process's local zone (TZ + tzset) and restore it afterwards."""
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset (POSIX)")

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def test_system_local_zone_without_tz_or_jobman_tz(system_zone):
    system_zone("Europe/Berlin")
    assert when("2026-12-01 09:00:00", tz=None) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert when("2026-07-01 09:00:00", tz=None) == datetime(2026, 7, 1, 7, tzinfo=UTC)
    err = refuse("2026-03-29 02:30:00", tz=None)
    assert "does not exist in the local time zone" in err.rule
    system_zone("UTC")
    assert when("2026-12-01 09:00:00", tz=None) == datetime(2026, 12, 1, 9, tzinfo=UTC)


# --------------------------------------------------------------------------- time zones
@pytest.mark.parametrize("name", ["Mars/Base", "Europe", "europe/berlin", "", "   ", "../etc/passwd",
                                  "/etc/localtime", "Europe/Berlin\x00", "CET+1"])
def test_unknown_tz_is_refused_on_the_tz_field(name):
    err = refuse("2026-12-01 09:00:00", tz=name)
    assert err.field == "--tz"
    err = refuse("2026-12-01T09:00:00Z", tz=name, tz_field="tz")  # checked even when unused
    assert err.field == "tz"


def test_tz_must_be_a_string():
    with pytest.raises(InvalidInput) as info:
        resolve_tz(5, field="tz")  # type: ignore[arg-type]
    assert info.value.field == "tz"


def test_resolve_tz():
    assert resolve_tz("Europe/Berlin").utcoffset(datetime(2026, 7, 1)) == timedelta(hours=2)
    assert resolve_tz(" UTC ").utcoffset(datetime(2026, 7, 1)) == timedelta(0)


def test_bundled_tz_database_when_the_system_has_none(monkeypatch):
    """Slim images without /usr/share/zoneinfo fall back to the copy inside dateutil."""

    def missing(key):
        raise zoneinfo.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", missing)
    assert when("2026-12-01 09:00:00", tz="Europe/Berlin") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert "does not exist in Europe/Berlin" in refuse("2026-03-29 02:30:00", tz="Europe/Berlin").rule
    assert "ambiguous" in refuse("2026-10-25 02:30:00", tz="Europe/Berlin").rule
    assert refuse("now", tz="Mars/Base").field == "--tz"


# --------------------------------------------------------------------------- the past
def test_past_is_refused_with_a_hint():
    err = refuse("2020-01-01 00:00:00", tz="UTC")
    assert str(err) == "date-time: 2020-01-01 00:00:00 is in the past (use 'now' to run at once)"


@pytest.mark.parametrize("seconds_ago, accepted", [(0, True), (30, True), (60, True), (61, False), (3600, False)])
def test_past_tolerance_is_one_minute(seconds_ago, accepted):
    text = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if accepted:
        assert when(text) == NOW - timedelta(seconds=seconds_ago)
    else:
        assert "is in the past (use 'now'" in refuse(text).rule


def test_past_is_judged_in_utc_not_wall_clock():
    # 12:30 in Berlin is 11:30 UTC: more than a minute before NOW (12:00 UTC).
    assert "in the past" in refuse("2026-03-01 12:30:00", tz="Europe/Berlin").rule
    assert when("2026-03-01 13:30:00", tz="Europe/Berlin") == NOW + timedelta(minutes=30)


# --------------------------------------------------------------------------- garbage
@pytest.mark.parametrize("text, detail", [
    ("", "is not a date-time"),
    ("   ", "is not a date-time"),
    ("tomorrow", "is not a date-time"),
    ("later", "is not a date-time"),
    ("2026-12-01", "is not a date-time"),
    ("09:00", "is not a date-time"),
    ("2026/12/01 09:00:00", "is not a date-time"),
    ("01.12.2026 09:00", "is not a date-time"),
    ("2026-12-01T09", "is not a date-time"),
    ("2026-12-01T9:00", "is not a date-time"),
    ("2026-12-01T09:00:00Z junk", "is not a date-time"),
    ("2026-12-01T09:00:00 Europe/Berlin", "is not a date-time"),
    ("10000-01-01 00:00:00", "years up to 9999"),
    ("+10000-01-01T00:00:00", "is not a date-time"),
    ("1700000000", "is not a date-time"),
    ("2026-13-01 09:00:00", "month must be in 1..12"),
    ("2026-02-29 09:00:00", "day is out of range"),
    ("2026-12-01 24:00:00", "hour must be in 0..23"),
    ("2026-12-01 09:60:00", "minute must be in 0..59"),
    ("2026-12-01 09:00:60", "second must be in 0..59"),
    ("2026-12-01T09:00:00+24:00", "invalid UTC offset"),
    ("2026-12-01T09:00:00+02:60", "invalid UTC offset"),
    ("2026-12-01T09:00:00+2:00", "is not a date-time"),
    ("9999-12-31T23:59:59-05:00", "out of range"),
    ("+", "is not a date-time"),
    ("+-5m", "is not a date-time"),
    ("-5m", "is not a date-time"),
    ("+1.5h", "is not a date-time"),
    ("+10M", "is not a date-time"),
    ("+1 h", "is not a date-time"),
    ("+1h1h", "is not a date-time"),
    ("in", "is not a date-time"),
    ("in ", "is not a date-time"),
    ("in minutes", "is not a date-time"),
    ("in 10", None),  # accepted as seconds; checked below
    ("in -5 minutes", "is not a date-time"),
    ("in 10 fortnights", "is not a date-time"),
    ("in 1.5 hours", "is not a date-time"),
    ("in ten minutes", "is not a date-time"),
    ("10 minutes", "is not a date-time"),
    ("now+5m", "is not a date-time"),
    ("+99999999999d", "too far in the future"),
    ("+" + "9" * 40, "is not a date-time"),
    ("2026-12-01 09:00:00" + " " * 10 + "x" * 60, "too long"),
    ("2026-12-01\n09:00:00", "is not a date-time"),
    ("２０２６-12-01 09:00:00", "is not a date-time"),
])
def test_garbage_is_refused_listing_the_forms(text, detail):
    if detail is None:
        assert when(text) == NOW + timedelta(seconds=10)
        return
    err = refuse(text)
    assert detail in err.rule
    if "is not a date-time" in detail:
        assert "now, +30s" in err.rule and "YYYY-MM-DD HH:MM:SS" in err.rule and "ISO-8601" in err.rule


@pytest.mark.parametrize("value", [None, 1767225600, 1.5, ["now"], {"at": "now"}, True])
def test_non_strings_are_refused(value):
    err = refuse(value, field="date-time")
    assert err.field == "date-time" and "must be a string" in err.rule
