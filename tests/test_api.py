"""The REST API (DESIGN.md section 4) over real sockets on 127.0.0.1, backed by a real TinyDB file.

Each test starts :class:`ApiServer` in-process on port 0. Every server's error log is collected
and must be empty at the end of the test: no request here may produce a 5xx.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from jobman_cli.api import ApiServer, load_or_create_api_token
from jobman_cli.errors import ConfigError
from jobman_cli.service import JobService
from jobman_cli.stores import open_store
from conftest import claim_with_token

TOKEN = "test-api-token-0123456789"
API = "/jobMan/v1.1"
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


class Api:
    """A started server plus small helpers; ``log`` holds whatever the server logged."""

    def __init__(self, service: JobService, store_path: Path, **options: Any) -> None:
        self.tokens: dict[int, str] = {}
        self.service = service
        self.store_path = store_path
        self.log: list[str] = []
        self.server = ApiServer(service, api_token=TOKEN, log=self.log.append, **options).start()

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, API + path, body=data, headers=all_headers)
            response = conn.getresponse()
            payload = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        assert answer_headers["content-type"] == "application/json"
        assert int(answer_headers["content-length"]) == len(payload)
        return response.status, answer_headers, json.loads(payload)

    def schedule(self, **fields: Any) -> dict[str, Any]:
        body = {"title": "nightly", "date-time": "+10m", "docker-image": "alpine:3.20", "env-variables": {}}
        body.update(fields)
        status, _, job = self.call("POST", "/jobs/schedule", body)
        assert status == 201, job
        return job

    def launch(self, job_id: int) -> None:
        """What the daemon does first: claim the job (``launching``), after which callbacks are accepted."""
        self.tokens[job_id] = claim_with_token(self.service.store, job_id, NOW, f"token-{job_id}")

    def callback_token(self, job_id: int) -> str:
        """The claimed attempt's token in clear (the store has only its hash)."""
        return self.tokens[job_id]


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "jobs.json"


@pytest.fixture()
def service(store_path: Path) -> Iterator[JobService]:
    store = open_store(store_path)
    yield JobService(store)
    store.close()


@pytest.fixture()
def api(service: JobService, store_path: Path) -> Iterator[Api]:
    harness = Api(service, store_path)
    yield harness
    harness.server.stop()
    assert harness.log == []


