"""The dashboard's schedules pages (DESIGN.md sections 14 and 15) over real sockets on 127.0.0.1,
in-process (the API's own listener, a TinyDB store): ``/schedules`` and ``/schedules/<id>`` hold
no data without a valid cookie (the fixed pages; the API still wants the Bearer token), and with
one show each schedule's expression, zone, state, next occurrence in UTC and local time, overlap,
last run (linked, with its status) and record counts; one schedule's page shows its template's
public fields (env variables and secrets by name only, never a value), its latest runs and its
records (range records with until/count); a run's job page links back to its schedule. Every
value is escaped; bad input is the dashboard's one-line 400/404, never a 500. The scripted pages
in a real browser: tests/test_dashboard_schedules_browser.py."""

from __future__ import annotations

import dataclasses
import http.client
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.dashboard import CSP, STATIC_FILES
from jobman_cli.model import format_time
from jobman_cli.schedules.service import ScheduleService, template_to_request
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

TOKEN = "schedules-dashboard-token-0123456789"
XSS_TITLE = '<script>window.__x=1</script>"quoted" \'single\' <img src=x onerror="alert(1)">'
ESCAPED_TITLE = ("&lt;script&gt;window.__x=1&lt;/script&gt;&quot;quoted&quot; &#x27;single&#x27; "
                 "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;")
ENV_VALUE = "env-value-never-shown-<b>"
SECRET_REF = "ssm:/prod/never-shown/password"
SECRET_TITLE = "payroll-schedule-title"
FAIL_REASON = 'disk <b>full</b> & "more"'
ESCAPED_REASON = "disk &lt;b&gt;full&lt;/b&gt; &amp; &quot;more&quot;"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
UTC = timezone.utc


@dataclasses.dataclass
class World:
    api: ApiServer
    jobs: JobService
    schedules: ScheduleService
    xss: int  #: schedule with a hostile title, env, secret; records of every kind; two runs
    paused: int  #: a paused cron schedule in Europe/Berlin
    plain: int  #: no runs, no records


def make_run(world_jobs: JobService, schedules: ScheduleService, schedule_id: int, occurrence: datetime) -> int:
    """One run as the daemon creates it (the template, the schedule's id and occurrence), then the
    schedule's ``last_job_id`` set as the daemon sets it."""
    s = schedules.get(schedule_id)
    job, _ = world_jobs.schedule(template_to_request(
        s.template, when=format_time(occurrence), schedule_id=s.id, occurrence=occurrence,
        idempotency_key=f"schedule-{s.id}-{format_time(occurrence)}"))
    schedules.store.update_schedule(schedule_id, lambda c: dataclasses.replace(c, last_job_id=job.id,
                                                                               version=c.version + 1))
    return job.id


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "jobs.json")
    jobs = JobService(store)
    schedules = ScheduleService(jobs)
    xss = schedules.create({"every": "15m", "tz": "UTC", "docker-image": "alpine:3.20", "title": XSS_TITLE,
                            "env-variables": {"XSS_ENV": ENV_VALUE}, "secrets": {"DB_PASSWORD": SECRET_REF},
                            "overlap": "replace", "timeout": 600}).id
    paused = schedules.create({"cron": "0 6 * * 1-5", "tz": "Europe/Berlin", "docker-image": "busybox:1",
                               "title": SECRET_TITLE}).id
    schedules.pause(paused)
    plain = schedules.create({"every": "1h", "tz": "America/New_York", "docker-image": "alpine:3.20",
                              "title": "hourly"}).id
    now = datetime.now(UTC).replace(microsecond=0)
    first = make_run(jobs, schedules, xss, now - timedelta(minutes=30))
    second = make_run(jobs, schedules, xss, now - timedelta(minutes=15))
    store.update(second, lambda j: j.claimed(now, "launch"))
    store.update(second, lambda j: j.launched("i-0123456789abcdef0", now))
    jobs.report(second, "failed", 3, None, FAIL_REASON)
    occ = lambda m: format_time(now - timedelta(minutes=m))  # noqa: E731
    records = (
        {"occurrence": occ(300), "outcome": "missed", "job-id": None, "at": occ(100),
         "detail": "5 older than the start deadline <b>", "until": occ(240), "count": 5},
        {"occurrence": occ(90), "outcome": "skipped", "job-id": first, "at": occ(90), "detail": "previous run active"},
        {"occurrence": occ(60), "outcome": "refused", "job-id": None, "at": occ(60), "detail": "cost limit"},
        {"occurrence": occ(45), "outcome": "replaced-previous", "job-id": first, "at": occ(45), "detail": "cancelled"},
        {"occurrence": occ(44), "outcome": "missed", "job-id": None, "at": occ(40), "detail": "one",
         "until": occ(44), "count": 1},
    )
    store.update_schedule(xss, lambda c: dataclasses.replace(c, records=records, version=c.version + 1))
    log: list[str] = []
    api = ApiServer(jobs, api_token=TOKEN, log=log.append).start()
    yield World(api, jobs, schedules, xss, paused, plain)
    api.stop()
    store.close()
    assert log == []  # no 5xx


