"""A stub of the EC2 instance metadata service (IMDSv2) on 127.0.0.1, for the spot watcher of the
user-data (jobman_cli/launchers/userdata_spot.py): ``PUT /latest/api/token`` hands out a session
token; ``GET /latest/meta-data/spot/instance-action`` answers 401 without that token, 404 until
:meth:`ImdsStub.arm` is called and EC2's notice (JSON) after. Point the script at it with
``JOBMAN_IMDS_URL=stub.url``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "AQAEAStubImdsSessionToken=="
NOTICE = '{"action":"terminate","time":"2031-03-04T05:08:00Z"}'


class ImdsStub:
    def __init__(self) -> None:
        self.armed = threading.Event()
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, token presented and right)
        self.notices_served = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802
                with stub._lock:
                    stub.requests.append(("PUT", self.path, True))
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._answer(200, TOKEN)
                else:
                    self._answer(400)

            def do_GET(self) -> None:  # noqa: N802
                ok = self.headers.get("X-aws-ec2-metadata-token") == TOKEN
                with stub._lock:
                    stub.requests.append(("GET", self.path, ok))
                if not ok:
                    self._answer(401)
                elif self.path != "/latest/meta-data/spot/instance-action" or not stub.armed.is_set():
                    self._answer(404, "Not Found")
                else:
                    with stub._lock:
                        stub.notices_served += 1
                    self._answer(200, NOTICE)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def arm(self) -> None:
        """From now on, serve EC2's interruption notice."""
        self.armed.set()

    def polls(self) -> int:
        with self._lock:
            return sum(1 for m, p, ok in self.requests if m == "GET" and ok)

    def __enter__(self) -> "ImdsStub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
