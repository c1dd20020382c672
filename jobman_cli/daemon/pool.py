"""The launch pool: a bounded set of worker threads and the per-job bookkeeping around it.

* A job is handled by at most one worker at a time (:meth:`LaunchPool.reserve` /
  :meth:`LaunchPool.in_flight`); the reconciler leaves jobs in flight alone.
* Whatever a job's task raises, the loop and the other jobs go on: the job *cools down* (exponential
  backoff) and is looked at again; after ``max_attempts`` crashes in a row it fails, unless it is
  ``running`` or has an instance (then it may be working: it only keeps cooling down, and its
  timeout or a vanished instance still ends it).
* A job with nothing to do for a while (a running job whose instance a tag lookup did not find
  yet) is *deferred* (:meth:`LaunchPool.defer`), so it costs no AWS calls until then.
* Every finished task wakes the loop (a retry may be due, a claim was freed).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Callable

from ..clock import Clock
from ..model import Job, JobStatus, ReasonCode
from ..settings import DaemonSettings
from ..stores.base import JobStore
from .common import ERROR, Collector, Log, Skip, error_text, format_duration, guarded_update

Task = Callable[[Job, datetime, Collector], None]


class LaunchPool:
    def __init__(self, store: JobStore, clock: Clock, settings: DaemonSettings, *, log: Log,
                 wake: Callable[[], None], finished: Callable[[int], None]) -> None:
        """``finished(job_id)`` is called after each task, whatever happened (the lease keeper
        releases the job's claim)."""
        self.store = store
        self.clock = clock
        self.settings = settings
        self.log = log
        self._wake = wake
        self._finished = finished
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        #: job id -> (not before, unexpected errors in a row): a job whose handling crashed waits.
        self._cooldown: dict[int, tuple[datetime, int]] = {}
        #: job id -> not before: nothing to do for it until then.
        self._deferred: dict[int, datetime] = {}
        self._executor = ThreadPoolExecutor(max_workers=settings.launch_workers, thread_name_prefix="jobman-launch")

    def in_flight(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._in_flight

    def reserve(self, job_id: int, now: datetime) -> bool:
        """Mark a job as this daemon's to handle; False if it is in flight, cooling down or deferred."""
        with self._lock:
            if job_id in self._in_flight:
                return False
            cooldown = self._cooldown.get(job_id)
            if cooldown is not None and now < cooldown[0]:
                return False
            deferred = self._deferred.get(job_id)
            if deferred is not None:
                if now < deferred:
                    return False
                del self._deferred[job_id]
            self._in_flight.add(job_id)
            return True

    def defer(self, job_id: int, until: datetime) -> None:
        with self._lock:
            self._deferred[job_id] = until

    def submit(self, task: Task, job: Job, now: datetime, out: Collector) -> Future:
        """Run ``task(job, now, out)`` on a worker; the job must have been :meth:`reserve`\\ d."""
        future = self._executor.submit(self._guarded, task, job, now, out)
        future.add_done_callback(lambda _: self._wake())
        return future

    def next_wake(self, after: datetime | None = None) -> datetime | None:
        """The earliest time (later than ``after``) a job whose handling crashed may be looked at again."""
        with self._lock:
            return min((t for t, _ in self._cooldown.values() if after is None or t > after), default=None)

    def close(self) -> None:
        """Cancel queued tasks and wait for those already running (talking to AWS)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ one task
    def _guarded(self, task: Task, job: Job, now: datetime, out: Collector) -> None:
        try:
            task(job, now, out)
            with self._lock:
                self._cooldown.pop(job.id, None)
        except Exception as exc:  # one job's bug must not kill the daemon
            self._crashed(job, exc, out)
        finally:
            with self._lock:
                self._in_flight.discard(job.id)
            self._finished(job.id)

    def _crashed(self, job: Job, exc: Exception, out: Collector) -> None:
        message = error_text(exc)
        now = self.clock.now()
        with self._lock:
            _, errors = self._cooldown.get(job.id, (now, 0))
            errors += 1
            delay = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (errors - 1))
            self._cooldown[job.id] = (now + timedelta(seconds=delay), errors)
        out.add(ERROR, job.id, message)
        if errors < self.settings.max_attempts:
            self.log(f"job {job.id}: unexpected error: {message}; will look at it again in {format_duration(delay)}")
            return
        reason = f"internal error: {message}"
        kept: list[Job] = []

        def fail(cur: Job) -> Job:
            if cur.terminal:
                return cur
            if cur.status is JobStatus.RUNNING or cur.instance_id:  # it may be working: never fail it here
                kept.append(cur)
                raise Skip
            return cur.failed(reason, now, ReasonCode.LAUNCH_FAILED)

        try:
            after = guarded_update(self.store, job.id, fail)
        except Exception as again:  # the store itself is broken; keep going, log it
            self.log(f"job {job.id}: unexpected error: {message}; cannot fail it either: {again}")
            return
        if kept:
            where = f"instance {kept[-1].instance_id}" if kept[-1].instance_id else "no instance recorded yet"
            self.log(f"job {job.id}: unexpected error: {message}; not failing it ({kept[-1].status.value}, "
                     f"{where}); will look at it again in {format_duration(delay)}")
            return
        if after is not None and after.terminal:
            self.log(f"job {job.id} -> failed ({reason})")
