"""Adopting abandoned launches: jobs left in ``launching`` by a daemon that died mid-launch.

A job is abandoned when it is ``launching`` (or ``running`` without a recorded instance: it
reported before its daemon recorded the launch), not in this daemon's hands, and not another live
daemon's claim (:meth:`~.lease.LeaseKeeper.honours`). Each one is:

1. **taken over**: a compare-and-set on its version, so two daemons never both take it; the
   attempt and its ``ClientToken`` stay the same, and the hash of a new callback token is *added*
   (the dead daemon's instance, if any, keeps its own token);
2. **looked up** by tag (store, job id, attempt) *before* any new ``RunInstances``: found, the
   instance is recorded (adopted); not found, the same attempt is launched again with the same
   ``ClientToken``: the one of the launch ladder's rung the dead daemon stored before sending it
   (``Job.rung``; the rungs before it were refused, so they are not sent again in this attempt);
   past its start deadline, the job fails as missed instead. A lookup that fails
   (throttled, a 5xx, this host's clock) decides nothing: the job is left as it is and looked up
   again after ``look_again_after``.

So a daemon killed at any point never starts a second instance for one attempt, on AWS and under
moto (which ignores ``ClientToken``) alike.
"""

from __future__ import annotations

import dataclasses
import secrets
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import Callable

from ..clock import Clock
from ..errors import JobmanError
from ..launchers.base import Launcher
from ..model import Job, JobStatus, ReasonCode, hash_callback_token
from ..service import launch_token_for
from ..stores.base import JobStore
from .common import (ADOPTED, CLAIMED_BY, MISSED, Collector, Log, Skip, best_instance, fail_and_report,
                     format_duration, guarded_update, missed_reason, now_at_least)
from .launch import Launch
from .lease import LeaseKeeper
from .pool import LaunchPool


class Adopter:
    def __init__(self, store: JobStore, launcher: Launcher, clock: Clock, *, daemon_id: str, pool: LaunchPool,
                 leases: LeaseKeeper, launch: Launch, log: Log, stopping: Callable[[], bool],
                 look_again_after: float) -> None:
        """``look_again_after``: seconds before a ``running`` job whose instance was not found is
        looked up again (tag lookups can lag)."""
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.daemon_id = daemon_id
        self.pool = pool
        self.leases = leases
        self.launch = launch
        self.log = log
        self.stopping = stopping
        self.look_again_after = look_again_after

    def step(self, now: datetime, out: Collector) -> list[Future]:
        """Submit a take-over for every abandoned launch not already in hand."""
        return [self.pool.submit(self._take_over, job, now, out)
                for job in self._abandoned(now) if self.pool.reserve(job.id, now)]

    def _abandoned(self, now: datetime) -> list[Job]:
        found = []
        for job in self.store.active():
            if not (job.status is JobStatus.LAUNCHING or (job.status is JobStatus.RUNNING and job.instance_id is None)):
                continue
            if self.pool.in_flight(job.id) or self.leases.honours(job, now):
                continue
            found.append(job)
        return found

    def _take_over(self, seen: Job, now: datetime, out: Collector) -> None:
        if self.stopping():
            return
        t = now_at_least(self.clock, now)
        callback_token = secrets.token_urlsafe(32)  # used only if this attempt is launched again

        def take(current: Job) -> Job:
            if current.version != seen.version:
                raise Skip  # someone else moved it (or took it over) since we looked
            extra = {**current.extra, CLAIMED_BY: self.daemon_id}
            token = current.launch_token or launch_token_for(self.store.store_id, current.id, current.attempts)
            return dataclasses.replace(current.with_callback_hash(hash_callback_token(callback_token)),
                                       extra=extra, launch_token=token, updated_at=t, version=current.version + 1)

        if seen.status is JobStatus.RUNNING:
            job: Job | None = seen  # it reported running, so it launched: only find its instance
        else:
            job = guarded_update(self.store, seen.id, take)
        if job is None:
            return
        if job.status is JobStatus.LAUNCHING:
            self.leases.hold(job)
        self.launch.skew.sending()  # its answer's clock refusal is reported to the launches' notice
        try:
            instances = self.launcher.find_instances(self.store.store_id, job_id=job.id, attempt=job.attempts,
                                                     include_terminated=True)
        except JobmanError as exc:  # LaunchError (throttled, 5xx, this host's clock ...) or ConfigError
            # Never launch, fail or give up without a lookup: leave it as it is and look again later.
            if getattr(exc, "clock_skew", False):
                self.launch.clock_skewed(exc)
            self.log(f"job {job.id}: cannot look attempt {job.attempts} up ({exc}); left {job.status.value}, "
                     f"looking again in {format_duration(self.look_again_after)}")
            self.pool.defer(job.id, t + timedelta(seconds=self.look_again_after))
            return
        if instances:
            chosen = best_instance(instances)
            self.log(f"job {job.id}: found instance {chosen.instance_id} ({chosen.state}) of attempt "
                     f"{job.attempts} launched before a restart; adopting it")
            self.launch.record(job, chosen.instance_id, out, ADOPTED,
                               chosen.placement if chosen.instance_type else None)
            return
        if job.status is not JobStatus.LAUNCHING:
            # It reported running, so its instance exists somewhere (tag lookups can lag). Look
            # again after a while; its timeout still ends it if the instance never turns up.
            self.pool.defer(job.id, t + timedelta(seconds=self.look_again_after))
            return
        if t > job.start_by:  # never launch days late
            reason = missed_reason(job, t) + "; its launch was interrupted"
            fail_and_report(self.store, job, reason, t, ReasonCode.MISSED_START_DEADLINE, MISSED, self.log, out)
            return
        self.log(f"job {job.id}: no instance of attempt {job.attempts} exists; launching it again")
        self.launch.run(job, callback_token, out)
