"""A small, strict HTTP/1.1 server for a JSON API, on the standard library only.

Why not ``http.server``: it reads headers with the e-mail parser (up to 100 lines of 64 KiB each,
so 6 MiB per connection), answers errors in HTML, half-supports HTTP/0.9, sends ``100 Continue``
before the application could refuse the request, and bounds a request only per ``recv``. The
listener faces EC2 instances on the network, so the few things it needs are written out here, with
every limit explicit and checked before the bytes it guards are read:

* one thread per connection, at most :data:`MAX_CONNECTIONS`, listen backlog :data:`LISTEN_BACKLOG`;
* a per-request *deadline* on reading (not a per-``recv`` timeout): a slowloris client or a body
  that never arrives ends with its own thread and never blocks anyone else; idle keep-alive
  connections end after the same time, and after :data:`MAX_REQUESTS_PER_CONNECTION` requests;
* TLS handshakes run in the connection's thread (the accept loop only wraps, no I/O), so a client
  that connects and says nothing cannot stall ``accept``;
* 8 KiB URL of visible ASCII, 32 KiB and 100 lines of headers, no folded or control-character
  headers, HTTP/1.0 and 1.1 only; bodies need ``Content-Length`` (no chunked), at most 64 KiB,
  ``Content-Type: application/json`` (UTF-8); a body is read only when the application asks,
  after it has checked the credentials;
* every answer is ``application/json`` with ``Content-Length``; an error is ``{"error": "..."}``
  and closes the connection after briefly draining what the client still sends (closing with
  unread input makes the kernel send a reset, which can destroy the answer before it is read);
* an exception the application did not expect is logged with its traceback and answers 500; no
  access log otherwise.

The application is one callable ``app(request, connection) -> (status, payload, headers)`` that
may raise :class:`HttpError`; it calls ``connection.read_body(request)`` when it wants the body.
"""

from __future__ import annotations

import io
import json
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Callable

MAX_BODY = 64 * 1024
MAX_TARGET = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100
MAX_REQUESTS_PER_CONNECTION = 100
MAX_CONNECTIONS = 512
LISTEN_BACKLOG = 256
DEFAULT_TIMEOUT = 10.0
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20

_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Log = Callable[[str], None]
Headers = tuple[tuple[str, str], ...]
Answer = tuple[int, Any, Headers]


class HttpError(Exception):
    """An answer other than success: status, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class _TimedOut(Exception):
    """The request did not arrive before its deadline."""


class _Disconnected(Exception):
    """The client went away (EOF, reset, TLS error): there is nobody to answer."""


@dataclass
class Request:
    method: str
    target: str
    path: str  #: the target before ``?``, exactly as sent (never decoded)
    query: str
    version: str
    headers: dict[str, list[str]] = field(default_factory=dict)  #: lowercased name -> values

    def header(self, name: str) -> list[str]:
        return self.headers.get(name, [])

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for value in self.header("connection") for t in value.split(",")}
        return self.version == "HTTP/1.1" and "close" not in tokens

    @property
    def has_body(self) -> bool:
        return bool(self.header("transfer-encoding")) or any(v != "0" for v in self.header("content-length"))


def clip(text: str, limit: int = 300) -> str:
    """One line, at most ``limit`` characters (for messages that quote client input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- JSON
def encode_json(payload: Any) -> bytes:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a stored string the CLI took from undecodable argv bytes
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


def _check_content_type(request: Request) -> None:
    values = request.header("content-type")
    if len(values) != 1:
        raise HttpError(415, "Content-Type must be application/json")
    media, *params = values[0].split(";")
    if media.strip().lower() != "application/json":
        raise HttpError(415, f"Content-Type must be application/json (got {clip(media.strip(), 60)!r})")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HttpError(415, "the body must be UTF-8 (charset=utf-8)")


# --------------------------------------------------------------------------- server
class _DeadlineReader(io.RawIOBase):
    """A socket reader with one deadline over many ``recv`` calls (``conn.deadline``).

    A socket timeout alone restarts with every byte, so a client sending a byte every few seconds
    could hold its thread for hours.
    """

    def __init__(self, sock: socket.socket, conn: "Connection") -> None:
        self._sock = sock
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._conn.deadline - time.monotonic()
        if remaining <= 0:
            raise _TimedOut()
        try:
            self._sock.settimeout(remaining)
            count = self._sock.recv_into(buffer)
            self._conn.received += count
            return count
        except TimeoutError:
            raise _TimedOut() from None
        except (OSError, ValueError):  # reset, TLS error, socket shut down by stop()
            raise _Disconnected() from None


class HttpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False  # stopping must not wait for a slow client's thread
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], app: Callable[[Request, "Connection"], Answer], *,
                 ssl_context: ssl.SSLContext | None, timeout: float, log: Log, server_name: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Connection)
        self.app = app
        self.ssl_context = ssl_context
        self.request_timeout = timeout
        self.log = log
        self.server_name = server_name
        self.stopping = False
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.ssl_context is not None:  # no I/O here: the handshake runs in the connection's thread
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                sock.close()
                raise
        return sock, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.connections_lock:
            return not self.stopping and len(self.connections) < MAX_CONNECTIONS

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:  # out of the set *before* it is closed (see stop_connections)
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a client that went away is not our error
            return
        self.log("api: unexpected error on a connection:\n" + traceback.format_exc().rstrip())

    def stop_connections(self, grace: float) -> None:
        """After the accept loop has ended: end idle and half-read connections, let answers finish.

        Shutting the read side wakes a thread blocked in ``recv`` (it sees EOF) but leaves writing
        possible, so a request already being handled still gets its answer; each connection then
        closes because ``stopping`` is set. Done under the lock, so no socket here can be closed
        (and its descriptor reused) meanwhile.
        """
        self.stopping = True
        with self.connections_lock:
            for sock in self.connections:
                try:  # the plain socket method: SSLSocket.shutdown would also drop the TLS state
                    socket.socket.shutdown(sock, socket.SHUT_RD)
                except (OSError, ValueError):
                    pass
        end = time.monotonic() + grace
        while time.monotonic() < end:
            with self.connections_lock:
                if not self.connections:
                    return
            time.sleep(0.02)


