"""The embedded default store: one TinyDB JSON file shared safely by CLIs, the daemon and its threads.

File format: a normal TinyDB document (plain ``TinyDB(path)`` reads it), one job per line, so that
a one-shot command can read or change one job without parsing the others (see ``jobfile``)::

    {"jobs":{
    "1":{<job_to_record>},
    "2":{<job_to_record>}
    },"meta":{"1":{"format":"jobman","schema":1,"store-id":"<uuid4 hex>","next-id":N,"jobs-crc32":C}}}

Ids come from ``next-id`` and are always above the highest stored id, so they are never reused.

Safety, and why each piece exists (NOTES.md "TinyDB" measured the failures):

* Every read-modify-write holds an exclusive ``flock`` on the sidecar ``<name>.lock`` and re-reads
  the file inside it: no lost updates between processes, and no cached state (TinyDB's ``_next_id``
  or query cache, in NOTES.md) can go stale.
* Writes go to a temp file that is fsynced and renamed over the data file (then the directory is
  fsynced): a crash leaves the old or the new file, never a torn one. Because of that rename,
  **readers need no lock**: ``open`` resolves to one inode and an inode's bytes are never changed
  after it is renamed into place, so every read sees one whole, committed file.
* A file that is not ours (bad JSON, truncated, empty, foreign, newer schema, unreadable) raises
  :class:`StoreError` naming it, and is never written. The fast paths are as strict as a full
  parse: they trust the line layout only when its frame and CRC check out, and parse it all when
  not (``jobfile``).

Speed (DESIGN: ``schedule`` at 10k jobs within 1.5x of an empty store; the daemon at 100+
callbacks/s):

* One-shot commands never parse the whole file: ``get`` finds the job's line by binary search,
  ``add`` and ``update`` splice their lines into the old bytes. At 10k jobs that is one 7 MB read,
  a CRC pass or two and the 7 MB write, not a 40 ms parse and 10k decoded records.
* Whatever needs every job (``list``, the daemon's ``due``/``active``) parses the file once and
  keeps the parse in a snapshot for as long as no other process has written (checked with the lock
  file's generation nonce plus a ``stat``); this process's own commits carry it forward.
* Group commit: concurrent writers in one process queue up; one leader takes the lock once,
  applies every queued change in order and writes the file once.

TinyDB's own ``Table``/``JSONStorage`` are not used for writing: they re-encode the whole file on
every call (NOTES.md: 45 ms per insert at 10k) and write in place. A file last written by plain
TinyDB, by an older jobman or by hand is still read (full parse), and the next write of jobman
turns it into the line layout.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import os
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Collection, Hashable, Iterable

import orjson

from ..errors import JobNotFound, StoreError
from ..model import ACTIVE_STATES, Job, JobStatus, job_from_record, job_to_record, parse_time
from . import jobfile
from .base import JobChange
from .filelock import FileLock, GroupCommit, Label, Request, atomic_write, read_labelled, remove_stale_temps, \
    stat_key, still_current
from .jobfile import JOBS, META, META_ID, Lines

_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
_SCHEDULED = JobStatus.SCHEDULED.value


class _Views:
    """What the daemon asks for on every tick: due times of scheduled jobs, active ids, and the
    idempotency keys. Built in one pass over the raw records the first time a loaded file is asked,
    then carried from snapshot to snapshot with each commit's changed jobs (no 10k-record rescans).
    """

    __slots__ = ("due", "active", "idem")

    def __init__(self, due: dict[int, datetime], active: set[int], idem: dict[str, int]) -> None:
        self.due, self.active, self.idem = due, active, idem

    @classmethod
    def build(cls, snap: "_Snapshot") -> "_Views":
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

    def updated(self, jobs: Iterable[Job]) -> "_Views":
        views = _Views(dict(self.due), set(self.active), dict(self.idem))
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


class _Snapshot:
    """One committed state of the file: its line layout, its full parse, or both (each is made from
    the other on first use, then kept). Never mutated once published (writers copy on write), so
    reader threads can use it while a writer builds the next one. Jobs are decoded lazily and kept.
    """

    __slots__ = ("path", "label", "_lines", "_doc", "_jobs", "_views")

    def __init__(self, path: Path, label: Label | None, *, lines: Lines | None = None, doc: dict | None = None,
                 jobs: dict[int, Job] | None = None, views: _Views | None = None) -> None:
        assert lines is not None or doc is not None
        self.path, self.label, self._lines, self._doc = path, label, lines, doc
        self._jobs: dict[int, Job] = jobs if jobs is not None else {}
        self._views = views

    @classmethod
    def load(cls, path: Path, data: bytes, label: Label | None) -> "_Snapshot":
        """Validate ``data``: the line layout's frame and CRC, or else the full parse."""
        lines = Lines.parse(data)
        if lines is None:
            return cls(path, label, doc=jobfile.decode(path, data))
        jobfile.check_meta(path, lines.rest)
        return cls(path, label, lines=lines)

    # The benign races below: two threads may both build a value; they build equal ones.
    @property
    def lines(self) -> Lines:
        if self._lines is None:
            self._lines = jobfile.encode(self.doc)  # a file in another layout that is about to be written
        return self._lines

    @property
    def doc(self) -> dict:
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
    def views(self) -> _Views:
        if self._views is None:
            self._views = _Views.build(self)
        return self._views

    def last_id(self) -> int:
        return self._lines.last_id() if self._lines is not None else max(map(int, self.raw), default=0)

    def _fast(self) -> Lines | None:
        """The line layout if the file has not been parsed anyway (then a dict lookup is cheaper)."""
        return self._lines if self._doc is None else None

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

    def successor(self, lines: Lines, label: Label, changed: list[Job], records: dict[int, dict]) -> "_Snapshot":
        """The state after a commit of ``changed`` (whose records are ``records``): caches carried over."""
        doc = None
        if self._doc is not None:
            jobs = dict(self._doc[JOBS])
            jobs.update((str(job_id), record) for job_id, record in records.items())
            doc = {**self._doc, JOBS: jobs, **lines.rest}
        cache = dict(self._jobs)
        cache.update((job.id, job) for job in changed)
        views = None if self._views is None else self._views.updated(changed)
        return _Snapshot(self.path, label, lines=lines, doc=doc, jobs=cache, views=views)


