"""The loop's wake-up call: a self-pipe that threads *and signal handlers* may set."""

from __future__ import annotations

import os
import select
import weakref


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Waker:
    """A non-blocking self-pipe. (``threading.Event.set`` takes a lock; called from a signal handler
    that interrupted the main thread inside that same event's lock, it would deadlock.)

    :meth:`close` only stops further wake-ups; the two descriptors are closed once nothing refers
    to the waker any more. Closing them in :meth:`close` let a :meth:`set` already past its check
    (an API thread's change at shutdown) write its byte into whatever file or socket was opened
    next under the same number; a :meth:`set` in progress holds the waker, so its pipe outlives it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._closed = False
        self._release = weakref.finalize(self, _close_fds, self._read, self._write)

    def set(self) -> None:
        if self._closed:
            return
        try:
            os.write(self._write, b"\0")
        except OSError:  # pipe full: a wake-up is pending anyway
            pass

    def wait(self, timeout: float) -> None:
        """Return after ``timeout`` seconds or once set; either way, consume every pending wake-up."""
        if timeout > 0:
            select.select([self._read], [], [], timeout)
        try:
            while os.read(self._read, 4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass

    def close(self) -> None:
        """No wake-up from now on (the descriptors go with the waker: see the class doc)."""
        self._closed = True
