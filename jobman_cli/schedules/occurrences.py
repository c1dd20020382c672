"""When a schedule's runs happen: cron in the schedule's own zone, with DESIGN.md section 14's DST rules.

Why not let the cron library handle zones: every library follows *some* cron's DST quirks (cronsim
mimics Debian cron, croniter its own), and neither says exactly what jobman promises. So the
expression is evaluated by ``cronsim`` over *naive local wall-clock times* (no zone, no DST: each
wall time exists exactly once there), and each wall time is mapped to UTC here:

* a wall time that exists once: its instant;
* a repeated wall time (the clocks go back): its **first** occurrence (``fold=0``). The second pass
  through the repeated hour yields no new wall times, so nothing runs twice;
* a wall time skipped by a gap (the clocks go forward): the **first instant after the gap** (the
  transition itself, e.g. 03:00 CEST for 02:30 in Europe/Berlin on 2027-03-28). Several skipped
  wall times (``*/15 2 * * *``), or a skipped one and the gap's end itself, all land on that
  instant and run **once**.

This mapping is monotonic (a later wall time never maps to an earlier instant), and ``after``'s own
wall time maps (``fold=0``) to ``after`` or earlier, which is what lets :func:`next_occurrence` walk
the wall times from ``after``'s and take the first one whose instant is strictly after it. ``--every`` schedules are pure elapsed time (``anchor + k * every``): no zone.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from ..errors import InvalidInput

UTC = timezone.utc
MIN_EVERY = 60
#: ``--every`` at most a year (a bound, so that a typo is an error rather than a schedule that never runs).
MAX_EVERY = 366 * 86400
#: The ``@`` names jobman accepts, as the five-field expressions they stand for (cronsim has none).
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELD_CHARS = re.compile(r"[0-9A-Za-z*/,#?-]+")
_MAX_CRON_LENGTH = 200


def normalize_cron(text: object, field: str = "--cron") -> str:
    """The expression as stored: five fields separated by single spaces (names upper-cased, as
    cron reads them), or a lower-case ``@`` name. Raises InvalidInput naming ``field`` otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(field, "must be a five-field cron expression such as '0 6 * * 1-5', or @hourly, "
                                  "@daily, @weekly, @monthly, @yearly")
    if len(text) > _MAX_CRON_LENGTH:
        raise InvalidInput(field, f"is longer than {_MAX_CRON_LENGTH} characters")
    stripped = text.strip()
    if stripped.startswith("@"):
        name = stripped.lower()
        if name not in MACROS:
            raise InvalidInput(field, f"unknown name {stripped!r} (use one of {', '.join(MACROS)})")
        return name
    parts = stripped.split()
    if len(parts) != 5:
        more = " (seconds are not supported)" if len(parts) == 6 else ""
        raise InvalidInput(field, f"{stripped!r} has {len(parts)} fields; cron needs exactly five: "
                                  f"minute hour day-of-month month day-of-week{more}")
    if not all(_FIELD_CHARS.fullmatch(part) for part in parts):
        raise InvalidInput(field, f"{stripped!r} contains characters that cron does not use")
    expr = " ".join(part.upper() for part in parts)
    _compile(expr, field)
    return expr


def _compile(expr: str, field: str) -> None:
    """Let cronsim parse it (and find one occurrence: an expression that never fires, such as
    ``0 0 30 2 *``, is refused now rather than stored)."""
    from cronsim import CronSim, CronSimError

    try:
        next(CronSim(expr, datetime(2000, 1, 1)))
    except CronSimError as err:
        impossible = _impossible_day(expr)
        if impossible:
            raise InvalidInput(field, f"{expr!r} never fires: {impossible} (its day-of-month and month "
                                      "fields never match a date)") from None
        raise InvalidInput(field, f"{expr!r} is not a valid cron expression ({err})") from None
    except StopIteration:
        raise InvalidInput(field, f"{expr!r} never matches a date") from None


_MONTH_NAMES = ("", "January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")


def _impossible_day(expr: str) -> str | None:
    """Why a well-formed expression names no real date (``0 0 31 2 *``: "February has no day 31"),
    or None. cronsim refuses these at parse time with the same "Bad day-of-month" it gives a day 32,
    which reads as a typo in the field; the fields are each valid, only their combination is empty.
    (With a restricted day-of-week as well, cron ORs the two fields, so such an expression fires.)"""
    from cronsim import CronSimError
    from cronsim.cronsim import DAYS_IN_MONTH, Field

    _minute, _hour, dom, month, dow = expr.split()
    if not (dom.startswith("*") or dow.startswith("*")):
        return None
    try:
        days, months = Field.DAY.parse(dom), Field.MONTH.parse(month)
    except CronSimError:
        return None  # a field of its own is bad: cronsim's words say which
    if not days or not months or min(days) <= max(DAYS_IN_MONTH[m] for m in months):
        return None
    names = [_MONTH_NAMES[m] for m in sorted(months)]
    which = names[0] + " has" if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]} have"
    wanted = sorted(days)
    shown = f"day {wanted[0]}" if len(wanted) == 1 else "day " + ", ".join(map(str, wanted[:-1])) + f" or {wanted[-1]}"
    return f"{which} no {shown}"


