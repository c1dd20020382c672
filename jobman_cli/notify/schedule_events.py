"""A schedule's missed and refused occurrences notify (DESIGN.md sections 11 and 14).

A missed or refused occurrence has no job, so a job's deliveries cannot carry it: the outbox is the
schedule's record of the event instead. When the materializer records one for a schedule whose runs
would notify (the template's ``notify`` targets, else the daemon's ``[notify]`` defaults), it gives
the record a ``"notifications": []`` list (:data:`KEY`); records without that key (older ones,
schedules with no target) owe nothing. One outage is ONE event: a range record, or, for a short
outage recorded one record per occurrence, the first of them carrying ``"notify-span"`` (the
last occurrence, the count, the reason) — never one notification per missed minute.

The delivery records inside that list have the very shape and rules of a job's
(:mod:`.deliveries`: claim with a lease, settle, exponential backoff, give up after ``max_age``,
history), reused through :class:`_View`, a job-shaped stand-in for the event, so the two never
drift apart. Every claim is a compare-and-set write of the schedule *before* anything is sent (on
TinyDB as on DynamoDB): of several daemons on one store only one sends an event; a crash between
sending and recording repeats that one attempt once the lease has passed (the event id header lets
the receiver drop it). Stored ``"event"`` is the public event name (``schedule.missed``).

Targets are never stored in the record (a webhook URL can be a credential; ``schedules show``
prints records): a record keeps the target's redacted form and index; the URL is read from the
template (or the daemon's defaults) at each attempt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from . import deliveries as plan

KEY = "notifications"
#: Record outcomes that are events (failures: ``--notify-on failure`` and ``end`` both send them).
OWED = ("missed", "refused")
REASON_CODES = {"missed": "missed-start-deadline", "refused": "refused"}
_JOB_EVENT = "failed"  # the status the job-shaped view has: every notify-on covers it
#: At most this many records of a schedule keep their full delivery records (the newest events);
#: an older event's deliveries shrink to their target, state and attempts, and one not finished by
#: then is given up (``failed``; the caller logs it). So records still owing a delivery are kept past
#: the schedule's record cap (never silently lost), and a schedule item stays far below DynamoDB's
#: 400 KB item limit whatever the targets answer (worst case about 241 KiB: tests/test_schedule_notify_size.py).
MAX_DETAILED = 10


@dataclass(frozen=True)
class _Status:
    value: str = _JOB_EVENT


@dataclass(frozen=True)
class _View:
    """What :mod:`.deliveries` reads of a job, for one schedule event."""

    id: int
    notify: tuple[str, ...]
    finished_at: datetime | None
    deliveries: tuple[Mapping[str, Any], ...]
    notify_on: str = "failure"
    status: _Status = field(default_factory=_Status)
    updated_at: datetime | None = None
    version: int = 0
    cost: Any = None
    cost_basis: Any = None


def targets_of(template: Mapping[str, Any], defaults: tuple[tuple[str, ...], str]) -> tuple[str, ...]:
    """The targets a schedule's events go to: its template's (as its runs'), else ``defaults`` (the
    daemon's ``[notify]``, what a run created without ``notify`` gets). Invalid ones: none."""
    from ..errors import InvalidInput
    from .targets import validate_targets

    if template.get("notify") is not None:
        try:
            return validate_targets(template.get("notify"))
        except InvalidInput:
            return ()  # a template that no longer validates: its runs are refused too; nobody to tell
    return tuple(defaults[0])


def owed(record: dict[str, Any], template: Mapping[str, Any], defaults: tuple[tuple[str, ...], str],
         span: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``record`` (a new missed or refused record) made to owe a notification when the schedule's
    runs would notify; ``span``: the outage it speaks for (a short one, recorded per occurrence)."""
    if not targets_of(template, defaults):
        return record
    marked = {**record, KEY: []}
    if span is not None:
        marked["notify-span"] = dict(span)
    return marked


def event_name(record: Mapping[str, Any]) -> str:
    return f"schedule.{record.get('outcome')}"


def event_id(store_id: str, schedule_id: int, record: Mapping[str, Any]) -> str:
    """The same for every attempt and every daemon (one event: one schedule, outcome, occurrence)."""
    return f"jobman-{store_id[:16]}-schedule-{schedule_id}-{record.get('outcome')}-{record.get('occurrence')}"


def owes(record: Mapping[str, Any]) -> bool:
    return record.get("outcome") in OWED and isinstance(record.get(KEY), list)


def unfinished(schedule: Any, record: Mapping[str, Any], targets: tuple[str, ...]) -> bool:
    """Whether ``record`` owes a delivery that is neither delivered nor failed yet."""
    if not owes(record):
        return False
    view = _view(schedule, record, targets)
    return any((plan.record_of(view, index, event) or {}).get("state") not in plan.FINAL_STATES
               for index, event in plan.wanted(view))


def trim(schedule: Any, records: tuple[Mapping[str, Any], ...], keep: int,
         targets: tuple[str, ...]) -> tuple[tuple[Mapping[str, Any], ...], list[Mapping[str, Any]]]:
    """(the records a schedule keeps, the events given up): past the newest :data:`MAX_DETAILED`
    owing records, deliveries shrink and unfinished ones are given up (:func:`_shrink`); then the
    newest ``keep`` records are kept, plus older ones whose delivery is not finished (at most
    :data:`MAX_DETAILED`), in their order. Whatever else goes has been delivered or given up."""
    records, lost = _shrink(schedule, tuple(records), targets)
    if len(records) <= keep:
        return records, lost
    older, newest = records[:-keep], records[-keep:]
    return tuple(r for r in older if unfinished(schedule, r, targets)) + tuple(newest), lost


def _shrink(schedule: Any, records: tuple[Mapping[str, Any], ...],
            targets: tuple[str, ...]) -> tuple[tuple[Mapping[str, Any], ...], list[Mapping[str, Any]]]:
    owing = [n for n, r in enumerate(records) if owes(r)]
    older = set(owing[:-MAX_DETAILED]) if len(owing) > MAX_DETAILED else set()
    out, lost = list(records), []
    for number in sorted(older):
        record = records[number]
        view = _view(schedule, record, targets)
        small, gave_up = [], False
        for index, event in plan.wanted(view):
            old = plan.record_of(view, index, event) or {}
            state = old.get("state")
            if state not in plan.FINAL_STATES:
                state, gave_up = "failed", True
            small.append({"target": str(old.get("target") or "?")[:40], "target-index": index,
                          "event": event_name(record), "state": state, "attempts": int(old.get("attempts") or 0)})
        if gave_up:
            lost.append(record)
        if small != record.get(KEY):
            out[number] = {**record, KEY: small}
    return tuple(out), lost


def _find(schedule: Any, occurrence: str, outcome: str) -> tuple[int, Mapping[str, Any]]:
    for number, record in enumerate(schedule.records):
        if record.get("occurrence") == occurrence and record.get("outcome") == outcome and owes(record):
            return number, record
    raise plan.NotDue(f"schedule {schedule.id}: no {outcome} event of {occurrence} (dropped or never owed)")


def _view(schedule: Any, record: Mapping[str, Any], targets: tuple[str, ...]) -> _View:
    from ..model import parse_time

    at = record.get("at")
    inner = tuple({**d, "event": _JOB_EVENT} for d in record.get(KEY) or () if isinstance(d, Mapping))
    return _View(id=schedule.id, notify=targets, finished_at=parse_time(at) if isinstance(at, str) else None,
                 deliveries=inner, version=schedule.version)


#: What a schedule event's delivery record keeps (a job's keeps more): up to :data:`MAX_DETAILED`
#: records of up to 10 targets each keep these, and must stay far below DynamoDB's 400 KB item limit.
HISTORY_KEPT_PENDING = 3
HISTORY_KEPT_FINAL = 2
TEXT_KEPT = 80


def _compact(delivery: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A delivery record as a schedule stores it: no receipt, the last few history entries (fewer
    once final), texts (the redacted target, outcomes) cut to :data:`TEXT_KEPT` characters."""
    kept = {k: v for k, v in {**delivery, "event": name}.items() if k != "receipt"}
    if isinstance(kept.get("target"), str) and len(kept["target"]) > TEXT_KEPT:
        kept["target"] = kept["target"][:TEXT_KEPT - 1] + "\u2026"
    history = [h for h in kept.get("history") or () if isinstance(h, Mapping)]
    keep = HISTORY_KEPT_FINAL if kept.get("state") in plan.FINAL_STATES else HISTORY_KEPT_PENDING
    kept["history"] = [{**h, "outcome": str(h.get("outcome"))[:TEXT_KEPT]} for h in history[-keep:]]
    return kept


def _store(schedule: Any, number: int, record: Mapping[str, Any], view: _View, now: datetime) -> Any:
    name = event_name(record)
    kept = [_compact(d, name) for d in view.deliveries]
    records = list(schedule.records)
    records[number] = {**record, KEY: kept}
    return dataclasses.replace(schedule, records=tuple(records), updated_at=now, version=schedule.version + 1)


def pending(schedule: Any, targets: tuple[str, ...]) -> list[tuple[Mapping[str, Any], int]]:
    """(record, target index) of every delivery the schedule still owes (no clock: for scans)."""
    out = []
    for record in schedule.records:
        if owes(record):
            view = _view(schedule, record, targets)
            for index, event in plan.wanted(view):
                if (plan.record_of(view, index, event) or {}).get("state") not in plan.FINAL_STATES:
                    out.append((record, index))
    return out


def due_at(schedule: Any, record: Mapping[str, Any], index: int, targets: tuple[str, ...], now: datetime,
           policy: plan.Policy) -> datetime | None:
    return plan.due_at(_view(schedule, record, targets), index, _JOB_EVENT, now, policy)


def next_due(schedule: Any, targets: tuple[str, ...], now: datetime, policy: plan.Policy) -> datetime | None:
    times = [t for record, index in pending(schedule, targets)
             if (t := due_at(schedule, record, index, targets, now, policy)) is not None]
    return min(times) if times else None


def claim(schedule: Any, occurrence: str, outcome: str, index: int, targets: tuple[str, ...], now: datetime,
          owner: str, policy: plan.Policy, eid: str) -> Any:
    """The schedule with that event's delivery ``index`` claimed by ``owner`` (or given up past
    ``max_age``); :class:`~.deliveries.NotDue` when it is not this caller's to send (see
    :func:`.deliveries.claim`)."""
    number, record = _find(schedule, occurrence, outcome)
    view = plan.claim(_view(schedule, record, targets), index, _JOB_EVENT, now, owner, policy, eid, receipt={})
    return _store(schedule, number, record, view, now)


def settle(schedule: Any, occurrence: str, outcome: str, index: int, targets: tuple[str, ...], attempt: int,
           owner: str, result: plan.Outcome, now: datetime, policy: plan.Policy) -> Any:
    """The outcome of ``owner``'s attempt recorded (NotDue: the claim was taken over)."""
    number, record = _find(schedule, occurrence, outcome)
    view = plan.settle(_view(schedule, record, targets), index, _JOB_EVENT, attempt, owner, result, now, policy)
    return _store(schedule, number, record, view, now)


def delivery(schedule: Any, occurrence: str, outcome: str, index: int) -> Mapping[str, Any]:
    """The stored delivery record of one target of one event ({} if none)."""
    try:
        _, record = _find(schedule, occurrence, outcome)
    except plan.NotDue:
        return {}
    for item in record.get(KEY) or ():
        if isinstance(item, Mapping) and item.get("target-index") == index:
            return item
    return {}


def span(record: Mapping[str, Any]) -> tuple[str, str, int, Any]:
    """(first, last, count, reason) of the occurrences one event covers."""
    first = str(record.get("occurrence"))
    extra = record.get("notify-span") if isinstance(record.get("notify-span"), Mapping) else {}
    last = extra.get("until") or record.get("until") or first
    count = extra.get("count") or record.get("count") or 1
    return first, str(last), int(count), extra.get("detail") or record.get("detail")


def body(schedule: Any, record: Mapping[str, Any], eid: str) -> dict[str, Any]:
    """The JSON body of a schedule event: what happened to which occurrences of which series, never
    the template's env values, secrets, command or targets."""
    first, last, count, reason = span(record)
    template = schedule.template
    return {
        "event": event_name(record), "event-id": eid, "schedule-id": schedule.id, "title": schedule.title,
        "docker-image": template.get("docker-image"), "cron": schedule.cron, "every": schedule.every,
        "tz": schedule.tz, "occurrence": first, "until": last, "count": count,
        "reason-code": REASON_CODES.get(str(record.get("outcome")), str(record.get("outcome"))),
        "reason": reason, "recorded-at": record.get("at"),
        "log": {"command": f"jobman schedules show {schedule.id}",
                "hint": f"run 'jobman schedules show {schedule.id}' where jobman can read this store"},
    }
