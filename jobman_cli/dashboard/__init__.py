"""The dashboard (DESIGN.md section 15): static pages the daemon serves at ``/`` next to the API.

Every page and script is a fixed file shipped in this package; none holds job data. The pages'
scripts read everything from the JSON API with the API token the operator typed into the login
form, kept in the tab's ``sessionStorage`` and sent only as ``Authorization: Bearer`` (never in a
URL, never in a cookie, so no other site can make the browser use it). Hence no route here needs
authentication, and an unauthenticated visitor learns nothing but the page templates. The dashboard
only reads: it has no route that changes state.

Every answer carries a Content-Security-Policy that allows scripts from this origin only (no
inline script, no ``eval``, no other origin), forbids framing, plugins and ``<base>``, and
``nosniff``; the scripts render job data with ``textContent`` only.

Routes (GET and HEAD; anything else 405). Any other path is the API's (401 without the token)::

    /                 the jobs list, filters, chart of recent runs
    /jobs/<id>        one job: timeline, reason, instance, attempts, notifications, log tail
    /static/<file>    the CSS and scripts
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from ..httpwire import Answer, HttpError, Request, RawBody

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
STATIC_FILES = ("dashboard.css", "common.js", "list.js", "chart.js", "job.js")
_JOB_PAGE = re.compile(r"/jobs/[1-9][0-9]{0,15}/?")


def is_dashboard_path(path: str, api_prefix: str) -> bool:
    """True for the dashboard's own URLs only. Every other path stays the API's: credentials
    first (401), then 404, so an unknown path tells a visitor without the token nothing new."""
    if path.startswith(api_prefix):
        return False
    return _page_file(path) is not None


def _page_file(path: str) -> str | None:
    """The packaged file a dashboard URL names, or None (no path is ever joined from the URL)."""
    if path in ("/", "/index.html"):
        return "index.html"
    if _JOB_PAGE.fullmatch(path):
        return "job.html"
    if path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
        return path[len("/static/"):]
    return None


@lru_cache(maxsize=None)
def _file(name: str) -> RawBody:
    """A packaged file, read once (they never change while the daemon runs)."""
    data = resources.files(__package__).joinpath("static", name).read_bytes()
    return RawBody(_TYPES[name[name.rindex("."):]], data)


def answer(request: Request) -> Answer:
    """The dashboard's answer for ``request`` (a path :func:`is_dashboard_path` accepted): the path is
    known, so the method decides (405 for anything but GET and HEAD: the dashboard changes nothing)."""
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"{request.method[:20]} is not allowed here; use GET",
                        (("Allow", "GET, HEAD"), *SECURITY_HEADERS))
    if request.has_body:
        raise HttpError(400, "a GET request must not have a body", SECURITY_HEADERS)
    name = _page_file(request.path)
    if name is None:
        raise HttpError(404, "no such page", SECURITY_HEADERS)
    return 200, _file(name), SECURITY_HEADERS
