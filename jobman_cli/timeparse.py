"""The ``WHEN`` grammar of ``schedule --at`` and the API's ``date-time``, shared by both front ends.

Accepted forms (surrounding whitespace ignored; ``now`` and the ``in ...`` form case-insensitive):

- ``now``;
- relative: ``+30s``, ``+10m``, ``+2h``, ``+1d``, ``+1h30m`` (the duration grammar, lowercase
  units; a bare ``+90`` is seconds), ``in 10 minutes``, ``in 1 hour``, ``in 90 secs``, ``in 1h30m``;
- absolute: the original service's ``YYYY-MM-DD HH:MM:SS`` and ISO-8601 ``YYYY-MM-DDTHH:MM[:SS[.f]]``
  with an optional offset (``Z``, ``UTC``, ``+02:00``, ``+0200``, ``+02``), and ISO-8601's basic
  format ``YYYYMMDDTHHMM[SS[.f]]`` with the same offsets (``20261224T090000Z``; the ``T`` is required,
  so a bare number is never read as a date).

An absolute time without an offset is wall-clock time in a zone: ``tz`` if given, else
``JOBMAN_TZ``, else the system's local zone. A wall-clock time that a DST change skips or repeats
is refused rather than guessed, because guessing runs a job an hour early or late. The result is
always an aware UTC ``datetime``. dateutil and zoneinfo are imported only when a zone is needed.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone, tzinfo

from .errors import InvalidInput
from .validation import duration_seconds

UTC = timezone.utc
#: How far in the past a time may be and still count as "now" (clock skew, a slow cron script).
PAST_TOLERANCE = timedelta(seconds=60)
WHEN_FORMS = (
    "now, +30s, +10m, +2h, +1d, +1h30m, 'in 10 minutes', 'YYYY-MM-DD HH:MM:SS', or ISO-8601 "
    "such as YYYY-MM-DDT09:00:00Z or YYYY-MM-DDT09:00+02:00 (years up to 9999)"
)

_ABSOLUTE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]"
    r"(?P<hm>[0-9]{2}:[0-9]{2})(?::(?P<sec>[0-9]{2})(?:[.,](?P<frac>[0-9]+))?)?"
    r" ?(?P<offset>[Zz]|UTC|utc|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
#: ISO-8601 basic format: rewritten to the extended one above before matching.
_BASIC = re.compile(
    r"(?P<y>[0-9]{4})(?P<mo>[0-9]{2})(?P<d>[0-9]{2})[Tt](?P<h>[0-9]{2})(?P<mi>[0-9]{2})"
    r"(?:(?P<s>[0-9]{2})(?P<frac>[.,][0-9]+)?)?(?P<offset>[Zz]|[+-][0-9]{2}(?:[0-9]{2})?)?"
)
_IN_UNITS = re.compile(r"([0-9]+) *(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


#: tz database files that are not zones: ``localtime`` follows the evaluating host's /etc/localtime
#: (a schedule stored with it would fire at different instants on different hosts), ``posixrules``
#: is whatever zone the distribution linked, ``Factory`` is "-00"; ``posix/``/``right/`` are copies.
_NOT_ZONES = frozenset({"localtime", "posixrules", "factory"})


def refuse_host_zone(name: str, field: str) -> None:
    """Input only (a zone already stored is still read, so an old schedule keeps running): refuse
    the tz database entries in :data:`_NOT_ZONES` and the ``posix/``/``right/`` copies."""
    if name.casefold() in _NOT_ZONES or name.casefold().startswith(("posix/", "right/")):
        raise InvalidInput(field, f"{name!r} is not a time zone of its own (it depends on the host, or is a "
                                  "tz database alias); use an IANA name such as 'Europe/Berlin' or 'UTC'")


def _zone(name: str, field: str) -> tzinfo:
    """An IANA zone: the system's tz database, else the copy bundled with dateutil (slim images)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() in ("UTC", "Z"):  # as the UTC suffix of a time is: any case
        return UTC
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        from dateutil.zoneinfo import get_zonefile_instance

        bundled = get_zonefile_instance().get(name)
        if bundled is not None:
            return bundled
    except (ValueError, OSError):  # absolute paths, "..", empty names
        pass
    raise InvalidInput(field, f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin' or 'UTC')")


def resolve_tz(name: str | None, field: str = "--tz") -> tzinfo:
    """The zone for times without an offset: ``name``, else ``JOBMAN_TZ``, else the system's.

    A bad ``JOBMAN_TZ`` is reported on the field ``JOBMAN_TZ``, since that is what must be fixed.
    """
    if name is None:
        env = os.environ.get("JOBMAN_TZ", "").strip()
        if env:
            refuse_host_zone(env, "JOBMAN_TZ")
            return _zone(env, "JOBMAN_TZ")
        from dateutil.tz import tzlocal

        return tzlocal()
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(field, "must be a time zone name such as 'Europe/Berlin'")
    refuse_host_zone(name.strip(), field)
    return _zone(name.strip(), field)


def _format_offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _relative_seconds(spec: str) -> int | None:
    """Seconds for ``+1h30m`` / ``in 10 minutes`` / ``in 1h30m``; ``None`` if not relative.

    The ``+`` form is the duration grammar exactly (lowercase units, as ``--timeout``), so ``+10M``
    is refused rather than read as minutes by someone who meant months.
    """
    if spec.startswith("+"):
        compact = duration_seconds(spec[1:])
        if compact is not None:
            return compact
        # "+10 minutes", "+2 hours", as "in ..." (lowercase words; a one-letter unit is the compact form)
        spoken = _IN_UNITS.fullmatch(spec[1:].strip())
        if spoken is None or len(spoken.group(2)) < 3:
            return None
        return int(spoken.group(1)) * _UNIT_SECONDS[spoken.group(2)[0]]
    lower = spec.lower()
    if lower.startswith("in ") or lower.startswith("in\t"):
        rest = lower[3:].strip()
        spoken = _IN_UNITS.fullmatch(rest)
        if spoken:
            return int(spoken.group(1)) * _UNIT_SECONDS[spoken.group(2)[0]]
        return duration_seconds(rest)
    return None


def _local(naive: datetime, spec: str, zone: tzinfo, label: str, field: str) -> datetime:
    """Attach ``zone`` to a wall-clock time, refusing one that a DST change skips or repeats."""
    from dateutil.tz import datetime_ambiguous, datetime_exists

    first = naive.replace(tzinfo=zone, fold=0)
    # The offsets in force an hour before and after: the two a user may mean. (``fold`` alone gives
    # the same offset twice for zones such as dateutil's tzlocal inside a gap.)
    before = (naive - timedelta(hours=1)).replace(tzinfo=zone).utcoffset()
    after = (naive + timedelta(hours=1)).replace(tzinfo=zone).utcoffset()
    offsets = f"{_format_offset(before)} or {_format_offset(after)}"
    if not datetime_exists(first):
        raise InvalidInput(
            field, f"{spec} does not exist in {label} (the clocks skip it at a daylight-saving change); "
                   f"give an explicit offset ({offsets}) or another time"
        )
    if datetime_ambiguous(first):
        raise InvalidInput(
            field, f"{spec} is ambiguous in {label} (it happens twice when the clocks go back); "
                   f"give an explicit offset ({offsets})"
        )
    return first


def parse_when(
    text: str,
    *,
    now: datetime,
    tz: str | None = None,
    field: str = "date-time",
    tz_field: str = "--tz",
) -> datetime:
    """Parse a ``WHEN`` (see the module docstring) into an aware UTC ``datetime``.

    ``now`` is injected (never read from the clock here); a naive ``now`` is taken as UTC. An
    explicit ``tz`` is checked even when the time carries its own offset, so a mistyped ``--tz``
    never passes silently. Times more than a minute before ``now`` are refused.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    if not isinstance(text, str):
        raise InvalidInput(field, f"must be a string: {WHEN_FORMS}")
    zone = resolve_tz(tz, tz_field) if tz is not None else None
    spec = text.strip()
    lower = spec.lower()
    if len(spec) > 64:
        raise InvalidInput(field, f"is too long to be a date-time; use {WHEN_FORMS}")
    if lower == "now":
        return now
    seconds = _relative_seconds(spec)
    if seconds is not None:
        try:
            return now + timedelta(seconds=seconds)
        except OverflowError:
            raise InvalidInput(field, f"{spec!r} is too far in the future (years up to 9999)") from None

    basic = _BASIC.fullmatch(spec)
    extended = spec if basic is None else (
        f"{basic['y']}-{basic['mo']}-{basic['d']}T{basic['h']}:{basic['mi']}"
        + (f":{basic['s']}{basic['frac'] or ''}" if basic["s"] else "") + (basic["offset"] or ""))
    match = _ABSOLUTE.fullmatch(extended)
    if not match:
        raise InvalidInput(field, f"{spec!r} is not a date-time; use {WHEN_FORMS}")
    frac = (match["frac"] or "")[:6].ljust(6, "0")  # beyond microseconds is truncated
    try:
        naive = datetime.fromisoformat(f"{match['date']}T{match['hm']}:{match['sec'] or '00'}.{frac}")
    except ValueError as err:
        raise InvalidInput(field, f"{spec!r} is not a valid date-time ({err})") from None

    try:
        offset = match["offset"]
        if offset is None:
            label = tz.strip() if tz else os.environ.get("JOBMAN_TZ", "").strip() or "the local time zone"
            aware = _local(naive, spec, zone or resolve_tz(None, tz_field), label, field)
        elif offset.upper() in ("Z", "UTC"):
            aware = naive.replace(tzinfo=UTC)
        else:
            hours, minutes = int(offset[1:3]), int(offset.replace(":", "")[3:5] or 0)
            if hours > 23 or minutes > 59:
                raise InvalidInput(field, f"{spec!r} has an invalid UTC offset {offset!r} (at most +/-23:59)")
            delta = timedelta(hours=hours, minutes=minutes)
            aware = naive.replace(tzinfo=timezone(-delta if offset[0] == "-" else delta))
        result = aware.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, f"{spec!r} is out of range (years 1 to 9999 in UTC)") from None

    if result < now - PAST_TOLERANCE:
        raise InvalidInput(field, f"{spec} is in the past (use 'now' to run at once)")
    return result


#: A zone by name without the input-only refusals: for names already stored (schedules).
zone_by_name = _zone
