"""The schedules' REST routes (``/jobMan/v1.1/schedules``) over real sockets on 127.0.0.1, backed by a
real TinyDB file: each verb, the token, bad input (400 naming the field, store untouched), unknown
ids (404), wrong methods (405 with ``Allow``). No request here may produce a 5xx: the server's error
log must stay empty.
"""

from __future__ import annotations

import http.client
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.clock import FixedClock
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

TOKEN = "test-api-token-0123456789"
API = "/jobMan/v1.1"
NOW = datetime(2027, 3, 27, 12, 0, tzinfo=timezone.utc)
BODY = {"cron": "30 2 * * *", "tz": "Europe/Berlin", "docker-image": "alpine:3.20", "title": "nightly"}


class Api:
    def __init__(self, service: JobService, store_path: Path) -> None:
        self.service = service
        self.store_path = store_path
        self.log: list[str] = []
        self.server = ApiServer(service, api_token=TOKEN, log=self.log.append).start()

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN,
             raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = json.dumps(body).encode() if body is not None else raw
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, API + path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        return response.status, answer_headers, json.loads(payload)

    def create(self, **fields: Any) -> dict[str, Any]:
        status, _, schedule = self.call("POST", "/schedules", {**BODY, **fields})
        assert status == 201, schedule
        return schedule


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    store_path = tmp_path / "jobs.json"
    store = open_store(store_path)
    service = JobService(store, FixedClock(NOW))
    server = Api(service, store_path)
    yield server
    server.server.stop()
    store.close()
    assert server.log == []  # never a 5xx


def test_create_show_list_answer_the_stored_schedule(api):
    status, headers, created = api.call("POST", "/schedules", BODY)
    assert status == 201
    assert headers["location"] == f"{API}/schedules/{created['id']}"
    assert created["cron"] == "30 2 * * *" and created["tz"] == "Europe/Berlin" and created["overlap"] == "forbid"
    assert created["template"]["docker-image"] == "alpine:3.20"
    assert created["next-at"] == "2027-03-28T01:00:00Z"  # 02:30 does not exist that night: 03:00 CEST
    assert created["paused"] is False and created["records"] == []
    status, _, shown = api.call("GET", f"/schedules/{created['id']}")
    assert status == 200 and shown == {**created, "runs": []}
    second = api.create(every="15m", cron=None, tz="UTC", overlap="allow")
    status, _, listing = api.call("GET", "/schedules")
    assert status == 200
    assert all("records" not in s for s in listing["schedules"])  # show has them (review finding 8)
    assert [s["id"] for s in listing["schedules"]] == [created["id"], second["id"]]
    assert listing["schedules"][1]["every"] == 900 and listing["schedules"][1]["overlap"] == "allow"


def test_pause_resume_delete(api):
    schedule = api.create()
    sid = schedule["id"]
    status, _, paused = api.call("POST", f"/schedules/{sid}/pause")
    assert status == 200 and paused["paused"] is True
    assert api.service.store.get_schedule(sid).paused
    status, _, resumed = api.call("POST", f"/schedules/{sid}/resume", {})  # an empty object is fine
    assert status == 200 and resumed["paused"] is False
    assert resumed["next-at"] == "2027-03-28T01:00:00Z"
    status, _, answer = api.call("POST", f"/schedules/{sid}/delete")
    assert status == 200 and answer == {"deleted": sid, "runs-still-to-launch": []}
    status, _, missing = api.call("GET", f"/schedules/{sid}")
    assert status == 404 and str(sid) in missing["error"]
    status, _, _ = api.call("POST", f"/schedules/{sid}/delete")
    assert status == 404


def test_preview_lists_occurrences_in_utc_and_local_time_and_stores_nothing(api):
    status, _, answer = api.call("GET", "/schedules/preview?cron=30+2+*+*+*&tz=Europe/Berlin&n=3"
                                        "&from=2027-10-29T12:00:00Z")
    assert status == 200, answer
    assert answer["tz"] == "Europe/Berlin" and answer["cron"] == "30 2 * * *"
    assert [o["utc"] for o in answer["occurrences"]] == ["2027-10-30T00:30:00Z", "2027-10-31T00:30:00Z",
                                                          "2027-11-01T01:30:00Z"]
    assert answer["occurrences"][1]["local"].startswith("2027-10-31 02:30:00 CEST")  # the first 02:30 only
    assert answer["from"] == "2027-10-29T12:00:00Z"
    assert answer["occurrences"][0]["note"] is None and "repeated" in answer["occurrences"][1]["note"]
    status, _, every = api.call("GET", "/schedules/preview?every=1h&tz=UTC&n=2&from=2027-01-01T00:00:00Z")
    assert status == 200 and [o["utc"] for o in every["occurrences"]] == ["2027-01-01T01:00:00Z",
                                                                           "2027-01-01T02:00:00Z"]
    assert api.service.store.list_schedules() == []


