"""Use cases of schedules: create (validated like a job), list, show, pause, resume, delete, preview.

A schedule request is the flat body ``POST …/schedules`` takes (and ``jobman schedule --cron``
builds): the schedule's own keys ``cron`` | ``every``, ``tz``, ``overlap``, plus every key of ``POST
jobs/schedule`` except ``date-time`` (occurrences replace it) and ``idempotency-key`` (each run has
its own, ``schedule-<id>-<occurrence>``). The job keys become the schedule's *template*, and the
template is validated by building a draft job through :meth:`JobService.validate`: every rule of a
one-off job applies to a schedule's runs, at creation, with the caller's field names.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Mapping

from ..errors import InvalidInput
from ..service import API_FIELDS, FieldNames, JobService, ScheduleRequest
from .model import Overlap, Schedule
from .occurrences import (next_occurrence, normalize_cron, normalize_tz, system_zone_name, upcoming,
                          validate_every)

#: ScheduleRequest fields that are not part of a template (``schedule-id``/``occurrence``: internal;
#: ``tz`` of a job only reads WHEN, and a schedule has its own ``tz``).
_NOT_TEMPLATE = frozenset({"when", "idempotency_key", "tz", "schedule_id", "occurrence"})
_API_KEY = {"image": "docker-image", "env": "env-variables"}
SCHEDULE_KEYS = ("cron", "every", "tz", "overlap")
MAX_PREVIEW = 1000


#: Newest runs ``pause``/``delete`` look at for one created but not launched yet.
STILL_TO_LAUNCH_LOOKED_AT = 10
#: Runs ``schedules show`` lists (``list --schedule ID`` lists them all).
RECENT_RUNS = 20


def api_key(field_name: str) -> str:
    """The REST key of a :class:`ScheduleRequest` field (``start_deadline`` -> ``start-deadline``)."""
    return _API_KEY.get(field_name, field_name.replace("_", "-"))


def template_fields() -> dict[str, str]:
    """REST key -> ScheduleRequest field, for every field a template may hold (derived from the
    dataclass, so a new job option is a template option the moment it is a request field)."""
    return {api_key(f.name): f.name for f in dataclasses.fields(ScheduleRequest) if f.name not in _NOT_TEMPLATE}


def template_to_request(template: Mapping[str, Any], when: Any = "now", **internal: Any) -> ScheduleRequest:
    """The job request of one run: the template, ``when`` (the occurrence) and, for the
    materializer, ``schedule_id``/``occurrence``/``idempotency_key``."""
    fields = template_fields()
    values = {fields[key]: value for key, value in template.items() if key in fields}
    return ScheduleRequest(when=when, **{"image": None, **values, **internal})


def request_to_template(request: ScheduleRequest) -> dict[str, Any]:
    """The template of a request built by a front end (``jobman schedule --cron``): its given fields."""
    defaults = {f.name: f.default for f in dataclasses.fields(ScheduleRequest)
                if f.default is not dataclasses.MISSING}
    template = {}
    for key, name in template_fields().items():
        value = getattr(request, name)
        if value is None or value == defaults.get(name) or (value in ({}, [], ()) and name != "notify"):
            continue  # notify [] is kept: --no-notify, nobody (not the [notify] defaults) is told
        template[key] = value
    return template


def _names(names: FieldNames) -> dict[str, str]:
    """The schedule keys as the caller calls them (``--cron`` on the command line, ``cron`` over HTTP)."""
    dash = "--" if names.tz.startswith("--") else ""
    return {key: dash + key for key in SCHEDULE_KEYS}


def parse_spec(cron: Any, every: Any, tz: Any, names: FieldNames = API_FIELDS) -> tuple[str | None, int | None, str]:
    """``(cron, every seconds, zone name)``, validated: exactly one of cron/every; tz default the system's."""
    from ..validation import parse_duration

    field = _names(names)
    if (cron is None) == (every is None):
        raise InvalidInput(f"{field['cron']}/{field['every']}", "give exactly one of them")
    tz_name = normalize_tz(tz if tz is not None else system_zone_name(field["tz"]), field["tz"])
    if cron is not None:
        return normalize_cron(cron, field["cron"]), None, tz_name
    seconds = parse_duration(every, field=field["every"], maximum=10**9)
    return None, validate_every(seconds, field["every"]), tz_name


