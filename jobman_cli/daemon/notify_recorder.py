"""The notifier's :class:`Recorder`: writes delivery outcomes in batches, off the sending threads.

An outcome is recorded on the job with one compare-and-set write. Written one at a time as each
attempt ends, 1,000 deliveries would be 1,000 commits of the store (on the TinyDB file each
rewrites the file: about 10 ms of CPU and an fsync at 10,000 jobs), competing with the callbacks
that the same burst of failures brings. So a sending thread hands its outcome here and is free for
the next attempt; the recorder waits :data:`WINDOW` for more, then issues the batch's writes at once
from a few threads, which the store groups into about two commits (TinyDB's group commit; on
DynamoDB they are independent conditional writes, sent in parallel).

The price: an outcome reaches the store up to about :data:`WINDOW` after the attempt; a daemon
killed in between makes that attempt again after it restarts (the receiver sees the same event id).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

from .common import Log

#: Seconds an outcome waits for others to share its commit.
WINDOW = 0.1
#: Writes in flight at once.
WRITERS = 16


@dataclass
class Write:
    job_id: int
    change: Callable[[Any], Any]
    #: Called with the written job, or None and the error (on a recorder thread).
    done: Callable[[Any, BaseException | None], None]


class Recorder:
    def __init__(self, store: Any, log: Log, *, window: float = WINDOW, writers: int = WRITERS) -> None:
        self.store = store
        self.log = log
        self.window = window
        self._items: list[Write] = []
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="jobman-notify-record")
        self._thread = threading.Thread(target=self._loop, name="jobman-notify-recorder", daemon=True)
        self._thread.start()

    def submit(self, write: Write) -> None:
        with self._cond:
            self._items.append(write)
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if not self._items and self._stop:
                    return
                deadline = time.monotonic() + self.window  # let others join this batch
                while not self._stop and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch, self._items = self._items, []
                self._busy = True
            try:
                wait([self._pool.submit(self._write, item) for item in batch])
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, item: Write) -> None:
        try:
            written = self.store.update(item.job_id, item.change)
        except Exception as exc:  # the store failed: the attempt is made again (see the module doc)
            item.done(None, exc)
            return
        item.done(written, None)

    def flush(self) -> None:
        """Block until every outcome submitted so far is written (``--once``, shutdown)."""
        with self._cond:
            while self._items or self._busy:
                self._cond.notify_all()
                self._cond.wait(0.05)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

