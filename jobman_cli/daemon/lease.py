"""Launch leases on a shared store (DynamoDB, several daemons).

A claim (``scheduled -> launching``) names the daemon that made it (``Job.extra[CLAIMED_BY]``).
The daemon holding it *renews* it (:meth:`LeaseKeeper.step`, from a thread of its own every
``lease / 6``): a compare-and-set that bumps the job's ``version`` (and ``updated_at``) once a third
of the lease has passed on the holder's monotonic clock, so a launch that is slow but alive
(botocore may retry one call for over a minute) is never taken over.

Another daemon judges the lease by the renewals it *sees*, timed on its *own monotonic clock*
(:meth:`LeaseKeeper.honours`): a claim is abandoned only once its ``(version, updated_at)`` has not
changed for a full ``lease`` since this daemon first saw that value. No wall-clock time written by
one host is ever compared with another host's wall clock, so clock skew between daemons (or a
wall-clock step on either) never makes a live claim look expired. The price: a claim left by a
daemon that died is taken over one full lease after the survivor first looks at it, even if the
claim was already old then (a restarted daemon waits one lease before adopting its predecessor's
launches).

``jobman daemon --once`` makes a single pass and cannot watch anything over time, so for it alone
(``stamp_margin``) a claim also counts as abandoned when its ``updated_at`` is older than the lease
plus :data:`ONCE_SKEW_MARGIN` by this host's wall clock: a cron-style daemon still takes over a
dead run's launches, and only a skew beyond that margin could make it take over a live one.

An exclusive store (TinyDB: one daemon per file, under its lock) has no leases: any ``launching``
job the daemon is not launching itself is abandoned.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

from ..clock import Clock
from ..model import Job, JobStatus
from ..stores.base import JobStore
from .common import CLAIMED_BY, Log, Skip, error_text, guarded_update, now_at_least


#: ``--once`` only: how far another host's clock may be behind before its stamp alone may end a lease.
ONCE_SKEW_MARGIN = 600.0
#: Seconds :meth:`LeaseKeeper.close` waits for a renewal in flight (one conditional write).
CLOSE_WAIT = 10.0


class LeaseKeeper:
    def __init__(self, store: JobStore, clock: Clock, *, daemon_id: str, lease: float, exclusive: bool,
                 log: Log, stamp_margin: float | None = None) -> None:
        """``stamp_margin``: also trust a claim's ``updated_at`` that is older than the lease plus
        this many seconds on this host's wall clock (``--once``, see the module doc)."""
        self.stamp_margin = stamp_margin
        self.store = store
        self.clock = clock
        self.daemon_id = daemon_id
        self.lease = lease
        self.exclusive = exclusive
        self.log = log
        self._lock = threading.Lock()
        #: job id -> (attempt, monotonic time the claim was last renewed): this daemon's launches in flight.
        self._claims: dict[int, tuple[int, float]] = {}
        #: job id -> (the claim as last seen, monotonic time first seen so, monotonic time last
        #: looked at): other daemons' claims, for :meth:`honours`.
        self._seen: dict[int, tuple[tuple[int, datetime | None], float, float]] = {}
        self._pruned = clock.monotonic()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ other daemons' claims
    def honours(self, job: Job, now: datetime) -> bool:
        """True while ``job`` (``launching``) is another live daemon's launch, not to be taken over:
        until its claim has stayed unchanged for a full lease on this daemon's monotonic clock since
        this daemon first saw it so. (``now``, the wall clock, is used only with ``stamp_margin``.)"""
        if self.exclusive or job.extra.get(CLAIMED_BY) == self.daemon_id:
            return False
        if self.stamp_margin is not None:
            touched = job.updated_at or job.created_at
            if (now - touched).total_seconds() > self.lease + self.stamp_margin:
                return False
        mono = self.clock.monotonic()
        with self._lock:
            first = self._look(job, mono)
            if mono - self._pruned >= self.lease:  # forget jobs not looked at for a few leases
                self._pruned = mono
                for job_id in [i for i, (_, _, looked) in self._seen.items() if mono - looked >= 3 * self.lease]:
                    del self._seen[job_id]
        return mono - first < self.lease

    def watch(self, jobs: list[Job]) -> None:
        """Look at the other daemons' claims among ``jobs`` (the active jobs, read whenever the store
        changed), so each renewal is seen when it happens rather than at the next pass: a dead
        holder's claim then runs out one lease after its last renewal."""
        if self.exclusive:
            return
        mono = self.clock.monotonic()
        with self._lock:
            for job in jobs:
                if (job.status is JobStatus.LAUNCHING or (job.status is JobStatus.RUNNING and job.instance_id is None)) \
                        and job.extra.get(CLAIMED_BY) not in (None, self.daemon_id):
                    self._look(job, mono)

    def _look(self, job: Job, mono: float) -> float:
        """(Holding the lock.) Record a look at ``job``'s claim; return since when it is unchanged."""
        claim = (job.version, job.updated_at)
        seen = self._seen.get(job.id)
        first = mono if seen is None or seen[0] != claim else seen[1]  # renewed or new: a full lease from now
        self._seen[job.id] = (claim, first, mono)
        return first

    def next_expiry(self, after: float) -> float | None:
        """The earliest monotonic time, later than ``after``, at which a claim honoured so far runs
        out if it is not renewed before (the loop wakes then, so a dead daemon's launch is taken
        over one lease after its last renewal, not at the next unrelated pass)."""
        with self._lock:
            return min((first + self.lease for _, first, _ in self._seen.values() if first + self.lease > after),
                       default=None)

    # ------------------------------------------------------------------ this daemon's claims
    def hold(self, job: Job) -> None:
        """This daemon now launches ``job``'s current attempt: keep its claim alive until :meth:`release`."""
        with self._lock:
            self._claims[job.id] = (job.attempts, self.clock.monotonic())

    def release(self, job_id: int) -> None:
        with self._lock:
            self._claims.pop(job_id, None)

    def step(self, now: datetime | None = None) -> int:
        """Bump ``version`` and ``updated_at`` of this daemon's claims older than a third of the lease. A
        compare-and-set that applies only while the job is still in that attempt, claimed by this
        daemon and without an instance; the launch's own later update re-reads the job, so it still
        applies. The third is timed on the monotonic clock (a wall-clock step never delays a
        renewal). Returns how many claims were renewed."""
        now = now or self.clock.now()
        mono = self.clock.monotonic()
        with self._lock:
            stale = [(job_id, attempt) for job_id, (attempt, renewed) in self._claims.items()
                     if mono - renewed >= self.lease / 3]
        renewed = 0
        for job_id, attempt in stale:
            if self._closed.is_set():
                break  # closing: no new write (the one in flight, if any, is waited for)
            def renew(current: Job, attempt: int = attempt) -> Job:
                if (current.status not in (JobStatus.LAUNCHING, JobStatus.RUNNING) or current.instance_id
                        or current.attempts != attempt or current.extra.get(CLAIMED_BY) != self.daemon_id):
                    raise Skip
                return dataclasses.replace(current, updated_at=now_at_least(self.clock, current.updated_at or now),
                                           version=current.version + 1)

            after = guarded_update(self.store, job_id, renew)
            with self._lock:
                # The write ran outside the lock: meanwhile the launch may have ended this attempt
                # and the job been claimed again (release, then hold of the next attempt). The
                # answer is about ``attempt`` only: a newer claim is neither dropped (it would never
                # be renewed again, and be taken over while still launching) nor overwritten.
                held = self._claims.get(job_id)
                if held is None or held[0] != attempt:
                    continue
                if after is not None:
                    self._claims[job_id] = (attempt, mono)
                    renewed += 1
                else:
                    del self._claims[job_id]  # moved on: nothing left to protect
        return renewed

    # ------------------------------------------------------------------ the renewal thread
    def start(self) -> None:
        """Renew from a thread of its own (shared stores only: nobody takes over an exclusive store's claims)."""
        if self.exclusive or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="jobman-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing: str | None = None  # logged once while it lasts, and its end once
        while not self._closed.wait(self.lease / 6):
            try:
                self.step()
            except Exception as exc:  # a store hiccup: the next round tries again
                message = error_text(exc)
                if message != failing:
                    self.log(f"cannot renew launch claims: {message} (trying again every {self.lease / 6:g}s)")
                failing = message
                continue
            if failing is not None:
                self.log("launch claims renewed again")
                failing = None

    def close(self) -> None:
        """Stop renewing, and wait (bounded) for a renewal already talking to the store: the daemon
        closes the store right after, and a write still in flight then would land, or fail and be
        logged, after the daemon said it stopped."""
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=CLOSE_WAIT)
