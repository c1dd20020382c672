"""The dashboard (DESIGN.md section 15): the pages the daemon serves at ``/`` next to the API.

With JavaScript: every page and script is a fixed file shipped in this package; none holds job
data. The pages' scripts read everything from the JSON API with the API token the operator typed
into the login form, kept in the tab's ``sessionStorage`` and sent only as ``Authorization:
Bearer`` (never in a URL, never in a cookie, so no other site can make the browser use it).

Without JavaScript: the pages' ``<noscript>`` part holds a second login form that POSTs the token
to ``/login``, which sets an HttpOnly, SameSite=Strict cookie that is not the token
(:mod:`.session`). A GET of ``/``, ``/jobs/<id>``, ``/schedules`` or ``/schedules/<id>`` with a valid
cookie is answered with the server-rendered, script-free page (:mod:`.plain`,
:mod:`.plain_schedules`) instead of the fixed one; without it (or with a
forged or expired one) with the fixed page, which holds no job data. The cookie opens nothing else:
the JSON API still wants the Bearer token. The dashboard only reads: ``/login`` and ``/logout``
change only the browser's cookie, no route changes a job.

Every answer carries a Content-Security-Policy that allows scripts from this origin only (no
inline script, no ``eval``, no other origin), forbids framing, plugins and ``<base>``, and
``nosniff``; the scripts render job data with ``textContent`` only.

Routes (GET and HEAD but for the two POSTs; anything else 405). Any other path is the API's
(401 without the token)::

    /                 the jobs list, filters, chart of recent runs (cookie: ?page=N&status=S&title=T)
    /jobs/<id>        one job: timeline, reason, instance, attempts, notifications, log tail (and
                      its schedule, for a schedule's run)
    /schedules        the recurring schedules: expression, zone, state, next occurrence (UTC and
                      local), overlap, last run, counts of records (cookie: ?page=N)
    /schedules/<id>   one schedule: its template's public fields, latest runs and records
    /static/<file>    the CSS and scripts
    POST /login       form ``token=...``: 303 to / with the cookie, or 403 and the form again
    POST /logout      303 to / clearing the cookie
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qsl

from ..auth import tokens_match
from ..errors import JobmanError
from ..model import job_to_api, parse_status
from ..httpwire import Answer, HttpError, RawBody, Request, clip
from ..validation import parse_job_id
from . import plain, plain_schedules, session

FORM = "application/x-www-form-urlencoded"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
#: every file a URL can name; anything else is a 404 (no path is ever joined from the URL)
STATIC_FILES = ("dashboard.css", "common.js", "list.js", "chart.js", "job.js", "schedules.js", "schedule.js")
_JOB_PAGE = re.compile(r"/jobs/[1-9][0-9]{0,15}/?")
_SCHEDULE_PAGE = re.compile(r"/schedules/[1-9][0-9]{0,15}/?")
#: the pages that hold data when rendered for a cookie (else the fixed page, which holds none)
_PAGES = ("index.html", "job.html", "schedules.html", "schedule.html")


def is_dashboard_path(path: str, api_prefix: str) -> bool:
    """True for the dashboard's own URLs only. Every other path stays the API's: credentials
    first (401), then 404, so an unknown path tells a visitor without the token nothing new."""
    if path.startswith(api_prefix):
        return False
    return path in ("/login", "/logout") or _page_file(path) is not None


def _page_file(path: str) -> str | None:
    """The packaged file a dashboard URL names, or None (no path is ever joined from the URL)."""
    if path in ("/", "/index.html"):
        return "index.html"
    if _JOB_PAGE.fullmatch(path):
        return "job.html"
    if path in ("/schedules", "/schedules/"):
        return "schedules.html"
    if _SCHEDULE_PAGE.fullmatch(path):
        return "schedule.html"
    if path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
        return path[len("/static/"):]
    return None


@lru_cache(maxsize=None)
def _file(name: str) -> RawBody:
    """A packaged file, read once (they never change while the daemon runs)."""
    data = resources.files(__package__).joinpath("static", name).read_bytes()
    return RawBody(_TYPES[name[name.rindex("."):]], data)


class Backend(Protocol):
    """What the server-rendered pages read: :class:`jobman_cli.api.JobsApi` (no import cycle)."""

    service: Any
    api_token: str
    extra: Any
    schedules: Any  #: :class:`jobman_cli.api_schedules.SchedulesApi` (its ``service``: the ScheduleService)


class Connection(Protocol):
    """The listener's connection (:class:`jobman_cli.httpio.Connection`): its server says whether
    it serves TLS (the cookie's ``Secure``), and it reads the login form's body."""

    server: Any

    def read_body(self, request: Request) -> bytes: ...


def answer(request: Request, connection: Connection, backend: Backend) -> Answer:
    """The dashboard's answer for ``request`` (a path :func:`is_dashboard_path` accepted)."""
    secure = getattr(connection.server, "ssl_context", None) is not None
    if request.path in ("/login", "/logout"):
        if request.method != "POST":
            raise HttpError(405, f"{request.method[:20]} is not allowed here; use POST",
                            (("Allow", "POST"), *SECURITY_HEADERS))
        if request.path == "/logout":
            if request.has_body:  # a form's (ignored), read so that it cannot pass for the next request
                request.body_type = FORM
                connection.read_body(request)
            return 303, RawBody("text/plain; charset=utf-8", b"logged out\n"), (
                ("Location", "/"), session.clear_cookie(secure), *SECURITY_HEADERS)
        return _login(request, connection, backend, secure)
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"{request.method[:20]} is not allowed here; use GET",
                        (("Allow", "GET, HEAD"), *SECURITY_HEADERS))
    if request.has_body:
        raise HttpError(400, "a GET request must not have a body", SECURITY_HEADERS)
    name = _page_file(request.path)
    if name is None:
        raise HttpError(404, "no such page", SECURITY_HEADERS)
    if name in _PAGES:
        headers = (("Vary", "Cookie"), *SECURITY_HEADERS)
        if session.logged_in(request, backend.api_token):
            return 200, _plain(request, name, backend), headers
        if session.presented(request):  # forged, expired or from an older token: drop it
            headers = (session.clear_cookie(secure), *headers)
        return 200, _file(name), headers
    return 200, _file(name), SECURITY_HEADERS


