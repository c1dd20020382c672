"""The dashboard's login cookie for browsers without JavaScript (README "Dashboard").

The cookie is never the API token: it is ``<expiry>.<hex HMAC-SHA256(key=api token,
"jobman-dashboard-v1|<expiry>")>``, so a leaked cookie gives at most 12 hours of reading the
dashboard's server-rendered pages, cannot be turned back into the token, and dies with the token
(a new API token invalidates every cookie at once; no server-side session table is needed). It is
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page makes the browser send
it) and ``Secure`` under TLS. It authorizes only the dashboard's GET pages, never the JSON API,
and the dashboard has no route that changes a job, so there is nothing to forge a request for.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from ..httpwire import Request

COOKIE = "jobman_dash"
MAX_AGE = 12 * 3600  #: seconds a login lasts
_CONTEXT = "jobman-dashboard-v1|"
_VALUE = re.compile(r"([0-9]{1,12})\.([0-9a-f]{64})")
_SLACK = 300  #: a cookie may claim at most MAX_AGE + this from now (clock steps), never more


def _mac(api_token: str, expiry: int) -> str:
    key = api_token.encode("utf-8", "backslashreplace")
    return hmac.new(key, (_CONTEXT + str(expiry)).encode("ascii"), hashlib.sha256).hexdigest()


def issue(api_token: str, now: float | None = None) -> str:
    """A fresh cookie value, valid for :data:`MAX_AGE` seconds from ``now``."""
    expiry = int(now if now is not None else time.time()) + MAX_AGE
    return f"{expiry}.{_mac(api_token, expiry)}"


def valid(value: str, api_token: str, now: float | None = None) -> bool:
    """True for a value :func:`issue` made with this token that has not expired (constant-time MAC check)."""
    match = _VALUE.fullmatch(value)
    if match is None or not api_token:
        return False
    expiry = int(match.group(1))
    good = hmac.compare_digest(_mac(api_token, expiry), match.group(2))
    moment = now if now is not None else time.time()
    return good and moment < expiry <= moment + MAX_AGE + _SLACK


def presented(request: Request) -> list[str]:
    """Every value of our cookie in the request's ``Cookie`` headers (a browser may send several)."""
    values = []
    for header in request.header("cookie"):
        for pair in header.split(";"):
            name, eq, value = pair.strip().partition("=")
            if eq and name == COOKIE:
                values.append(value.strip().strip('"'))
    return values


def logged_in(request: Request, api_token: str) -> bool:
    """The request carries a valid dashboard cookie."""
    return any(valid(value, api_token) for value in presented(request))


def set_cookie(value: str, secure: bool) -> tuple[str, str]:
    """The ``Set-Cookie`` header that logs a browser in."""
    return ("Set-Cookie", f"{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={MAX_AGE}"
                          + ("; Secure" if secure else ""))


def clear_cookie(secure: bool) -> tuple[str, str]:
    """The ``Set-Cookie`` header that logs a browser out (or drops a stale cookie)."""
    return ("Set-Cookie", f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0" + ("; Secure" if secure else ""))
