"""Connections to receivers kept open between attempts (HTTP/1.1 keep-alive), per target host.

Why: a burst of failures sends hundreds of notifications to the same one or two receivers (a
webhook, Slack). A new connection per attempt costs the daemon a TCP connect, for ``https`` a TLS
handshake (milliseconds of CPU each: the key exchange and the certificate check), and on the
receiver a new connection (a thread, for many servers). Reusing one costs neither.

What is kept: a connection whose answer was read in full and that neither side asked to close,
for at most :data:`KEEP` seconds (shorter than the idle timeout of common servers, 5 s and up), at
most :data:`MAX_IDLE` in all (the most a burst can use at once is the notifier's ``workers``).
The key is (scheme, host, port): a kept connection goes to an address that was checked when it
was made, and carries the same Host header and TLS name.

Reuse never changes what a delivery means: a request on a kept connection that the receiver had
closed meanwhile fails before any answer, and :class:`~.send.Sender` then makes it once more on a
new connection within the same deadline — as if it were a retry of an attempt with no answer,
which the event id lets the receiver drop if it was a duplicate.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

#: Seconds an idle connection is kept.
KEEP = 2.0
#: Idle connections kept at most (all hosts together).
MAX_IDLE = 32

Key = tuple[str, str, int]


class Idle:
    """The idle connections of one :class:`~.send.Sender` (thread-safe)."""

    def __init__(self, keep: float = KEEP, max_idle: int = MAX_IDLE) -> None:
        self.keep = keep
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[tuple[float, Key, socket.socket]] = []  # oldest first
        self.reused = 0  # attempts that used a kept connection (tests, figures)

    def take(self, key: Key) -> socket.socket | None:
        """A kept connection to ``key`` that is still open, or None."""
        now = time.monotonic()
        with self._lock:
            stale = self._expire(now)
            found = None
            for index in range(len(self._idle) - 1, -1, -1):  # the newest first: least likely closed
                if self._idle[index][1] == key:
                    found = self._idle.pop(index)[2]
                    break
        for sock in stale:
            _close(sock)
        if found is not None and not _alive(found):
            _close(found)
            return None
        if found is not None:
            with self._lock:
                self.reused += 1
        return found

    def give(self, key: Key, sock: socket.socket) -> None:
        """Keep ``sock`` (an answer was read in full from it) for the next attempt to ``key``."""
        now = time.monotonic()
        with self._lock:
            stale = self._expire(now)
            self._idle.append((now, key, sock))
            while len(self._idle) > self.max_idle:
                stale.append(self._idle.pop(0)[2])
        for old in stale:
            _close(old)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, _, sock in idle:
            _close(sock)

    def _expire(self, now: float) -> list[socket.socket]:
        """(Holding the lock.) Remove and return the connections idle longer than ``keep``."""
        cut = 0
        while cut < len(self._idle) and now - self._idle[cut][0] > self.keep:
            cut += 1
        stale = [sock for _, _, sock in self._idle[:cut]]
        del self._idle[:cut]
        return stale


def _alive(sock: socket.socket) -> bool:
    """Whether a kept connection can carry a request: nothing to read on it (a readable idle
    connection was closed by the receiver, or holds bytes nobody asked for). For TLS, a record
    that holds no data (a TLS 1.3 session ticket) does not count."""
    try:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    if not isinstance(sock, ssl.SSLSocket):
        return False
    try:
        sock.setblocking(False)
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True  # only TLS housekeeping was there
    except (OSError, ValueError):
        return False
    return False  # data or the end of the stream


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
