"""One delivery attempt, and what its outcome means.

* webhook: POST of the signed JSON body; Slack: POST of ``{"text": paragraph}``. Plain
  :mod:`http.client` under one deadline per attempt (``timeout``: name lookup, connect, TLS and the
  whole answer): redirects are not followed (a POST re-sent elsewhere is not a delivery to the
  configured receiver) and no proxy is used. The name is resolved here and *every* address it has
  is checked (link-local — the instance metadata service — is refused, a final outcome); the
  connection goes to a checked address, the Host header and TLS name stay the URL's host.
  2xx delivered; 408, 429 and 5xx, a timeout or a connection error: try again (honouring
  ``Retry-After``); any other answer (3xx, 4xx): final — the receiver refused this request and will
  refuse it again. A target that cannot be sent at all (a host that does not IDNA-encode) is final.
* SNS: ``Publish`` of the same JSON body (boto3, imported here only). Throttling, a 5xx or a
  connection error: try again; any other refusal (no such topic, not authorized): final.
"""

from __future__ import annotations

import heapq
import http.client
import socket
import ssl
import threading
import time
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from .. import __version__
from .deliveries import Outcome
from .keepalive import Idle
from .message import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, encode, sign, slack_text, subject
from .targets import ascii_host, blocked, numeric_host, sns_region, target_kind, url_of

RETRYABLE_STATUS = frozenset({408, 429})
_SNS_RETRYABLE = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "InternalError",
                            "InternalFailure", "ServiceUnavailable", "KMSThrottling", "RequestTimeout"})
#: Characters a request target keeps as they are (everything else, e.g. non-ASCII, is %-encoded).
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"


class Refused(Exception):
    """The target resolves to an address jobman never sends to (final)."""


