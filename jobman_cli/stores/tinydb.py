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
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable, Collection, Hashable

import orjson

from ..errors import JobNotFound, StoreError
from ..model import Job, JobStatus, as_stored, format_time, job_to_record
from . import jobfile
from . import base as port  # the prune rules, looked up at call time (tests wrap them)
from .base import PRUNE_BATCH, JobChange
from .filelock import DAEMON_LOCK_SUFFIX, FileLock, GroupCommit, Request, daemon_holding
from .jobfile import Lines
from .snapshot import Snapshot, StoreFile
from .tinydb_schedules import TinyDBSchedules


#: Seconds a new handle waits for a daemon that holds the lock but has no store file yet (one
#: starting on a fresh host creates it right after taking its lock).
DAEMON_START_WAIT = 2.0


def _as_id(value: object) -> int:
    """Ids are ints; a digit string is tolerated, anything else simply names no job."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise JobNotFound(str(value))


class _Batch:
    """What one group commit sees: the base snapshot plus the changes of the requests queued
    before this one (two updates of one job in one batch apply in order, as if serialized)."""

    def __init__(self, base: Snapshot) -> None:
        self.base = base
        self.changed: dict[int, Job] = {}
        self.new_ids: list[int] = []
        self.idem: dict[str, int] = {}
        self.removed: dict[int, str | None] = {}  # pruned base jobs -> their idempotency keys
        # Above every stored id even if a hand edit set the counter back: ids stay unique, ascend.
        self.next_id: int = max(base.meta["next-id"], base.last_id() + 1)

    def current(self, job_id: int) -> Job:
        job = self.changed[job_id] if job_id in self.changed else self.base.job(job_id)
        if job is None or job_id in self.removed:
            raise JobNotFound(job_id)
        return job

    def add(self, draft: Job) -> tuple[Job, bool]:
        key = draft.idempotency_key
        if key:
            existing = self.idem.get(key)
            if existing is None:
                existing = self.base.find_key(key)
            if existing is not None and existing not in self.removed:
                return self.current(existing), False
        job = as_stored(dataclasses.replace(draft, id=self.next_id))
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
        self.changed[job_id] = new = as_stored(new)
        return new

    def prune(self, ids: list[int], cutoff: datetime, seen: Snapshot) -> list[int]:
        """Remove those of ``ids`` that are still prunable now. The caller chose them from ``seen``;
        if the file is still that state (no writer since), the choice stands, else each job is
        judged again on its current record (a job changed since is kept unless still prunable)."""
        unchanged = self.base is seen and not self.changed
        removed = []
        for job_id in ids:
            if job_id in self.removed:
                continue
            if job_id in self.changed:
                job = self.changed[job_id]
                # (A job added in this batch cannot be asked for: the ids come from an older state.)
                if job_id in self.new_ids or not port.prunable(job, cutoff):
                    continue
                del self.changed[job_id]
                key = job.idempotency_key
            else:
                record = self.base.record(job_id)
                if record is None or not (unchanged or port.record_prunable(record, cutoff)):
                    continue
                key = record.get("idempotency-key")
            self.removed[job_id] = key
            if key and self.idem.get(key) == job_id:
                del self.idem[key]
            removed.append(job_id)
        return removed

    def encoded(self) -> tuple[Lines, dict[int, dict]]:
        """The base file with this batch's jobs spliced in (and pruned ones cut out), and their records."""
        records = {job_id: _stored(job) for job_id, job in self.changed.items()}
        try:
            lines = {job_id: orjson.dumps(record) for job_id, record in records.items()}
        except TypeError as err:
            raise StoreError(f"{self.base.path}: cannot encode the store: {err}") from None
        fresh = set(self.new_ids)
        replaced = {job_id: line for job_id, line in lines.items() if job_id not in fresh}
        appended = [(job_id, lines[job_id]) for job_id in self.new_ids]
        # A prune writes the counter too: a stale one (a hand edit) must not hand out a pruned id.
        meta = {"next-id": self.next_id} if self.new_ids or self.removed else {}
        lines = self.base.lines
        if replaced or appended or not self.removed:
            lines = lines.splice(replaced, appended, meta)
        if self.removed:
            lines = lines.without(sorted(self.removed), meta)
        return lines, records


