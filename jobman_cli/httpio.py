"""The API's listener: one asyncio event loop for every connection, the application in a few threads.

Why an event loop (standard-library :mod:`asyncio`, no new dependency): the listener faces EC2
instances on the network, so anyone who can reach the port can open connections and send nothing,
or a byte a second. With a thread per connection those clients hold threads, and a cap on threads
turns into a cap anyone can fill (it did: 512 idle sockets made every callback fail). Here a
waiting connection costs a few KiB and no thread, and the rules that keep strangers from filling it
are explicit:

* at most :data:`MAX_PER_ADDRESS` connections per client address and :data:`MAX_CONNECTIONS` in
  all (also kept under the open-file limit, whose soft value is raised to the hard one; the
  bookkeeping is :mod:`jobman_cli.httpadmission`). At a cap,
  the connection that has waited longest *for its request* (idle, mid-TLS-handshake, a head still
  arriving, or lingering after an error) is closed to make room, first among the newcomer's own
  address: someone who opens connections and says nothing only ever pushes out their own;
  connections whose request is being handled are never closed, and only if every one is, the
  newcomer is refused;
* deadlines, never per ``recv``: :data:`DEFAULT_TIMEOUT` for the TLS handshake, for the first
  byte of a request (the keep-alive idle limit), for the whole head once it began (so a slowloris
  client gets 408 after it, however it paces its bytes), for a body once the application asks for
  it; an answer is dropped when the client takes none of it for as long; 100 requests per connection;
* the application (synchronous; it may wait on file locks or DynamoDB) runs in at most
  :data:`WORKERS` daemon threads, started as needed (as many as the store's group commit can use
  at once: with 16, callbacks per second fell by a third); it gets the body through
  :meth:`Connection.read_body` after checking the credentials: at once when the body came with
  the head (nearly always), else read on the loop within the deadline;
* an error answer closes the connection after briefly draining what the client still sends
  (closing with unread input makes the kernel send a reset, which can destroy the answer);
* an exception the application did not expect is logged with its traceback and answers 500; when
  the caps close connections, one summary line a minute at most says how many and from where.

The wire format (limits, parsing, rendering) is :mod:`jobman_cli.httpwire`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import re
import resource
import socket
import ssl
import threading
import traceback
from typing import Any, Callable, Coroutine

from .httpadmission import Admission
from .httpwire import (MAX_BODY, MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, Answer, Disconnected, HttpError, Log,
                       Request, TimedOut, add_header_line, body_length, clip, describe, parse_request_line, render)
from .httpstream import Stream
from .httpworkers import Workers

__all__ = ["MAX_BODY", "Answer", "Connection", "HttpError", "HttpServer", "Log", "Request", "clip",
           "DEFAULT_TIMEOUT"]

MAX_CONNECTIONS = 2048
MAX_PER_ADDRESS = 256
WORKERS = 64
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
ACCEPT_BATCH = 16  # accepts per loop turn: a flood cannot starve the reads of connections already open
MAX_REQUESTS_PER_CONNECTION = 100
DEFAULT_TIMEOUT = 5.0
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
FD_RESERVE = 256  # descriptors left for the store, AWS clients and the daemon's own files

_SMALL_NUMBER = re.compile(r"[0-9]{1,6}")
App = Callable[[Request, "Connection"], Answer]


class Connection:
    """One client connection, as the application sees it: ``read_body`` and nothing else."""

    def __init__(self, server: "HttpServer", sock: socket.socket, host: str) -> None:
        self.server = server
        self.sock = sock
        self.host = host
        self.stream = Stream(server.loop)
        self.task: asyncio.Task[None] | None = None
        self.started = self.linger = self.head_only = self.body_taken = False
        self.buffered_body: bytes | None = None  #: the body, when it came with the head (nearly always)

    def read_body(self, request: Request) -> bytes:
        """The JSON body's bytes, every limit checked before a byte of it is read. Called by the
        application in a worker thread; the bytes are read on the loop, within the deadline."""
        length = body_length(request)
        if length and self.buffered_body is not None and len(self.buffered_body) == length:
            self.body_taken = True  # no round trip to the loop: it drops these bytes when the answer is ready
            return self.buffered_body
        if length and request.expects_continue:  # only now: every check has passed
            self._on_loop(self.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n", stall=self.server.timeout))
        return self._on_loop(self._read_body(length)) if length else b""

    async def _read_body(self, length: int) -> bytes:
        try:
            async with asyncio.timeout(self.server.timeout):
                data = await self.stream.read(length)
        except TimeoutError:
            raise TimedOut() from None
        if len(data) < length:
            raise HttpError(400, f"the body ended after {len(data)} of {length} bytes")
        return data

    def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.server.loop)
        except RuntimeError:  # the loop is closed: the server stopped
            coroutine.close()
            raise Disconnected() from None
        try:
            return future.result(timeout=self.server.timeout + 5)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            raise Disconnected() from None


class HttpServer:
    """Binds at construction (so the port is known and a bind error is immediate); serves from
    :meth:`start` in one loop thread; :meth:`stop` drains."""

    def __init__(self, address: tuple[str, int], app: App, *, ssl_context: ssl.SSLContext | None, timeout: float,
                 log: Log, server_name: str, max_connections: int = MAX_CONNECTIONS,
                 per_address: int = MAX_PER_ADDRESS, workers: int = WORKERS) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(LISTEN_BACKLOG)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.app, self.ssl_context, self.timeout = app, ssl_context, timeout
        self.log, self.server_name = log, server_name
        self.max_connections = max(1, min(max_connections, raise_open_file_limit() - FD_RESERVE))
        self.per_address = min(per_address, self.max_connections)
        self.workers = Workers(workers, name=f"jobman-api-{self.server_address[1]}")
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.stopping = False
        self.admission: Admission[Connection] = Admission(
            self.loop, log, max_connections=self.max_connections, per_address=self.per_address,
            close=self._close, stopping=lambda: self.stopping)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"jobman-api-{self.server_address[1]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.loop.add_reader(self.socket.fileno(), self._accept)
        self.loop.run_forever()

    def stop(self, grace: float) -> None:
        """Stop accepting, close the connections waiting for a request, give answers in flight
        ``grace`` seconds, then close the rest. Returns within about ``grace`` + 0.2 s."""
        if self._thread is None:
            self.socket.close()
            self.loop.close()
            return
        stopped = asyncio.run_coroutine_threadsafe(self._stop(grace), self.loop)
        try:
            stopped.result(timeout=grace + 5)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.workers.shutdown()
        if not self._thread.is_alive() and not self.workers.pending:  # else a worker still reports to it
            self.loop.close()

    async def _stop(self, grace: float) -> None:
        self.stopping = True
        self.loop.remove_reader(self.socket.fileno())
        self.socket.close()
        for conn in list(self.admission.waiting):
            self._close(conn)
        deadline = self.loop.time() + grace
        while self.admission.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        tasks = [conn.task for conn in list(self.admission.connections) if conn.task is not None]
        for conn in list(self.admission.connections):
            self._close(conn)
        if tasks:
            await asyncio.wait(tasks, timeout=0.2)

    # ------------------------------------------------------------------ admission
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of descriptors or memory: breathe, the backlog holds them
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.admission.count_shed("(accept failed: " + (err.strerror or str(err)) + ")")
                    self.loop.remove_reader(self.socket.fileno())
                    self.loop.call_later(0.1, self._resume_accepting)
                return
            self._admit(sock, str(address[0]))

    def _resume_accepting(self) -> None:
        if not self.stopping:
            self.loop.add_reader(self.socket.fileno(), self._accept)

    def _admit(self, sock: socket.socket, host: str) -> None:
        if not self.admission.room_for(host):
            sock.close()  # every connection at the cap has its request being handled
            self.admission.count_shed(host)
            return
        sock.setblocking(False)
        conn = Connection(self, sock, host)
        self.admission.add(conn)
        conn.task = self.loop.create_task(self._serve(conn))

    def _close(self, conn: Connection) -> None:
        """Forget a connection now and make its task end (closing the socket if it never started)."""
        self.admission.forget(conn)
        if not conn.started:
            conn.sock.close()
        if conn.task is not None:
            conn.task.cancel()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), OSError):  # a client went away, a TLS handshake failed
            return
        self.log(f"unexpected error in the listener: {context.get('message')} {context.get('exception')!r}")

    # ------------------------------------------------------------------ serving
    async def _serve(self, conn: Connection) -> None:
        conn.started = True
        stream, raw, abort = conn.stream, None, False
        try:
            raw, _ = await self.loop.connect_accepted_socket(lambda: stream, conn.sock)
            if self.ssl_context is not None:
                stream.tls = True  # (asyncio's TLS cannot half-close)
                stream.transport = await self.loop.start_tls(
                    raw, stream, self.ssl_context, server_side=True, ssl_handshake_timeout=self.timeout,
                    ssl_shutdown_timeout=LINGER_SECONDS)
            for number in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
                if not await self._serve_one(conn, last=number == MAX_REQUESTS_PER_CONNECTION):
                    break
            if conn.linger:
                await self._linger(conn)
        except asyncio.CancelledError:  # closed at a cap, or the server is stopping
            abort = True
        except (OSError, Disconnected):
            abort = True
        except Exception:  # noqa: BLE001 - the listener itself must survive anything
            abort = True
            self.log("unexpected error on a connection:\n" + traceback.format_exc().rstrip())
        finally:
            self.admission.forget(conn)
            transport = stream.transport or raw
            if transport is None:
                conn.sock.close()
            elif abort:
                transport.abort()
            else:
                transport.close()

    async def _serve_one(self, conn: Connection, last: bool) -> bool:
        """Read and answer one request; True to keep the connection for another."""
        stream = conn.stream
        self.admission.set_waiting(conn, True)
        try:
            async with asyncio.timeout(self.timeout):
                await stream.wait_data()
        except TimeoutError:
            return False  # idle: nothing sent since connecting or since the last answer
        if not stream.buffer:
            return False  # EOF
        request: Request | None = None
        extra: Any = ()
        logged = conn.head_only = False
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    request = await self._read_head(stream)
            except TimeoutError:
                raise TimedOut() from None
            self.admission.set_waiting(conn, False)
            conn.head_only = request.method == "HEAD"
            conn.buffered_body, conn.body_taken = _buffered_body(request, stream), False
            try:
                status, payload, extra = await asyncio.wrap_future(self.workers.submit(self.app, request, conn),
                                                                   loop=self.loop)
            finally:
                if conn.body_taken and conn.buffered_body is not None:
                    stream.skip(len(conn.buffered_body))
                conn.buffered_body = None
        except HttpError as err:
            status, payload, extra = err.status, {"error": clip(err.message, 500)}, err.headers
        except TimedOut:
            status, payload = 408, {"error": f"the request did not arrive within {self.timeout:g} s"}
        except Disconnected:
            return False
        except Exception:  # noqa: BLE001 - the last line of defence; the hostile suite proves it is never reached
            self.log(f"internal error on {describe(request)}:\n" + traceback.format_exc().rstrip())
            status, payload, logged = 500, {"error": "internal error (logged by the daemon)"}, True
        if status >= 500 and status != 505 and not logged:  # 505: the client's protocol, not our failure
            self.log(f"{status} on {describe(request)}: {payload['error']}")
        keep = status < 400 and request is not None and request.keep_alive and not last and not self.stopping
        conn.linger = status >= 400
        data = render(status, payload, extra, keep=keep, head_only=conn.head_only, server=self.server_name)
        try:
            await stream.write(data, stall=self.timeout)
        except (TimeoutError, Disconnected, OSError):
            conn.linger = False
            raise Disconnected() from None
        return keep

    async def _read_head(self, stream: Stream) -> Request:
        request = parse_request_line(await stream.readline(MAX_LINE))
        total = 0
        for _ in range(MAX_HEADERS + 1):
            raw = await stream.readline(MAX_HEADER_BYTES - total + 1)
            total += len(raw)
            if not add_header_line(request.headers, raw, total):
                return request
        raise HttpError(431, f"more than {MAX_HEADERS} request headers")

    async def _linger(self, conn: Connection) -> None:
        """Before closing after an error, read and drop what the client still sends (1 s, 1 MiB)."""
        stream = conn.stream
        self.admission.set_waiting(conn, True)  # nothing more will be answered: a cap may close it
        stream.start_discarding()
        if stream.transport.can_write_eof():
            stream.transport.write_eof()  # the client sees EOF now instead of waiting for us
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while not stream.eof and stream.dropped < LINGER_BYTES:
                    await stream.wait()
        except TimeoutError:
            pass


def _buffered_body(request: Request, stream: Stream) -> bytes | None:
    """A copy of the body if every byte of it is already here (the application still decides
    whether to take it, after checking the credentials); None to read it when asked."""
    lengths = request.header("content-length")
    if len(lengths) != 1 or request.header("transfer-encoding") or not _SMALL_NUMBER.fullmatch(lengths[0]):
        return None
    length = int(lengths[0])
    return bytes(stream.buffer[:length]) if 0 < length <= min(MAX_BODY, len(stream.buffer)) else None


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to the hard one; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 16
