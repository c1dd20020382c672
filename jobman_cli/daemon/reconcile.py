"""Reconciliation: make the store and EC2 agree again, every ``reconcile_interval``.

The daemon's launches are fast-path bookkeeping; this is the slow path that catches everything the
fast path cannot see: an instance that died without reporting, a job that overran its timeout, an
instance whose job ended, was cancelled, moved on to a later attempt or never existed. Every finding
becomes a compare-and-set transition, so a callback racing with the reconciler always wins cleanly
(the change function re-checks the job it is handed and writes nothing when the job moved on).

The orphan reaper looks the instances up *before* it reads the store. An instance exists only after
its job's claim was persisted (claim-before-launch), so the later store read always knows about
every instance the lookup found; a launch in flight therefore can never look like an orphan.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from ..errors import JobmanError, JobNotFound
from ..launchers.base import InstanceInfo, Launcher
from ..model import ACTIVE_STATES, Job, JobStatus, ReasonCode
from ..stores.base import JobStore
from .common import REAPED, RETRYING, TIMED_OUT, VANISHED, Collector, Log, Skip, describe_change, guarded_update

#: On AWS a just-launched instance can be briefly absent from DescribeInstances (eventual
#: consistency); absence counts as death only this long after the launch was recorded.
MISSING_GRACE = 120.0

#: Instance states that mean "this instance will not run the job to its end". ``shutting-down`` is
#: not among them: an instance powers off right after its last callback, which may still be in
#: flight. ``stopping``/``stopped`` only happen when someone stops it by hand (jobman launches with
#: ``InstanceInitiatedShutdownBehavior=terminate``).
DEAD_STATES = ("terminated", "stopping", "stopped")

#: EC2's ``StateReason`` of a spot instance it reclaimed (an interruption, see :meth:`Reconciler._reclaimed`).
SPOT_RECLAIMED = "Server.SpotInstanceTermination"


class Reconciler:
    """One reconciliation pass over the active jobs and this store's instances."""

    def __init__(self, store: JobStore, launcher: Launcher, *, timeout_grace: float, log: Log,
                 in_flight: Callable[[int], bool]) -> None:
        self.store = store
        self.launcher = launcher
        self.timeout_grace = timeout_grace
        self.log = log
        self.in_flight = in_flight

    def step(self, now: datetime, out: Collector) -> None:
        """One pass: look the store's instances up, check the running jobs, reap the orphans."""
        try:
            tagged: list[InstanceInfo] | None = self.launcher.find_instances(self.store.store_id)
        except JobmanError as exc:
            self.log(f"reconcile: cannot list this store's instances: {exc}")
            tagged = None
        self._check_active(now, out)
        if tagged:
            self._reap(tagged, out)

    # ------------------------------------------------------------------ running jobs
    def _check_active(self, now: datetime, out: Collector) -> None:
        jobs = [j for j in self.store.active() if j.status is JobStatus.RUNNING and not self.in_flight(j.id)]
        ids = [j.instance_id for j in jobs if j.instance_id]
        described: dict[str, InstanceInfo] | None = {}
        if ids:
            try:
                described = self.launcher.describe(ids)
            except JobmanError as exc:
                self.log(f"reconcile: cannot describe {len(ids)} instance(s): {exc}")
                described = None
        for job in jobs:
            started = job.launched_at or job.updated_at or job.created_at
            if now > started + timedelta(seconds=job.timeout + self.timeout_grace):
                self._timed_out(job, now, out)
                continue
            if job.instance_id is None or described is None:
                continue
            info = described.get(job.instance_id)
            if info is None:
                if now < started + timedelta(seconds=MISSING_GRACE):
                    continue
                state = "missing"
            elif info.state in DEAD_STATES:
                state = info.state
            else:
                continue
            if info is not None and info.state_reason == SPOT_RECLAIMED:
                self._reclaimed(job, now, out)
                continue
            self._vanished(job, state, now, out)

    def _fail(self, job: Job, reason: str, now: datetime, code: ReasonCode) -> Job | None:
        def change(current: Job) -> Job:
            if current.status not in ACTIVE_STATES or current.instance_id != job.instance_id:
                raise Skip  # it reported (or was cancelled) in the meantime
            return current.failed(reason, now, code)

        after = guarded_update(self.store, job.id, change)
        if after is not None:
            self.log(describe_change(job, after, reason))
        return after

    def _terminate(self, instance_id: str, why: str) -> bool:
        try:
            self.launcher.terminate([instance_id])
        except JobmanError as exc:
            self.log(f"cannot terminate instance {instance_id} ({why}): {exc}; the reaper will try again")
            return False
        return True

    def _timed_out(self, job: Job, now: datetime, out: Collector) -> None:
        reason = f"timed out after {job.timeout}s (stopped by the daemon: the instance did not report in time)"
        if self._fail(job, reason, now, ReasonCode.TIMED_OUT) is None:
            return
        if job.instance_id and self._terminate(job.instance_id, reason):
            self.log(f"job {job.id}: instance {job.instance_id} terminated ({reason})")
        out.add(TIMED_OUT, job.id, reason, job.instance_id)

    def _reclaimed(self, job: Job, now: datetime, out: Collector) -> None:
        """EC2 reclaimed the spot instance and no ``interrupted`` report came (the notice was missed
        or the report lost): an interruption all the same, under the job's budget (relaunched, or
        failed as ``interrupted``), never ``instance-vanished``."""
        reason = f"EC2 reclaimed the spot instance ({SPOT_RECLAIMED}) without a report from it"

        def change(current: Job) -> Job:
            if current.status not in ACTIVE_STATES or current.instance_id != job.instance_id:
                raise Skip  # it reported (or was cancelled) in the meantime
            return current.reported("failed", None, now, ReasonCode.INTERRUPTED.value, reason)

        after = guarded_update(self.store, job.id, change)
        if after is not None:
            self.log(describe_change(job, after, after.reason or reason))
            out.add(RETRYING if after.status is JobStatus.SCHEDULED else VANISHED, job.id, after.reason or reason,
                    job.instance_id)

    def _vanished(self, job: Job, state: str, now: datetime, out: Collector) -> None:
        reason = f"instance vanished without reporting (state: {state})"
        if self._fail(job, reason, now, ReasonCode.INSTANCE_VANISHED) is None:
            return
        if state in ("stopping", "stopped") and job.instance_id:
            self._terminate(job.instance_id, reason)  # a stopped instance still costs its volume
        out.add(VANISHED, job.id, reason, job.instance_id)

    # ------------------------------------------------------------------ the orphan reaper
    def _reap(self, tagged: list[InstanceInfo], out: Collector) -> None:
        jobs: dict[int, Job | None] = {}
        doomed: list[tuple[InstanceInfo, str]] = []
        for info in tagged:
            if info.state == "terminated" or (info.job_id is not None and self.in_flight(info.job_id)):
                continue
            why = self._why_reap(info, jobs)
            if why:
                doomed.append((info, why))
        if not doomed:
            return
        try:
            self.launcher.terminate([info.instance_id for info, _ in doomed])
        except JobmanError as exc:
            self.log(f"reaper: cannot terminate {len(doomed)} instance(s): {exc}; will try again")
            return
        for info, why in doomed:
            self.log(f"instance {info.instance_id} terminated by the reaper: {why}")
            out.add(REAPED, info.job_id, why, info.instance_id)

    def _why_reap(self, info: InstanceInfo, jobs: dict[int, Job | None]) -> str | None:
        """Why this store's instance should not be running, or None when its job still wants it."""
        if info.job_id is None:
            return "it carries this store's tag but names no job"
        if info.job_id not in jobs:
            try:
                jobs[info.job_id] = self.store.get(info.job_id)
            except JobNotFound:
                jobs[info.job_id] = None
        job = jobs[info.job_id]
        if job is None:
            return f"job {info.job_id} does not exist in this store"
        if job.terminal:
            return f"job {job.id} is {job.status.value}"
        if info.attempt != job.attempts:
            return f"it ran attempt {info.attempt} of job {job.id}, which is at attempt {job.attempts}"
        if job.status is JobStatus.SCHEDULED:
            return f"attempt {info.attempt} of job {job.id} was given up (the job waits for a retry)"
        if job.instance_id is not None and job.instance_id != info.instance_id:
            return f"job {job.id} runs on {job.instance_id}; this is a duplicate"
        return None