def future_local(days: int = 1) -> str:
    """A time in the original service's ``YYYY-MM-DD HH:MM:SS`` form (with ``tz`` UTC)."""
    return (datetime.now(timezone.utc) + timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- schedule
def test_schedule_answers_201_with_the_job_in_the_original_field_names(api: Api) -> None:
    when = future_local()
    status, headers, job = api.call("POST", "/jobs/schedule", {
        "title": "Get the new job", "date-time": when, "docker-image": "alpine:3.20",
        "env-variables": {"GREETING": "hello world", "EMPTY": ""}, "tz": "UTC",
    })
    assert status == 201
    assert job["id"] == 1 and job["status"] == "scheduled" and job["title"] == "Get the new job"
    assert job["date-time"] == when.replace(" ", "T") + "Z"
    assert job["docker-image"] == "alpine:3.20"
    assert job["env-variables"] == {"GREETING": "hello world", "EMPTY": ""}
    assert "callback-token" not in job and "callback_token" not in json.dumps(job)
    assert headers["location"] == f"{API}/jobs/1/status"
    stored = api.service.get(1)
    assert stored.env_variables == {"GREETING": "hello world", "EMPTY": ""}


def test_schedule_accepts_the_original_env_string_form_and_options(api: Api) -> None:
    job = api.schedule(**{"env-variables": "A=1\nexport B=two words\n# comment\nC=x=y",
                          "timeout": "1h30m", "start-deadline": 600, "instance-type": "t3.small"})
    assert job["env-variables"] == {"A": "1", "B": "two words", "C": "x=y"}
    assert job["timeout"] == 5400 and job["start-deadline"] == 600 and job["instance-type"] == "t3.small"


def test_schedule_wakes_subscribers(api: Api) -> None:
    seen: list[tuple[int, str]] = []
    api.service.subscribe(lambda job: seen.append((job.id, job.status.value)))
    job = api.schedule()
    api.launch(job["id"])
    status, _, _ = api.call("PUT", f"/jobs/{job['id']}/callback", {"status": "running"})
    assert status == 200
    assert seen == [(job["id"], "scheduled"), (job["id"], "running")]


def test_idempotency_key_returns_the_same_job_and_refuses_different_fields(api: Api) -> None:
    body = {"title": "t", "date-time": "+1h", "docker-image": "alpine", "env-variables": {"A": "1"},
            "idempotency-key": "cron-2030-01-01"}
    first = api.call("POST", "/jobs/schedule", body)
    again = api.call("POST", "/jobs/schedule", body)
    assert first[0] == 201 and again[0] == 200
    assert again[2] == first[2]
    status, _, error = api.call("POST", "/jobs/schedule", {**body, "docker-image": "busybox"})
    assert status == 409 and "cron-2030-01-01" in error["error"]
    assert [j.id for j in api.service.list()] == [first[2]["id"]]


def test_schedule_names_unknown_and_bad_fields(api: Api) -> None:
    status, _, error = api.call("POST", "/jobs/schedule", {"docker-image": "alpine", "date-time": "now",
                                                           "cmd": "rm -rf /", "Title": "x"})
    assert status == 400 and "'Title', 'cmd'" in error["error"]
    status, _, error = api.call("POST", "/jobs/schedule", {"docker-image": "alpine", "date-time": "now",
                                                           "command": "rm -rf /"})
    assert status == 400 and error["error"] == "command: must be an array of strings (got str)"
    status, _, error = api.call("POST", "/jobs/schedule", {"docker-image": "image ABC", "date-time": "now"})
    assert status == 400 and error["error"].startswith("docker-image:")
    status, _, error = api.call("POST", "/jobs/schedule", {"docker-image": "alpine"})
    assert status == 400 and error["error"].startswith("date-time:")
    assert api.service.list() == []


# --------------------------------------------------------------------------- list and status
def test_list_newest_first_and_filter_by_repeatable_status(api: Api) -> None:
    ids = [api.schedule(title=f"job {n}")["id"] for n in range(3)]
    api.launch(ids[1])
    status, _, body = api.call("GET", "/jobs")
    assert status == 200 and [j["id"] for j in body["jobs"]] == ids[::-1]
    assert [j["id"] for j in api.call("GET", "/jobs?status=launching")[2]["jobs"]] == [ids[1]]
    assert [j["id"] for j in api.call("GET", "/jobs?status=scheduled")[2]["jobs"]] == [ids[2], ids[0]]
    both = api.call("GET", "/jobs?status=launching&status=scheduled")[2]["jobs"]
    assert [j["id"] for j in both] == ids[::-1]
    assert api.call("GET", "/jobs?status=finished")[2] == {"jobs": []}
    status, _, error = api.call("GET", "/jobs?status=done")
    assert status == 400 and "status" in error["error"] and "done" in error["error"]
    assert api.call("GET", "/jobs/")[0] == 200  # one trailing slash is tolerated


def test_status_has_id_and_status_at_top_level(api: Api) -> None:
    job = api.schedule()
    status, _, body = api.call("GET", f"/jobs/{job['id']}/status")
    assert status == 200 and body["id"] == job["id"] and body["status"] == "scheduled"
    assert body == job
    status, _, error = api.call("GET", "/jobs/42/status")
    assert status == 404 and error == {"error": "job 42 not found"}


# --------------------------------------------------------------------------- callback
def test_callback_flow_running_then_finished_then_repeat_is_a_no_op(api: Api) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    status, _, body = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "running"})
    assert status == 200 and body["status"] == "running"
    before = api.store_path.read_bytes()
    status, _, again = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "running"})
    assert status == 200 and again == body
    assert api.store_path.read_bytes() == before  # running on running changed nothing
    status, _, body = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "finished", "exit-code": 0})
    assert status == 200 and body["status"] == "finished" and body["exit-code"] == 0 and body["finished-at"]
    before = api.store_path.read_bytes()
    status, _, again = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "finished"})
    assert status == 200 and again == body
    assert api.store_path.read_bytes() == before
    status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "failed", "exit-code": 1})
    assert status == 409 and "finished" in error["error"]
    status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "running"})
    assert status == 409
    assert api.store_path.read_bytes() == before


