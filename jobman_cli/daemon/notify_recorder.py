"""The notifier's :class:`Recorder`: writes delivery outcomes in batches, off the sending threads.

An outcome is recorded on the job with one compare-and-set write. Written one at a time as each
attempt ends, 1,000 deliveries would be 1,000 commits of the store (on the TinyDB file each
rewrites the file: about 10 ms of CPU and an fsync at 10,000 jobs), competing with the callbacks
that the same burst of failures brings. So a sending thread hands its outcome here and is free for
the next attempt; the recorder waits :data:`WINDOW` for more, then issues the batch's writes at once
from a few threads, which the store groups into about two commits (TinyDB's group commit; on
DynamoDB they are independent conditional writes, sent in parallel).

Two things stretch the wait:

* while callbacks are arriving (``hold``, the notifier's "busy"), outcomes are held until they calm
  down, at most :data:`MAX_HOLD` (5 s): the failures that owe the notifications arrive as
  callbacks, and the recorder's writes then compete with theirs for the store (measured: a
  1,000-callback burst ran about 10 % faster when no outcome was written during it; BENCHMARKS.md,
  ``notify``). A batch
  written while they still arrive is written by :data:`BUSY_WRITERS` threads, not ``writers``:
  each thread waiting on the store is one more the store wakes at every commit;
* a batch waits at least :data:`DUTY` times as long as the previous batch took to write (at most
  :data:`MAX_WINDOW`, 1 s), so the recorder spends at most about a quarter of its time committing
  however big the store (each commit of a TinyDB file rewrites all of it) and however many
  outcomes arrive: more of them share each commit instead.

The price: an outcome reaches the store up to :data:`MAX_HOLD` after the attempt during a burst of
callbacks, else up to :data:`MAX_WINDOW` (usually :data:`WINDOW`); a daemon killed in between
makes that attempt again after it restarts (the receiver sees the same event id and can drop it).
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
#: The longest an outcome waits behind slow commits.
MAX_WINDOW = 1.0
#: The longest an outcome is held while callbacks keep arriving.
MAX_HOLD = 5.0
#: A batch waits at least this many times as long as the previous one took to write.
DUTY = 3.0
#: Writes in flight at once.
WRITERS = 16
#: ... while callbacks are arriving.
BUSY_WRITERS = 2


@dataclass
class Write:
    job_id: int
    change: Callable[[Any], Any]
    #: Called with the written job, or None and the error (on a recorder thread).
    done: Callable[[Any, BaseException | None], None]


class Recorder:
    def __init__(self, store: Any, log: Log, *, window: float = WINDOW, writers: int = WRITERS,
                 hold: Callable[[], float] | None = None, max_window: float = MAX_WINDOW,
                 max_hold: float = MAX_HOLD) -> None:
        self.store = store
        self.log = log
        self.window = window
        self.writers = writers
        self.max_window = max(window, max_window)
        self.max_hold = max(window, max_hold)
        #: Seconds to hold outcomes back now (the callbacks' busy window), 0: none.
        self.hold = hold or (lambda: 0.0)
        self._last_write = 0.0  # seconds the previous batch took to write
        self.batches = 0  # batches written (tests, figures)
        self._flushing = 0  # flush() calls waiting
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
            if len(self._items) == 1:  # the first of a batch starts its window; later ones just join
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if not self._items and self._stop:
                    return
                first = time.monotonic()
                latest = first + self.max_hold
                deadline = first + min(self.max_window, max(self.window, DUTY * self._last_write))
                while not self._stop and not self._flushing:  # let others join this batch
                    now = time.monotonic()
                    if now >= deadline:
                        held = self.hold()  # callbacks arriving: later, in one go (never past latest)
                        if held <= 0 or now >= latest:
                            break
                        deadline = min(latest, now + held)
                    self._cond.wait(deadline - now)
                batch, self._items = _merged(self._items), []
                self._busy = True
            started = time.monotonic()
            # While callbacks arrive, BUSY_WRITERS threads write the batch one job after the other
            # (each write joins one of the callbacks' commits; every thread waiting on the store is
            # one more to wake at each commit); otherwise up to ``writers`` write it side by side.
            chunks = _chunks(batch, BUSY_WRITERS if self.hold() > 0 else self.writers)
            try:
                futures = []
                for chunk in chunks:
                    try:
                        futures.append(self._pool.submit(self._write_all, chunk))
                    except RuntimeError as exc:  # the interpreter is exiting: made again after a restart
                        for item in chunk:
                            item.done(None, exc)
                wait(futures)
            finally:
                self._last_write = time.monotonic() - started
                with self._cond:
                    self.batches += 1
                    self._busy = False
                    self._cond.notify_all()

    def _write_all(self, items: list[Write]) -> None:
        for item in items:
            self._write(item)

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
            self._flushing += 1  # the batch being gathered goes now, not at the end of its window
            try:
                while self._items or self._busy:
                    self._cond.notify_all()
                    self._cond.wait(0.05)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)



def _chunks(items: list[Write], count: int) -> list[list[Write]]:
    """``items`` dealt round-robin into at most ``count`` non-empty lists."""
    count = max(1, min(count, len(items)))
    return [items[start::count] for start in range(count)]


def _merged(items: list[Write]) -> list[Write]:
    """One write per job: outcomes of several targets of one job that arrive together are applied
    in one compare-and-set (in order), so they neither cost a commit each nor race each other."""
    by_job: dict[int, list[Write]] = {}
    for item in items:
        by_job.setdefault(item.job_id, []).append(item)
    merged: list[Write] = []
    for job_id, group in by_job.items():
        if len(group) == 1:
            merged.append(group[0])
            continue

        failed: dict[int, BaseException] = {}

        def change(job: Any, group: list[Write] = group, failed: dict[int, BaseException] = failed) -> Any:
            failed.clear()
            for number, item in enumerate(group):
                try:
                    job = item.change(job)
                except Exception as exc:  # noqa: BLE001 - that item is not written, the others are
                    failed[number] = exc
            return job

        def done(written: Any, error: BaseException | None, group: list[Write] = group,
                 failed: dict[int, BaseException] = failed) -> None:
            for number, item in enumerate(group):
                try:
                    if number in failed and error is None:
                        item.done(None, failed[number])
                    else:
                        item.done(written, error)
                except Exception:  # noqa: BLE001 - one callback's bug must not skip the others
                    pass

        merged.append(Write(job_id, change, done))
    return merged


class Pass:
    """One job's pass: counts its outcomes not yet written; the last one releases the job."""

    def __init__(self, finish: Callable[[Any], None]) -> None:
        self._finish = finish
        self._lock = threading.Lock()
        self._count = 1  # the sending loop itself, until close()
        self._latest: Any = None  # the newest version of the job the writes produced
        self.submitted = False

    def add(self) -> None:
        with self._lock:
            self._count += 1
            self.submitted = True

    def done(self, written: Any = None) -> None:
        with self._lock:
            self._count -= 1
            last = self._count == 0
            if written is not None and (self._latest is None or written.version > self._latest.version):
                self._latest = written
        if last:
            self._finish(self._latest)

    def close(self) -> bool:
        """The loop has sent all it will: True if writes were submitted (they release the job)."""
        with self._lock:
            self._count -= 1
            last = self._count == 0
            submitted = self.submitted
        if last and submitted:
            self._finish(self._latest)
        return submitted