@pytest.mark.parametrize("body, field", [
    ({**BODY, "cron": "61 * * * *"}, "cron"),
    ({**BODY, "cron": "not cron"}, "cron"),
    ({**BODY, "tz": "Mars/Olympus"}, "tz"),
    ({**BODY, "cron": None, "every": "30s"}, "every"),
    ({**BODY, "overlap": "sometimes"}, "overlap"),
    ({**BODY, "docker-image": ""}, "docker-image"),
    ({**BODY, "timeout": "forever"}, "timeout"),
    ({**BODY, "date-time": "+1h"}, "date-time"),
    ({**BODY, "idempotency-key": "k"}, "idempotency-key"),
    ({**BODY, "colour": "red"}, "colour"),
    ({"docker-image": "alpine:3.20"}, "cron"),
])
def test_bad_input_is_400_naming_the_field_and_stores_nothing(api, body, field):
    before = api.store_path.read_bytes() if api.store_path.exists() else b""
    status, _, answer = api.call("POST", "/schedules", {k: v for k, v in body.items() if v is not None})
    assert status == 400, answer
    assert field in answer["error"]
    assert (api.store_path.read_bytes() if api.store_path.exists() else b"") == before


@pytest.mark.parametrize("query, field", [
    ("cron=99+*+*+*+*", "cron"),
    ("cron=*+*+*+*+*&tz=Nowhere/Land", "tz"),
    ("cron=*+*+*+*+*&n=0", "n"),
    ("cron=*+*+*+*+*&n=abc", "n"),
    ("cron=*+*+*+*+*&n=100000", "n"),
    ("every=10s", "every"),
    ("", "cron"),
    ("cron=*+*+*+*+*&from=yesterday-ish", "from"),
    ("cron=*+*+*+*+*&cron=0+*+*+*+*", "cron"),
    ("cron=*+*+*+*+*&colour=red", "colour"),
])
def test_preview_bad_query_is_400_naming_the_field(api, query, field):
    status, _, answer = api.call("GET", f"/schedules/preview?{query}")
    assert status == 400, answer
    assert field in answer["error"]


def test_preview_near_the_end_of_the_calendar_is_an_empty_list_not_a_500(api):
    for query in ("cron=0+0+1+1+*", "every=366d"):
        status, _, answer = api.call("GET", f"/schedules/preview?{query}&from=9999-06-01T00:00:00Z")
        assert status == 200, answer
        assert answer["occurrences"] == []


def test_bad_bodies_are_400(api):
    status, _, answer = api.call("POST", "/schedules", raw=b"[1]")
    assert status == 400 and "JSON object" in answer["error"]
    status, _, answer = api.call("POST", "/schedules", raw=b'{"cron": "* * * * *", "cron": "0 * * * *"}')
    assert status == 400 and "duplicate" in answer["error"]
    sid = api.create()["id"]
    status, _, answer = api.call("POST", f"/schedules/{sid}/pause", {"now": True})
    assert status == 400 and "now" in answer["error"]
    status, _, answer = api.call("GET", "/schedules?x=1")
    assert status == 400
    status, _, answer = api.call("GET", f"/schedules/{sid}", raw=b"{}")
    assert status == 400 and "body" in answer["error"]
    assert not api.service.store.get_schedule(sid).paused


@pytest.mark.parametrize("path", ["/schedules/999", "/schedules/999/pause", "/schedules/999/resume",
                                  "/schedules/999/delete"])
def test_unknown_id_is_404(api, path):
    status, _, answer = api.call("GET" if path.count("/") == 2 else "POST", path)
    assert status == 404 and "999" in answer["error"]


@pytest.mark.parametrize("path", ["/schedules/0", "/schedules/abc", "/schedules/1/stop", "/schedules/1/pause/x",
                                  "/schedules/%31", "/schedulesx", "/schedules/1/../2"])
def test_unknown_paths_are_404(api, path):
    api.create()
    status, _, _ = api.call("GET", path)
    assert status == 404


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/schedules", "GET, POST"), ("DELETE", "/schedules", "GET, POST"),
    ("POST", "/schedules/1", "GET"), ("DELETE", "/schedules/1", "GET"),
    ("GET", "/schedules/1/pause", "POST"), ("GET", "/schedules/1/delete", "POST"),
    ("POST", "/schedules/preview", "GET"),
])
def test_wrong_method_is_405_with_allow(api, method, path, allow):
    api.create()
    status, headers, answer = api.call(method, path)
    assert status == 405, answer
    assert headers["allow"] == allow


