"""The REST routes of recurring schedules (DESIGN.md section 14), under ``/jobMan/v1.1/schedules``::

    GET  /schedules                      -> 200 + {"schedules": [...]}, by id ascending (without records)
    POST /schedules                      -> 201 + schedule (Location: /schedules/<id>)
    GET  /schedules/preview?cron=EXPR|every=DUR[&tz=ZONE&n=N&from=WHEN]
                                         -> 200 + {"occurrences": [{"utc", "local"}...], ...}; stores nothing
    GET  /schedules/<id>                 -> 200 + schedule with "records" (missed/skipped/refused...) and
                                            "runs" (its latest 20 jobs, newest first)
    POST /schedules/<id>/pause           -> 200 + schedule + "runs-still-to-launch"
    POST /schedules/<id>/resume          -> 200 + schedule (next occurrence computed from now)
    POST /schedules/<id>/delete          -> 200 + {"deleted": <id>, "runs-still-to-launch": [...]} (its jobs stay)

Deleting is a ``POST .../delete``, like ``POST /jobs/<id>/cancel``: every change in this API is a
POST to a verb, so a client, a proxy rule or an audit log needs one pattern, and the CLI's verbs
map one to one. The create body is the job body of ``POST /jobs/schedule`` without ``date-time``
(the template of every run) plus ``"cron"`` or ``"every"``, ``"tz"`` and ``"overlap"``.

A thin front end like :mod:`jobman_cli.api`: every rule lives in
:class:`~jobman_cli.schedules.service.ScheduleService`, errors carry their HTTP status (400 naming
the field, 404 for an unknown id), and the order of checks is the API's (credentials first — done
by the caller — then path 404, method 405 with ``Allow``, then query and body).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

from .api_routes import strict_query
from .errors import InvalidInput, JobmanError
from .httpio import Answer, Connection, HttpError, Request, clip
from .model import format_time
from .validation import parse_job_id

#: route name -> the one method it answers
METHODS = {"list": "GET", "create": "POST", "preview": "GET", "show": "GET", "pause": "POST", "resume": "POST",
           "delete": "POST"}
PREVIEW_QUERY = ("cron", "every", "tz", "n", "from")
#: ``preview``: occurrences shown when ``n`` is not given (at most: the service's MAX_PREVIEW).
PREVIEW_DEFAULT = 10
#: What "the past" means for ``from``: none (a preview stores nothing; 1950 is a fair question).
_EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)


class SchedulesApi:
    """The ``/schedules`` routes of :class:`jobman_cli.api.JobsApi` (which authenticates first).

    ``parse_body``: the API's strict JSON object parser (passed in, so this module does not import
    :mod:`jobman_cli.api`, which imports it)."""

    def __init__(self, job_service: Any, prefix: str, parse_body: Callable[[bytes], dict[str, Any]]) -> None:
        self.job_service = job_service
        self.prefix = prefix + "/schedules"
        self.parse_body = parse_body
        self._route = re.compile(re.escape(self.prefix) + r"/([^/]*)(?:/(pause|resume|delete))?/?")
        self._service: Any = None

    def handles(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    @property
    def service(self) -> Any:
        if self._service is None:
            from .schedules.service import ScheduleService

            self._service = ScheduleService(self.job_service)
        return self._service

    def match(self, path: str) -> tuple[str, int | None] | None:
        """``(route, schedule_id)`` for a known path, else None."""
        if path in (self.prefix, self.prefix + "/"):
            return "list", None
        match = self._route.fullmatch(path)
        if match is None:
            return None
        if match.group(1) == "preview" and match.group(2) is None:
            return "preview", None
        try:
            schedule_id = parse_job_id(match.group(1))
        except InvalidInput:
            return None
        return match.group(2) or "show", schedule_id

    def __call__(self, request: Request, connection: Connection) -> Answer:
        route = self.match(request.path)
        if route is None:
            raise HttpError(404, f"no such resource: {clip(request.path, 100)}")
        name, schedule_id = route
        if name == "list" and request.method == "POST":
            name = "create"
        allowed = METHODS[name]
        if name == "list":
            allowed = "GET, POST"
        if request.method not in allowed.split(", "):
            raise HttpError(405, f"{clip(request.method, 20)} is not allowed here; use {allowed}",
                            (("Allow", allowed),))
        if request.method == "GET" and request.has_body:
            raise HttpError(400, "a GET request must not have a body")
        if name != "preview" and request.query:
            raise HttpError(400, "this resource takes no query parameters")
        try:
            return self._answer(name, schedule_id, request, connection)
        except JobmanError as err:
            raise HttpError(err.http_status, str(err)) from None

    def _answer(self, name: str, schedule_id: int | None, request: Request, connection: Connection) -> Answer:
        from .schedules.model import schedule_to_api

        service = self.service
        if name == "list":
            return 200, {"schedules": [schedule_to_api(s, records=False) for s in service.list()]}, ()
        if name == "preview":
            return 200, self._preview(request.query), ()
        if name == "create":
            body = self.parse_body(connection.read_body(request))
            schedule = service.create(body, _api_fields())
            return 201, schedule_to_api(schedule), (("Location", f"{self.prefix}/{schedule.id}"),)
        assert schedule_id is not None
        if name == "show":
            return 200, service.show_api(schedule_id), ()
        if request.has_body:  # pause/resume/delete: nothing to say, but an empty object is fine
            body = self.parse_body(connection.read_body(request))
            if body:
                names = ", ".join(repr(clip(k, 60)) for k in sorted(body)[:10])
                raise HttpError(400, f"unknown field(s) {names}; this request takes no fields")
        if name == "pause":
            shown = schedule_to_api(service.pause(schedule_id))
            shown["runs-still-to-launch"] = service.still_to_launch(schedule_id)
            return 200, shown, ()
        if name == "resume":
            return 200, schedule_to_api(service.resume(schedule_id)), ()
        service.get(schedule_id)  # 404 before anything else
        pending = service.still_to_launch(schedule_id)
        service.delete(schedule_id)
        return 200, {"deleted": schedule_id, "runs-still-to-launch": pending}, ()

    def _preview(self, query: str) -> dict[str, Any]:
        """The CLI's ``preview --json`` shape: each occurrence in UTC and local time, and a note
        where a DST change moved or merged it."""
        from .schedules.occurrences import local_label, transition_note

        params = _preview_query(query)
        now = self.service.clock.now()
        start = _parse_from(params["from"], params.get("tz"), now) if "from" in params else now
        cron, every, tz, found = self.service.preview(params.get("cron"), params.get("every"), params.get("tz"),
                                                      start, params.get("n", PREVIEW_DEFAULT), _api_fields())
        return {"cron": cron, "every": every, "tz": tz, "from": format_time(start),
                "occurrences": [{"utc": format_time(at), "local": local_label(at, tz), "note": transition_note(at, tz, every)}
                                for at in found]}


def _api_fields() -> Any:
    from .service import API_FIELDS

    return API_FIELDS


def _parse_from(text: str, tz: str | None, now: datetime) -> datetime:
    """``from=WHEN``: what the CLI's ``--from`` accepts — a job's date-time forms (``now``, ``+2h``,
    ``2027-03-27 12:00``) or a bare date (local midnight) — at any time in the past too (a preview
    of last week's transition, or of 1950's, is a fair question)."""
    import re

    from .timeparse import parse_when

    spec = text.strip()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", spec):
        spec += " 00:00:00"
    relative = spec.lower().startswith(("now", "+", "in "))
    return parse_when(spec, now=now if relative else _EARLIEST, tz=tz, field="from", tz_field="tz")


def _preview_query(query: str) -> dict[str, str]:
    """``preview``'s query, strictly: known names, each at most once (their values are checked by
    :meth:`ScheduleService.preview`, with the API's field names)."""
    return strict_query(query, PREVIEW_QUERY, hint="?cron=EXPR or ?every=DUR, tz, n, from")