def _plain(request: Request, name: str, backend: Backend) -> RawBody:
    """The server-rendered page for a browser holding a valid cookie."""
    try:
        if name == "index.html":
            number, status, title = plain.parse_list_query(request.query)
            jobs = backend.service.list_api([parse_status(status, "status")] if status else [])
            return RawBody(_TYPES[".html"], plain.list_page(jobs, number, status, title))
        if name == "schedules.html":
            return RawBody(_TYPES[".html"], _schedules_list(request.query, backend))
        if request.query:
            raise HttpError(400, "this page takes no query parameters")
        if name == "schedule.html":
            schedule_id = parse_job_id(request.path.strip("/").split("/")[1], "schedule id")
            shown = backend.schedules.service.show_api(schedule_id)
            return RawBody(_TYPES[".html"], plain_schedules.schedule_page(shown))
        job = job_to_api(backend.service.get(int(request.path.strip("/").split("/")[1])))
        return RawBody(_TYPES[".html"], plain.job_page(job, backend.extra.logs))
    except HttpError as err:
        raise HttpError(err.status, err.message, SECURITY_HEADERS) from None
    except JobmanError as err:
        raise HttpError(err.http_status, str(err), SECURITY_HEADERS) from None


def _schedules_list(query: str, backend: Backend) -> bytes:
    """One page of schedules (by id) from one read of them all (their records give the counts),
    and each shown schedule's last run read as its job (a few µs each from a file store; a show
    per schedule would read the newest 500 jobs 50 times: ~0.5 s a page at 10,000 jobs)."""
    from ..errors import JobNotFound
    from ..schedules.model import schedule_to_api

    number = plain_schedules.parse_list_query(query)
    everything = backend.schedules.service.list()
    number, pages, rows = plain_schedules.visible_page(len(everything), number)
    shown = []
    for schedule in everything[rows]:
        run = None
        if schedule.last_job_id is not None:
            try:
                run = plain_schedules.run_of(job_to_api(backend.service.get(schedule.last_job_id)))
            except JobNotFound:  # pruned (or deleted): shown as gone
                pass
        shown.append((schedule_to_api(schedule), run))
    return plain_schedules.list_page(shown, len(everything), number, pages)


def _login(request: Request, connection: Connection, backend: Backend, secure: bool) -> Answer:
    """``token=...`` checked in constant time: 303 to ``/`` with the cookie, or 403 and the form."""
    request.body_type = FORM
    data = connection.read_body(request)
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(data),
                          max_num_fields=5, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "malformed form body (expected token=...)", SECURITY_HEADERS) from None
    names = [name for name, _ in pairs]
    if names != ["token"]:
        got = clip(", ".join(names), 80) or "none"
        raise HttpError(400, f"the form must hold exactly one field, token (got {got})", SECURITY_HEADERS)
    if not tokens_match(pairs[0][1].strip(), backend.api_token):
        return 403, RawBody(_TYPES[".html"], _REFUSED), SECURITY_HEADERS
    return 303, RawBody("text/plain; charset=utf-8", b"logged in\n"), (
        ("Location", "/"), session.set_cookie(session.issue(backend.api_token), secure), *SECURITY_HEADERS)


_REFUSED = plain.page("jobman: log in", """<form id="plain-login" class="login" method="post" action="/login">
  <h1>Log in</h1>
  <p id="login-error" class="error" role="alert">The token was refused.</p>
  <label>API token <input id="plain-token" name="token" type="password" autocomplete="off" required></label>
  <button type="submit">Log in</button>
</form>""", logout=False)