class _File:
    """The store file as this process last saw it: a published snapshot, reloaded once another
    process has written, and replaced by each of our commits the moment its rename makes it visible.
    """

    def __init__(self, path: Path, lock: FileLock) -> None:
        self.path, self.lock = path, lock
        self.store_id = ""  # known once the file has been seen: then it must not vanish
        self._snapshot: _Snapshot | None = None
        self._inflight: tuple[_Snapshot, bytes] | None = None  # (base, new nonce) while committing
        self._publish = threading.Lock()
        self._swept = False

    def release(self) -> None:
        with self._publish:
            self._snapshot = None

    def snapshot(self) -> _Snapshot | None:
        """The current committed state (None if the file does not exist)."""
        snap, inflight = self._snapshot, self._inflight
        if snap is not None and snap.label is not None:
            if still_current(self.path, self.lock, snap.label):
                return snap
            # Our own commit has changed the nonce but not yet renamed: the file is still ``snap``
            # (we hold the lock). Without this, every reader thread would re-read meanwhile.
            if inflight is not None and inflight[0] is snap and still_current(
                    self.path, self.lock, (inflight[1], snap.label[1])):
                return snap
        loaded = read_labelled(self.path, self.lock)
        if loaded is None:
            if self.store_id:
                raise StoreError(f"{self.path}: the store file has disappeared; refusing to start over "
                                 "(job ids would be reused)")
            return None
        new = _Snapshot.load(self.path, *loaded)
        store_id = new.meta["store-id"]
        if self.store_id and store_id != self.store_id:
            raise StoreError(f"{self.path}: replaced by a different store (id {store_id}, was {self.store_id}); "
                             "reopen it")
        self.store_id = store_id
        with self._publish:
            if self._snapshot is snap:  # never replace a newer snapshot another thread published
                self._snapshot = new
        return new

    def sweep(self) -> None:
        """Delete leftovers of killed writers, once per handle (call holding the lock)."""
        if not self._swept:
            remove_stale_temps(self.path)
            self._swept = True

    def commit(self, base: _Snapshot, lines: Lines, changed: list[Job], records: dict[int, dict],
               creating: bool) -> None:
        """Write ``lines`` (holding the lock) and publish it as the successor of ``base``."""
        nonce = self.lock.write_nonce()  # before the rename: see filelock
        self._inflight = (base, nonce)

        def publish(st: os.stat_result) -> None:  # as soon as other processes can see it
            new = base.successor(lines, (nonce, stat_key(st)), changed, records)
            self.store_id = new.meta["store-id"]
            with self._publish:
                self._snapshot = new
            self._inflight = None

        try:
            atomic_write(self.path, lines.chunks, create_only=creating, renamed=publish)
        except BaseException:
            if self._inflight is not None:  # not renamed: nothing changed, but our label is stale
                with self._publish:
                    self._snapshot = None
            raise
        finally:
            self._inflight = None


