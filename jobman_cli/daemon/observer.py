"""Observing: the one log line per state change, whoever made it.

The daemon's own changes are logged where they are made (a claim, a launch, a failure). Two kinds
of change are not made by the daemon's parts and are logged here:

* changes made through this process's :class:`~jobman_cli.service.JobService` (the HTTP API: a job
  scheduled, an instance's callback): :meth:`Observer.service_changed`;
* changes made by *other* processes (a CLI ``cancel``, a callback answered by another daemon):
  :meth:`Observer.step` diffs the active jobs' states against the last look.

Every write the daemon's parts make goes through :class:`RecordingStore`, which tells the observer
(:meth:`Observer.note`), so :meth:`Observer.step` never logs the daemon's own change a second time.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..errors import JobmanError
from ..model import Job, JobStatus, format_time
from ..stores.base import JobStore
from .common import Log


class Observer:
    def __init__(self, store: JobStore, log: Log) -> None:
        self.store = store
        self.log = log
        #: job id -> last status seen of the active jobs (own writes and :meth:`step`); None until
        #: the first look.
        self._seen: dict[int, JobStatus] | None = None
        self._lock = threading.Lock()

    def note(self, job: Job) -> None:
        """This process changed ``job``: remember its status, so :meth:`step` does not log it again."""
        with self._lock:
            if self._seen is None:
                return
            if job.status in (JobStatus.LAUNCHING, JobStatus.RUNNING):
                self._seen[job.id] = job.status
            else:
                self._seen.pop(job.id, None)

    def service_changed(self, job: Job) -> None:
        """A change made through the service (the API): remember it and log it."""
        self.note(job)
        if job.status is JobStatus.SCHEDULED:
            self.log(f"job {job.id} scheduled for {format_time(job.date_time)}")
        else:
            code = f", exit code {job.exit_code}" if job.exit_code is not None else ""
            self.log(f"job {job.id} -> {job.status.value} (reported{code})")

    def step(self) -> None:
        """Log the state changes of active jobs that other processes made. The first call only
        remembers; the loop calls it again whenever the store's marker moved. The lock is held
        across the read so an own write noted meanwhile is never undone."""
        with self._lock:
            current = {job.id: job.status for job in self.store.active()}
            previous, self._seen = self._seen, current
            if previous is None:
                return
            for job_id, status in sorted(current.items()):
                before = previous.get(job_id)
                if before is not status:
                    origin = before.value if before is not None else JobStatus.SCHEDULED.value
                    self.log(f"job {job_id} {origin} -> {status.value} (by another process)")
            for job_id in sorted(set(previous) - set(current)):
                try:
                    after = self.store.get(job_id).status.value
                except JobmanError:
                    after = "deleted"
                self.log(f"job {job_id} {previous[job_id].value} -> {after} (by another process)")


class RecordingStore:
    """The store as the daemon's parts see it: every update they make is noted (see
    :meth:`Observer.step`, which logs only the changes made by other processes). Everything else
    passes through."""

    def __init__(self, store: JobStore, note: Callable[[Job], None]) -> None:
        self._store = store
        self._note_change = note

    def update(self, job_id: int, change: Any) -> Job:
        job = self._store.update(job_id, change)
        self._note_change(job)
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
