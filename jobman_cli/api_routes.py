"""The API routes remote use needs beyond the original four (DESIGN.md section 15): cancel, logs
and the cost totals (``GET /jobMan/v1.1/cost?since=DUR&by=title|image|tag``, what ``jobman cost
--json`` prints; see :func:`cost_answer`).

``POST /jobMan/v1.1/jobs/<id>/cancel`` cancels like ``jobman cancel`` on the daemon's machine: the
cancellation is stored first, then the instance (if any) is terminated with the launcher the
environment and config file describe. ``GET /jobMan/v1.1/jobs/<id>/logs`` answers one page of the
attempt's CloudWatch log, read by the daemon (so a remote operator needs no AWS credentials)::

    ?attempt=N     which launch attempt (default: the job's current one)
    ?since=SECONDS only lines of the last SECONDS (the answer's "start" is the instant used)
    ?start=MS      only lines from this instant (epoch milliseconds; what a follower sends back)
    ?after=TOKEN   continue after the page that answered "next": TOKEN
    ?follow=1      a stream not written yet is "waiting" (200), not 404, while the job is active

and returns ``{"job": {...}, "attempt": N, "events": [{"timestamp", "message", "stream"}...],
"next": TOKEN, "more": bool, "waiting": bool, "notes": [...], "start": MS|null}``. The job is read
before the log, so a follower that sees a terminal job knows the page holds every line written
until the end (the client's settle rule of :func:`jobman_cli.joblogs.show_job_log`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .errors import InvalidInput, JobmanError
from .httpio import HttpError, clip
from .httpwire import query_pairs
from .model import job_to_api
from .service import JobService

#: Events in one answer at most; the client asks again with ``after`` when ``more`` is true.
MAX_EVENTS = 5000
LOG_QUERY = ("attempt", "since", "start", "after", "follow")


class ExtraRoutes:
    """Cancel and logs for :class:`jobman_cli.api.JobsApi`; AWS clients made once, on first use."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._launcher: Any = None
        self._logs: Any = None

    def launcher(self) -> Any:
        with self._lock:
            if self._launcher is None:
                from .launchers.factory import launcher_from_environment

                self._launcher = launcher_from_environment()
            return self._launcher

    def _logs_client(self) -> tuple[Any, str]:
        from .config import log_settings

        settings = log_settings()
        with self._lock:
            if self._logs is None:
                from .joblogs import logs_client
                from .launchers.factory import ec2_settings

                ec2 = ec2_settings({})
                self._logs = logs_client(region=ec2.region, profile=ec2.profile, endpoint_url=settings.endpoint_url)
            return self._logs, settings.group

    def cancel(self, job_id: int) -> dict[str, Any]:
        job = self.service.cancel(job_id, terminate=lambda instance_id: self.launcher().terminate([instance_id]))
        return job_to_api(job)

    def logs(self, job_id: int, query: str) -> dict[str, Any]:
        from .joblogs import LogNotFound, StreamReader, _console_fallback, choose_attempt, stream_name

        params = _log_query(query)
        job = self.service.get(job_id)
        try:
            attempt = choose_attempt(job, params.get("attempt"))
        except InvalidInput:
            raise
        except JobmanError as err:  # never launched: no log (a state, not a server fault)
            raise HttpError(409, str(err)) from None
        start = params.get("start")
        if start is None and params.get("since") is not None:
            start = int((time.time() - params["since"]) * 1000)
        client, group = self._logs_client()
        reader = StreamReader(client, group, stream_name(job.id, attempt), start_time=start)
        reader.token = params.get("after")
        events: list[Any] = []
        notes: list[str] = []
        more = waiting = False
        try:
            for page in reader.pages():
                events.extend(page)
                if len(events) >= MAX_EVENTS:
                    more = True
                    break
        except LogNotFound as missing:
            if params.get("follow") and not job.terminal:
                waiting = True
                notes.append(f"waiting for log stream {reader.stream} in log group {group} (job {job.id} is "
                             f"{job.status.value})")
            else:
                try:
                    _console_fallback(job, attempt, missing, reader.stream, group, events.extend, notes.append,
                                      self.launcher)
                except LogNotFound as err:
                    raise HttpError(404, str(err)) from None
        return {"job": job_to_api(job), "attempt": attempt, "events": [e.to_json() for e in events],
                "next": reader.token, "more": more, "waiting": waiting, "notes": notes, "start": start}


COST_QUERY = ("since", "by")


def is_cost_path(path: str, prefix: str) -> bool:
    """``GET <prefix>/cost``: the totals of ``jobman cost`` (one trailing ``/`` tolerated)."""
    return path in (prefix + "/cost", prefix + "/cost/")


def cost_answer(service: JobService, request: Any) -> tuple[int, Any, tuple]:
    """``GET /jobMan/v1.1/cost[?since=DUR][&by=title|image|tag]``: :meth:`Totals.to_json
    <jobman_cli.cost.totals.Totals.to_json>`, as ``jobman cost --json`` prints it. Bad input: 400."""
    from datetime import timedelta

    from .cost.totals import GROUPINGS, totals
    from .model import TERMINAL_STATES
    from .service import parse_list_since

    if request.method != "GET":
        raise HttpError(405, f"{clip(request.method, 20)} is not allowed here; use GET", (("Allow", "GET"),))
    if request.has_body:
        raise HttpError(400, "a GET request must not have a body")
    params = strict_query(request.query, COST_QUERY)
    try:
        seconds = parse_list_since(params["since"], field="since") if "since" in params else None
        by = params.get("by")
        if by is not None and by not in GROUPINGS:
            raise InvalidInput("by", f"must be one of {', '.join(GROUPINGS)} (got {clip(by, 40)!r})")
        cutoff = None if seconds is None else service.clock.now() - timedelta(seconds=seconds)
        return 200, totals(service.store.list_records(TERMINAL_STATES), by=by, since=cutoff).to_json(), ()
    except JobmanError as err:
        raise HttpError(err.http_status, str(err)) from None


def strict_query(query: str, allowed: tuple[str, ...], hint: str = "") -> dict[str, str]:
    """A query string, strictly (every route with one uses this): well-formed UTF-8, known names
    only, each at most once; else a 400 naming what is wrong (``hint`` says what is expected)."""
    if not query:
        return {}
    pairs = query_pairs(query, 10, hint)
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown query parameter(s) {', '.join(repr(clip(n, 40)) for n in unknown[:5])}; "
                             f"allowed: {', '.join(allowed)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise HttpError(400, f"{repeated[0]}: a query parameter is repeated")
    return dict(pairs)


def _log_query(query: str) -> dict[str, Any]:
    """The logs route's query, strictly: known names once each, numbers where numbers belong."""
    pairs = strict_query(query, LOG_QUERY).items()
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name == "after":
            if not value or len(value) > 1024:
                raise InvalidInput("after", "must be a token from a previous answer's 'next'")
            result[name] = value
        elif name == "follow":
            if value not in ("0", "1"):
                raise InvalidInput("follow", "must be 0 or 1")
            result[name] = value == "1"
        else:
            if not value.isascii() or not value.isdigit() or len(value) > 15:
                raise InvalidInput(f"--{name}" if name == "attempt" else name, "must be a whole number")
            number = int(value)
            if name == "since" and number > 3653 * 86400:
                raise InvalidInput("since", "must be at most ten years")
            if name == "attempt" and number < 1:
                raise InvalidInput("--attempt", "must be at least 1")
            result[name] = number
    return result
