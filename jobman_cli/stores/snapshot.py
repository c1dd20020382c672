"""What one process knows of the store file: immutable snapshots of committed states, with the
caches built on them (decoded jobs, the daemon's views), and the file handle that reloads a snapshot
once another process has written and publishes each of its own commits.

Why snapshots: a long-lived process (the daemon, with its listener threads) asks for due and
active jobs several times a second; parsing a 7 MB file each time would cost 40 ms. A snapshot is
reused for as long as its label (``filelock``) proves the file unchanged, and each of our own
commits derives the next snapshot from the last one (the changed jobs only) instead of re-reading.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import StoreError
from ..model import ACTIVE_STATES, Job, JobStatus, job_from_record, parse_time
from . import jobfile
from .filelock import FileLock, Label, atomic_write, read_labelled, remove_stale_temps, stat_key, still_current
from .jobfile import JOBS, META, META_ID, Lines

_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
_SCHEDULED = JobStatus.SCHEDULED.value


class Views:
    """What the daemon asks for on every tick: due times of scheduled jobs, active ids, and the
    idempotency keys. Built in one pass over the raw records the first time a loaded file is asked,
    then carried from snapshot to snapshot with each commit's changed jobs (no 10k-record rescans).
    """

    __slots__ = ("due", "active", "idem")

    def __init__(self, due: dict[int, datetime], active: set[int], idem: dict[str, int]) -> None:
        self.due, self.active, self.idem = due, active, idem

    @classmethod
    def build(cls, snap: "Snapshot") -> "Views":
        views = cls({}, set(), {})
        for key, record in snap.raw.items():
            try:
                status = record["status"]
                if status == _SCHEDULED:
                    due, not_before = parse_time(record["date-time"]), parse_time(record.get("not-before"))
                    views.due[int(key)] = not_before if not_before is not None and not_before > due else due
                elif status in _ACTIVE:
                    views.active.add(int(key))
                if record.get("idempotency-key"):
                    views.idem[record["idempotency-key"]] = int(key)
            except (KeyError, ValueError, TypeError) as err:
                raise StoreError(f"{snap.path}: job {key} is malformed ({type(err).__name__}: {err})") from None
        return views

    def updated(self, jobs: Iterable[Job], removed: Mapping[int, str | None] | None = None) -> "Views":
        """After a commit of ``jobs`` and the removal (prune) of ``removed``: id -> its
        idempotency key, which is free again."""
        views = Views(dict(self.due), set(self.active), dict(self.idem))
        for job_id, key in (removed or {}).items():
            views.due.pop(job_id, None)
            views.active.discard(job_id)
            if key and views.idem.get(key) == job_id:
                del views.idem[key]
        for job in jobs:
            views.due.pop(job.id, None)
            views.active.discard(job.id)
            if job.status is JobStatus.SCHEDULED:
                views.due[job.id] = job.due_at
            elif job.status in ACTIVE_STATES:
                views.active.add(job.id)
            if job.idempotency_key:
                views.idem[job.idempotency_key] = job.id
        return views


class Snapshot:
    """One committed state of the file: its line layout, its full parse, or both (each is made from
    the other on first use, then kept). Never mutated once published (writers copy on write), so
    reader threads can use it while a writer builds the next one. Jobs are decoded lazily and kept.
    """

    __slots__ = ("path", "label", "_lines", "_doc", "_jobs", "_views", "_once")

    def __init__(self, path: Path, label: Label | None, *, lines: Lines | None = None, doc: dict | None = None,
                 jobs: dict[int, Job] | None = None, views: Views | None = None) -> None:
        assert lines is not None or doc is not None
        self.path, self.label, self._lines, self._doc = path, label, lines, doc
        self._jobs: dict[int, Job] = jobs if jobs is not None else {}
        self._views = views
        self._once = threading.RLock()

    @classmethod
    def load(cls, path: Path, data: bytes, label: Label | None) -> "Snapshot":
        """Validate ``data``: the line layout's frame and CRC, or else the full parse."""
        lines = Lines.parse(data)
        if lines is None:
            return cls(path, label, doc=jobfile.decode(path, data))
        jobfile.check_meta(path, lines.rest)
        return cls(path, label, lines=lines)

    # Built once, by one thread (``_once``): each is a full encode or parse (25-40 ms at 10k jobs),
    # and after a reload several of the daemon's threads ask for the views at the same moment.
    @property
    def lines(self) -> Lines:
        if self._lines is None:
            with self._once:
                if self._lines is None:  # a file in another layout that is about to be written
                    self._lines = jobfile.encode(self.doc)
        return self._lines

    @property
    def doc(self) -> dict:
        if self._doc is None:
            with self._once:
                if self._doc is None:
                    self._doc = jobfile.decode(self.path, self.lines.data)
        return self._doc

    @property
    def raw(self) -> dict[str, dict]:
        return self.doc[JOBS]

    @property
    def meta(self) -> dict:
        return self._lines.meta if self._lines is not None else self.doc[META][META_ID]

    @property
    def views(self) -> Views:
        if self._views is None:
            with self._once:
                if self._views is None:
                    self._views = Views.build(self)
        return self._views

    def last_id(self) -> int:
        return self._lines.last_id() if self._lines is not None else max(map(int, self.raw), default=0)

    def _fast(self) -> Lines | None:
        """The line layout if the file has not been parsed anyway (then a dict lookup is cheaper)."""
        return self._lines if self._doc is None else None

    def fast_lines(self) -> Lines | None:
        """The line layout if the file has not been parsed (a reader that needs only a few lines
        then reads only those); None once the full parse exists (a dict lookup is cheaper)."""
        return self._fast()

    def record(self, job_id: int) -> dict | None:
        """The stored record of one job (None if there is none), without a full parse if possible."""
        lines = self._fast()
        if lines is not None:
            try:
                return lines.record(job_id)
            except ValueError:
                pass
        return self.raw.get(str(job_id))

    def job(self, job_id: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        lines = self._fast()
        try:
            record = lines.record(job_id) if lines is not None else self.raw.get(str(job_id))
        except ValueError:  # not a line after all (a CRC-checked file cannot get here): parse it all
            record = self.raw.get(str(job_id))
        if record is None:
            return None
        try:
            job = job_from_record(record)
            if job.id != job_id:
                raise ValueError(f"its record says id {job.id}")
        except (KeyError, ValueError, TypeError) as err:
            raise StoreError(f"{self.path}: job {job_id} is malformed ({type(err).__name__}: {err})") from None
        self._jobs[job_id] = job
        return job

    def find_key(self, key: str) -> int | None:
        """The job holding an idempotency key: the daemon's views, else a byte search of the lines
        (about 3 ms at 10k jobs), else a scan of the parsed records."""
        if self._views is not None:
            return self._views.idem.get(key)
        lines = self._fast()
        if lines is not None:
            try:
                return lines.key_holder(key)
            except ValueError:
                pass
        return next((int(k) for k, r in self.raw.items() if r.get("idempotency-key") == key), None)

    def carries(self, base: "Snapshot") -> bool:
        """Whether this successor has each cache ``base`` has now (readers may build some meanwhile)."""
        return (self._views is not None or base._views is None) and (self._doc is not None or base._doc is None)

    def relabelled(self, label: Label) -> "Snapshot":
        """The same state under another label (the bytes are unchanged), caches shared."""
        return Snapshot(self.path, label, lines=self._lines, doc=self._doc, jobs=self._jobs, views=self._views)

    def successor(self, lines: Lines, label: Label | None, changed: list[Job], records: dict[int, dict],
                  removed: Mapping[int, str | None] | None = None) -> "Snapshot":
        """The state after a commit of ``changed`` (whose records are ``records``) and of the
        removal of ``removed`` (a prune: id -> idempotency key): caches carried over. (Its label may be set once, before
        it is published: the new file's stat.)"""
        doc = None
        if self._doc is not None:
            jobs = dict(self._doc[JOBS])
            jobs.update((str(job_id), record) for job_id, record in records.items())
            for job_id in removed or ():
                jobs.pop(str(job_id), None)
            doc = {**self._doc, JOBS: jobs, **lines.rest}
        cache = dict(self._jobs)
        cache.update((job.id, job) for job in changed)
        for job_id in removed or ():
            cache.pop(job_id, None)
        views = None if self._views is None else self._views.updated(changed, removed)
        return Snapshot(self.path, label, lines=lines, doc=doc, jobs=cache, views=views)


class StoreFile:
    """The store file as this process last saw it: a published snapshot, reloaded once another
    process has written, and replaced by each of our commits the moment its rename makes it visible.

    Why readers coordinate (the daemon's loop and its listener threads all call :meth:`snapshot`):
    a snapshot made by a reload has no views yet, so returning one costs the caller a full parse
    (40 ms at 10k jobs) on top of the 7 MB read. A reader that merely *noticed our own commit* must
    therefore never reload. While a commit is in flight (``_inflight``, set before its nonce is
    written) the file is provably its base until the rename, and readers take the base; between
    the rename and the publish they wait for the successor (``_changed`` is notified by the publish,
    and by the commit's end whether it succeeded or failed, so no reader waits past it). A reload
    happens only when nothing of ours explains the change (another process wrote), and then one
    thread at a time does it while the others wait for its result.
    """

    def __init__(self, path: Path, lock: FileLock) -> None:
        self.path, self.lock = path, lock
        self.store_id = ""  # known once the file has been seen: then it must not vanish
        # Guarded by _changed, which is notified whenever one of them changes:
        self._snapshot: Snapshot | None = None
        self._inflight: tuple[Snapshot, bytes] | None = None  # (base, its successor's nonce) while committing
        self._loading = False  # a thread is re-reading the file
        self._changed = threading.Condition(threading.Lock())
        self._swept = False

    def release(self) -> None:
        with self._changed:
            self._snapshot = None

    def snapshot(self) -> Snapshot | None:
        """The current committed state (None if the file does not exist)."""
        snap = self._snapshot
        if snap is not None and snap.label is not None and still_current(self.path, self.lock, snap.label):
            return snap  # the common case, without taking any lock
        with self._changed:
            while True:
                usable = self._usable()
                if usable is not None:
                    return usable
                if self._inflight is None and not self._loading:
                    break  # nothing of ours explains the change: another process wrote
                self._changed.wait()  # for our commit's publish or end, or for another thread's reload
            self._loading, stale = True, self._snapshot
        try:
            new = self._load()
        except BaseException:
            with self._changed:
                self._loading = False
                self._changed.notify_all()  # a waiter then tries itself (and says what is wrong)
            raise
        with self._changed:
            self._loading = False
            self._changed.notify_all()
            if self._snapshot is stale:
                self._snapshot = new
                return new
            return self._usable() or new  # a publish came first: its snapshot, if it still is the file

    def _usable(self) -> Snapshot | None:
        """(Holding ``_changed``.) The published snapshot if it provably still is the file, or the
        base of our commit in flight while that is (before its rename, the file is the base: we hold
        the lock; the nonce check keeps this sound even if the commit has ended meanwhile)."""
        snap, inflight = self._snapshot, self._inflight
        if snap is not None and snap.label is not None and still_current(self.path, self.lock, snap.label):
            return snap
        if inflight is not None:
            base, nonce = inflight
            if base.label is not None and (still_current(self.path, self.lock, (nonce, base.label[1]))
                                           or still_current(self.path, self.lock, base.label)):
                return base
        return None

    def _load(self) -> Snapshot | None:
        """Read, validate and label the file as it is now."""
        loaded = read_labelled(self.path, self.lock)
        if loaded is None:
            if self.store_id:
                raise StoreError(f"{self.path}: the store file has disappeared; refusing to start over "
                                 "(job ids would be reused)")
            return None
        new = Snapshot.load(self.path, *loaded)
        store_id = new.meta["store-id"]
        if self.store_id and store_id != self.store_id:
            raise StoreError(f"{self.path}: replaced by a different store (id {store_id}, was {self.store_id}); "
                             "reopen it")
        self.store_id = store_id
        return new

    def sweep(self) -> None:
        """Delete leftovers of killed writers, once per handle (call holding the lock)."""
        if not self._swept:
            remove_stale_temps(self.path)
            self._swept = True

    def commit(self, base: Snapshot, lines: Lines, changed: list[Job], records: dict[int, dict],
               creating: bool, removed: Mapping[int, str | None] | None = None) -> None:
        """Write ``lines`` (holding the lock) and publish it as the successor of ``base``."""
        nonce = self.lock.new_nonce()
        new = base.successor(lines, None, changed, records, removed)  # made now: readers wait only for a stat
        with self._changed:
            self._inflight = (base, nonce)  # before the nonce changes: readers must know it is ours

        def publish(st: os.stat_result) -> None:  # as soon as other processes can see it
            nonlocal new
            if not new.carries(base):  # a reader parsed the base during the write: keep that
                new = base.successor(lines, None, changed, records, removed)
            new.label = (nonce, stat_key(st))
            with self._changed:
                self.store_id = new.meta["store-id"]
                self._snapshot, self._inflight = new, None
                self._changed.notify_all()

        try:
            self.lock.write_nonce(nonce)  # before the rename: see filelock
            atomic_write(self.path, lines.chunks, create_only=creating, renamed=publish)
        except BaseException:
            with self._changed:
                if self._inflight is not None:  # not published: the file is unchanged, or unknown
                    self._snapshot = self._unchanged(base, nonce)
            raise
        finally:
            with self._changed:
                self._inflight = None
                self._changed.notify_all()  # a failed commit wakes its waiters too

    def _unchanged(self, base: Snapshot, nonce: bytes) -> Snapshot | None:
        """After a failed commit (holding the lock): ``base`` under the nonce we wrote, if the file
        is provably still ``base`` (so a disk error costs readers no reload), else None."""
        if base.label is None:
            return None
        try:
            unrenamed = stat_key(os.stat(self.path)) == base.label[1]
        except OSError:
            return None
        return base.relabelled((nonce, base.label[1])) if unrenamed else None