class Sender:
    """Sends one attempt to one target. Thread-safe (one per daemon, used by its workers).

    An attempt has one deadline, ``timeout`` seconds from its start, covering the name lookup, the
    connection, TLS, the request and the whole answer: a receiver that trickles a byte at a time
    cannot hold a worker (or the daemon's shutdown) longer than that. :meth:`abort` ends every
    attempt in flight at once (the daemon's shutdown)."""

    def __init__(self, secret: bytes, timeout: float = 10.0,
                 resolve: Callable[[str, int], list[str]] | None = None) -> None:
        self.secret = secret
        self.timeout = timeout
        self._resolve = resolve or _resolve
        self._sns: dict[str, Any] = {}
        self._sns_lock = threading.Lock()
        self._tls = ssl.create_default_context()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._idle = Idle()  # connections kept between attempts (see keepalive)

    def send(self, target: str, data: dict[str, Any]) -> Outcome:
        """One attempt; never raises: whatever goes wrong is an outcome (a target that cannot be
        sent at all — ValueError, UnicodeError — is a final one)."""
        try:
            kind = target_kind(target)
            if kind == "sns":
                return self._publish(target, data)
            raw = encode({"text": slack_text(data)} if kind == "slack" else data)
            headers = {"Content-Type": "application/json", "User-Agent": f"jobman/{__version__}",
                       EVENT_ID_HEADER: data["event-id"], EVENT_HEADER: data["event"],
                       SIGNATURE_HEADER: sign(raw, self.secret)}
            return self._post(url_of(target), raw, headers)
        except (ValueError, UnicodeError, Refused) as exc:
            return Outcome(False, f"cannot send: {type(exc).__name__}: {_short(exc)} (not retried)", final=True)
        except Exception as exc:  # a bug or a surprise: tried again later, never fatal to the others
            return Outcome(False, f"no answer: {type(exc).__name__}: {_short(exc)}")

    def abort(self) -> None:
        """Shut every connection in flight (their attempts end now, as failed)."""
        with self._open_lock:
            for sock in list(self._open):
                _shutdown(sock)
        self._idle.close()

    # ------------------------------------------------------------------ HTTP
    def _post(self, url: str, raw: bytes, headers: dict[str, str]) -> Outcome:
        deadline = time.monotonic() + self.timeout
        parts = urlsplit(url)
        path = quote(parts.path or "/", safe=_URL_SAFE) + (f"?{quote(parts.query, safe=_URL_SAFE)}"
                                                           if parts.query else "")
        if parts.username is not None:
            import base64

            from urllib.parse import unquote

            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers = dict(headers, Authorization="Basic " + base64.b64encode(pair).decode())
        host = ascii_host(parts.hostname or "")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        key = (parts.scheme, host, port)
        kept = self._idle.take(key)
        while True:
            expired = threading.Event()
            conn = _Connection(host, parts.port, https=https)
            conn.timeout = self.timeout
            if kept is not None:
                conn.opener = lambda sock=kept: (sock, self._track(sock, deadline, expired))
            else:
                conn.opener = lambda: self._connect(host, port, https, deadline, expired)
            keep = False
            try:
                conn.request("POST", path, body=raw, headers=headers)
                answer = conn.getresponse()
                answer.read(65536)
                status, retry_after = answer.status, answer.getheader("Retry-After")
                keep = answer.isclosed() and not answer.will_close  # read in full, nobody asked to close
            except (OSError, http.client.HTTPException) as exc:
                timed_out = expired.is_set() or time.monotonic() >= deadline
                if kept is not None and isinstance(exc, ConnectionError) and not timed_out:
                    kept = None  # the receiver closed the kept connection: once more on a new one
                    continue
                if timed_out:
                    return Outcome(False, f"no answer: no complete answer within {self.timeout:g} s")
                return Outcome(False, f"no answer: {type(exc).__name__}: {_short(exc)}")
            finally:
                sock, conn.sock = conn.sock, None
                conn.close()
                conn.forget()  # the watchdog lets go of it (it may have fired just before)
                if sock is not None:
                    if keep and not expired.is_set():
                        self._idle.give(key, sock)
                    else:
                        sock.close()
            break
        text = f"HTTP {status}"
        if 200 <= status < 300:
            return Outcome(True, text)
        if status in RETRYABLE_STATUS or status >= 500:
            return Outcome(False, text, retry_after=_seconds(retry_after))
        if 300 <= status < 400:
            return Outcome(False, f"{text} (redirects are not followed; give the final URL)", final=True)
        return Outcome(False, f"{text} (refused: not retried)", final=True)

    def _connect(self, host: str, port: int, tls: bool, deadline: float,
                 expired: threading.Event) -> tuple[socket.socket, Callable[[], None]]:
        """A connected (TLS: handshaken) socket to a checked address of ``host``, and the function
        that releases it. A watchdog shuts it at ``deadline`` (reads block no longer)."""
        addresses = self._lookup(host, port, deadline)
        for address in addresses:  # every one, not only the first: a name may mix safe and unsafe
            if blocked(address):
                raise Refused(f"{host} resolves to {address}: link-local addresses (the instance "
                              "metadata service) are not notification targets")
        error: OSError = OSError(f"{host} has no address")
        for address in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline")
            try:
                sock = socket.create_connection((str(address), port), timeout=left)
            except OSError as exc:
                error = exc
                continue
            break
        else:
            raise error
        release = self._track(sock, deadline, expired)
        try:
            # the request goes out in two writes (head, body): without this, a kept connection
            # waits for the receiver's delayed ACK between them (40 ms on Linux) on every attempt
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:  # SNI and the certificate check use the name, the connection the checked address
                sock = self._tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            release()
            sock.close()
            raise
        return sock, release

    def _track(self, sock: socket.socket, deadline: float, expired: threading.Event) -> Callable[[], None]:
        """Put ``sock`` under this attempt's deadline (the watchdog shuts it then; :meth:`abort`
        may shut it before); returns the function that lets it go again."""
        with self._open_lock:
            self._open.add(sock)
        token = self._watchdog.watch(deadline, sock, expired)

        def release() -> None:
            self._watchdog.cancel(token)
            with self._open_lock:
                self._open.discard(sock)

        sock.settimeout(max(0.01, deadline - time.monotonic()))
        return release

    def _lookup(self, host: str, port: int, deadline: float) -> list[Any]:
        """The host's addresses, looked up within the attempt's deadline (a numeric host: itself)."""
        address = numeric_host(host)
        if address is not None:
            return [address]
        found: list[Any] = []
        failed: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                found.extend(self._resolve(host, port))
            except BaseException as exc:  # noqa: BLE001 - handed to the attempt
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name="jobman-notify-dns", daemon=True).start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise socket.timeout(f"looking up {host} took longer than the attempt's deadline")
        if failed:
            raise failed[0]
        import ipaddress

        return [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]

    # ------------------------------------------------------------------ SNS
    def _client(self, region: str) -> Any:
        with self._sns_lock:
            client = self._sns.get(region)
            if client is None:
                import boto3  # lazily: only a daemon that publishes to SNS pays for it
                from botocore.config import Config

                # bounded like a webhook attempt (botocore's default is 60 s per connect and read), and
                # ONE try: jobman retries itself; botocore's own retries could outlast the claim's lease
                # (another daemon would then send the event again)
                config = Config(connect_timeout=self.timeout, read_timeout=self.timeout,
                                retries={"total_max_attempts": 1})
                client = self._sns[region] = boto3.session.Session().client("sns", region_name=region,
                                                                               config=config)
            return client

    def _publish(self, target: str, data: dict[str, Any]) -> Outcome:
        from botocore.exceptions import BotoCoreError, ClientError

        arn = target[len("sns:"):]
        raw = encode(data).decode("utf-8")
        try:
            answer = self._client(sns_region(target)).publish(
                TopicArn=arn, Message=raw, Subject=subject(data),
                MessageAttributes={"event-id": {"DataType": "String", "StringValue": data["event-id"]},
                                   "event": {"DataType": "String", "StringValue": data["event"]}})
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            text = f"SNS {code}: {_short(error.get('Message') or '')}"
            if code in _SNS_RETRYABLE or http_status >= 500 or http_status == 429:
                return Outcome(False, text)
            return Outcome(False, f"{text} (refused: not retried)", final=True)
        except BotoCoreError as exc:
            return Outcome(False, f"no answer from SNS: {_short(exc)}")
        return Outcome(True, f"SNS message {answer.get('MessageId', '?')}")


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is ignored: the backoff applies)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _short(exc: Any) -> str:
    return " ".join(str(exc).split())[:200]


