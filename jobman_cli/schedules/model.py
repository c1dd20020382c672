"""The schedule model: a stored series that creates one ordinary job per occurrence.

A :class:`Schedule` is immutable, like a :class:`~jobman_cli.model.Job`: every change returns a new
one with ``version`` bumped, and a store persists it with compare-and-set on that version, so two
daemons (or a daemon and ``schedules pause``) never overwrite each other's change. Its ``template``
is the job body in the REST API's schedule shape without ``date-time``: whatever a one-off job
accepts, a schedule's runs accept, through the very same validation.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from ..model import DEFAULT_START_DEADLINE, format_time, parse_time

UTC = timezone.utc
#: Records a schedule keeps (newest last). Only the exceptional outcomes are recorded (a run is a
#: job carrying ``schedule-id`` and ``occurrence``: ``schedules show`` lists the runs from the jobs),
#: and a long outage is one range record, so 100 is months of history in a few KB: every schedule
#: write rewrites the whole record (TinyDB: the schedules file; DynamoDB: one item, WCU by size).
MAX_RECORDS = 100
#: "created" is no longer written (schedules stored by an earlier jobman may carry it: shown as is).
OUTCOMES = ("created", "missed", "skipped", "replaced-previous", "refused")


class Overlap(str, enum.Enum):
    """What an occurrence does when the previous run is still active (Kubernetes' ``concurrencyPolicy``)."""

    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


@dataclass(frozen=True)
class Schedule:
    id: int  # 0: a draft
    title: str
    cron: str | None  # normalized five-field expression or @name; exactly one of cron/every is set
    every: int | None  # seconds, >= 60
    tz: str  # IANA zone name, always explicit
    overlap: Overlap
    template: Mapping[str, Any]
    paused: bool
    created_at: datetime
    next_at: datetime | None  # UTC: the earliest occurrence not yet handled (None: none left)
    last_job_id: int | None = None
    records: tuple[Mapping[str, Any], ...] = ()
    updated_at: datetime | None = None
    version: int = 0
    #: Fields a newer jobman stored that this one does not know: kept as they are.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def start_deadline(self) -> int:
        """Seconds after its occurrence that a run may still start (the template's, else the default)."""
        value = self.template.get("start-deadline")
        return value if type(value) is int and value > 0 else DEFAULT_START_DEADLINE

    # ------------------------------------------------------------------ changes (version bumped)
    def changed(self, now: datetime, **changes: Any) -> "Schedule":
        """A copy with ``changes``, ``updated_at=now`` and the version bumped."""
        return dataclasses.replace(self, updated_at=now, version=self.version + 1, **changes)

    def with_record(self, now: datetime, occurrence: datetime, outcome: str, job_id: int | None = None,
                    detail: str | None = None, **changes: Any) -> "Schedule":
        """A copy with one more record (the oldest dropped past :data:`MAX_RECORDS`) and ``changes``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        record = {"occurrence": format_time(occurrence), "outcome": outcome, "job-id": job_id,
                  "at": format_time(now), "detail": detail}
        records = (*self.records, record)[-MAX_RECORDS:]
        return self.changed(now, records=records, **changes)


# --------------------------------------------------------------------- serialization
_KNOWN = frozenset({"id", "title", "cron", "every", "tz", "overlap", "template", "paused", "created-at", "next-at",
                    "last-job-id", "records", "updated-at", "version"})


def schedule_to_record(s: Schedule) -> dict[str, Any]:
    """The stored shape (JSON-ready; both stores keep exactly this)."""
    record = {
        "id": s.id, "title": s.title, "cron": s.cron, "every": s.every, "tz": s.tz, "overlap": s.overlap.value,
        "template": dict(s.template), "paused": s.paused, "created-at": format_time(s.created_at),
        "next-at": format_time(s.next_at), "last-job-id": s.last_job_id,
        "records": [dict(r) for r in s.records], "updated-at": format_time(s.updated_at), "version": s.version,
    }
    record.update({k: v for k, v in s.extra.items() if k not in _KNOWN})
    return record


def schedule_from_record(r: Mapping[str, Any]) -> Schedule:
    """The inverse of :func:`schedule_to_record` (KeyError/ValueError/TypeError on a malformed record)."""
    cron, every = r.get("cron"), r.get("every")
    if (cron is None) == (every is None) or (cron is not None and not isinstance(cron, str)):
        raise ValueError("exactly one of cron and every must be set")
    if every is not None and type(every) is not int:
        raise TypeError("every must be an integer")
    template = r.get("template") or {}
    if not isinstance(template, dict):
        raise TypeError("template must be an object")
    records = r.get("records") or []
    if not isinstance(records, list) or not all(isinstance(x, dict) for x in records):
        raise TypeError("records must be a list of objects")
    created = parse_time(r["created-at"])
    if created is None:
        raise ValueError("created-at is missing")
    return Schedule(
        id=int(r["id"]), title=str(r.get("title") or ""), cron=cron, every=every, tz=str(r["tz"]),
        overlap=Overlap(r.get("overlap") or "forbid"), template=template, paused=bool(r.get("paused")),
        created_at=created, next_at=parse_time(r.get("next-at")),
        last_job_id=int(r["last-job-id"]) if r.get("last-job-id") is not None else None,
        records=tuple(records), updated_at=parse_time(r.get("updated-at")), version=int(r.get("version") or 0),
        extra={k: v for k, v in r.items() if k not in _KNOWN},
    )


def as_stored(s: Schedule) -> Schedule:
    """The schedule exactly as any process reads it back (times at millisecond precision)."""
    return schedule_from_record(schedule_to_record(s))


def public_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template as it may be shown: notify targets redacted as a job's are (a webhook URL
    carries its secret; the stored template keeps it, for the runs)."""
    from ..notify.targets import redact

    shown = dict(template)
    if isinstance(shown.get("notify"), (list, tuple)):
        shown["notify"] = [redact(t) if isinstance(t, str) else t for t in shown["notify"]]
    return shown


def schedule_to_api(s: Schedule, *, records: bool = True) -> dict[str, Any]:
    """The public JSON of a schedule (``schedules show --json``, ``GET …/schedules/<id>``); without
    ``records`` for the listings (``schedules list --json``, ``GET …/schedules``): 1,000 schedules
    with 100 records each would be megabytes nobody reads in a table."""
    from .occurrences import local_label

    try:
        next_local = local_label(s.next_at, s.tz) if s.next_at is not None else None
    except Exception:  # noqa: BLE001 - a zone this host lacks must not hide the schedule
        next_local = None
    shown = {
        "id": s.id, "title": s.title, "cron": s.cron, "every": s.every, "tz": s.tz, "overlap": s.overlap.value,
        "template": public_template(s.template), "paused": s.paused, "created-at": format_time(s.created_at),
        "next-at": format_time(s.next_at), "next-at-local": next_local, "last-job-id": s.last_job_id,
        "records": [dict(r) for r in s.records], "updated-at": format_time(s.updated_at),
    }
    if not records:
        del shown["records"]
    return shown
