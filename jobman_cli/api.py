"""The REST API of the original service, served by ``jobman daemon`` under ``/jobMan/v1.1/``.

Routes (DESIGN.md section 4). The path is matched literally: no percent-decoding and no ``..``
resolution (anything else is a 404), ids are plain decimals from 1 to 2**53, and one trailing ``/``
is tolerated::

    POST /jobMan/v1.1/jobs/schedule        -> 201 + job (200 + the existing job for a repeated idempotency key)
    GET  /jobMan/v1.1/jobs[?status=S...&limit=N&since=DUR&schedule=ID] -> 200 + {"jobs": [...]}, newest first
    GET  /jobMan/v1.1/jobs/<id>/status     -> 200 + job
    PUT  /jobMan/v1.1/jobs/<id>/callback   -> 200 + the updated job
    POST /jobMan/v1.1/jobs/<id>/cancel     -> 200 + the cancelled job (its instance terminated)
    GET  /, /jobs/<id>, /static/<file>     -> the dashboard (jobman_cli.dashboard; no token: no job data)
    POST /login, /logout                   -> the dashboard's no-JavaScript login cookie (its pages only)
    GET  /jobMan/v1.1/jobs/<id>/logs[?...] -> 200 + one page of the attempt's log (see api_routes)
    GET  /jobMan/v1.1/cost[?since=DUR&by=G] -> 200 + the totals of `jobman cost --json` (see api_routes)
    GET|POST /jobMan/v1.1/schedules[/...]  -> recurring schedules: list, create, show, pause, resume,
                                              delete, preview (see api_schedules)

Like the CLI, this is a thin front end: every rule lives in :class:`~jobman_cli.service.JobService`
and the job model, every job is rendered by :func:`~jobman_cli.model.job_to_api`, and each
:class:`~jobman_cli.errors.JobmanError` carries its own HTTP status, so the CLI and the API cannot
disagree. Decided here: authentication and the order of checks. Credentials come first, so nothing
(not even whether a job or path exists) is revealed without them; then path (404), method (405 with
``Allow``), then the body. The API token opens everything; a job's callback token opens only that
job's ``PUT .../callback``. Bodies are strict JSON (:func:`parse_json_object`): one object,
valid UTF-8, no duplicate keys, no ``NaN``/``Infinity``, no unpaired surrogate escapes, not nested
too deeply, and no field the endpoint does not know. The HTTP wire itself (limits, timeouts, TLS,
connection handling) is :mod:`jobman_cli.httpio`.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
from typing import Any, NoReturn

from . import __version__, dashboard
from .api_routes import ExtraRoutes, cost_answer, is_cost_path
from .api_schedules import SchedulesApi
from .auth import BadCredentials, bearer_token, load_or_create_api_token, tokens_match
from .errors import ConfigError, InvalidInput, JobmanError, JobNotFound
from .httpio import DEFAULT_TIMEOUT, MAX_BODY, Answer, Connection, HttpError, HttpServer, Log, Request, clip
from .httpwire import query_pairs
from .model import callback_token_matches, job_to_api, parse_status
from .service import API_FIELDS, JobService, ScheduleRequest, parse_list_limit, parse_list_since
from .validation import parse_exit_code, parse_job_id

__all__ = ["ApiServer", "load_or_create_api_token", "PREFIX", "MAX_BODY"]

PREFIX = "/jobMan/v1.1"
SCHEDULE_FIELDS = ("title", "date-time", "docker-image", "env-variables", "timeout", "start-deadline",
                   "instance-type", "idempotency-key", "tz", "command", "entrypoint", "disk-gb", "secrets",
                   "container-imds", "notify", "notify-on", "subnet-ids", "capacity", "max-interruptions",
                   "max-cost")
CALLBACK_FIELDS = ("status", "exit-code", "reason-code", "reason")
#: route name -> the one method it answers
ROUTE_METHODS = {"jobs": "GET", "schedule": "POST", "status": "GET", "callback": "PUT", "cancel": "POST",
                 "logs": "GET"}
_JOB_ROUTE = re.compile(re.escape(PREFIX) + r"/jobs/([^/]*)/(status|callback|cancel|logs)/?")
_AUTH_CHALLENGE = ("WWW-Authenticate", 'Bearer realm="jobman"')
_NOT_A_TOKEN = "-" * 64  # a "hash" no token has, checked when a job does not exist, so timing reveals nothing
_SURROGATE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------- strict JSON bodies
class _BadJson(ValueError):
    pass


def _reject_constant(name: str) -> NoReturn:
    raise _BadJson(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _BadJson(f"duplicate key {clip(key, 60)!r}")
            seen.add(key)
    return result


def parse_json_object(data: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`HttpError` 400 saying exactly why not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HttpError(400, f"body is not valid UTF-8 (bad byte at offset {err.start})") from None
    if not text.strip():
        raise HttpError(400, "body is empty; expected a JSON object")
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        message = err.msg.removesuffix(" at")  # "Invalid control character at"
        raise HttpError(400, f"body is not valid JSON: {message} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise HttpError(400, "body is not valid JSON: nested too deeply") from None
    except _BadJson as err:
        raise HttpError(400, f"body is not valid JSON: {err}") from None
    except ValueError:  # an integer beyond Python's 4300-digit conversion limit
        raise HttpError(400, "body has a number with too many digits") from None
    if not isinstance(value, dict):
        kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
        raise HttpError(400, f"body must be a JSON object (got {kinds.get(type(value), 'null')})")
    stack: list[Any] = [value]
    while stack:  # JSON allows "\ud800"; Unicode (and every later encoder) does not
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise HttpError(400, "body has a string with an unpaired surrogate escape, which is not valid Unicode")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


def match_route(path: str) -> tuple[str, int | None] | None:
    """``(route, job_id)`` for a known path, else None."""
    if path in (PREFIX + "/jobs", PREFIX + "/jobs/"):
        return "jobs", None
    if path in (PREFIX + "/jobs/schedule", PREFIX + "/jobs/schedule/"):
        return "schedule", None
    match = _JOB_ROUTE.fullmatch(path)
    if match is None:
        return None
    try:
        return match.group(2), parse_job_id(match.group(1))
    except InvalidInput:
        return None


def _unknown_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        names = ", ".join(repr(clip(k, 60)) for k in unknown[:10])
        raise HttpError(400, f"unknown field(s) {names}; allowed: {', '.join(allowed)}")


class JobsApi:
    """The application: ``(request, connection) -> (status, payload, headers)`` or HttpError."""

    def __init__(self, service: JobService, api_token: str) -> None:
        self.service = service
        self.api_token = api_token
        self.extra = ExtraRoutes(service)
        self.schedules = SchedulesApi(service, PREFIX, parse_json_object)

    def __call__(self, request: Request, connection: Connection) -> Answer:
        if dashboard.is_dashboard_path(request.path, PREFIX):  # its own auth: a login cookie for its pages only
            return dashboard.answer(request, connection, self)
        if self.schedules.handles(request.path):  # the API token only; then its own 404/405/400
            self._authenticate(request, None)
            return self.schedules(request, connection)
        if is_cost_path(request.path, PREFIX):  # GET /cost: jobman cost's totals (api_routes)
            self._authenticate(request, None)
            return cost_answer(self.service, request)
        route = match_route(request.path)
        self._authenticate(request, route)
        if route is None:
            raise HttpError(404, f"no such resource: {clip(request.path, 100)}")
        name, job_id = route
        allowed = ROUTE_METHODS[name]
        if request.method != allowed:
            raise HttpError(405, f"{clip(request.method, 20)} is not allowed here; use {allowed}", (("Allow", allowed),))
        if allowed == "GET" and request.has_body:
            raise HttpError(400, "a GET request must not have a body")
        if name not in ("jobs", "logs") and request.query:
            raise HttpError(400, "this resource takes no query parameters")
        service = self.service
        try:
            if name == "jobs":
                statuses, window = _list_query(request.query)  # schedule=ID: the store's query; limit counts runs
                return 200, {"jobs": service.list_api(statuses, **window)}, ()
            if name == "status":
                return 200, job_to_api(service.get(job_id)), ()  # type: ignore[arg-type]
            if name == "logs":
                return 200, self.extra.logs(job_id, request.query), ()  # type: ignore[arg-type]
            if name == "cancel":
                if request.has_body:  # nothing to say, but an empty object is fine
                    _unknown_fields(parse_json_object(connection.read_body(request)), ())
                return 200, self.extra.cancel(job_id), ()  # type: ignore[arg-type]
            body = parse_json_object(connection.read_body(request))
            if name == "schedule":
                return self._schedule(service, body)
            return 200, job_to_api(self._callback(service, job_id, body)), ()  # type: ignore[arg-type]
        except JobmanError as err:
            raise HttpError(err.http_status, str(err)) from None

    def _authenticate(self, request: Request, route: tuple[str, int | None] | None) -> None:
        """API token for everything; a job's callback token for that job's PUT callback only."""
        try:
            token = bearer_token(request.header("authorization"))
        except BadCredentials as err:
            raise HttpError(401, str(err), (_AUTH_CHALLENGE,)) from None
        if tokens_match(token, self.api_token):
            return
        if route is not None and route[0] == "callback" and request.method == "PUT":
            try:
                hashes = self.service.get(route[1]).callback_hashes  # type: ignore[arg-type]
            except JobNotFound:
                hashes = (_NOT_A_TOKEN,)  # the same work as for a job that exists
            except JobmanError as err:
                raise HttpError(err.http_status, str(err)) from None
            if callback_token_matches(token, hashes) and hashes != (_NOT_A_TOKEN,):
                return
        raise HttpError(401, "invalid token", (_AUTH_CHALLENGE,))

    def _schedule(self, service: JobService, body: dict[str, Any]) -> Answer:
        _unknown_fields(body, SCHEDULE_FIELDS)
        request = ScheduleRequest(
            image=body.get("docker-image"), when=body.get("date-time"), title=body.get("title"),
            env=body.get("env-variables"), instance_type=body.get("instance-type"), timeout=body.get("timeout"),
            start_deadline=body.get("start-deadline"), idempotency_key=body.get("idempotency-key"),
            tz=body.get("tz"), command=body.get("command"), entrypoint=body.get("entrypoint"),
            disk_gb=body.get("disk-gb"), secrets=body.get("secrets"),
            container_imds=body.get("container-imds", False), notify=body.get("notify"),
            notify_on=body.get("notify-on"), subnet_ids=body.get("subnet-ids"), capacity=body.get("capacity"),
            max_interruptions=body.get("max-interruptions"), max_cost=body.get("max-cost"),
        )
        job, created = service.schedule(request, API_FIELDS)
        location = (("Location", f"{PREFIX}/jobs/{job.id}/status"),)
        return (201 if created else 200), job_to_api(job), location

    def _callback(self, service: JobService, job_id: int, body: dict[str, Any]) -> Any:
        _unknown_fields(body, CALLBACK_FIELDS)
        status = body.get("status")
        if not isinstance(status, str):
            raise InvalidInput("status", "is required and must be one of running, finished, failed")
        exit_code = body.get("exit-code")
        if exit_code is not None:
            if isinstance(exit_code, bool) or not isinstance(exit_code, int):
                raise InvalidInput("exit-code", "must be a JSON integer from 0 to 255")
            exit_code = parse_exit_code(exit_code)
        return service.report(job_id, status, exit_code, body.get("reason-code"), body.get("reason"))


def _list_query(query: str) -> tuple[list[Any], dict[str, int]]:
    """``?status=S`` (repeatable), ``limit=N`` (N >= 1, newest first), ``since=DUR`` (created in the
    last DUR: ``30m``, ``7d`` or seconds), ``schedule=ID`` (only its runs): the statuses and the
    window; anything else is a 400."""
    if not query:
        return [], {}
    pairs = query_pairs(query, 50, "?status=S, repeatable, limit=N, since=DUR")
    unknown = sorted({name for name, _ in pairs if name not in ("status", "limit", "since", "schedule")})
    if unknown:
        raise HttpError(400, f"unknown query parameter(s) {', '.join(repr(clip(n, 40)) for n in unknown[:5])}; "
                             "only 'status', 'limit', 'since' and 'schedule' are accepted")
    window: dict[str, int] = {}
    for name, value in pairs:
        if name == "status":
            continue
        if name in window:
            raise HttpError(400, f"{name}: given more than once")
        window[name] = (parse_list_limit(value, name) if name == "limit" else parse_job_id(value, name)
                        if name == "schedule" else parse_list_since(value, name))
    return [parse_status(value, "status") for name, value in pairs if name == "status"], window


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ApiServer:
    """The listener: binds at construction (so ``port`` is known at once), serves from :meth:`start`.

    ``port=0`` picks a free port. ``timeout`` bounds the TLS handshake, how long an idle
    connection is kept, how long a request's head may take once it began, its body once asked
    for, and the client's taking of the answer (see :mod:`jobman_cli.httpio` for the caps on
    connections). For ``0.0.0.0``/``::``, :attr:`url` names the loopback address (instances need
    ``--public-url`` anyway). ``log`` receives one string per server-side error (500 and above)
    and a summary line a minute at most while the connection caps close connections; stderr when
    None.
    """

    def __init__(self, service: JobService, *, host: str = "127.0.0.1", port: int = 0, api_token: str,
                 tls_cert: str | None = None, tls_key: str | None = None, log: Log | None = None,
                 timeout: float = DEFAULT_TIMEOUT, **limits: int) -> None:
        if not api_token:
            raise ConfigError("the API needs a non-empty API token")
        context = _tls_context(tls_cert, tls_key) if tls_cert or tls_key else None
        self.tls = context is not None
        self.host = host
        try:
            self._server = HttpServer((host, port), JobsApi(service, api_token), ssl_context=context,
                                      timeout=timeout, log=log or _stderr_log, server_name=f"jobman/{__version__}",
                                      **limits)
        except (OSError, OverflowError) as err:
            raise ConfigError(f"cannot listen on {host}:{port}: {getattr(err, 'strerror', None) or err}") from None
        self._started = False
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> "ApiServer":
        """Serve from a daemon thread running the event loop (the application runs in a few more)."""
        if not self._started and not self._stopped:
            self._started = True
            self._server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, end idle and half-read connections, give answers in flight ``grace`` s.

        Returns within about ``grace`` + 0.2 s; idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        self._server.stop(grace)

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext:
    if not cert:
        raise ConfigError("--tls-key needs --tls-cert")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise ConfigError(f"cannot load the TLS certificate {cert}"
                          f"{f' / key {key}' if key else ''}: {reason}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context