def _resolve(host: str, port: int) -> list[str]:
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Connection(http.client.HTTPConnection):
    """:class:`http.client.HTTPConnection` whose socket comes from :meth:`Sender._connect` (a
    checked address, the attempt's deadline); the Host header still names the URL's host."""

    opener: Callable[[], tuple[socket.socket, Callable[[], None]]]

    def __init__(self, host: str, port: int | None, *, https: bool) -> None:
        self.default_port = 443 if https else 80  # before __init__: it decides the Host header's port
        super().__init__(host, port)
        self._release: Callable[[], None] | None = None

    def connect(self) -> None:
        self.sock, self._release = self.opener()

    def forget(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class _Watchdog:
    """Shuts each watched socket at its deadline (a blocked read then returns at once). One thread
    for all attempts, started at the first: a timer thread per attempt would cost a thread start
    per notification in a burst of 1,000."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, tuple[socket.socket, threading.Event]] = {}
        self._cond = threading.Condition()
        self._count = 0
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, sock: socket.socket, expired: threading.Event) -> int:
        with self._cond:
            self._count += 1
            token = self._count
            self._watched[token] = (sock, expired)
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jobman-notify-watchdog", daemon=True)
                self._thread.start()
            if earliest:  # a later deadline than the one it waits for changes nothing (no wakeup per attempt)
                self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._watched.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._watched:
                    heapq.heappop(self._heap)  # cancelled
                if not self._heap:
                    self._cond.wait()
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                _, token = heapq.heappop(self._heap)
                sock, expired = self._watched.pop(token)
            expired.set()
            _shutdown(sock)
