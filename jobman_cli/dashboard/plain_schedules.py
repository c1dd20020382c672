"""The dashboard's server-rendered schedule pages (DESIGN.md section 14 and 15), for a browser
without JavaScript that logged in by cookie: the schedules list (``/schedules``) and one
schedule (``/schedules/<id>``).

They render the very dicts the JSON API answers (a schedule's public JSON with its records; one
schedule's page: ``GET …/schedules/<id>``, with its latest runs, from
:meth:`ScheduleService.show_api`; a last run: the job's own JSON, as ``GET …/jobs/<id>/status``),
so the scripted pages (``schedules.js``, ``schedule.js``) and these show the same facts from the
same source.
Like ``jobman schedules show``, the template is shown without values that may be secret: the
names of its environment variables and of its secrets, never their values (a webhook URL in
``notify`` is already redacted by the API's shape). Every value goes through :func:`plain._e`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

from ..httpwire import HttpError, clip
from .plain import _e, _short, page

PAGE = 50
#: Record outcomes counted in the list (``replaced-previous`` shown as "replaced").
COUNTED = (("missed", "missed"), ("skipped", "skipped"), ("refused", "refused"), ("replaced-previous", "replaced"))
#: Template keys shown on their own lines or not at all (the rest are shown as short JSON).
_OWN_ROWS = ("docker-image", "title", "env-variables", "secrets")


# --------------------------------------------------------------------------- shared bits
def format_every(seconds: Any) -> str:
    """``15m``, ``1h30m``: ``--every``'s grammar (as ``schedules list`` prints it; schedule.js agrees)."""
    try:
        rest = int(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def spec(s: Mapping[str, Any]) -> str:
    """The expression: the cron text, or ``every 15m``."""
    return str(s["cron"]) if s.get("cron") else f"every {format_every(s.get('every'))}"


def _slug(name: str) -> str:
    """``Next (UTC)`` -> ``next-utc``: a fixed label as a class name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def state(s: Mapping[str, Any]) -> str:
    return "paused" if s.get("paused") else "active"


def record_counts(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Occurrences per outcome among the kept records (a range record counts its ``count``)."""
    counts = {label: 0 for _, label in COUNTED}
    names = dict(COUNTED)
    for r in records:
        label = names.get(str(r.get("outcome")))
        if label is not None:
            n = r.get("count")
            counts[label] += n if type(n) is int and n > 0 else 1
    return counts


def counts_html(counts: Mapping[str, int]) -> str:
    """``missed 3 · refused 1`` (only outcomes that happened), or ``none``."""
    shown = [f'<span class="rec rec-{_e(k)}">{_e(k)} {int(v)}</span>' for k, v in counts.items() if v]
    return " · ".join(shown) if shown else '<span class="rec rec-none">none</span>'


def occurrences(record: Mapping[str, Any]) -> str:
    """A record's occurrence, or its range (``first .. until (count)``), as ``schedules show`` prints it."""
    first = _short(record.get("occurrence"))
    until = record.get("until")
    if until and until != record.get("occurrence"):
        return f"{first} .. {_short(until)} ({record.get('count', '?')})"
    return first


def job_link(job_id: Any) -> str:
    """``<a href="/jobs/N">#N</a>`` for a valid id, else the value as text."""
    if type(job_id) is int and job_id > 0:
        return f'<a class="job-link" href="/jobs/{job_id}">#{job_id}</a>'
    return _e(job_id)


def run_of(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job's API shape cut to what a schedule's run shows (as ``show``'s ``runs`` entries)."""
    return {"id": job.get("id"), "occurrence": job.get("occurrence"), "status": job.get("status"),
            "reason": job.get("reason")}


# --------------------------------------------------------------------------- the list
def parse_list_query(query: str) -> int:
    """``?page=N`` (optional, at most once): 400 otherwise."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=5,
                          encoding="utf-8", errors="strict")
    except ValueError:
        raise HttpError(400, "malformed query string (expected ?page=N)") from None
    names = [name for name, _ in pairs]
    for name in names:
        if name != "page":
            raise HttpError(400, f"unknown query parameter {clip(name, 40)!r}; only page")
    if len(names) > 1:
        raise HttpError(400, "page: given more than once")
    number = (pairs[0][1] if pairs else "") or "1"
    if not number.isascii() or not number.isdigit() or len(number) > 6 or int(number) < 1:
        raise HttpError(400, f"page must be a whole number from 1 (got {clip(number, 20)!r})")
    return int(number)


def visible_page(count: int, number: int) -> tuple[int, int, slice]:
    """``(page shown, pages, slice of the rows)`` (past the end: the last page)."""
    pages = max(1, -(-count // PAGE))
    number = min(number, pages)
    return number, pages, slice((number - 1) * PAGE, number * PAGE)


def list_page(shown: list[tuple[dict[str, Any], Mapping[str, Any] | None]], total: int, number: int,
              pages: int) -> bytes:
    """The schedules of one page, by id ascending: each schedule's public JSON with its records,
    and its last run (:func:`run_of` its ``last-job-id``; None when that job is gone)."""
    rows = "\n".join(_row(s, run) for s, run in shown)
    pager = " ".join(filter(None, (
        f'<a id="prev" href="/schedules?page={number - 1}">← Previous</a>' if number > 1 else "",
        f'<span id="page">page {number} of {pages}</span>',
        f'<a id="next" href="/schedules?page={number + 1}">Next →</a>' if number < pages else "")))
    body = f"""<section id="plain-schedules">
<h1>Schedules <span id="count" class="count">{total} schedule(s)</span>
<a id="refresh" class="count" href="/schedules?page={number}">Refresh</a></h1>
<table id="schedules" class="jobs">
<thead><tr><th>ID</th><th>Title</th><th>Image</th><th>Schedule</th><th>Zone</th><th>State</th><th>Next (UTC)</th>
<th>Next (local)</th><th>Overlap</th><th>Last run</th><th>Records</th></tr></thead>
<tbody id="rows">
{rows}
</tbody>
</table>
<nav class="pager">{pager}</nav>
<p class="count">Records count the kept records of occurrences without a run of their own. Create and change
schedules with <code>jobman schedule --cron|--every</code> and <code>jobman schedules pause|resume|delete</code>.</p>
</section>"""
    return page("jobman: schedules", body)


def _next_cells(s: Mapping[str, Any]) -> tuple[str, str]:
    if s.get("paused"):
        return "– (paused)", "–"
    if not s.get("next-at"):
        return "none", "–"
    return _short(s.get("next-at")), str(s.get("next-at-local") or s.get("tz"))


def _row(s: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    sid = int(s["id"])
    href = f"/schedules/{sid}"
    utc, local = _next_cells(s)
    last = s.get("last-job-id")
    if last is None:
        last_cell = "–"
    else:
        status = str(run.get("status")) if run else "(gone)"
        why = str(run.get("reason") or "") if run else ""
        last_cell = (f'{job_link(last)} <span class="state state-{_e(status)}">{_e(status)}</span>'
                     + (f' <span class="reason">{_e(why)}</span>' if why else ""))
    image = (s.get("template") or {}).get("docker-image")
    return (f'<tr data-schedule-id="{sid}"><td><a href="{href}">{sid}</a></td>'
            f'<td class="title"><a href="{href}">{_e(s.get("title") or "(untitled)")}</a></td>'
            f'<td class="image">{_e(image)}</td><td class="spec">{_e(spec(s))}</td>'
            f'<td class="tz">{_e(s.get("tz"))}</td>'
            f'<td class="state sched-{state(s)}">{state(s)}</td><td class="next">{_e(utc)}</td>'
            f'<td class="next-local">{_e(local)}</td><td class="overlap">{_e(s.get("overlap"))}</td>'
            f'<td class="last-run">{last_cell}</td>'
            f'<td class="records">{counts_html(record_counts(s.get("records") or []))}</td></tr>')


# --------------------------------------------------------------------------- one schedule
def schedule_page(s: Mapping[str, Any]) -> bytes:
    """One schedule: its facts, its template's public fields, its latest runs and its records."""
    sid = int(s["id"])
    utc, local = _next_cells(s)
    facts = [("ID", _e(sid)), ("Title", _e(s.get("title") or "(untitled)")), ("Schedule", _e(spec(s))),
             ("Zone", _e(s.get("tz"))), ("State", _e(state(s))), ("Next (UTC)", _e(utc)), ("Next (local)", _e(local)),
             ("Overlap", _e(s.get("overlap"))), ("Last job", job_link(s.get("last-job-id"))),
             ("Created", _e(_short(s.get("created-at")))), ("Updated", _e(_short(s.get("updated-at"))))]
    details = "\n".join(f'<dt>{name}</dt><dd class="detail-{_slug(name)}">{value}</dd>' for name, value in facts)
    body = f"""<section id="plain-schedule">
<p><a href="/schedules">← all schedules</a> · <a id="refresh" href="/schedules/{sid}">Refresh</a></p>
<h1><span id="schedule-title">Schedule {sid} {_e(s.get('title') or '(untitled)')}</span>
<span id="schedule-state" class="state sched-{state(s)}">{state(s)}</span></h1>
<div class="columns">
<div>
<h2>Schedule</h2>
<dl id="details" class="details">
{details}
</dl>
<h2>Template <span class="count">(every run is this job)</span></h2>
<dl id="template" class="details">
{_template(s.get("template") or {})}
</dl>
</div>
<div>
<h2>Latest runs <span class="count">(newest first; all: <code>jobman list --schedule {sid}</code>)</span></h2>
{_runs(s.get("runs") or [])}
<h2>Records <span id="record-counts" class="count">{counts_html(record_counts(s.get("records") or []))}</span></h2>
{_records(s.get("records") or [])}
</div>
</div>
</section>"""
    return page(f"jobman: schedule {sid}", body)


def template_rows(template: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, text)`` for the template's public fields, as ``schedules show`` lists them: the image,
    then every other key as short JSON, env variables and secrets by name only."""
    rows = [("image", str(template.get("docker-image", "")))]
    for key in sorted(k for k in template if k not in _OWN_ROWS):
        value = template[key]
        rows.append((str(key), (value if isinstance(value, str) else json.dumps(value))[:300]))
    env, secrets = template.get("env-variables"), template.get("secrets")
    if isinstance(env, Mapping) and env:
        rows.append(("env (names)", ", ".join(sorted(map(str, env)))))
    if isinstance(secrets, Mapping) and secrets:
        rows.append(("secrets (names)", ", ".join(sorted(map(str, secrets)))))
    return rows


def _template(template: Mapping[str, Any]) -> str:
    return "\n".join(f'<dt>{_e(k)}</dt><dd class="tpl-{_e(k.split(" ")[0])}">{_e(v)}</dd>'
                     for k, v in template_rows(template))


def _runs(runs: list[Mapping[str, Any]]) -> str:
    if not runs:
        return '<p id="no-runs">none yet</p>'
    rows = []
    for r in runs:
        status = str(r.get("status"))
        rows.append(f'<tr data-job-id="{_e(r.get("id"))}"><td>{job_link(r.get("id"))}</td>'
                    f'<td>{_e(_short(r.get("occurrence")))}</td><td class="state state-{_e(status)}">{_e(status)}</td>'
                    f'<td class="reason">{_e(r.get("reason") or "")}</td></tr>')
    return ('<table id="runs" class="jobs"><thead><tr><th>Job</th><th>Occurrence (UTC)</th><th>Status</th>'
            '<th>Reason</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _records(records: list[Mapping[str, Any]]) -> str:
    if not records:
        return '<p id="no-records">none: every occurrence so far has its run</p>'
    rows = []
    for r in reversed(records):  # newest first, as the runs
        job = r.get("job-id")
        rows.append(f'<tr class="outcome-{_e(r.get("outcome"))}"><td>{_e(occurrences(r))}</td>'
                    f'<td class="outcome">{_e(r.get("outcome"))}</td><td>{"–" if job is None else job_link(job)}</td>'
                    f'<td class="detail">{_e(r.get("detail") or "")}</td><td>{_e(_short(r.get("at")))}</td></tr>')
    return ('<table id="records" class="jobs"><thead><tr><th>Occurrence (UTC)</th><th>Outcome</th><th>Job</th>'
            '<th>Detail</th><th>Recorded</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")

