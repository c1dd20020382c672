"""A webhook receiver for the notification tests: a real HTTP server on 127.0.0.1.

It records every request (arrival time on the monotonic clock, path, headers, raw body) and
answers from a script: ``answers`` is consumed one status per request, then ``then`` for every
later one; ``delay`` seconds are slept before answering (a slow receiver). ``wait_for(n)`` blocks
until ``n`` requests arrived.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen() backlog (read by the constructor: a class attribute)


class Receiver:
    def __init__(self, answers: list[int] | None = None, then: int = 200, delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.then = then
        self.delay = delay
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the receiver was answering at once
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._cond:
                    receiver.requests.append(Received(time.monotonic(), self.path, dict(self.headers.items()), raw))
                    status = receiver.answers.pop(0) if receiver.answers else receiver.then
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    receiver._cond.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._cond:
                    receiver.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the receiver got {len(self.requests)} of {count} requests in {timeout:g}s")
                self._cond.wait(left)
            return list(self.requests)

    def count(self) -> int:
        with self._cond:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def receiver_fixture(**kwargs: object) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs)  # type: ignore[arg-type]
    try:
        yield receiver
    finally:
        receiver.close()
