"""Observing: the one log line per state change, whoever made it.

The daemon's own changes are logged where they are made (a claim, a launch, a failure). Two kinds
of change are not made by the daemon's parts and are logged here:

* changes made through this process's :class:`~jobman_cli.service.JobService` (the HTTP API: a job
  scheduled, an instance's callback): :meth:`Observer.service_changed`;
* changes made by *other* processes (a CLI ``cancel``, a callback answered by another daemon):
  :meth:`Observer.step` diffs the active jobs' states against the last look.

Telling the two apart without a race: every write this process makes (the daemon's parts, and the
API's service, which the daemon points at the same wrapper) goes through :class:`RecordingStore`,
which tells the observer what it is *about to write* (:meth:`Observer.intend`, called inside the
store's compare-and-set, before the write can be seen) and then what it wrote
(:meth:`Observer.settle`). A job version :meth:`Observer.step` finds is this process's own if it
carries one of those marks, whenever the step happens to read it — before, during or after the
write returned. (Noting a write only *after* it returned left a window in which the step saw the
new state first and logged the daemon's own change a second time, "by another process".)
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable

from ..errors import JobmanError
from ..model import ACTIVE_STATES, Job, JobStatus, format_time
from ..model.job import OPERATOR_CANCEL_REASON
from ..stores import WriteOutcomeUnknown
from ..stores.base import JobStore
from .common import Log

#: What identifies one written version of a job: its id, version number, status and change time as
#: every store keeps it (milliseconds: a candidate's microseconds would never match what a read
#: returns). The status and time tell a lost compare-and-set of ours, whose version another process
#: then wrote, apart from that process's write.
Mark = tuple[int, int, str, "datetime | None"]


#: Seconds the marks of a job that left the active set are kept.
KEEP_MARKS = 300.0


def mark_of(job: Job) -> Mark:
    at = job.updated_at
    return (job.id, job.version, job.status.value,
            at.replace(microsecond=at.microsecond // 1000 * 1000) if at is not None else None)


class Observer:
    def __init__(self, store: JobStore, log: Log) -> None:
        self.store = store
        self.log = log
        #: job id -> (status, version) last seen of the active jobs (own writes and :meth:`step`);
        #: None until the first look.
        self._seen: dict[int, tuple[JobStatus, int]] | None = None
        #: Versions this process wrote or is writing (:meth:`intend`, :meth:`settle`), with the
        #: monotonic time each was written (those of jobs that left the active set are kept
        #: :data:`KEEP_MARKS` seconds: long enough for any later step to look them up).
        self._mine: dict[Mark, float] = {}
        # Never held while the store is read: ``intend`` runs inside the store's write (under its
        # lock, on the committing thread), so a step holding this across a read would deadlock.
        self._lock = threading.Lock()
        #: Called with every job this process wrote and every active job another process ended
        #: (the notifier queues the deliveries a job owes). Must be cheap and never raise.
        self.listeners: list[Callable[[Job], None]] = []

    # ------------------------------------------------------------------ this process's writes
    def intend(self, job: Job) -> None:
        """This process is about to write ``job`` (called inside the compare-and-set)."""
        with self._lock:
            self._mine[mark_of(job)] = time.monotonic()

    def settle(self, intended: list[Job], written: Job | None) -> None:
        """The write whose candidates were ``intended`` ended: ``written`` is what it stored (None:
        it wrote nothing or failed). Candidates that were not written are forgotten."""
        with self._lock:
            for job in intended:
                self._mine.pop(mark_of(job), None)
            if written is not None:
                self._mine[mark_of(written)] = time.monotonic()
        if written is not None:
            self.note(written)

    def note(self, job: Job) -> None:
        """This process changed ``job``: remember its status as the last one seen."""
        with self._lock:
            if self._seen is None:
                pass
            elif job.status in ACTIVE_STATES:
                seen = self._seen.get(job.id)
                if seen is None or seen[1] <= job.version:
                    self._seen[job.id] = (job.status, job.version)
            else:
                self._seen.pop(job.id, None)
        self._tell(job)

    def _tell(self, job: Job) -> None:
        for listener in self.listeners:
            listener(job)

    def service_changed(self, job: Job) -> None:
        """A change of state made through the service: remember it and log it. The service calls
        this only for a real change (never for a repeated cancel or callback), so each is one line.

        In the daemon the service is reached by the API (a new job, an instance's callback, an
        operator's cancel) and by the schedules materializer (a new run; ``overlap replace``
        cancels the previous run with a reason of its own). A cancel is therefore worded from its
        reason, never as "reported": nothing reported it."""
        self.note(job)
        if job.status is JobStatus.SCHEDULED and job.attempts == 0:
            self.log(f"job {job.id} scheduled for {format_time(job.date_time)}")
        elif job.status is JobStatus.SCHEDULED:  # a spot interruption within the budget: relaunched
            self.log(f"job {job.id} -> scheduled (reported: {job.reason})")
        elif job.status is JobStatus.CANCELLED:
            how = ("cancelled via the API" if job.reason in (None, OPERATOR_CANCEL_REASON)
                   else f"cancelled: {job.reason}")
            self.log(f"job {job.id} -> cancelled ({how})")
        else:
            code = f", exit code {job.exit_code}" if job.exit_code is not None else ""
            self.log(f"job {job.id} -> {job.status.value} (reported{code})")

    # ------------------------------------------------------------------ other processes' writes
    def step(self) -> list[Job]:
        """Log the state changes of active jobs that other processes made. The first call only
        remembers; the loop calls it again whenever the store's marker moved. Returns the active
        jobs it read (the lease keeper looks at the other daemons' claims among them)."""
        jobs = self.store.active()  # read with no lock held (see __init__)
        lines: list[str] = []
        with self._lock:
            previous = self._seen
            current: dict[int, tuple[JobStatus, int]] = {}
            for job in jobs:
                before = previous.get(job.id) if previous is not None else None
                if before is not None and before[1] > job.version:
                    current[job.id] = before  # our own newer write was noted after this read
                    continue
                current[job.id] = (job.status, job.version)
                if previous is not None and (before is None or before[0] is not job.status) \
                        and mark_of(job) not in self._mine:
                    origin = before[0].value if before is not None else JobStatus.SCHEDULED.value
                    lines.append(f"job {job.id} {origin} -> {job.status.value} (by another process)")
            gone = [] if previous is None else [(i, previous[i][0]) for i in sorted(set(previous) - set(current))]
            self._seen = current
            self._forget(jobs)
        for line in lines:
            self.log(line)
        for job_id, before_status in gone:
            try:
                after: Job | None = self.store.get(job_id)
            except JobmanError:
                after = None
            if after is not None:
                self._tell(after)
            with self._lock:
                mine = after is not None and mark_of(after) in self._mine
            if not mine:
                state = after.status.value if after is not None else "deleted"
                self.log(f"job {job_id} {before_status.value} -> {state} (by another process)")
        return jobs

    def _forget(self, jobs: list[Job]) -> None:
        """(Holding the lock.) Drop the marks no later read can find: versions older than the ones
        just read, and old marks of jobs that are no longer active."""
        newest = {job.id: job.version for job in jobs}
        old = time.monotonic() - KEEP_MARKS
        self._mine = {m: t for m, t in self._mine.items()
                      if (m[1] >= newest[m[0]] if m[0] in newest else t >= old)}


class RecordingStore:
    """The store as this process's writers see it: every update is announced to the observer
    before it can land and settled after (see the module doc). Everything else passes through."""

    def __init__(self, store: JobStore, observer: Observer) -> None:
        self._store = store
        self._observer = observer

    def update(self, job_id: int, change: Any) -> Job:
        intended: list[Job] = []
        wrote: list[bool] = [False]  # the last run of ``change`` (the one the store acted on) changed the job

        def announced(current: Job) -> Job:
            new = change(current)
            wrote[0] = new is not current and isinstance(new, Job)
            if wrote[0]:
                intended.append(new)
                self._observer.intend(new)
            return new

        try:
            job = self._store.update(job_id, announced)
        except WriteOutcomeUnknown:
            # The write may have landed (and a later step may read it): its marks stay, so that
            # it is not logged as another process's; :meth:`Observer._forget` ages them out.
            raise
        except BaseException:
            self._observer.settle(intended, None)
            raise
        # A no-op (``change`` returned the job as it was) wrote nothing: the version it returns is
        # not ours (it may be another process's, which must still be logged as such), and the
        # listeners are not poked for a change that did not happen.
        self._observer.settle(intended, job if wrote[0] else None)
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