def expand(cron: str) -> str:
    """The five-field form of a stored expression (``@daily`` -> ``0 0 * * *``)."""
    return MACROS.get(cron, cron)


def validate_every(seconds: object, field: str = "--every") -> int:
    """``--every``: whole seconds from one minute to a year (the text form is parsed by the caller)."""
    if type(seconds) is not int or not MIN_EVERY <= seconds <= MAX_EVERY:
        shown = f"{seconds}s" if type(seconds) is int else repr(seconds)
        raise InvalidInput(field, f"must be at least 1m and at most 366d (got {shown}); each run is a fresh "
                                  "EC2 instance")
    return seconds


def zone(name: object, field: str = "--tz") -> tzinfo:
    """The tzinfo of an IANA zone name (InvalidInput naming ``field`` when unknown). Also reads
    stored schedules, so it does not apply the input-only :func:`normalize_tz` refusals."""
    from ..timeparse import zone_by_name as _zone

    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(field, "must be a time zone name such as 'Europe/Berlin'")
    return _zone(name.strip(), field)


def normalize_tz(name: object, field: str = "--tz") -> str:
    """The zone name as stored (validated; ``utc`` -> ``UTC``; host-dependent names such as
    ``localtime`` refused, since the schedule would fire at another instant on another host)."""
    from ..timeparse import refuse_host_zone

    zone(name, field)
    refuse_host_zone(str(name).strip(), field)
    text = str(name).strip()
    return "UTC" if text.upper() in ("UTC", "Z") else text