@pytest.mark.parametrize("method, path", [("GET", "/schedules"), ("POST", "/schedules"), ("GET", "/schedules/1"),
                                          ("POST", "/schedules/1/pause"), ("POST", "/schedules/1/delete"),
                                          ("GET", "/schedules/preview?cron=*+*+*+*+*"), ("GET", "/schedules/999")])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_every_route_needs_the_api_token(api, method, path, token):
    api.create()
    status, headers, _ = api.call(method, path, BODY if method == "POST" and path == "/schedules" else None,
                                  token=token)
    assert status == 401 and "bearer" in headers["www-authenticate"].lower()
    assert len(api.service.store.list_schedules()) == 1
    assert not api.service.store.get_schedule(1).paused


def test_jobs_can_be_filtered_by_schedule(api):
    from jobman_cli.service import ScheduleRequest

    def run(schedule_id: int, minutes: int) -> int:
        at = NOW + timedelta(minutes=minutes)
        job, _ = api.service.schedule(ScheduleRequest(image="alpine:3.20", when=None, schedule_id=schedule_id,
                                                      occurrence=at, idempotency_key=f"schedule-{schedule_id}-{minutes}"))
        return job.id

    first, other, second = run(1, 10), run(2, 10), run(1, 20)
    api.service.schedule(ScheduleRequest(image="alpine:3.20", when="+1h"))  # no schedule
    status, _, answer = api.call("GET", "/jobs?schedule=1")
    assert status == 200 and [j["id"] for j in answer["jobs"]] == [second, first]
    assert all(j["schedule-id"] == 1 for j in answer["jobs"])
    status, _, answer = api.call("GET", "/jobs?schedule=1&limit=1")
    assert status == 200 and [j["id"] for j in answer["jobs"]] == [second]  # the limit counts its runs
    status, _, answer = api.call("GET", "/jobs?schedule=2&status=scheduled")
    assert [j["id"] for j in answer["jobs"]] == [other]
    for bad in ("abc", "0", "", "1&schedule=2"):
        status, _, answer = api.call("GET", f"/jobs?schedule={bad}")
        assert status == 400 and "schedule" in answer["error"], (bad, answer)


def test_show_lists_the_latest_runs_from_the_jobs_not_from_records(api):
    """A schedule stores no record per run it created: GET /schedules/<id> reads its latest runs from
    the jobs (schedule-id), newest first, at most 20; other jobs and other schedules' runs are not
    listed (review finding 2)."""
    from jobman_cli.schedules.service import RECENT_RUNS, template_to_request

    mine, other = api.create(), api.create(every="15m", cron=None, tz="UTC")
    api.service.schedule(template_to_request({"docker-image": "alpine:3.20"}, when="+1h"))  # a one-off job
    start = NOW + timedelta(days=1)
    for n in range(RECENT_RUNS + 3):
        for sid in (mine["id"], other["id"]):
            at = start + timedelta(minutes=15 * n)
            api.service.schedule(template_to_request(
                {"docker-image": "alpine:3.20"}, when=None, schedule_id=sid, occurrence=at,
                idempotency_key=f"schedule-{sid}-{at.isoformat()}"))
    status, _, shown = api.call("GET", f"/schedules/{mine['id']}")
    assert status == 200 and shown["records"] == []
    runs = shown["runs"]
    assert len(runs) == RECENT_RUNS
    expected = [start + timedelta(minutes=15 * n) for n in reversed(range(3, RECENT_RUNS + 3))]
    assert [r["occurrence"] for r in runs] == [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in expected]
    assert all(api.service.get(r["id"]).schedule_id == mine["id"] and r["status"] == "scheduled" for r in runs)


def test_preview_from_accepts_a_bare_date_and_dates_before_1970_like_the_cli(api):
    """``from`` takes what ``preview --from`` takes: a bare date is local midnight in ``tz``, and a
    date before 1970 is a question, not "in the past" (review finding 8)."""
    status, _, answer = api.call("GET", "/schedules/preview?cron=30+2+*+*+*&tz=Europe/Berlin&n=1&from=2027-03-28")
    assert status == 200, answer
    assert answer["from"] == "2027-03-27T23:00:00Z" and answer["occurrences"][0]["utc"] == "2027-03-28T01:00:00Z"
    status, _, old = api.call("GET", "/schedules/preview?cron=0+12+*+*+*&tz=UTC&n=1&from=1950-06-01")
    assert status == 200, old
    assert old["occurrences"][0]["utc"] == "1950-06-01T12:00:00Z"
