"""The loop's wake-up call: a self-pipe that threads *and signal handlers* may set."""

from __future__ import annotations

import os
import select


class Waker:
    """A non-blocking self-pipe. (``threading.Event.set`` takes a lock; called from a signal handler
    that interrupted the main thread inside that same event's lock, it would deadlock.)"""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        try:
            os.write(self._write, b"\0")
        except OSError:  # pipe full (a wake-up is pending anyway) or already closed
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
        fds = (self._read, self._write)
        self._read = self._write = -1  # first, so a late set() cannot write to a reused number
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