def system_zone_name(tz_field: str = "--tz") -> str:
    """The IANA name of this machine's zone, stored explicitly on a schedule created without
    ``--tz`` (so moving the daemon to another host does not move the schedule): ``JOBMAN_TZ`` (an
    error naming it if unknown: it is explicit configuration), else ``TZ`` if set (see
    :func:`_zone_of_tz_variable`: the zone ``--at`` reads local times in, or a refusal), else the
    ``/etc/localtime`` link or ``/etc/timezone``, else UTC."""
    configured = os.environ.get("JOBMAN_TZ", "").strip()
    if configured:
        return normalize_tz(configured, "JOBMAN_TZ")
    if "TZ" in os.environ:
        return _zone_of_tz_variable(os.environ["TZ"], tz_field)
    candidates = []
    try:
        target = os.path.realpath("/etc/localtime")
        candidates.append(target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    except OSError:
        pass
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    for name in candidates:
        if name and not name.startswith("/"):
            try:
                return normalize_tz(name)
            except InvalidInput:
                continue
    return "UTC"


#: A POSIX TZ rule without daylight saving (``UTC0``, ``JST-9``, ``<+0530>-5:30`` is not: whole hours only).
_POSIX_FIXED = re.compile(r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)([+-]?[0-9]{1,2})")


def _zone_of_tz_variable(value: str, tz_field: str) -> str:
    """The zone name of a set ``TZ``, agreeing with the zone ``--at`` reads local times in (the C
    library's, through dateutil's ``tzlocal``): a zone name (``Europe/Berlin``, ``:Europe/Berlin``,
    a path under ``zoneinfo/``), ``UTC`` for an empty TZ, the ``Etc/GMT±N`` zone of a fixed-offset
    rule (``JST-9``: POSIX and ``Etc`` share the inverted sign). A rule with daylight saving
    (``CET-1CEST,M3.5.0,M10.5.0/3``) or an unknown name is refused (InvalidInput on TZ): the
    schedule would otherwise follow another zone than the one a one-off ``--at`` in the same shell
    uses, and no IANA name is provably the same rule. ``--tz`` or ``JOBMAN_TZ`` settles it."""
    text = value.strip()
    if not text:
        return "UTC"  # the C library reads an empty TZ as UTC
    name = text[1:] if text.startswith(":") else text
    if name.startswith("/") and "zoneinfo/" in name:
        name = name.split("zoneinfo/", 1)[1]
    try:
        return normalize_tz(name, "TZ")
    except InvalidInput:
        pass
    fixed = _POSIX_FIXED.fullmatch(name)
    if fixed:
        hours = int(fixed.group(1))
        try:
            return "UTC" if hours == 0 else normalize_tz(f"Etc/GMT{hours:+d}", "TZ")
        except InvalidInput:
            pass
    hint = tz_field if tz_field.startswith("--") else f'"{tz_field}"'
    raise InvalidInput("TZ", f"{value[:80]!r} is not a time zone name a schedule can keep (local times of --at "
                             f"follow it, a schedule could not); give {hint} with an IANA name such as "
                             "'Europe/Berlin', or set JOBMAN_TZ")


def to_utc(wall: datetime, tz: tzinfo) -> datetime:
    """A naive local wall time as a UTC instant under the DST rules (module doc)."""
    first = wall.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant  # it exists (once, or first of two: fold=0)
    return _gap_end(wall, tz)


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """The transition instant that skips ``wall``: the first instant after the gap. The gap lies
    between the wall time read with the offset after the change and with the one before it, so a
    bisection on whole seconds between those two instants finds it (transitions fall on seconds)."""
    offsets = [wall.replace(tzinfo=tz, fold=f).utcoffset() or timedelta() for f in (0, 1)]
    lo = (wall - max(offsets)).replace(tzinfo=UTC)  # surely before the transition
    hi = (wall - min(offsets)).replace(tzinfo=UTC)  # surely at or after it
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


def next_occurrence(cron: str | None, every: int | None, tz: str, after: datetime, *,
                    anchor: datetime | None = None) -> datetime:
    """The first occurrence strictly after ``after`` (UTC in, UTC out).

    ``every``: ``anchor + k * every`` (``anchor``: the schedule's creation, default ``after``, taken
    at its whole minute, so that ``--every 15m`` made at 09:02:41 runs at 09:17:00, 09:32:00, ...).
    ``cron``: see the module doc. Raises ValueError if the expression has no further occurrence
    (also when the next one would fall after the year 9999, where Python's datetimes end).
    """
    try:
        return _next_occurrence(cron, every, tz, after.astimezone(UTC), anchor)
    except OverflowError:
        raise ValueError(f"no occurrence after {after.isoformat()} before the year 9999 ends") from None


def _next_occurrence(cron: str | None, every: int | None, tz: str, after: datetime,
                     anchor: datetime | None) -> datetime:
    if every is not None:
        base = (anchor or after).astimezone(UTC).replace(second=0, microsecond=0)
        if base > after:
            return base
        steps = (after - base) // timedelta(seconds=every) + 1
        return base + timedelta(seconds=every * steps)
    if cron is None:
        raise ValueError("a schedule needs cron or every")
    from cronsim import CronSim

    zone_info = zone(tz)
    start = after.astimezone(zone_info).replace(tzinfo=None, fold=0)
    for wall in CronSim(expand(cron), start.replace(microsecond=0)):
        instant = to_utc(wall, zone_info)
        if instant > after:
            return instant
    raise ValueError(f"{cron!r} has no occurrence after {after.isoformat()}")


def upcoming(cron: str | None, every: int | None, tz: str, start: datetime, n: int, *,
             anchor: datetime | None = None) -> list[datetime]:
    """The next ``n`` occurrences after ``start`` (``preview``), each distinct and ascending."""
    found: list[datetime] = []
    after = start
    for _ in range(n):
        try:
            after = next_occurrence(cron, every, tz, after, anchor=anchor if anchor is not None else start)
        except (ValueError, StopIteration):
            break
        found.append(after)
    return found


def local_label(instant: datetime, tz: str) -> str:
    """``2027-03-28 03:00:00 CEST (+02:00)``: an instant as the schedule's zone shows it."""
    local = instant.astimezone(zone(tz))
    offset = local.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if offset else "+00:00"
    return f"{local.strftime('%Y-%m-%d %H:%M:%S')} {local.tzname() or ''} ({offset})".replace("  ", " ")


def format_every(seconds: int) -> str:
    """``15m``, ``1h30m``, ``1d``: an interval in the grammar ``--every`` accepts."""
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def transition_note(instant: datetime, tz: str, every: int | None = None) -> str | None:
    """Why an occurrence sits where it does at a DST change (``preview`` shows it): at a gap's end
    (the clocks jumped over the wall time the expression names), or in a repeated hour (this is the
    first pass; the second pass does not run it again). None on ordinary days, and always None for
    an ``--every`` schedule (``every`` given): it counts elapsed time, so a DST change moves none of
    its runs, and both passes through a repeated hour are real runs."""
    if every is not None:
        return None
    zone_info = zone(tz)
    local = instant.astimezone(zone_info)
    before = (instant - timedelta(seconds=1)).astimezone(zone_info)
    if (local.utcoffset() or timedelta()) > (before.utcoffset() or timedelta()):
        return "DST gap: the skipped time(s) run here, once"
    wall = local.replace(tzinfo=None)
    other = wall.replace(tzinfo=zone_info, fold=1 - local.fold)
    if other.utcoffset() != local.utcoffset() and other.astimezone(UTC).astimezone(zone_info).replace(tzinfo=None) == wall:
        return "repeated hour: runs at the first pass only"
    return None