def test_failed_callback_records_the_exit_code(api: Api) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    status, _, body = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "failed", "exit-code": 3})
    assert status == 200
    assert body["status"] == "failed" and body["exit-code"] == 3 and body["reason"] == "exit code 3"


def test_callback_on_a_scheduled_job_is_409_and_changes_nothing(api: Api) -> None:
    job_id = api.schedule()["id"]
    before = api.store_path.read_bytes()
    for report in ({"status": "running"}, {"status": "finished"}, {"status": "failed", "exit-code": 2}):
        status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", report)
        assert status == 409 and "scheduled" in error["error"]
    assert api.store_path.read_bytes() == before
    status, _, error = api.call("PUT", "/jobs/77/callback", {"status": "running"})
    assert status == 404


@pytest.mark.parametrize("exit_code", ["3", 3.0, True, -1, 256, 10**30, [3], {"code": 3}])
def test_callback_exit_code_must_be_a_json_integer_0_to_255(api: Api, exit_code: Any) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    before = api.store_path.read_bytes()
    status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "failed", "exit-code": exit_code})
    assert status == 400 and error["error"].startswith("exit-code:")
    assert api.store_path.read_bytes() == before


def test_callback_refuses_unknown_fields_and_missing_status(api: Api) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "running", "instance": "i-1"})
    assert status == 400 and "'instance'" in error["error"]
    status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", {"exit-code": 0})
    assert status == 400 and error["error"].startswith("status:")


# --------------------------------------------------------------------------- authentication
def test_every_endpoint_needs_the_token(api: Api) -> None:
    job_id = api.schedule()["id"]
    requests = [("GET", "/jobs", None), ("GET", f"/jobs/{job_id}/status", None),
                ("POST", "/jobs/schedule", {"docker-image": "alpine", "date-time": "now"}),
                ("PUT", f"/jobs/{job_id}/callback", {"status": "running"})]
    for method, path, body in requests:
        for token in (None, "wrong", ""):
            status, headers, error = api.call(method, path, body, token=token)
            assert status == 401, (method, path, token)
            assert headers["www-authenticate"].startswith("Bearer")
            assert "error" in error
    assert len(api.service.list()) == 1


def test_auth_comes_before_anything_is_revealed(api: Api) -> None:
    for path in ("/jobs/999/status", "/jobs/999/callback", "/nowhere", "/jobs/abc/status"):
        assert api.call("GET", path, token="wrong")[0] == 401
    assert api.call("PUT", "/jobs/999/callback", {"status": "running"}, token="wrong")[0] == 401
    assert api.call("DELETE", "/jobs", token=None)[0] == 401
    assert api.call("GET", "/nowhere")[0] == 404
    assert api.call("DELETE", "/jobs")[0] == 405


def test_a_job_token_opens_only_that_jobs_callback(api: Api) -> None:
    first, second = api.schedule()["id"], api.schedule()["id"]
    api.launch(first)
    api.launch(second)
    own = api.callback_token(first)
    status, _, body = api.call("PUT", f"/jobs/{first}/callback", {"status": "running"}, token=own)
    assert status == 200 and body["status"] == "running"
    assert api.call("PUT", f"/jobs/{second}/callback", {"status": "running"}, token=own)[0] == 401
    assert api.call("GET", "/jobs", token=own)[0] == 401
    assert api.call("GET", f"/jobs/{first}/status", token=own)[0] == 401
    assert api.call("POST", "/jobs/schedule", {"docker-image": "alpine", "date-time": "now"}, token=own)[0] == 401
    assert api.service.get(second).status.value == "launching"
    assert len(api.service.list()) == 2
    # the API token may also report for any job (an operator acting for a lost instance)
    assert api.call("PUT", f"/jobs/{second}/callback", {"status": "failed", "exit-code": 137})[0] == 200