class ScheduleService:
    """Schedules over the store of one :class:`JobService` (its clock too)."""

    def __init__(self, job_service: JobService) -> None:
        self.jobs = job_service
        self.store = job_service.store
        self.clock = job_service.clock

    def validate(self, request: Mapping[str, Any], names: FieldNames = API_FIELDS) -> Schedule:
        """A draft schedule from a flat request, or InvalidInput naming the first bad field."""
        if not isinstance(request, Mapping):
            raise InvalidInput("body", "must be a JSON object")
        field = _names(names)
        allowed = set(SCHEDULE_KEYS) | set(template_fields())
        if "date-time" in request:
            raise InvalidInput(names.when, "a schedule has no single start time: its occurrences come from "
                                           f"{field['cron']} or {field['every']}")
        if "idempotency-key" in request:
            raise InvalidInput(names.idempotency_key, "is not supported for schedules (each run gets its own key)")
        unknown = sorted(set(request) - allowed)
        if unknown:
            raise InvalidInput(unknown[0], "unknown field")
        cron, every, tz = parse_spec(request.get("cron"), request.get("every"), request.get("tz"), names)
        overlap_text = request.get("overlap", Overlap.FORBID.value)
        try:
            overlap = Overlap(overlap_text)
        except ValueError:
            raise InvalidInput(field["overlap"], f"must be allow, forbid or replace (got {overlap_text!r:.40})") from None
        template = {k: v for k, v in request.items() if k not in SCHEDULE_KEYS}
        draft_job = self.jobs.validate(template_to_request(template), names)  # every job rule, the caller's names
        template.update({"docker-image": draft_job.docker_image, "title": draft_job.title,
                         "timeout": draft_job.timeout, "start-deadline": draft_job.start_deadline})
        if draft_job.env_variables:
            template["env-variables"] = dict(draft_job.env_variables)
        now = self.clock.now()
        next_at = next_occurrence(cron, every, tz, now, anchor=now)
        return Schedule(id=0, title=draft_job.title, cron=cron, every=every, tz=tz, overlap=overlap,
                        template=template, paused=False, created_at=now, next_at=next_at, updated_at=now)

    def create(self, request: Mapping[str, Any], names: FieldNames = API_FIELDS) -> Schedule:
        return self.store.add_schedule(self.validate(request, names))

    def get(self, schedule_id: int) -> Schedule:
        return self.store.get_schedule(schedule_id)

    def list(self) -> list[Schedule]:
        return self.store.list_schedules()

    def show_api(self, schedule_id: int, runs: int = RECENT_RUNS) -> dict[str, Any]:
        """``schedules show`` / ``GET …/schedules/<id>``: the schedule's public JSON with its records
        (the exceptional outcomes) and ``"runs"``: its latest ``runs`` jobs, newest first, read from
        the jobs themselves (a schedule no longer stores a record per run it created)."""
        from .model import schedule_to_api

        shown = schedule_to_api(self.get(schedule_id))
        shown["runs"] = self.recent_runs(schedule_id, runs)
        return shown

    def recent_runs(self, schedule_id: int, n: int = RECENT_RUNS) -> list[dict[str, Any]]:
        """The schedule's latest ``n`` runs (id, occurrence, status, reason), newest first, from the
        stored job records (no Job built per record), by the store's own query of a schedule's runs
        (a file store: a byte search for them; DynamoDB: an index Query, never a Scan)."""
        records = self.store.list_records(limit=n, schedule=schedule_id)
        return [{"id": r.get("id"), "occurrence": r.get("occurrence"), "status": r.get("status"),
                 "reason": r.get("reason")} for r in records]

    def still_to_launch(self, schedule_id: int) -> list[dict[str, Any]]:
        """The schedule's runs already created that have not launched yet (``scheduled``,
        ``launching``), oldest first: pausing or deleting the schedule does not stop them (a run is
        created a few seconds before its occurrence), so ``pause``/``delete`` name them. Newest
        runs only (:data:`STILL_TO_LAUNCH_LOOKED_AT`): at most one or two can be pending."""
        records = self.store.list_records(limit=STILL_TO_LAUNCH_LOOKED_AT, schedule=schedule_id)
        return [{"id": r.get("id"), "occurrence": r.get("occurrence"), "status": r.get("status")}
                for r in reversed(records) if r.get("status") in ("scheduled", "launching")]

    def pause(self, schedule_id: int) -> Schedule:
        """Stop creating runs (a run already created is not touched). Pausing twice is a no-op."""
        now = self.clock.now()
        return self.store.update_schedule(schedule_id, lambda s: s if s.paused else s.changed(now, paused=True))

    def resume(self, schedule_id: int) -> Schedule:
        """Create runs again, from the next occurrence after now: the occurrences that passed while
        paused are neither launched nor recorded. Resuming a running schedule is a no-op."""
        now = self.clock.now()

        def change(s: Schedule) -> Schedule:
            if not s.paused:
                return s
            return s.changed(now, paused=False, next_at=_next_or_none(s, now))

        return self.store.update_schedule(schedule_id, change)

    def delete(self, schedule_id: int) -> None:
        """Delete the schedule; its jobs (also a scheduled next run) stay, ordinary jobs."""
        self.store.delete_schedule(schedule_id)

    def preview(self, cron: Any, every: Any, tz: Any, start: datetime | None, n: Any,
                names: FieldNames = API_FIELDS) -> tuple[str | None, int | None, str, list[datetime]]:
        """The next ``n`` occurrences after ``start`` (default now) of an expression; stores nothing."""
        cron, every, tz = parse_spec(cron, every, tz, names)
        count = parse_count(n, "-n" if names.tz.startswith("--") else "n")
        begin = start if start is not None else self.clock.now()
        return cron, every, tz, upcoming(cron, every, tz, begin, count, anchor=begin)


def parse_count(value: Any, field: str = "-n") -> int:
    """``preview -n N``: 1 to :data:`MAX_PREVIEW`."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.isascii() and text.isdigit():
        text = int(text)
    if type(text) is not int or not 1 <= text <= MAX_PREVIEW:
        raise InvalidInput(field, f"must be a whole number from 1 to {MAX_PREVIEW} (got {value!r:.40})")
    return text


def _next_or_none(s: Schedule, now: datetime) -> datetime | None:
    try:
        return next_occurrence(s.cron, s.every, s.tz, now, anchor=s.created_at)
    except ValueError:
        return None


__all__ = ["ScheduleService", "template_to_request", "request_to_template", "template_fields", "parse_spec",
           "parse_count", "api_key"]
