"""The dashboard's server-rendered pages, for a browser without JavaScript that logged in by cookie.

They show the same facts as the scripted pages (list: filters, newest first, paged; job: timeline
with durations, reason, instance, attempts, notifications, cost, log tail) as plain HTML with no
script at all. Every value from a job goes through :func:`html.escape` (:func:`_e`), so a title
such as ``<script>`` is text. The pages are built with f-strings of fixed markup: no template
engine, in keeping with "no build step, nothing fetched".
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlencode

from ..errors import JobmanError
from ..httpwire import HttpError, clip

PAGE = 50
STATES = ("scheduled", "launching", "running", "finished", "failed", "cancelled")
TERMINAL = ("finished", "failed", "cancelled")
LOG_LINES = 200  #: the tail shown
LOG_PAGES = 20  #: pages of the log read at most (each up to api_routes.MAX_EVENTS events)
LogReader = Callable[[int, str], dict[str, Any]]


def _e(value: Any) -> str:
    """Any job value as HTML text (quotes too: the same helper fills attributes)."""
    return html.escape("–" if value is None or value == "" else str(value), quote=True)


def _short(text: Any) -> str:
    if not text:
        return "–"
    text = str(text).replace("T", " ")
    for suffix in ("+00:00", "Z"):
        text = text.removesuffix(suffix)
    return text.split(".")[0] + "Z"


def _parse(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """The JS pages' duration format (common.js ``duration``)."""
    sign, s = ("-" if seconds < 0 else ""), abs(seconds)
    if s < 60:
        return f"{sign}{s:.1f} s" if s < 10 else f"{sign}{round(s)} s"
    m = int(s // 60)
    if m < 60:
        return f"{sign}{m} min {round(s - 60 * m)} s"
    h = m // 60
    return f"{sign}{h} h {m - 60 * h} min" if h < 48 else f"{sign}{h // 24} d {h % 24} h"


def page(title: str, body: str, logout: bool = True) -> bytes:
    """A whole page: the dashboard's stylesheet, no script, a log-out button (when logged in)."""
    button = ('<form class="logout" method="post" action="/logout"><button id="logout" type="submit">Log out'
              '</button></form>') if logout else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{_e(title)}</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body class="plain">
<header><a class="brand" href="/">jobman</a>
  <nav class="nav"><a href="/">Jobs</a> <a id="nav-schedules" href="/schedules">Schedules</a></nav>
  <span class="live">plain view (no JavaScript)</span>
  {button}</header>
<main>
{body}
</main>
</body>
</html>
""".encode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- the list
def parse_list_query(query: str) -> tuple[int, str, str]:
    """``?page=N&status=S&title=T`` (each optional, at most once; empty = any): 400 otherwise."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=10,
                          encoding="utf-8", errors="strict")
    except ValueError:
        raise HttpError(400, "malformed query string (expected ?page=N&status=S&title=T)") from None
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name not in ("page", "status", "title"):
            raise HttpError(400, f"unknown query parameter {clip(name, 40)!r}; only page, status and title")
        if name in seen:
            raise HttpError(400, f"{name}: given more than once")
        seen[name] = value
    number = seen.get("page", "") or "1"
    if not number.isascii() or not number.isdigit() or len(number) > 6 or int(number) < 1:
        raise HttpError(400, f"page must be a whole number from 1 (got {clip(number, 20)!r})")
    status = seen.get("status", "")
    if status and status not in STATES:
        raise HttpError(400, f"status must be one of {', '.join(STATES)} (got {clip(status, 20)!r})")
    return int(number), status, seen.get("title", "")[:200]


