"""The routes remote use added to the API: ``POST jobs/<id>/cancel`` and ``GET jobs/<id>/logs``.

In process, over real HTTP on 127.0.0.1 (the harness of ``test_api``). What a real daemon does
with them end to end (terminating in moto, reading moto's CloudWatch Logs, the CLI on top) is
``test_remote_contract``; here: the answers' shapes, bad input as 400 with the store untouched, and
the token rule (the API token only: a job's callback token opens neither route).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_api import Api, api, service, store_path  # noqa: F401  (fixtures)


def test_cancel_answers_the_cancelled_job_and_is_idempotent(api: Api) -> None:  # noqa: F811
    job = api.schedule()
    status, _, body = api.call("POST", f"/jobs/{job['id']}/cancel")
    assert status == 200 and body["status"] == "cancelled" and body["id"] == job["id"]
    status, _, again = api.call("POST", f"/jobs/{job['id']}/cancel", {})
    assert status == 200 and again == body
    assert api.call("POST", "/jobs/999/cancel")[0] == 404
    assert api.call("GET", f"/jobs/{job['id']}/cancel")[0] == 405


def test_bad_cancel_and_logs_requests_are_400_and_change_nothing(api: Api, store_path: Path) -> None:  # noqa: F811
    job = api.schedule()
    before = store_path.read_bytes()
    for method, path, body in (
        ("POST", f"/jobs/{job['id']}/cancel", {"force": True}),
        ("POST", f"/jobs/{job['id']}/cancel?now=1", None),
        ("GET", f"/jobs/{job['id']}/logs?attempt=x", None),
        ("GET", f"/jobs/{job['id']}/logs?attempt=0", None),
        ("GET", f"/jobs/{job['id']}/logs?since=-5", None),
        ("GET", f"/jobs/{job['id']}/logs?since=999999999999", None),
        ("GET", f"/jobs/{job['id']}/logs?follow=yes", None),
        ("GET", f"/jobs/{job['id']}/logs?after=", None),
        ("GET", f"/jobs/{job['id']}/logs?tail=5", None),
        ("GET", f"/jobs/{job['id']}/logs?attempt=1&attempt=2", None),
        ("GET", f"/jobs/{job['id']}/logs?%zz", None),
    ):
        status, _, answer = api.call(method, path, body)
        assert status == 400, (path, status, answer)
        assert isinstance(answer["error"], str) and "\n" not in answer["error"]
    assert store_path.read_bytes() == before


def test_logs_of_a_job_that_never_launched_is_409_with_the_cli_message(api: Api) -> None:  # noqa: F811
    job = api.schedule()
    status, _, body = api.call("GET", f"/jobs/{job['id']}/logs")
    assert status == 409
    assert body["error"] == f"job {job['id']} has not launched yet (it is scheduled): no instance, no log yet"
    assert api.call("GET", "/jobs/999/logs")[0] == 404


@pytest.mark.parametrize("method,route", [("POST", "cancel"), ("GET", "logs")])
def test_a_callback_token_opens_neither_route(api: Api, method: str, route: str) -> None:  # noqa: F811
    job = api.schedule()
    api.launch(job["id"])
    status, headers, _ = api.call(method, f"/jobs/{job['id']}/{route}", token=api.callback_token(job["id"]))
    assert status == 401 and "www-authenticate" in headers
    assert api.service.get(job["id"]).status.value == "launching"


# --------------------------------------------------------------------------- the client's error mapping
def test_remote_client_maps_answers_to_local_exit_codes_and_flag_names(api: Api) -> None:  # noqa: F811
    from jobman_cli.remote import RemoteError, RemoteService
    from test_api import TOKEN

    remote = RemoteService(api.server.url, TOKEN)
    job = api.schedule()
    with pytest.raises(RemoteError) as bad:  # 400: a usage error, named as the CLI names it
        remote.report(job["id"], "exploded")
    assert bad.value.exit_code == 2 and str(bad.value).startswith("--status: ")
    with pytest.raises(RemoteError) as missing:  # 404: exit 1 with the server's message
        remote.get(424242)
    assert (missing.value.exit_code, str(missing.value)) == (1, "job 424242 not found")
    with pytest.raises(RemoteError) as conflict:  # 409 outside schedule: exit 1
        remote.report(job["id"], "finished", 0)
    assert conflict.value.exit_code == 1
    refused = RemoteService(api.server.url, "not-the-token-" + "y" * 30)
    with pytest.raises(RemoteError) as denied:
        refused.list_api()
    assert denied.value.exit_code == 1 and "refused the API token" in str(denied.value)
    assert "not-the-token" not in str(denied.value)
    assert remote.get(job["id"]).extra["_remote-json"] == api.call("GET", f"/jobs/{job['id']}/status")[2]


def test_gets_are_retried_after_a_dropped_connection_and_writes_are_not() -> None:
    """A server that drops the first connection unanswered: a GET is sent again on a new
    connection and succeeds; a POST is sent once and fails with one line (it may have been done)."""
    import socket
    import threading

    from jobman_cli.remote import RemoteError, RemoteService

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    seen: list[bytes] = []

    def serve() -> None:
        for n in range(3):  # GET dropped, GET answered, POST dropped
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                seen.append(data.split(b" ", 2)[0] + b" " + data.split(b" ", 2)[1])
                if n == 1:
                    body = b'{"jobs": []}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    remote = RemoteService(f"http://127.0.0.1:{listener.getsockname()[1]}", "t" * 40)
    assert remote.list_api() == []
    with pytest.raises(RemoteError) as dropped:
        remote.cancel(7)
    assert "closed without an answer" in str(dropped.value) and "\n" not in str(dropped.value)
    thread.join(timeout=10)
    listener.close()
    assert seen == [b"GET /jobMan/v1.1/jobs", b"GET /jobMan/v1.1/jobs", b"POST /jobMan/v1.1/jobs/7/cancel"]
