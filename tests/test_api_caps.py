"""The listener's connection caps, in-process with small caps so each rule is seen one socket at a time.

At a cap the connection that has waited longest for its request is closed (first among the
newcomer's own address), a connection whose request is being handled never is, and when every
connection at a cap is being handled the newcomer is refused. Clients pick their source address
in 127.0.0.0/8 (any of it is loopback). "Closed" is seen as EOF (or a reset) on the client's side;
"still open" as a 200 on that same connection afterwards.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from conftest import claim_with_token
from jobman_cli.api import ApiServer
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores import open_store

TOKEN = "caps-suite-api-token-0123456789abcdef"
API = "/jobMan/v1.1"
WAIT = 30.0


class Caps:
    def __init__(self, tmp_path: Path, **limits: int) -> None:
        self.store = open_store(tmp_path / "jobs.json")
        self.service = JobService(self.store)
        job, _ = self.service.schedule(ScheduleRequest(image="alpine:3.20", when="+1h", title="caps"))
        self.job_token = claim_with_token(self.store, job.id, datetime.now(timezone.utc))
        self.log: list[str] = []
        self.server = ApiServer(self.service, api_token=TOKEN, log=self.log.append, **limits).start()
        self.sockets: list[socket.socket] = []

    def connect(self, source: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=WAIT, source_address=(source, 0))
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.server.stop()
        self.store.close()


def get(sock: socket.socket) -> int | None:
    """GET the job list on ``sock``; the status, or None when the server closed the connection."""
    try:
        sock.sendall(f"GET {API}/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            head += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None
    status = int(head.split(b" ", 2)[1])
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    body = head.partition(b"\r\n\r\n")[2]
    while len(body) < length:
        body += sock.recv(65536)
    json.loads(body)
    return status


def closed(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (waits for it up to the socket timeout)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def caps(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Caps]:
    harness = Caps(tmp_path, **request.param)
    yield harness
    harness.close()


@pytest.mark.parametrize("caps", [{"per_address": 3, "max_connections": 100}], indirect=True)
def test_an_address_at_its_cap_loses_its_longest_waiting_connection(caps: Caps) -> None:
    other = caps.connect("127.0.0.3")  # waiting longer than any of 127.0.0.2's, but not 127.0.0.2's to close
    first, second, third = (caps.connect("127.0.0.2") for _ in range(3))
    third.sendall(b"GET /jobMan")  # a head that has begun is still waiting: it can be closed too
    newcomer = caps.connect("127.0.0.2")
    assert closed(first)
    newest = caps.connect("127.0.0.2")
    assert closed(second)
    assert get(newcomer) == 200 and get(newest) == 200 and get(other) == 200
    assert get(third) == 400  # what it sent is no request line, but it was answered: not closed at the cap
    assert any("closed or refused at the connection caps" in line and "127.0.0.2 (2)" in line
               for line in wait_for_log(caps))


@pytest.mark.parametrize("caps", [{"per_address": 10, "max_connections": 4}], indirect=True)
def test_at_the_global_cap_the_longest_waiting_connection_of_anyone_is_closed(caps: Caps) -> None:
    oldest = caps.connect("127.0.0.2")
    keepers = [caps.connect("127.0.0.3"), caps.connect("127.0.0.4"), caps.connect("127.0.0.2")]
    newcomer = caps.connect("127.0.0.1")
    assert get(newcomer) == 200
    assert closed(oldest)
    assert [get(sock) for sock in keepers] == [200, 200, 200]


@pytest.mark.parametrize("caps", [{"per_address": 2, "max_connections": 100}], indirect=True)
def test_a_request_being_handled_is_never_closed_and_a_full_house_refuses(caps: Caps) -> None:
    callback = f"PUT {API}/jobs/1/callback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {caps.job_token}\r\n"
    body = b'{"status": "running"}'
    busy = [caps.connect("127.0.0.2") for _ in range(2)]
    for sock in busy:  # "100 Continue" comes once the application asked for the body: the request is in hand
        sock.sendall(f"{callback}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    refused = caps.connect("127.0.0.2")
    assert closed(refused)
    for sock in busy:
        sock.sendall(body)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]


def wait_for_log(caps: Caps) -> list[str]:
    deadline = time.monotonic() + WAIT
    while not caps.log and time.monotonic() < deadline:
        time.sleep(0.05)
    return caps.log


@pytest.mark.parametrize("caps", [{}], indirect=True)
def test_stop_lets_a_request_in_hand_finish_and_closes_the_rest(caps: Caps) -> None:
    """``stop(grace)`` closes the listener and the waiting connections at once, and gives a
    request already in the application ``grace`` seconds to be answered."""
    body = b'{"status": "running"}'
    busy = caps.connect("127.0.0.2")
    busy.sendall(f"PUT {API}/jobs/1/callback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {caps.job_token}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 "Expect: 100-continue\r\n\r\n".encode())
    assert busy.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # the application is waiting for the body
    idle = caps.connect("127.0.0.2")
    assert get(idle) == 200  # (now waiting for its next request)
    stopper = threading.Thread(target=caps.server.stop, kwargs={"grace": 20.0})
    stopper.start()
    assert closed(idle)
    with pytest.raises(OSError):  # the listener is closed
        socket.create_connection(("127.0.0.1", caps.server.port), timeout=5).close()
    busy.sendall(body)
    answer = b""
    while chunk := busy.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in answer
    stopper.join(timeout=WAIT)
    assert not stopper.is_alive()
    assert caps.service.get(1).status.value == "running"
