"""A tiny logging HTTP forwarder between the daemon and moto_server, on 127.0.0.1.

It can also hold chosen actions for a fixed time before forwarding them (``delays``), to emulate
the response time of real EC2 that a local moto_server does not have.

The figure "due time -> RunInstances call" needs the moment the daemon *sent* RunInstances. moto
does not expose it (an instance's LaunchTime has one-second resolution), so the daemon is pointed
(``AWS_ENDPOINT_URL``) at this forwarder, which stamps every request with ``time.time()`` as soon as
its body has arrived, forwards it unchanged to moto_server, and stamps the answer's return too.
botocore signs requests but moto does not check signatures, and the Host header is passed on
as it is, so nothing the daemon sends is altered.

For RunInstances the job id is read from the request's own tag parameters
(``TagSpecification.N.Tag.M.Key=jobman:job-id``), so each call is tied to its job without
guessing from the order.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length"}
JOB_ID_TAG = "jobman:job-id"


@dataclass(frozen=True)
class Call:
    action: str
    job_id: int | None
    sent: float  # when the whole request had arrived here (wall clock)
    answered: float  # when the answer was handed back to the daemon
    status: int


def _job_id(params: dict[str, list[str]]) -> int | None:
    for key, values in params.items():
        if key.startswith("TagSpecification.") and key.endswith(".Key") and values == [JOB_ID_TAG]:
            value = params.get(key[:-4] + ".Value")
            if value:
                try:
                    return int(value[0])
                except ValueError:
                    return None
    return None


class LoggingProxy:
    """Forward everything to ``upstream`` (``host``, ``port``); record every call in :attr:`calls`."""

    def __init__(self, upstream_port: int, *, delays: dict[str, float] | None = None) -> None:
        """``delays``: seconds to hold each request of an action before forwarding it (to emulate
        EC2's own response time, which a local moto_server does not have)."""
        self.calls: list[Call] = []
        self.delays = dict(delays or {})
        self._lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                sent = time.time()
                params = parse_qs(body.decode("utf-8", "replace")) if body else {}
                action = (params.get("Action") or [self.headers.get("X-Amz-Target") or "?"])[0]
                if proxy.delays.get(action):
                    time.sleep(proxy.delays[action])
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
                    upstream = proxy._connection(upstream_port)
                    try:
                        upstream.request(self.command, self.path, body=body, headers=headers)
                        answer = upstream.getresponse()
                        payload = answer.read()
                        break
                    except (OSError, http.client.HTTPException):
                        upstream.close()
                        proxy._local.conn = None
                        if attempt == 2:
                            self.send_error(502)
                            return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                job_id = _job_id(params) if action == "RunInstances" else None
                with proxy._lock:
                    proxy.calls.append(Call(action, job_id, sent, time.time(), answer.status))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="proxy", daemon=True)
        self._thread.start()

    def _connection(self, port: int) -> http.client.HTTPConnection:
        """One upstream keep-alive connection per handler thread (one per daemon connection)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        return conn

    def run_instances(self) -> dict[int, Call]:
        """The first RunInstances call of each job."""
        first: dict[int, Call] = {}
        with self._lock:
            for call in self.calls:
                if call.action == "RunInstances" and call.job_id is not None and call.job_id not in first:
                    first[call.job_id] = call
        return first

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
