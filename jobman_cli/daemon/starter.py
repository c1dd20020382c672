"""Starting due jobs: claim each one, then hand it to :class:`~.launch.Launch`.

A claim is one compare-and-set per job, made *before* AWS is called: ``scheduled -> launching``,
attempt + 1, the attempt's ``ClientToken`` (deterministic per store, job and attempt), the hash of a
fresh callback token (only the hash is stored; the clear token goes into the user-data), and the
claiming daemon's id. A job more than its start deadline past its time is failed as missed instead,
never launched late. Claims run in the launch pool, so a burst is not serialized and the store can
group-commit the concurrent claims.
"""

from __future__ import annotations

import dataclasses
import secrets
import zlib
from concurrent.futures import Future
from datetime import datetime
from typing import Callable

from ..clock import Clock
from ..model import Job, JobStatus, ReasonCode, hash_callback_token
from ..service import launch_token_for
from ..stores.base import JobStore
from .common import CLAIMED_BY, MISSED, Collector, Log, Skip, describe_change, guarded_update, missed_reason, now_at_least
from .launch import Launch
from .lease import LeaseKeeper
from .pool import LaunchPool


class Starter:
    def __init__(self, store: JobStore, clock: Clock, *, daemon_id: str, exclusive: bool, pool: LaunchPool,
                 leases: LeaseKeeper, launch: Launch, log: Log, stopping: Callable[[], bool]) -> None:
        self.store = store
        self.clock = clock
        self.daemon_id = daemon_id
        self.exclusive = exclusive
        self.pool = pool
        self.leases = leases
        self.launch = launch
        self.log = log
        self.stopping = stopping

    def step(self, now: datetime, out: Collector) -> list[Future]:
        """Submit a claim-and-launch for every due job not already in hand."""
        futures = []
        due = self.store.due(now)
        if not self.exclusive:
            # Daemons sharing a store see the same due list; each walks jobs due at the same instant
            # in its own order, so they mostly claim different jobs instead of all racing for one.
            due.sort(key=lambda j: (j.due_at, zlib.crc32(f"{self.daemon_id}:{j.id}".encode())))
        for job in due:
            if self.stopping():
                break
            if self.pool.reserve(job.id, now):
                futures.append(self.pool.submit(self._claim_and_launch, job, now, out))
        return futures

    def _claim_and_launch(self, seen: Job, now: datetime, out: Collector) -> None:
        if self.stopping():
            return  # stop claiming; the job stays scheduled for the next daemon
        t = now_at_least(self.clock, now)
        callback_token = secrets.token_urlsafe(32)  # only its hash is stored (DESIGN.md section 7)

        def claim(current: Job) -> Job:
            if current.status is not JobStatus.SCHEDULED or current.due_at > t:
                raise Skip
            if t > current.start_by:
                return current.failed(missed_reason(current, t), t, ReasonCode.MISSED_START_DEADLINE)
            claimed = current.claimed(t, launch_token_for(self.store.store_id, current.id, current.attempts + 1),
                                      hash_callback_token(callback_token))
            return dataclasses.replace(claimed, extra={**claimed.extra, CLAIMED_BY: self.daemon_id})

        job = guarded_update(self.store, seen.id, claim)
        if job is None:
            return
        if job.status is JobStatus.FAILED:
            self.log(describe_change(seen, job, job.reason or ""))
            out.add(MISSED, job.id, job.reason or "")
            return
        self.leases.hold(job)
        self.log(describe_change(seen, job, f"attempt {job.attempts}"))
        self.launch.run(job, callback_token, out, fresh=True)