def test_a_token_of_an_earlier_attempt_cannot_report(api: Api) -> None:
    """Tokens are per attempt: after a retry, the first attempt's stray instance is refused."""
    job_id = api.schedule()["id"]
    api.launch(job_id)
    first = api.callback_token(job_id)
    api.service.store.update(job_id, lambda j: j.retry_later("Throttling", NOW, NOW))
    assert api.call("PUT", f"/jobs/{job_id}/callback", {"status": "running"}, token=first)[0] == 401
    api.launch(job_id)
    second = api.callback_token(job_id)
    assert api.call("PUT", f"/jobs/{job_id}/callback", {"status": "finished"}, token=first)[0] == 401
    status, _, body = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "finished"}, token=second)
    assert status == 200 and body["status"] == "finished" and body["attempts"] == 2
    assert first not in api.store_path.read_text() and second not in api.store_path.read_text()


@pytest.mark.parametrize("report, code, reason_start", [
    ({"status": "failed", "exit-code": 124, "reason-code": "timed-out"}, "timed-out", "timed out"),
    ({"status": "failed", "exit-code": 124}, "exited", "exit code 124"),
    ({"status": "failed", "reason-code": "image-pull-failed", "reason": "manifest for x not found"},
     "image-pull-failed", "the image could not be pulled: manifest for x not found"),
    ({"status": "failed", "reason-code": "docker-unavailable"}, "docker-unavailable", "Docker could not"),
    ({"status": "finished"}, "exited", None),
])
def test_callbacks_carry_reason_codes_to_status_and_list(api: Api, report: dict, code: str,
                                                        reason_start: str | None) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    status, _, body = api.call("PUT", f"/jobs/{job_id}/callback", report, token=api.callback_token(job_id))
    assert status == 200 and body["reason-code"] == code
    assert (body["reason"] or "").startswith(reason_start or "") and (reason_start is not None or body["reason"] is None)
    assert api.call("GET", f"/jobs/{job_id}/status")[2]["reason-code"] == code
    assert [j["reason-code"] for j in api.call("GET", "/jobs")[2]["jobs"]] == [code]


@pytest.mark.parametrize("report, field", [
    ({"status": "failed", "reason-code": "launch-failed"}, "reason-code"),  # the daemon's code, not the instance's
    ({"status": "failed", "reason-code": "nonsense"}, "reason-code"),
    ({"status": "failed", "reason-code": 3}, "reason-code"),
    ({"status": "running", "reason-code": "timed-out"}, "reason-code"),
    ({"status": "failed", "reason": ["not", "text"]}, "reason"),
])
def test_bad_reason_codes_are_400_and_change_nothing(api: Api, report: dict, field: str) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    before = api.store_path.read_bytes()
    status, _, error = api.call("PUT", f"/jobs/{job_id}/callback", report, token=api.callback_token(job_id))
    assert status == 400 and field in error["error"]
    assert api.store_path.read_bytes() == before