class Connection(socketserver.BaseRequestHandler):
    """One client connection: the TLS handshake, then up to 100 keep-alive requests."""

    server: HttpServer
    deadline: float = 0.0
    received: int = 0  #: bytes read since the current request began (an idle client sent none)

    def setup(self) -> None:
        self.ready = self.linger = self.head_only = False
        sock: socket.socket = self.request
        try:
            sock.settimeout(self.server.request_timeout)
            if isinstance(sock, ssl.SSLSocket):
                sock.do_handshake()  # CPython bounds the whole handshake by the socket timeout
        except (OSError, ValueError):
            return
        self.rfile = io.BufferedReader(_DeadlineReader(sock, self), 16 * 1024)
        self.ready = True

    def handle(self) -> None:
        if not self.ready:
            return
        try:
            for number in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
                if not self._serve_one(last=number == MAX_REQUESTS_PER_CONNECTION):
                    break
        finally:
            if self.linger:
                self._drain()

    def _serve_one(self, last: bool) -> bool:
        """Read and answer one request; True to keep the connection for another."""
        self.deadline = time.monotonic() + self.server.request_timeout
        self.received = 0
        line: bytes | None
        try:
            line = self.rfile.readline(MAX_TARGET + 64)
        except _Disconnected:
            return False
        except _TimedOut:
            if not self.received:  # an idle keep-alive connection, or a client that never said anything
                return False
            line = None  # a request line that never ended: answered 408 below
        if line == b"":
            return False
        self.deadline = time.monotonic() + self.server.request_timeout
        self.head_only = False
        request: Request | None = None
        extra: Headers = ()
        logged = False
        try:
            if line is None:
                raise _TimedOut()
            request = self._read_head(line)
            self.head_only = request.method == "HEAD"
            status, payload, extra = self.server.app(request, self)
        except HttpError as err:
            status, payload, extra = err.status, {"error": clip(err.message, 500)}, err.headers
        except _TimedOut:
            status, payload = 408, {"error": f"the request did not arrive within {self.server.request_timeout:g} s"}
        except _Disconnected:
            return False
        except Exception:  # the last line of defence; the hostile-request suite proves it is never reached
            self.server.log(f"api: internal error on {_describe(request)}:\n" + traceback.format_exc().rstrip())
            status, payload, logged = 500, {"error": "internal error (logged by the daemon)"}, True
        if status >= 500 and status != 505 and not logged:  # 505: the client's protocol, not our failure
            self.server.log(f"api: {status} on {_describe(request)}: {payload['error']}")
        keep = (status < 400 and request is not None and request.keep_alive and not last
                and not self.server.stopping)
        self.linger = status >= 400
        return self._send(status, payload, extra, keep) and keep

    def _send(self, status: int, payload: Any, extra: Headers, keep: bool) -> bool:
        body = encode_json(payload)
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Server: {self.server.server_name}",
            f"Date: {formatdate(usegmt=True)}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in extra),
        ]
        if not keep:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if self.head_only else body)
        try:
            self.request.settimeout(self.server.request_timeout)
            self.request.sendall(data)
        except (OSError, ValueError):
            return False
        return True

    def _drain(self) -> None:
        """Before closing after an error, read and drop what the client still sends (1 s, 1 MiB)."""
        sock: socket.socket = self.request
        try:
            if not isinstance(sock, ssl.SSLSocket):
                sock.shutdown(socket.SHUT_WR)  # the client sees EOF now instead of waiting for us
            end, total = time.monotonic() + LINGER_SECONDS, 0
            while total < LINGER_BYTES:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                chunk = sock.recv(64 * 1024)
                if not chunk:
                    break
                total += len(chunk)
        except (OSError, ValueError):
            pass

    # ------------------------------------------------------------------ reading
    def _read_head(self, line: bytes) -> Request:
        if not line.endswith(b"\n"):
            if len(line) >= MAX_TARGET + 64:
                raise HttpError(414, f"the request line is longer than {MAX_TARGET} bytes")
            raise _Disconnected()  # EOF in the middle of the line
        words = line.rstrip(b"\r\n").decode("latin-1").split(" ")
        if len(words) == 2:
            raise HttpError(400, "HTTP/0.9 requests are not supported; use HTTP/1.1")
        if len(words) != 3:
            raise HttpError(400, "malformed request line (expected 'METHOD /path HTTP/1.1')")
        method, target, version = words
        if not re.fullmatch(r"HTTP/[0-9]\.[0-9]", version):
            raise HttpError(400, "malformed HTTP version in the request line")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise HttpError(505, f"{version} is not supported; use HTTP/1.1")
        if not _TOKEN_CHARS.fullmatch(method):
            raise HttpError(400, "malformed method in the request line")
        if len(target) > MAX_TARGET:
            raise HttpError(414, f"the URL is longer than {MAX_TARGET} bytes")
        if not _VISIBLE_ASCII.fullmatch(target):
            raise HttpError(400, "malformed URL (only visible ASCII characters; percent-encode the rest)")
        path, _, query = target.partition("?")
        return Request(method, target, path, query, version, self._read_headers())

    def _read_headers(self) -> dict[str, list[str]]:
        headers: dict[str, list[str]] = {}
        total = 0
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_HEADER_BYTES - total + 1)
            total += len(raw)
            if raw in (b"\r\n", b"\n"):
                return headers
            if total > MAX_HEADER_BYTES:
                raise HttpError(431, f"the request headers are larger than {MAX_HEADER_BYTES // 1024} KiB")
            if not raw.endswith(b"\n"):
                raise _Disconnected()
            text = raw.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t"):
                raise HttpError(400, "folded header lines are not supported")
            name, colon, value = text.partition(":")
            if not colon or not _TOKEN_CHARS.fullmatch(name):
                raise HttpError(400, "malformed header line (expected 'Name: value')")
            value = value.strip(" \t")
            if _BAD_HEADER_VALUE.search(value):
                raise HttpError(400, f"header {clip(name, 60)} contains control characters")
            headers.setdefault(name.lower(), []).append(value)
        raise HttpError(431, f"more than {MAX_HEADERS} request headers")

    def read_body(self, request: Request) -> bytes:
        """The JSON body's bytes, with every limit checked before a byte of it is read."""
        if request.header("transfer-encoding"):
            raise HttpError(411, "Transfer-Encoding (chunked) bodies are not accepted; send a Content-Length")
        lengths = request.header("content-length")
        if not lengths:
            raise HttpError(411, "Content-Length is required")
        if len(set(lengths)) > 1:
            raise HttpError(400, "conflicting Content-Length headers")
        if not re.fullmatch(r"[0-9]+", lengths[0]):
            raise HttpError(400, f"Content-Length must be a non-negative integer (got {clip(lengths[0], 40)!r})")
        length = int(lengths[0]) if len(lengths[0]) <= 18 else MAX_BODY + 1
        if length > MAX_BODY:
            raise HttpError(413, f"the body is over {MAX_BODY // 1024} KiB ({clip(lengths[0], 40)} bytes declared)")
        _check_content_type(request)
        expect = any(v.lower() == "100-continue" for v in request.header("expect"))
        if length and expect and request.version == "HTTP/1.1":  # only now: every check has passed
            try:
                self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            except (OSError, ValueError):
                raise _Disconnected() from None
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise HttpError(400, f"the body ended after {len(data)} of {length} bytes")
        return data


def _describe(request: Request | None) -> str:
    if request is None:
        return "a malformed request"
    return f"{clip(request.method, 20)!r} {clip(request.path, 100)!r}"
