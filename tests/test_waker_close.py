"""The daemon's waker at shutdown: a wake-up racing close() must not reach another file.

An API thread's change wakes the loop (``Waker.set``) while the daemon is closing. If close()
closed the pipe between set()'s look at the descriptor number and its write, the kernel handed
that number to the next file opened (the lowest free one), and the wake-up byte went into it: a
NUL in a store's temp file, a socket, a log. The interleaving is made deterministic by holding
set() just before its write while close() runs and a new pipe is opened.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import pytest

from jobman_cli.daemon import waker as waker_module
from jobman_cli.daemon.waker import Waker


def test_a_wake_up_in_flight_during_close_never_writes_into_a_file_opened_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    waker = Waker()
    at_write, go = threading.Event(), threading.Event()

    def held_write(fd: int, data: bytes) -> int:
        at_write.set()
        assert go.wait(30)
        return os.write(fd, data)

    monkeypatch.setattr(waker_module, "os", SimpleNamespace(**{name: getattr(os, name) for name in dir(os)
                                                               if not name.startswith("__")}))
    monkeypatch.setattr(waker_module.os, "write", held_write)
    setter = threading.Thread(target=waker.set)
    setter.start()
    assert at_write.wait(30)
    waker.close()
    read, write = os.pipe()  # the next files opened: they get the lowest free numbers
    try:
        os.set_blocking(read, False)
        go.set()
        setter.join(30)
        assert not setter.is_alive()
        with pytest.raises(BlockingIOError):
            os.read(read, 1)  # nothing arrived in the new pipe
    finally:
        go.set()
        os.close(read)
        os.close(write)


def test_after_close_set_is_a_no_op_and_the_pipe_goes_with_the_waker() -> None:
    waker = Waker()
    fds = (waker._read, waker._write)
    waker.close()
    waker.set()  # harmless
    waker.wait(0)  # drains nothing, raises nothing
    assert all(os.fstat(fd) for fd in fds)  # still open while the waker exists
    release = waker._release
    del waker  # (no other thread here could be inside set())
    assert not release.alive  # the finalizer ran: it closed both descriptors
