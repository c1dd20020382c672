"""``jobman daemon``: launch due jobs on EC2 and follow them to the end (DESIGN.md section 5).

One :class:`Daemon` pass, :meth:`Daemon.tick`, does four things, in this order:

1. **Abandoned launches.** A job left in ``launching`` by a daemon that died mid-launch is taken
   over (a compare-and-set on its version, so two daemons never both take it), then its instance is
   looked up by tag (store, job id, attempt) *before* any new ``RunInstances``: found, it is
   recorded; not found, the same attempt is launched again with the same ``ClientToken``. So a
   daemon killed at any point never starts a second instance for one attempt — on AWS and under
   moto (which ignores ``ClientToken``) alike.
2. **Start deadlines.** A job more than ``start_deadline`` past its time fails as missed.
3. **Due jobs.** Each is claimed (``scheduled -> launching``, attempt+1, launch token) *before* AWS
   is called, in a bounded pool of workers, so a burst is not serialized and the store can
   group-commit the concurrent claims. Steps 2 and 3 are one compare-and-set per job in a worker.
4. **Reconciliation** (every ``reconcile_interval``): see :mod:`jobman_cli.reconcile`.

:meth:`Daemon.run` sleeps (on a self-pipe, :class:`~jobman_cli.daemon_loop.Waker`) until the next due
time, the next reconciliation or the next poll of the store's cheap change marker; the service's
change notifications (API requests), finished launches and signals wake it at once. Nothing re-reads the store while nothing changed, so an
idle daemon costs one ``stat`` per ``watch_interval``.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any, Callable

from .clock import Clock, SystemClock
from .daemon_loop import Waker
from .errors import InvalidInput, JobmanError, LaunchError
from .launchers.base import Launcher
from .launchers.userdata import callback_url_for, load_callback_ca, render_user_data
from .model import Job, JobStatus, ReasonCode, format_time, hash_callback_token
from .reconcile import (ADOPTED, CANCELLED_DURING_LAUNCH, ERROR, LAUNCH_FAILED, LAUNCHED, MISSED, RETRYING,
                        Collector, Outcome, Reconciler, Skip, TickReport, best_instance, describe_change,
                        format_duration, guarded_update, missed_reason, new_daemon_id, stderr_log)
from .service import JobService, launch_token_for
from .settings import DaemonSettings
from .stores.base import JobStore

__all__ = ["Daemon", "TickReport", "Outcome", "run_daemon", "format_duration", "CLAIMED_BY", "DEFAULT_LAUNCH_LEASE"]

#: ``Job.extra`` key naming the daemon that claimed a job (extra keys persist in every store).
CLAIMED_BY = "claimed-by"
#: How long a claim by another daemon is honoured before its job counts as abandoned.
DEFAULT_LAUNCH_LEASE = 60.0


class Daemon:
    """The scheduler loop over one store and one launcher. See the module docstring."""

    def __init__(self, store: JobStore, launcher: Launcher, settings: DaemonSettings, *,
                 clock: Clock | None = None, service: JobService | None = None, daemon_id: str | None = None,
                 exclusive: bool = False, launch_lease: float | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """``exclusive``: this daemon holds the store's daemon lock (TinyDB), so any ``launching`` job
        it is not launching itself is abandoned. Otherwise (DynamoDB, several daemons) a claim by
        another daemon is abandoned only once its lease expired."""
        self.store = _Recording(store, self._note)
        self.launcher = launcher
        self.settings = settings
        self.clock = clock or SystemClock()
        self.service = service or JobService(store, self.clock)
        self.daemon_id = daemon_id or new_daemon_id()
        self.exclusive = exclusive
        self.launch_lease = float(launch_lease if launch_lease is not None
                                  else getattr(settings, "launch_lease", DEFAULT_LAUNCH_LEASE))
        self.public_url = settings.effective_public_url
        #: The --callback-ca PEM, read and validated once here (ConfigError if unusable).
        self.callback_ca = (load_callback_ca(settings.callback_ca, self.public_url)
                            if getattr(settings, "callback_ca", None) else None)
        self._write_log = log or stderr_log
        self._log_lock = threading.Lock()
        self._wake = Waker()
        self._stop_requested = False  # a plain flag: a signal handler may set it (see stop())
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        #: job id -> (not before, unexpected errors in a row): a job whose handling crashed waits.
        self._cooldown: dict[int, tuple[datetime, int]] = {}
        #: job id -> not before: nothing to do for it until then (a running job whose instance the
        #: tag lookup did not find yet); looking again on every pass would only cost AWS calls.
        self._deferred: dict[int, datetime] = {}
        self._next_reconcile: datetime | None = None
        #: job id -> (attempt, claim last renewed): the claims of the launches this daemon has in flight.
        self._claims: dict[int, tuple[int, datetime]] = {}
        #: job id -> last status seen of the active jobs (own writes and :meth:`observe`).
        self._seen: dict[int, JobStatus] | None = None
        self._seen_lock = threading.Lock()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=settings.launch_workers, thread_name_prefix="jobman-launch")
        self._reconcile_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobman-reconcile")
        self._reconciling: Future | None = None
        self._reconciler = Reconciler(self.store, launcher, timeout_grace=settings.timeout_grace, log=self.log,
                                      in_flight=self.in_flight)
        self.service.subscribe(self._on_service_change)
        if not exclusive:  # only a shared store has leases another daemon could take over
            threading.Thread(target=self._renew_loop, name="jobman-lease", daemon=True).start()

    # ------------------------------------------------------------------ small helpers
    def log(self, line: str) -> None:
        with self._log_lock:
            self._write_log(f"{format_time(self.clock.now())} {line}")

    def in_flight(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._in_flight

    def _now(self, at_least: datetime) -> datetime:
        now = self.clock.now()
        return now if now > at_least else at_least

    def _note(self, job: Job) -> None:
        """This process changed ``job``: remember its status, so :meth:`observe` does not log it again."""
        with self._seen_lock:
            if self._seen is None:
                return
            if job.status in (JobStatus.LAUNCHING, JobStatus.RUNNING):
                self._seen[job.id] = job.status
            else:
                self._seen.pop(job.id, None)

    def observe(self) -> None:
        """Log the state changes of active jobs that other processes made (a CLI ``cancel``, a
        callback answered by another daemon): the service only tells us about this process's own.
        The first call only remembers; the loop calls it again whenever the store's marker moved.
        The lock is held across the read so an own write noted meanwhile is never undone."""
        with self._seen_lock:
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

    # ------------------------------------------------------------------ claim leases (shared stores)
    def _hold_claim(self, job: Job) -> None:
        with self._lock:
            self._claims[job.id] = (job.attempts, self.clock.now())

    def renew_claims(self) -> int:
        """Bump ``updated_at`` of this daemon's claims older than a third of the lease, so another
        daemon never takes over a launch that is slow but alive (botocore may retry one call for
        over a minute). A compare-and-set that applies only while the job is still in that attempt,
        claimed by this daemon and without an instance; the launch's own later update re-reads the
        job, so it still applies. Returns how many claims were renewed."""
        now = self.clock.now()
        with self._lock:
            stale = [(job_id, attempt) for job_id, (attempt, renewed) in self._claims.items()
                     if (now - renewed).total_seconds() >= self.launch_lease / 3]
        renewed = 0
        for job_id, attempt in stale:
            def renew(current: Job, attempt: int = attempt) -> Job:
                if (current.status not in (JobStatus.LAUNCHING, JobStatus.RUNNING) or current.instance_id
                        or current.attempts != attempt or current.extra.get(CLAIMED_BY) != self.daemon_id):
                    raise Skip
                return dataclasses.replace(current, updated_at=self._now(current.updated_at or now),
                                           version=current.version + 1)

            after = guarded_update(self.store, job_id, renew)
            with self._lock:
                if job_id in self._claims and after is not None:
                    self._claims[job_id] = (attempt, now)
                    renewed += 1
                elif after is None:
                    self._claims.pop(job_id, None)  # moved on: nothing left to protect
        return renewed

    def _renew_loop(self) -> None:
        while not self._closed.wait(self.launch_lease / 6):
            try:
                self.renew_claims()
            except Exception as exc:  # a store hiccup: the next round tries again
                self.log(f"cannot renew launch claims: {' '.join(f'{type(exc).__name__}: {exc}'.split())}")

    def _on_service_change(self, job: Job) -> None:
        """A change made through the service (the API): log it and wake the loop at once."""
        self._note(job)
        if job.status is JobStatus.SCHEDULED:
            self.log(f"job {job.id} scheduled for {format_time(job.date_time)}")
        else:
            code = f", exit code {job.exit_code}" if job.exit_code is not None else ""
            self.log(f"job {job.id} -> {job.status.value} (reported{code})")
        self._wake.set()

    def stop(self) -> None:
        """Ask the loop to stop. Safe in a signal handler: it takes no lock (a handler that waited
        for a lock the interrupted main thread holds would deadlock), it sets a flag and writes
        one byte to the waker's pipe."""
        self._stop_requested = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    # ------------------------------------------------------------------ one pass
    def tick(self, now: datetime | None = None, *, wait_launches: bool = True,
             reconcile: bool | None = None) -> TickReport:
        """One pass (see the module docstring). ``reconcile=None``: when the interval is due.

        With ``wait_launches`` (tests, ``--once``) the launches started by this pass are waited for
        and the reconciliation runs after them, so the report is complete. Without it (the loop),
        the reconciliation runs in its own thread, so a slow DescribeInstances never delays a due
        launch, and a pass never starts a second reconciliation while one is still running.
        """
        now = now or self.clock.now()
        out = Collector()
        futures: list[Future] = []
        if not self.stopping:
            futures += self._resolve_abandoned(now, out)
            futures += self._start_due(now, out)
        if wait_launches and futures:
            wait(futures)
        do_reconcile = reconcile if reconcile is not None else (
            self._next_reconcile is None or now >= self._next_reconcile)
        if do_reconcile:
            self._next_reconcile = now + timedelta(seconds=self.settings.reconcile_interval)
            if wait_launches:
                self._reconciler.run(now, out)
            elif self._reconciling is None or self._reconciling.done():
                self._reconciling = self._reconcile_pool.submit(self._reconcile_in_background, now, out)
        return out.report(do_reconcile)

    def _reconcile_in_background(self, now: datetime, out: Collector) -> None:
        try:
            self._reconciler.run(now, out)
        except Exception as exc:  # a broken store or cloud must not end the reconciliation thread
            self.log(f"reconcile: unexpected error: {' '.join(f'{type(exc).__name__}: {exc}'.split())}")

    def _reserve(self, job_id: int, now: datetime) -> bool:
        """Mark a job as this daemon's to handle; False if it is in flight or cooling down."""
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

    def _submit(self, task: Callable[[Job, datetime, Collector], None], job: Job, now: datetime,
                out: Collector) -> Future:
        future = self._pool.submit(self._guarded, task, job, now, out)
        # A launch ended: the loop re-checks (a retry may be due, a claim was freed).
        future.add_done_callback(lambda _: self._wake.set())
        return future

    def _guarded(self, task: Callable[[Job, datetime, Collector], None], job: Job, now: datetime,
                 out: Collector) -> None:
        """Run one job's task. Whatever happens, the loop and the other jobs go on."""
        try:
            task(job, now, out)
            with self._lock:
                self._cooldown.pop(job.id, None)
        except Exception as exc:  # one job's bug must not kill the daemon
            self._crashed(job, exc, out)
        finally:
            with self._lock:
                self._in_flight.discard(job.id)
                self._claims.pop(job.id, None)

    def _crashed(self, job: Job, exc: Exception, out: Collector) -> None:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
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
        try:
            after = guarded_update(self.store, job.id, lambda cur: cur if cur.terminal else
                                   cur.failed(reason, now, ReasonCode.LAUNCH_FAILED))
        except Exception as again:  # the store itself is broken; keep going, log it
            self.log(f"job {job.id}: unexpected error: {message}; cannot fail it either: {again}")
            return
        if after is not None and after.terminal:
            self.log(f"job {job.id} -> failed ({reason})")

    def next_wake(self, after: datetime | None = None) -> datetime | None:
        """The earliest time (later than ``after``) a job whose handling crashed may be looked at again."""
        with self._lock:
            return min((t for t, _ in self._cooldown.values() if after is None or t > after), default=None)

    @property
    def next_reconcile(self) -> datetime | None:
        """When the next pass reconciles (None: the next pass does)."""
        return self._next_reconcile

    def sleep(self, seconds: float) -> None:
        """Sleep until ``seconds`` passed or something woke the loop (API change, launch end, signal)."""
        self._wake.wait(seconds)

    # ------------------------------------------------------------------ 1. abandoned launches
    def _abandoned(self, now: datetime) -> list[Job]:
        found = []
        for job in self.store.active():
            if not (job.status is JobStatus.LAUNCHING or (job.status is JobStatus.RUNNING and job.instance_id is None)):
                continue
            if self.in_flight(job.id):
                continue
            if not self.exclusive and job.extra.get(CLAIMED_BY) != self.daemon_id:
                touched = job.updated_at or job.created_at
                if now < touched + timedelta(seconds=self.launch_lease):
                    continue  # another daemon's claim, still within its lease
            found.append(job)
        return found

    def _resolve_abandoned(self, now: datetime, out: Collector) -> list[Future]:
        return [self._submit(self._take_over, job, now, out)
                for job in self._abandoned(now) if self._reserve(job.id, now)]

    def _take_over(self, seen: Job, now: datetime, out: Collector) -> None:
        if self.stopping:
            return
        t = self._now(now)

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
            self._hold_claim(job)
        instances = self.launcher.find_instances(self.store.store_id, job_id=job.id, attempt=job.attempts,
                                                 include_terminated=True)
        if instances:
            chosen = best_instance(instances)
            self.log(f"job {job.id}: found instance {chosen.instance_id} ({chosen.state}) of attempt "
                     f"{job.attempts} launched before a restart; adopting it")
            self._record_launch(job, chosen.instance_id, out, ADOPTED)
            return
        if job.status is not JobStatus.LAUNCHING:
            # It reported running, so its instance exists somewhere (tag lookups can lag). Look
            # again after a while; its timeout still ends it if the instance never turns up.
            with self._lock:
                self._deferred[job.id] = t + timedelta(seconds=self.settings.reconcile_interval)
            return
        if t > job.date_time + timedelta(seconds=job.start_deadline):  # never launch days late
            reason = missed_reason(job, t) + "; its launch was interrupted"
            after = guarded_update(self.store, job.id,
                                   lambda cur: _fail_attempt(cur, job, reason, t, ReasonCode.MISSED_START_DEADLINE))
            if after is not None:
                self.log(describe_change(job, after, reason))
                out.add(MISSED, job.id, reason)
            return
        self.log(f"job {job.id}: no instance of attempt {job.attempts} exists; launching it again")
        self._launch(job, callback_token, out)

    # ------------------------------------------------------------------ 2 + 3. due jobs
    def _start_due(self, now: datetime, out: Collector) -> list[Future]:
        futures = []
        due = self.store.due(now)
        if not self.exclusive:
            # Daemons sharing a store see the same due list; each walks jobs due at the same instant
            # in its own order, so they mostly claim different jobs instead of all racing for one.
            due.sort(key=lambda j: (j.due_at, zlib.crc32(f"{self.daemon_id}:{j.id}".encode())))
        for job in due:
            if self.stopping:
                break
            if self._reserve(job.id, now):
                futures.append(self._submit(self._claim_and_launch, job, now, out))
        return futures

    def _claim_and_launch(self, seen: Job, now: datetime, out: Collector) -> None:
        if self.stopping:
            return  # stop claiming; the job stays scheduled for the next daemon
        t = self._now(now)
        callback_token = secrets.token_urlsafe(32)  # only its hash is stored (DESIGN.md section 7)

        def claim(current: Job) -> Job:
            if current.status is not JobStatus.SCHEDULED or current.due_at > t:
                raise Skip
            if t > current.date_time + timedelta(seconds=current.start_deadline):
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
        self._hold_claim(job)
        self.log(describe_change(seen, job, f"attempt {job.attempts}"))
        self._launch(job, callback_token, out)

    def _launch(self, job: Job, callback_token: str, out: Collector) -> None:
        """RunInstances for a claimed job, then record what happened."""
        try:
            user_data = render_user_data(job, callback_url=callback_url_for(self.public_url, job.id),
                                         callback_token=callback_token, callback_ca=self.callback_ca)
        except InvalidInput as exc:  # cannot happen for a validated job; never launch what we cannot quote
            self._launch_failed(job, LaunchError(f"cannot render user-data: {exc}", retryable=False), out)
            return
        try:
            instance_id = self.launcher.launch(job, user_data=user_data, store_id=self.store.store_id)
        except LaunchError as exc:
            self._launch_failed(job, exc, out)
            return
        self._record_launch(job, instance_id, out, LAUNCHED)

    def _record_launch(self, job: Job, instance_id: str, out: Collector, kind: str) -> None:
        t = self.clock.now()

        def record(current: Job) -> Job:
            if current.attempts != job.attempts:
                raise Skip  # moved on to another attempt: the reaper ends this instance
            if current.terminal:  # cancelled (or reported) while we launched
                return current if current.instance_id else current.attach_instance(instance_id, t)
            if current.status in (JobStatus.LAUNCHING, JobStatus.RUNNING) and current.instance_id in (None, instance_id):
                return current.launched(instance_id, t)
            raise Skip

        after = guarded_update(self.store, job.id, record)
        if after is None:
            self.log(f"job {job.id}: instance {instance_id} is not wanted any more; the reaper will end it")
            return
        if after.terminal:
            try:
                self.launcher.terminate([instance_id])
            except JobmanError as exc:
                self.log(f"job {job.id}: cannot terminate instance {instance_id}: {exc}; the reaper will end it")
            else:
                self.log(f"job {job.id} was {after.status.value} during its launch; instance {instance_id} terminated")
            out.add(CANCELLED_DURING_LAUNCH, job.id, after.status.value, instance_id)
            return
        # ``job`` is the claimed snapshot; if the instance reported ``running`` first, the service
        # already logged that change, and this line records the instance.
        self.log(describe_change(job, after, f"instance {instance_id}, attempt {after.attempts}"))
        out.add(kind, job.id, "", instance_id)

    def _launch_failed(self, job: Job, exc: LaunchError, out: Collector) -> None:
        t = self.clock.now()
        settings = self.settings
        code = ReasonCode.LAUNCH_FAILED
        if exc.code == "IdempotentInstanceTerminated":
            reason = "instance vanished without reporting (state: terminated)"
            code = ReasonCode.INSTANCE_VANISHED
        elif exc.retryable and job.attempts < settings.max_attempts:
            delay = min(settings.backoff_max, settings.backoff_base * 2 ** (job.attempts - 1))
            retry_reason = f"launch attempt {job.attempts} failed: {exc}"

            def retry(current: Job) -> Job:
                if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts:
                    raise Skip
                return current.retry_later(retry_reason, t + timedelta(seconds=delay), t)

            after = guarded_update(self.store, job.id, retry)
            if after is not None:
                self.log(describe_change(job, after, f"retry in {format_duration(delay)}: {exc}"))
                out.add(RETRYING, job.id, str(exc))
                self._wake.set()
            return
        elif exc.retryable:
            reason = f"launch error after {job.attempts} attempts: {exc}"
        else:
            reason = f"launch error: {exc}"

        after = guarded_update(self.store, job.id, lambda cur: _fail_attempt(cur, job, reason, t, code))
        if after is not None:
            self.log(describe_change(job, after, reason))
            out.add(LAUNCH_FAILED, job.id, reason)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Loop until :meth:`stop`; then finish the launches in flight. Returns the exit code 0."""
        from .daemon_loop import run_loop

        try:
            run_loop(self)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        """Stop claiming, cancel queued work, wait for the launches already talking to AWS."""
        self._stop_requested = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._closed.set()
        self._reconcile_pool.shutdown(wait=True, cancel_futures=True)
        self._wake.close()


class _Recording:
    """The store as the daemon sees it: every update it makes is noted (see :meth:`Daemon.observe`,
    which logs only the changes made by other processes). Everything else passes through."""

    def __init__(self, store: JobStore, note: Callable[[Job], None]) -> None:
        self._store = store
        self._note_change = note

    def update(self, job_id: int, change: Any) -> Job:
        job = self._store.update(job_id, change)
        self._note_change(job)
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _fail_attempt(current: Job, attempt: Job, reason: str, now: datetime, code: ReasonCode) -> Job:
    """Fail the job if it is still in the launch ``attempt`` we handled (else write nothing)."""
    if current.status is not JobStatus.LAUNCHING or current.attempts != attempt.attempts:
        raise Skip
    return current.failed(reason, now, code)


def run_daemon(settings: DaemonSettings, ec2: Any) -> int:
    """The ``jobman daemon`` command: wire store, launcher and listener, then run. Returns exit code."""
    from .daemon_loop import run_daemon as _run

    return _run(settings, ec2)