# --------------------------------------------------------------------------- HTTP details
def test_body_framing_and_content_type_errors(api: Api) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    path = f"/jobs/{job_id}/callback"
    status, _, error = api.call("PUT", path, raw=b'{"status":"running"}', headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in error["error"]
    status, _, _ = api.call("PUT", path, raw=b'{"status":"running"}',
                            headers={"Content-Type": "application/json; charset=UTF-8"})
    assert status == 200
    status, _, error = api.call("PUT", path, raw=b"x" * (64 * 1024 + 1))
    assert status == 413 and "64 KiB" in error["error"]
    status, _, error = api.call("PUT", path, raw=b"[1, 2]")
    assert status == 400 and error["error"] == "body must be a JSON object (got an array)"


def test_keep_alive_serves_several_requests_on_one_connection(api: Api) -> None:
    api.schedule()
    conn = http.client.HTTPConnection("127.0.0.1", api.server.port, timeout=30)
    try:
        for _ in range(5):
            conn.request("GET", API + "/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            assert response.status == 200 and len(json.loads(response.read())["jobs"]) == 1
            assert response.getheader("Connection") is None
        sock = conn.sock
        conn.request("GET", API + "/jobs/1/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().read() and conn.sock is sock  # still the same connection
    finally:
        conn.close()


def test_expect_100_continue_only_after_every_check_passed(api: Api) -> None:
    job_id = api.schedule()["id"]
    api.launch(job_id)
    body = b'{"status": "running"}'
    head = (f"PUT {API}/jobs/{job_id}/callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n").encode()
    with socket.create_connection(("127.0.0.1", api.server.port), timeout=30) as sock:
        sock.sendall(head + b"Authorization: Bearer wrong\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 401 ")
    with socket.create_connection(("127.0.0.1", api.server.port), timeout=30) as sock:
        sock.sendall(head + f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_store_errors_answer_503_and_are_logged(api: Api) -> None:
    api.schedule()
    api.store_path.write_text("this is not a jobman store")
    status, _, error = api.call("GET", "/jobs")
    assert status == 503 and str(api.store_path) in error["error"]
    assert len(api.log) == 1 and "503" in api.log[0]
    api.log.clear()


# --------------------------------------------------------------------------- the original service's curl commands
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")


def curl(*args: str) -> tuple[int, Any]:
    """Run the real curl with the API token; returns (status, parsed JSON body)."""
    result = subprocess.run(["curl", "-sS", "-i", "--max-time", "30", "-H", f"Authorization: Bearer {TOKEN}", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    while head.startswith("HTTP/1.1 100"):
        head, _, body = body.partition("\n\n")
    return int(head.split()[1]), json.loads(body)


@needs_curl
def test_the_original_readme_curl_commands(api: Api) -> None:
    base = f"http://127.0.0.1:{api.server.port}{API}"
    # The README's POST, verbatim: its fields are not valid any more, and the answer says why.
    status, error = curl("-H", "Content-Type: application/json", "-X", "POST", "-d",
                         '{"title":"Get the new job","date-time":"2016-09-06 17:25:10","docker-image": "image ABC",'
                         '"env-variables":"ENV variables"}', f"{base}/jobs/schedule")
    assert status == 400 and error["error"].startswith("docker-image:")
    # The same command with valid values.
    status, job = curl("-H", "Content-Type: application/json", "-X", "POST", "-d",
                       f'{{"title":"Get the new job","date-time":"{future_local()}","docker-image": "alpine:3.20",'
                       '"env-variables":"GREETING=hello"}', f"{base}/jobs/schedule")
    assert status == 201 and job["env-variables"] == {"GREETING": "hello"}
    job_id = job["id"]
    status, listing = curl("-XGET", f"{base}/jobs")
    assert status == 200 and [j["id"] for j in listing["jobs"]] == [job_id]
    status, shown = curl("-XGET", f"{base}/jobs/{job_id}/status")
    assert status == 200 and shown["status"] == "scheduled"
    api.launch(job_id)
    # The README's callback body is not JSON (finished is unquoted): a 400 that says where.
    before = api.store_path.read_bytes()
    status, error = curl("-H", "Content-Type: application/json", "-X", "PUT", "-d", '{"status":finished}',
                         f"{base}/jobs/{job_id}/callback")
    assert status == 400
    assert error["error"] == "body is not valid JSON: Expecting value at line 1 column 11"
    assert api.store_path.read_bytes() == before
    status, done = curl("-H", "Content-Type: application/json", "-X", "PUT", "-d", '{"status":"finished"}',
                        f"{base}/jobs/{job_id}/callback")
    assert status == 200 and done["status"] == "finished"


# --------------------------------------------------------------------------- concurrency and slow clients
@pytest.fixture()
def patient_api(service: JobService, store_path: Path) -> Iterator[Api]:
    """The server with a 60 s request deadline: on a loaded box, opening 100 connections (and
    starting their threads) may take longer than the default 5 s an idle connection is kept."""
    harness = Api(service, store_path, timeout=60.0)
    yield harness
    harness.server.stop()
    assert harness.log == []


def test_100_concurrent_connections_are_all_answered(patient_api: Api) -> None:
    api = patient_api
    api.schedule()
    count = 100
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def client(n: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", api.server.port), timeout=60)
            with sock:
                barrier.wait(timeout=60)  # all 100 connections are open at once before any request
                sock.sendall(f"GET {API}/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                             "Connection: close\r\n\r\n".encode())
                results[n] = read_response(sock)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[n] = exc

    threads = [threading.Thread(target=client, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [r for r in results if not (isinstance(r, bytes) and r.startswith(b"HTTP/1.1 200 "))]
    assert failures == []


def test_concurrent_schedules_over_http_get_distinct_ids(api: Api) -> None:
    count = 40
    answers: list[Any] = [None] * count

    def client(n: int) -> None:
        try:
            answers[n] = api.call("POST", "/jobs/schedule", {"docker-image": "alpine", "date-time": "+1h",
                                                             "title": f"job {n}"})
        except Exception as exc:  # noqa: BLE001
            answers[n] = exc

    threads = [threading.Thread(target=client, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(a, tuple) and a[0] == 201 for a in answers), answers
    assert sorted(a[2]["id"] for a in answers) == list(range(1, count + 1))
    assert len(api.service.list()) == count


def test_a_slow_client_does_not_block_others(api: Api) -> None:
    idle = socket.create_connection(("127.0.0.1", api.server.port), timeout=30)
    slow = socket.create_connection(("127.0.0.1", api.server.port), timeout=30)
    with idle, slow:
        slow.sendall(f"GET {API}/jobs HTTP/1.1\r\nHost: x\r\n".encode())  # half the headers, then nothing
        assert api.call("GET", "/jobs")[0] == 200  # answered while both are still open
        # the slow client is still being served: finishing its request gets an answer
        slow.sendall(f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
        assert read_response(slow).startswith(b"HTTP/1.1 200 ")


def test_a_request_that_never_completes_ends_with_408(service: JobService, store_path: Path) -> None:
    harness = Api(service, store_path, timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", harness.server.port), timeout=30) as sock:
            sock.sendall(f"GET {API}/jobs HTTP/1.1\r\nHost: x\r\n".encode())
            assert read_response(sock).startswith(b"HTTP/1.1 408 ")
        # the deadline covers the whole request, not each recv: a byte at a time does not extend it
        with socket.create_connection(("127.0.0.1", harness.server.port), timeout=30) as sock:
            request = f"GET {API}/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
            sent = 0
            try:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    sent += 1
                    if select_readable(sock, 0.1):
                        break
            except OSError:
                pass
            assert sent < len(request)
            assert read_response(sock).startswith(b"HTTP/1.1 408 ")
        assert harness.call("GET", "/jobs")[0] == 200
    finally:
        harness.server.stop()
    assert harness.log == []


def select_readable(sock: socket.socket, seconds: float) -> bool:
    import select

    return bool(select.select([sock], [], [], seconds)[0])


def test_stop_returns_and_closes_idle_connections(service: JobService, store_path: Path) -> None:
    harness = Api(service, store_path)
    port = harness.server.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=30)
    half = socket.create_connection(("127.0.0.1", port), timeout=30)
    half.sendall(f"PUT {API}/jobs/1/callback HTTP/1.1\r\nContent-Length: 100\r\n".encode())
    assert harness.call("GET", "/jobs")[0] == 200
    stopper = threading.Thread(target=harness.server.stop)
    stopper.start()
    stopper.join(timeout=20)
    assert not stopper.is_alive()
    with idle, half:
        assert idle.recv(100) == b""  # closed by the server, no answer to a request never made
        assert half.recv(100) == b""  # a request cut off by the shutdown gets no answer
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    harness.server.stop()  # idempotent
    assert harness.log == []


def test_bind_failure_is_a_config_error(api: Api, service: JobService) -> None:
    with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
        ApiServer(service, port=api.server.port, api_token=TOKEN)


# --------------------------------------------------------------------------- the token file
def test_token_file_is_created_0600_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBMAN_API_TOKEN", raising=False)
    home = tmp_path / "jobman-home"
    token, path = load_or_create_api_token(home)
    assert path == home / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert len(token) >= 43 and path.read_text().strip() == token
    assert load_or_create_api_token(home) == (token, path)
    assert [p.name for p in home.iterdir()] == ["api-token"]  # no temp files left behind


def test_token_file_readable_by_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBMAN_API_TOKEN", raising=False)
    token, path = load_or_create_api_token(tmp_path)
    assert path is not None
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="group or others") as info:
        load_or_create_api_token(tmp_path)
    assert "\n" not in str(info.value) and "chmod 600" in str(info.value)
    os.chmod(path, 0o600)
    assert load_or_create_api_token(tmp_path) == (token, path)


def test_empty_token_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBMAN_API_TOKEN", raising=False)
    fd = os.open(tmp_path / "api-token", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    with pytest.raises(ConfigError, match="empty"):
        load_or_create_api_token(tmp_path)


def test_environment_token_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long_enough = "from-the-environment-0123456789abcdef"
    monkeypatch.setenv("JOBMAN_API_TOKEN", long_enough)
    assert load_or_create_api_token(tmp_path) == (long_enough, None)
    assert not (tmp_path / "api-token").exists()
    monkeypatch.setenv("JOBMAN_API_TOKEN", "  ")
    with pytest.raises(ConfigError, match="empty"):
        load_or_create_api_token(tmp_path)
    monkeypatch.setenv("JOBMAN_API_TOKEN", "has space")
    with pytest.raises(ConfigError):
        load_or_create_api_token(tmp_path)


@pytest.mark.parametrize("token", ["x", "a" * 31])
def test_short_api_tokens_are_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("JOBMAN_API_TOKEN", token)
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_or_create_api_token(tmp_path)
    monkeypatch.delenv("JOBMAN_API_TOKEN")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "api-token").write_text(token + "\n")
    (home / "api-token").chmod(0o600)
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_or_create_api_token(home)
    monkeypatch.setenv("JOBMAN_API_TOKEN", "a" * 32)
    assert load_or_create_api_token(tmp_path)[0] == "a" * 32


def test_concurrent_first_starts_agree_on_one_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBMAN_API_TOKEN", raising=False)
    home = tmp_path / "shared"
    code = ("import sys; from pathlib import Path; from jobman_cli.auth import load_or_create_api_token; "
            "print(load_or_create_api_token(Path(sys.argv[1]))[0])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    tokens = {out.strip() for out, _ in outputs}
    assert tokens == {(home / "api-token").read_text().strip()}


def test_the_file_token_opens_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: JobService) -> None:
    monkeypatch.delenv("JOBMAN_API_TOKEN", raising=False)
    token, _ = load_or_create_api_token(tmp_path / "home2")
    server = ApiServer(service, api_token=token).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", API + "/jobs", headers={"Authorization": f"bearer {token}"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.stop()


def _strings(value: Any) -> set[str]:
    """Every string in a JSON-like value, keys included: all a reader of a stored record could try."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_strings(k) | _strings(v) for k, v in value.items())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def test_a_reader_of_the_store_file_cannot_forge_a_callback(api: Api) -> None:
    """Everything in the store file (the hash of the attempt's token included) tried as a Bearer
    token, as is and as hex of the hash: 401 every time; the instance's own token still works."""
    job_id = api.schedule(**{"env-variables": {"K": "v"}})["id"]
    api.launch(job_id)
    document = json.loads(api.store_path.read_text())
    candidates = _strings(document) - {""}
    record = document["jobs"][str(job_id)]
    assert record["callback-hashes"] and set(record["callback-hashes"]) <= candidates  # the hash is there
    for candidate in sorted(candidates):
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in candidate):
            continue  # not sendable in a header
        status = api.call("PUT", f"/jobs/{job_id}/callback", {"status": "finished"}, token=candidate)[0]
        assert status == 401, candidate
    assert api.service.get(job_id).status.value == "launching"
    assert api.call("PUT", f"/jobs/{job_id}/callback", {"status": "finished"},
                    token=api.callback_token(job_id))[0] == 200