class TinyDBStore(TinyDBSchedules):
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
        self._file = StoreFile(self.path, self._lock)
        self._commits = GroupCommit(self._run, self.path)
        self._read_only, self._froze = not create, False
        if self._file.snapshot() is None and create:  # also validates an existing file now
            if self._daemon_lost_it(wait=DAEMON_START_WAIT) is None:
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
                self._daemon_lost_it(wait=0.0)
                base = Snapshot(self.path, None, lines=jobfile.new_document(uuid.uuid4().hex))
            work = _Batch(base)
            for request in batch:
                try:
                    request.result = request.apply(work)
                except Exception as err:  # that request's own failure: nothing of it is written
                    request.error = err
            if work.changed or creating or work.removed:
                lines, records = work.encoded()
                self._file.commit(base, lines, list(work.changed.values()), records, creating, work.removed)

    def _daemon_lost_it(self, wait: float) -> Snapshot | None:
        """Before creating a missing store file: refuse (StoreError, nothing written) if a running
        daemon holds this store's daemon lock, for then the file was deleted or moved under it and
        a fresh one would hand out job ids from 1 again. A daemon that has just taken its lock on a
        fresh host creates the file a moment later: wait up to ``wait`` seconds for that, and
        return the file's snapshot if it appears (None: no daemon, go ahead and create)."""
        pid = daemon_holding(self.path)
        deadline = time.monotonic() + wait
        while pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
            snap = self._file.snapshot()
            if snap is not None:
                return snap
            pid = daemon_holding(self.path)
        if pid is None:
            return None
        who = f"a running jobman daemon (pid {pid})" if pid else "a running jobman daemon"
        raise StoreError(f"{self.path}: the store file is missing, but {who} holds {self.path}{DAEMON_LOCK_SUFFIX}: "
                         "the store was deleted or moved under it; refusing to create a fresh store (job ids would "
                         "start over at 1). Restore the file, or stop the daemon first")

    # ------------------------------------------------------------------ reads (no lock needed)
    def _snapshot(self) -> Snapshot | None:
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

    def list(self, statuses: Collection[JobStatus] | None = None, *, limit: int | None = None,
             since: datetime | None = None, schedule: int | None = None) -> list[Job]:
        """Newest first. ``None`` or an empty collection means every status."""
        snap = self._snapshot()
        if snap is None:
            return []
        with _collector_paused():
            return [snap.job(job_id) for job_id, _ in self._select(snap, statuses, limit, since, schedule,  # type: ignore[misc]
                                                                    self._parsed)]

    def list_records(self, statuses: Collection[JobStatus] | None = None, *, limit: int | None = None,
                     since: datetime | None = None, schedule: int | None = None) -> list[dict]:
        """Newest first, the parsed records themselves (read-only for the caller)."""
        snap = self._snapshot()
        return [] if snap is None else [record for _, record in self._select(snap, statuses, limit, since, schedule,
                                                                             self._parsed)]

    def owing_receipts(self, since: datetime) -> list[dict]:
        """See the port: the parse the daemon keeps anyway (its views are built from it), filtered."""
        snap = self._snapshot()
        return [] if snap is None else port.owing_since(snap.raw.values(), since)  # type: ignore[return-value]

    def _parsed(self) -> None:
        """Once the whole file is parsed, a read-only (one-shot CLI) handle hides the parse from the
        cyclic collector until :meth:`close`: its ~200k containers (no garbage, no cycles) were walked
        ~3 times by collections the caller's own work set off, 100 of ``list --json``'s 480 ms CPU at
        10k jobs. Never for ``create=True`` (the daemon): objects frozen alive stay uncollected."""
        if self._read_only and not self._froze:
            self._froze = True
            gc.freeze()

    @staticmethod
    def _select(snap: Snapshot, statuses: Collection[JobStatus] | None, limit: int | None,
                since: datetime | None, schedule: int | None = None,
                parsed: Callable[[], None] | None = None) -> list[tuple[int, dict]]:
        """``(id, record)`` of the chosen jobs, newest first. With a ``limit`` or ``since`` and a
        file nobody parsed yet, the lines are read from the end, one at a time, until ``limit``
        match (``list --limit 20`` at 100k jobs: 20 small parses instead of a 1 s one), and a line
        whose bytes show it was created before ``since`` is not parsed at all (``list --since 1d``
        parses a day of jobs, not a year); otherwise the full parse, filtered. A ``schedule``'s
        runs on an unparsed file: a byte search for its ``"schedule-id":N``, only those lines parsed."""
        wanted = {JobStatus(s).value for s in statuses} if statuses else None

        def keep(record: dict) -> bool:
            return ((wanted is None or record.get("status") in wanted) and port.created_since(record, since)
                    and port.of_schedule(record, schedule))

        lines = snap.fast_lines()
        if schedule is not None and lines is not None:
            chosen = []
            for job_id, first, last in lines.holders("schedule-id", schedule):
                record = orjson.loads(memoryview(lines.data)[first:last])
                if isinstance(record, dict) and keep(record):
                    chosen.append((job_id, record))
                    if limit is not None and len(chosen) >= limit:
                        break
            return chosen
        if (limit is not None or since is not None) and lines is not None:
            second = None if since is None else format_time(since)[:19].encode()  # type: ignore[index]
            view, chosen = memoryview(lines.data), []
            for job_id, first, last in lines.newest():
                if second is not None and lines.created_before(first, last, second):
                    continue
                record = orjson.loads(view[first:last])
                if keep(record):
                    chosen.append((job_id, record))
                    if limit is not None and len(chosen) >= limit:
                        break
            return chosen
        raw = snap.raw
        if parsed is not None:
            parsed()
        if wanted is None and since is None and schedule is None:  # every job: no call per record
            ids = map(int, raw)
        else:
            ids = (int(k) for k, r in raw.items() if keep(r))
        top = sorted(ids, reverse=True) if limit is None else heapq.nlargest(limit, ids)
        return [(job_id, raw[str(job_id)]) for job_id in top]

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

    def prune(self, cutoff: datetime, *, dry_run: bool = False, batch: int = PRUNE_BATCH) -> list[int]:
        """See the port. Chosen from one parse of the file (no lock), then removed ``batch`` at a
        time, each batch one commit (one file write) that re-checks its jobs under the lock."""
        snap = self._snapshot()
        if snap is None:
            return []
        lines = snap.fast_lines()
        if lines is not None:  # one record at a time: a year of jobs is never all in memory
            ids = [job_id for job_id, encoded in lines.lines()
                   if port.record_prunable(orjson.loads(encoded), cutoff)]
        else:
            ids = sorted(int(key) for key, record in snap.raw.items() if port.record_prunable(record, cutoff))
        if dry_run:
            return ids
        removed: list[int] = []
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            removed += self._commits.submit(lambda work, chunk=chunk: work.prune(chunk, cutoff, snap))  # type: ignore[misc]
        return sorted(removed)

    def change_marker(self) -> Hashable:
        """``(nonce, inode, mtime_ns, size, ctime_ns, schedules)``, or None while the file does not
        exist: two ``stat`` and a 32-byte ``pread``, cheap enough to poll several times a second."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (self._lock.read_nonce(), st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns, self.schedule_marker())

    def close(self) -> None:
        """Refuse further calls and let go of the lock file and the snapshot. Cheap: a one-shot
        command holds only the file's bytes (a ``list`` also its parse, which goes either way)."""
        self._commits.close()
        self._file.release()
        self._lock.close()
        if self._froze:  # see _parsed: the parse is let go of above, so this frees or walks nothing big
            self._froze = False
            gc.unfreeze()


def _stored(job: Job) -> dict:
    """``job_to_record`` without its empty (``None``) fields, as DynamoDB items already are: every
    reader takes an absent key as ``None`` (``.get``), and the ~18 nulls of a typical job were a
    quarter of the file (12.0 -> 9.0 MB at 10k jobs) that every command reads, checksums or parses."""
    return {k: v for k, v in job_to_record(job).items() if v is not None or k in job.extra}


class _collector_paused:
    """Building thousands of jobs at once: the cyclic collector would walk the fresh objects over
    and over (none of them is garbage yet), about a fifth of the time."""

    def __enter__(self) -> None:
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            gc.enable()