def _as_id(value: object) -> int:
    """Ids are ints; a digit string is tolerated, anything else simply names no job."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise JobNotFound(str(value))


def _normalized(job: Job) -> Job:
    """The job exactly as any process will read it back (times keep milliseconds only)."""
    return job_from_record(job_to_record(job))


class _Batch:
    """What one group commit sees: the base snapshot plus the changes of the requests queued
    before this one (two updates of one job in one batch apply in order, as if serialized)."""

    def __init__(self, base: _Snapshot) -> None:
        self.base = base
        self.changed: dict[int, Job] = {}
        self.new_ids: list[int] = []
        self.idem: dict[str, int] = {}
        # Above every stored id even if a hand edit set the counter back: ids stay unique, ascend.
        self.next_id: int = max(base.meta["next-id"], base.last_id() + 1)

    def current(self, job_id: int) -> Job:
        job = self.changed[job_id] if job_id in self.changed else self.base.job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def add(self, draft: Job) -> tuple[Job, bool]:
        key = draft.idempotency_key
        if key:
            existing = self.idem.get(key)
            if existing is None:
                existing = self.base.find_key(key)
            if existing is not None:
                return self.current(existing), False
        job = _normalized(dataclasses.replace(draft, id=self.next_id))
        self.next_id += 1
        self.changed[job.id] = job
        self.new_ids.append(job.id)
        if key:
            self.idem[key] = job.id
        return job, True

    def update(self, job_id: int, change: JobChange) -> Job:
        current = self.current(job_id)
        new = change(current)
        if new is current:
            return current
        if not isinstance(new, Job) or new.id != job_id:
            raise TypeError(f"a change of job {job_id} must return that job (got {new!r:.60})")
        self.changed[job_id] = new = _normalized(new)
        return new

    def encoded(self) -> tuple[Lines, dict[int, dict]]:
        """The base file with this batch's jobs spliced in, and their records."""
        records = {job_id: job_to_record(job) for job_id, job in self.changed.items()}
        try:
            lines = {job_id: orjson.dumps(record) for job_id, record in records.items()}
        except TypeError as err:
            raise StoreError(f"{self.base.path}: cannot encode the store: {err}") from None
        fresh = set(self.new_ids)
        replaced = {job_id: line for job_id, line in lines.items() if job_id not in fresh}
        appended = [(job_id, lines[job_id]) for job_id in self.new_ids]
        meta = {"next-id": self.next_id} if self.new_ids else {}
        return self.base.lines.splice(replaced, appended, meta), records