def list_page(jobs: list[dict[str, Any]], number: int, status: str, title: str) -> bytes:
    """Jobs newest first, filtered by ``status`` (already, by the store) and ``title`` (substring, any case)."""
    needle = title.strip().lower()
    shown = sorted((j for j in jobs if needle in str(j.get("title") or "").lower()), key=lambda j: -int(j["id"]))
    pages = max(1, -(-len(shown) // PAGE))
    number = min(number, pages)
    rows = "\n".join(_row(job) for job in shown[(number - 1) * PAGE: number * PAGE])
    options = "".join(f'<option{" selected" if s == status else ""}>{s}</option>' for s in STATES)

    def link(n: int) -> str:
        query = urlencode({k: v for k, v in (("status", status), ("title", title), ("page", str(n))) if v})
        return _e("/?" + query)

    pager = " ".join(filter(None, (
        f'<a id="prev" href="{link(number - 1)}">← Newer</a>' if number > 1 else "",
        f'<span id="page">page {number} of {pages}</span>',
        f'<a id="next" href="{link(number + 1)}">Older →</a>' if number < pages else "")))
    body = f"""<section id="plain-list">
<h1>Jobs</h1>
<form id="filters" class="filters" method="get" action="/">
  <label>State <select name="status"><option value="">any</option>{options}</select></label>
  <label>Title <input name="title" type="search" value="{_e(title) if title else ''}"></label>
  <button type="submit">Filter</button>
  <span id="count" class="count">{len(shown)} of {len(jobs)} job(s)</span>
  <a id="refresh" href="{link(number)}">Refresh</a>
</form>
<table id="jobs" class="jobs">
<thead><tr><th>ID</th><th>Title</th><th>Image</th><th>State</th><th>Due</th><th>Launched</th><th>Ended</th>
<th>Reason</th></tr></thead>
<tbody id="rows">
{rows}
</tbody>
</table>
<nav class="pager">{pager}</nav>
</section>"""
    return page("jobman", body)


def _row(job: dict[str, Any]) -> str:
    href = f"/jobs/{int(job['id'])}"
    code, reason = job.get("reason-code"), job.get("reason") or ""
    why = f"{code}: {reason}" if code else reason
    state = str(job.get("status"))
    return (f'<tr data-job-id="{int(job["id"])}"><td><a href="{href}">{int(job["id"])}</a></td>'
            f'<td class="title"><a href="{href}">{_e(job.get("title") or "(untitled)")}</a></td>'
            f'<td class="image">{_e(job.get("docker-image"))}</td>'
            f'<td class="state state-{_e(state)}">{_e(state)}</td><td>{_e(_short(job.get("date-time")))}</td>'
            f'<td>{_e(_short(job.get("launched-at")))}</td><td>{_e(_short(job.get("finished-at")))}</td>'
            f'<td class="reason">{_e(why) if why else ""}</td></tr>')


# --------------------------------------------------------------------------- one job
def job_page(job: dict[str, Any], read_log: LogReader) -> bytes:
    """One job: the facts of job.js, then the log tail (or the one-line reason there is none)."""
    state = str(job.get("status"))
    body = f"""<section id="plain-job">
<p><a href="/">← all jobs</a> · <a id="refresh" href="/jobs/{int(job['id'])}">Refresh</a></p>
<h1><span id="job-title">#{int(job['id'])} {_e(job.get('title') or '(untitled)')}</span>
<span id="job-state" class="state state-{_e(state)}">{_e(state)}</span></h1>
<h2>Timeline</h2>
<ol id="timeline" class="timeline">
{_timeline(job)}
</ol>
<div class="columns">
<div>
<h2>Details</h2>
<dl id="details" class="details">
{_details(job)}
</dl>
<h2>Notifications</h2>
{_notifications(job.get("notifications") or [])}
</div>
<div>
{_log(int(job["id"]), read_log)}
</div>
</div>
</section>"""
    return page(f"jobman: job {int(job['id'])}", body)


def _timeline(job: dict[str, Any]) -> str:
    status = job.get("status")
    ran = status in ("running", "finished") or (status == "failed" and job.get("exit-code") is not None)
    steps = [("scheduled", job.get("created-at"), True), ("due", job.get("date-time"), True),
             ("claimed", job.get("claimed-at"), status != "scheduled" or int(job.get("attempts") or 0) > 0),
             ("instance launched", job.get("launched-at"), bool(job.get("launched-at"))),
             ("running", job.get("started-at"), ran or bool(job.get("started-at"))),
             (status if status in TERMINAL else "ended", job.get("finished-at"), status in TERMINAL)]
    items, previous = [], None
    for name, at_text, reached in steps:
        at = _parse(at_text)
        when = _short(at_text) if at_text else ("(time not recorded)" if reached else "not yet")
        gap = ""
        if at is not None and previous is not None:
            took = duration((at - previous[1]).total_seconds())
            gap = f'<span class="gap">+{_e(took)} after {_e(previous[0])}</span>'
        if at is not None:
            previous = (name, at)
        cls = ("reached" if reached else "pending") + (" bad" if name == "failed" else "")
        items.append(f'<li class="{cls}"><span class="step">{_e(name)}</span>'
                     f'<span class="at">{_e(when)}</span>{gap}</li>')
    return "\n".join(items)


def _details(job: dict[str, Any]) -> str:
    env = [f"{k}={v}" for k, v in (job.get("env-variables") or {}).items()]
    exit_code = job.get("exit-code")
    rows = [("ID", job.get("id")), ("Image", job.get("docker-image")), ("State", job.get("status")),
            ("Reason code", job.get("reason-code")), ("Reason", job.get("reason")),
            ("Exit code", exit_code), ("Instance", job.get("instance-id")),
            ("Instance type", job.get("instance-type") or "default"), ("Attempts", job.get("attempts")),
            ("Cost", "-" if job.get("cost") is None else job.get("cost")),
            ("Timeout", f"{job.get('timeout')} s"), ("Start deadline", f"{job.get('start-deadline')} s"),
            ("Command", repr(job["command"]) if job.get("command") else "(image default)"),
            ("Environment", "\n".join(env)), ("Secrets", ", ".join(job.get("secrets") or {})),
            ("Notify", "\n".join(job.get("notify") or []))]
    shown = "\n".join(f'<dt>{name}</dt><dd class="detail-{name.lower().replace(" ", "-")}">{_e(value)}</dd>'
                       for name, value in rows)
    return shown + "\n" + schedule_detail(job)


def schedule_detail(job: dict[str, Any]) -> str:
    """The row that links a schedule's run back to its schedule (and names its occurrence)."""
    sid = job.get("schedule-id")
    if type(sid) is not int or sid < 1:
        return '<dt>Schedule</dt><dd class="detail-schedule">–</dd>'
    link = f'<a id="schedule-link" href="/schedules/{sid}">schedule {sid}</a>'
    return f'<dt>Schedule</dt><dd class="detail-schedule">{link} (occurrence {_e(_short(job.get("occurrence")))})</dd>'


def _notifications(records: Iterable[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        history = "; ".join(f"{_short(h.get('at'))} {h.get('outcome')}" for h in r.get("history") or [])
        cells = (r.get("event"), r.get("target"), r.get("state"), r.get("attempts"), history)
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        return '<p id="no-notifications">none</p>'
    return ('<table id="notifications" class="jobs"><thead><tr><th>Event</th><th>Target</th><th>State</th>'
            '<th>Tries</th><th>Detail</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _log(job_id: int, read_log: LogReader) -> str:
    """The last :data:`LOG_LINES` lines, read as the API's logs route reads them (following
    ``next`` while it says ``more``); any failure (no launch yet, no AWS) is one line of text."""
    lines: list[str] = []
    query, state = "", ""
    try:
        for _ in range(LOG_PAGES):
            answer = read_log(job_id, query)
            lines.extend(str(e.get("message", "")) for e in answer.get("events") or [])
            lines = lines[-LOG_LINES:]
            if not answer.get("more") or not answer.get("next"):
                break
            query = urlencode({"after": answer["next"]})
        else:
            state = f"(the last {LOG_LINES} lines read; the log goes on: jobman logs {job_id})"
        notes = answer.get("notes") or []
        state = state or (f"({'; '.join(map(str, notes))})" if notes and not lines else f"({len(lines)} line(s))")
    except HttpError as err:
        state = f"({clip(err.message, 300)})"
    except JobmanError as err:
        state = f"({clip(str(err), 300)})"
    except Exception as err:  # noqa: BLE001 - an AWS client's own error: the page still shows the job
        state = f"(the log could not be read: {clip(f'{type(err).__name__}: {err}', 300)})"
    return (f'<h2>Log <span id="log-state" class="count">{_e(state)}</span></h2>\n'
            f'<pre id="log" class="log">{html.escape(chr(10).join(lines))}</pre>')