def fetch(port: int, method: str, path: str, headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def cookie(port: int) -> str:
    status, headers, _ = fetch(port, "POST", "/login", FORM, urlencode({"token": TOKEN}).encode())
    assert status == 303
    return re.fullmatch(r"jobman_dash=([^;]*);.*", headers["set-cookie"]).group(1)  # type: ignore[union-attr]


def page(port: int, path: str, value: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = fetch(port, "GET", path, {"Cookie": f"jobman_dash={value}"})
    return status, headers, body.decode()


def cells(text: str, row_attr: str, cls: str) -> str:
    """The inner HTML of the cell ``td.cls`` of the row ``<tr data-...="..."``."""
    row = text[text.index(f"<tr {row_attr}>"):]
    row = row[:row.index("</tr>")]
    return re.search(rf'<td class="{cls}[^"]*">(.*?)</td>', row).group(1)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- auth
SCHEDULE_URLS = ["/schedules", "/schedules/", "/schedules?page=2", "/schedules/1", "/schedules/2/"]


@pytest.mark.parametrize("path", SCHEDULE_URLS)
def test_without_a_cookie_the_schedule_pages_hold_no_data(world, path):
    for headers in ({}, {"Cookie": "jobman_dash=1.forged"}, {"Authorization": "Bearer nope"}):
        status, answer_headers, body = fetch(world.api.port, "GET", path, headers)
        assert status == 200 and answer_headers["content-security-policy"] == CSP
        for secret in (SECRET_TITLE, "window.__x", "busybox:1", "Europe/Berlin", ENV_VALUE, "0 6 * * 1-5"):
            assert secret.encode() not in body, (path, headers)
        assert b'id="plain-login"' in body  # the no-JavaScript login form, and nothing else to read


def test_the_schedules_json_api_refuses_the_cookie(world):
    value = cookie(world.api.port)
    for path in ("/jobMan/v1.1/schedules", f"/jobMan/v1.1/schedules/{world.paused}"):
        status, _, body = fetch(world.api.port, "GET", path, {"Cookie": f"jobman_dash={value}"})
        assert status == 401 and SECRET_TITLE.encode() not in body


def test_the_fixed_pages_and_scripts_are_served_and_link_each_other(world):
    for path in ("/schedules", "/schedules/7"):
        _, _, body = fetch(world.api.port, "GET", path)
        text = body.decode()
        assert text.count("<script") == text.count('<script src="/static/') == 2
        assert "onclick" not in text and "javascript:" not in text
        assert "jobman schedules list" in text[text.index("<noscript>"):text.index("</noscript>")]
    for name in ("schedules.js", "schedule.js"):
        assert name in STATIC_FILES
        status, headers, body = fetch(world.api.port, "GET", f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert b"innerHTML" not in body  # data goes in with textContent only
    for path in ("/", "/jobs/1"):  # the main pages link to the schedules
        assert b'<a id="nav-schedules" href="/schedules">' in fetch(world.api.port, "GET", path)[2]


# --------------------------------------------------------------------------- the list
def test_the_list_shows_each_schedule_with_next_times_state_last_run_and_record_counts(world):
    value = cookie(world.api.port)
    status, headers, text = page(world.api.port, "/schedules", value)
    assert status == 200 and headers["content-security-policy"] == CSP and headers["vary"] == "Cookie"
    assert re.findall(r'<tr data-schedule-id="(\d+)"', text) == [str(world.xss), str(world.paused), str(world.plain)]
    assert "3 schedule(s)" in text and '<a id="nav-schedules" href="/schedules">' in text
    xss_row = f'data-schedule-id="{world.xss}"'
    assert cells(text, xss_row, "spec") == "every 15m" and cells(text, xss_row, "tz") == "UTC"
    assert cells(text, xss_row, "state") == "active" and cells(text, xss_row, "overlap") == "replace"
    assert cells(text, xss_row, "image") == "alpine:3.20"
    shown = world.schedules.show_api(world.xss)
    assert cells(text, xss_row, "next") == shown["next-at"].replace("T", " ").split(".")[0].removesuffix("Z") + "Z"
    assert cells(text, xss_row, "next-local") == shown["next-at-local"]  # e.g. 2026-12-03 20:00:00 UTC (+00:00)
    last = shown["last-job-id"]
    assert cells(text, xss_row, "last-run").startswith(
        f'<a class="job-link" href="/jobs/{last}">#{last}</a> <span class="state state-failed">failed</span> '
        f'<span class="reason">')
    assert ESCAPED_REASON in cells(text, xss_row, "last-run") and FAIL_REASON not in text
    records = cells(text, xss_row, "records")
    assert re.findall(r'<span class="rec rec-([a-z]+)">\1 (\d+)</span>', records) == [
        ("missed", "6"), ("skipped", "1"), ("refused", "1"), ("replaced", "1")]  # a range counts its count
    paused_row = f'data-schedule-id="{world.paused}"'
    assert cells(text, paused_row, "spec") == "0 6 * * 1-5" and cells(text, paused_row, "tz") == "Europe/Berlin"
    assert cells(text, paused_row, "state") == "paused" and cells(text, paused_row, "next") == "– (paused)"
    plain_row = f'data-schedule-id="{world.plain}"'
    assert cells(text, plain_row, "last-run") == "–"
    assert cells(text, plain_row, "records") == '<span class="rec rec-none">none</span>'
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T \(-0[45]:00\)", cells(text, plain_row, "next-local"))


def test_the_list_follows_pause_resume_and_new_runs(world):
    value = cookie(world.api.port)
    row = f'data-schedule-id="{world.plain}"'
    world.schedules.pause(world.plain)
    assert cells(page(world.api.port, "/schedules", value)[2], row, "state") == "paused"
    world.schedules.resume(world.plain)
    job = make_run(world.jobs, world.schedules, world.plain, datetime.now(UTC))
    text = page(world.api.port, "/schedules", value)[2]
    assert cells(text, row, "state") == "active"
    assert cells(text, row, "last-run").startswith(f'<a class="job-link" href="/jobs/{job}">#{job}</a>')


def test_a_deleted_or_pruned_last_run_shows_as_gone(world):
    value = cookie(world.api.port)
    world.schedules.store.update_schedule(world.plain, lambda c: dataclasses.replace(c, last_job_id=999,
                                                                                     version=c.version + 1))
    text = page(world.api.port, "/schedules", value)[2]
    assert "(gone)" in cells(text, f'data-schedule-id="{world.plain}"', "last-run")


def test_the_list_pages_by_50(world):
    for n in range(60):
        world.schedules.create({"every": "1h", "tz": "UTC", "docker-image": "alpine:3.20", "title": f"bulk-{n}"})
    value = cookie(world.api.port)
    ids = lambda text: [int(i) for i in re.findall(r'<tr data-schedule-id="(\d+)"', text)]  # noqa: E731
    first, second = page(world.api.port, "/schedules", value)[2], page(world.api.port, "/schedules?page=2", value)[2]
    assert len(ids(first)) == 50 and len(ids(second)) == 13 and ids(first)[-1] < ids(second)[0]
    assert "page 1 of 2" in first and '<a id="next" href="/schedules?page=2">' in first
    assert ids(page(world.api.port, "/schedules?page=9", value)[2]) == ids(second)  # past the end: the last


# --------------------------------------------------------------------------- one schedule
def test_a_schedule_page_shows_template_runs_and_records_but_no_env_or_secret_value(world):
    value = cookie(world.api.port)
    status, _, text = page(world.api.port, f"/schedules/{world.xss}", value)
    assert status == 200
    assert ENV_VALUE not in text and "env-value-never-shown" not in text and SECRET_REF not in text
    assert "never-shown" not in text
    assert '<dd class="tpl-env">XSS_ENV</dd>' in text and '<dd class="tpl-secrets">DB_PASSWORD</dd>' in text
    assert '<dd class="tpl-image">alpine:3.20</dd>' in text and '<dd class="tpl-timeout">600</dd>' in text
    assert '<dd class="detail-schedule">every 15m</dd>' in text and '<dd class="detail-zone">UTC</dd>' in text
    assert '<dd class="detail-overlap">replace</dd>' in text and '<dd class="detail-state">active</dd>' in text
    shown = world.schedules.show_api(world.xss)
    assert f'<dd class="detail-next-local">{shown["next-at-local"]}</dd>' in text
    assert ESCAPED_REASON in text and FAIL_REASON not in text  # the failed run's reason, escaped
    runs = re.findall(r'<tr data-job-id="(\d+)"><td><a class="job-link" href="/jobs/\1">#\1</a></td>', text)
    assert [int(r) for r in runs] == [r["id"] for r in shown["runs"]] and len(runs) == 2  # newest first
    outcomes = re.findall(r'<td class="outcome">([^<]*)</td>', text)
    assert outcomes == ["missed", "replaced-previous", "refused", "skipped", "missed"]  # newest first
    first = shown["records"][0]
    start, until = (first[k].replace("T", " ").split(".")[0].removesuffix("Z") + "Z" for k in ("occurrence", "until"))
    assert f"<td>{start} .. {until} (5)</td>" in text  # the range record with until and count
    assert "5 older than the start deadline &lt;b&gt;" in text
    assert f'<a class="job-link" href="/jobs/{shown["runs"][1]["id"]}">' in text  # a record's job is linked


def test_a_schedule_without_runs_or_records_says_so(world):
    text = page(world.api.port, f"/schedules/{world.paused}", cookie(world.api.port))[2]
    assert 'id="no-runs"' in text and 'id="no-records"' in text and "sched-paused" in text
    assert '<dd class="detail-last-job">–</dd>' in text


def test_the_title_is_escaped_everywhere_it_shows(world):
    value = cookie(world.api.port)
    for path in ("/schedules", f"/schedules/{world.xss}", f"/jobs/{world.schedules.get(world.xss).last_job_id}"):
        text = page(world.api.port, path, value)[2]
        assert ESCAPED_TITLE in text, path
        assert "<script" not in text and "<img" not in text and XSS_TITLE not in text, path


def test_a_run_links_back_to_its_schedule_and_a_one_off_job_does_not(world):
    value = cookie(world.api.port)
    run = world.schedules.get(world.xss).last_job_id
    text = page(world.api.port, f"/jobs/{run}", value)[2]
    assert re.search(rf'<dd class="detail-schedule"><a id="schedule-link" href="/schedules/{world.xss}">'
                     rf'schedule {world.xss}</a> \(occurrence \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ\)</dd>', text)
    from jobman_cli.service import ScheduleRequest

    one_off, _ = world.jobs.schedule(ScheduleRequest(image="alpine:3.20", when="+1h", title="one-off"))
    text = page(world.api.port, f"/jobs/{one_off.id}", value)[2]
    assert '<dd class="detail-schedule">–</dd>' in text and "schedule-link" not in text
    script = fetch(world.api.port, "GET", "/static/job.js")[2]
    assert b'"/schedules/" + encodeURIComponent(j["schedule-id"])' in script  # the scripted page links too


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("path,expected", [
    ("/schedules/999", 404), ("/schedules/9999999999999999", 400), ("/schedules/1?x=1", 400),
    ("/schedules?page=0", 400), ("/schedules?page=x", 400), ("/schedules?page=1&page=2", 400),
    ("/schedules?status=paused", 400), ("/schedules?page=%ff", 400), ("/schedules?a&&b", 400),
], ids=["unknown", "beyond-2-53", "page-query", "page-0", "page-x", "page-twice", "unknown-param", "bad-utf8",
        "malformed"])
def test_bad_input_is_the_dashboards_one_line_4xx(world, path, expected):
    status, headers, text = page(world.api.port, path, cookie(world.api.port))
    assert status == expected, text
    assert text.startswith('{"error":') and "\n" not in text.strip() and "Traceback" not in text
    assert headers["content-security-policy"] == CSP


@pytest.mark.parametrize("path", ["/schedules/0", "/schedules/abc", "/schedules/01", "/schedules/1/pause",
                                  "/schedules/-1", "/schedules/99999999999999999"])
def test_a_malformed_schedule_path_stays_the_apis_401_then_404_as_for_jobs(world, path):
    """As ``/jobs/abc``: not a dashboard URL, so the API's order holds (credentials first)."""
    status, _, body = fetch(world.api.port, "GET", path)
    assert status == 401 and SECRET_TITLE.encode() not in body
    status, _, body = fetch(world.api.port, "GET", path, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and SECRET_TITLE.encode() not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_schedule_pages_change_nothing(world, method):
    for path in ("/schedules", f"/schedules/{world.plain}"):
        status, headers, _ = fetch(world.api.port, method, path, {"Content-Type": "application/json"}, b"{}")
        assert status == 405 and headers["allow"] == "GET, HEAD"
    assert world.schedules.get(world.plain).paused is False