class TinyDBStore:
    """The :class:`~jobman_cli.stores.base.JobStore` over one TinyDB file (see the module doc).

    ``create=False`` is for read-only commands: a missing file reads as an empty store and nothing
    is created (no file, lock file or directory) until the first write. ``store_id`` is ``""``
    while the file does not exist. One instance may be shared by any number of threads; jobs it
    returns are exactly what any other process reads back (times at millisecond precision).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"))
        self._file = _File(self.path, self._lock)
        self._commits = GroupCommit(self._run, self.path)
        if self._file.snapshot() is None and create:  # also validates an existing file now
            self._commits.submit(lambda batch: None)  # an empty commit creates the file

    @property
    def store_id(self) -> str:
        if not self._file.store_id and not self._commits.closed:
            self._file.snapshot()
        return self._file.store_id

    def __repr__(self) -> str:
        return f"TinyDBStore({self.location!r})"

    def __enter__(self) -> "TinyDBStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes (group commit)
    def add(self, draft: Job) -> tuple[Job, bool]:
        return self._commits.submit(lambda batch: batch.add(draft))

    def update(self, job_id: int, change: JobChange) -> Job:
        """Compare-and-set (see the port). ``change`` runs on whichever thread leads the commit,
        under the file lock: it must be a pure function of the job and must not call the store."""
        job_id = _as_id(job_id)
        if not self._file.store_id and self._snapshot() is None:
            raise JobNotFound(job_id)  # no file, no job; and a read-only handle must not create one
        return self._commits.submit(lambda batch: batch.update(job_id, change))

    def _run(self, batch: list[Request]) -> None:
        with self._lock.exclusive():
            self._file.sweep()
            base = self._file.snapshot()
            creating = base is None
            if base is None:
                base = _Snapshot(self.path, None, lines=jobfile.new_document(uuid.uuid4().hex))
            work = _Batch(base)
            for request in batch:
                try:
                    request.result = request.apply(work)
                except Exception as err:  # that request's own failure: nothing of it is written
                    request.error = err
            if work.changed or creating:
                lines, records = work.encoded()
                self._file.commit(base, lines, list(work.changed.values()), records, creating)

    # ------------------------------------------------------------------ reads (no lock needed)
    def _snapshot(self) -> _Snapshot | None:
        if self._commits.closed:
            raise StoreError(f"{self.path}: store is closed")
        return self._file.snapshot()

    def get(self, job_id: int) -> Job:
        job_id = _as_id(job_id)
        snap = self._snapshot()
        job = snap.job(job_id) if snap is not None else None
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(self, statuses: Collection[JobStatus] | None = None) -> list[Job]:
        """Newest first. ``None`` or an empty collection means every status."""
        snap = self._snapshot()
        if snap is None:
            return []
        wanted = {JobStatus(s).value for s in statuses} if statuses else None
        with _collector_paused():
            ids = sorted((int(k) for k, r in snap.raw.items() if wanted is None or r.get("status") in wanted),
                         reverse=True)
            return [snap.job(job_id) for job_id in ids]  # type: ignore[misc]

    def due(self, now: datetime, limit: int | None = None) -> list[Job]:
        snap = self._snapshot()
        if snap is None:
            return []
        pairs = ((at, job_id) for job_id, at in snap.views.due.items() if at <= now)
        chosen = sorted(pairs) if limit is None else heapq.nsmallest(limit, pairs)
        return [snap.job(job_id) for _, job_id in chosen]  # type: ignore[misc]

    def active(self) -> list[Job]:
        snap = self._snapshot()
        return [] if snap is None else [snap.job(i) for i in sorted(snap.views.active)]  # type: ignore[misc]

    def next_due_at(self) -> datetime | None:
        snap = self._snapshot()
        return None if snap is None else min(snap.views.due.values(), default=None)

    def change_marker(self) -> Hashable:
        """``(nonce, inode, mtime_ns, size, ctime_ns)``, or None while the file does not exist: a
        ``stat`` and a 32-byte ``pread``, cheap enough to poll several times a second."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (self._lock.read_nonce(), st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)

    def close(self) -> None:
        """Refuse further calls and let go of the lock file and the snapshot. Cheap: a one-shot
        command holds only the file's bytes (a ``list`` also its parse, which goes either way)."""
        self._commits.close()
        self._file.release()
        self._lock.close()


class _collector_paused:
    """Building thousands of jobs at once: the cyclic collector would walk the fresh objects over
    and over (none of them is garbage yet), about a fifth of the time."""

    def __enter__(self) -> None:
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            gc.enable()
