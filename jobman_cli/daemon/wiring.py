"""The :class:`Daemon`: builds the daemon's parts over one store and one launcher, and runs one pass.

The parts, each readable on its own (each has a ``step``):

======================  ===========================================================================
:mod:`.adopter`         jobs left in ``launching`` by a dead daemon: take over, look up, adopt/relaunch
:mod:`.starter`         due jobs: claim (``scheduled -> launching``), then launch
:mod:`.launch`          one claimed attempt: user-data, ``RunInstances``, record or retry or fail
:mod:`.lease`           shared stores: honour other daemons' claims, renew this daemon's own
:mod:`.observer`        log other processes' changes (and the API's) once
:mod:`.reconcile`       every ``reconcile_interval``: timeouts, vanished instances, orphans
:mod:`.notifier`        notifications jobs owe once ended: own threads, claimed, retried, recorded
:mod:`.retention`       once a day (``[daemon] retention``): prune jobs that ended long ago
:mod:`.schedules`       recurring schedules: each due occurrence becomes one job (or missed/skipped)
:mod:`.pool`            the bounded launch pool: in flight, cool-downs after crashes
:mod:`.throttle`        the token bucket that paces ``RunInstances``
:mod:`.loop`            the only driver: sleeps until a pass is worth it
:mod:`.main`            ``jobman daemon``, the process: flags, store, listener, signals
======================  ===========================================================================

One pass, :meth:`Daemon.tick`: abandoned launches first (so their tag lookups precede any new
``RunInstances``), then the schedules' due occurrences (their jobs; the loop's passes hand them to
their own thread), then due jobs, then — when its interval is due — the reconciliation, then —
once a day, if configured — the retention prune.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any

from ..clock import Clock, SystemClock
from ..launchers.base import Launcher
from ..joblogs import LogTarget
from ..launchers.userdata import load_callback_ca
from ..model import Job, format_time
from ..notify.settings import NotifySettings
from ..service import JobService
from ..settings import DaemonSettings
from ..stores.base import JobStore
from .adopter import Adopter
from .common import DEFAULT_LAUNCH_LEASE, Collector, Log, TickReport, error_text, new_daemon_id, stderr_log
from .costing import costing_for
from .launch import Launch
from .lease import ONCE_SKEW_MARGIN, LeaseKeeper
from .loop import run_loop
from .notifier import Notifier
from .observer import Observer, RecordingStore
from .pool import LaunchPool
from .reconcile import Reconciler
from .retention import Retention
from .schedules import Materializer
from .starter import Starter
from .throttle import TokenBucket
from .waker import Waker


class Daemon:
    """The scheduler over one store and one launcher. See the module docstring."""

    def __init__(self, store: JobStore, launcher: Launcher, settings: DaemonSettings, *,
                 clock: Clock | None = None, service: JobService | None = None, daemon_id: str | None = None,
                 exclusive: bool = False, launch_lease: float | None = None, log: Log | None = None,
                 log_target: LogTarget | None = None, notify: NotifySettings | None = None,
                 notify_sender: Any = None) -> None:
        """``exclusive``: this daemon holds the store's daemon lock (TinyDB), so any ``launching`` job
        it is not launching itself is abandoned. Otherwise (DynamoDB, several daemons) a claim by
        another daemon is abandoned only once its lease expired. ``log_target``: where instances
        send their job logs (CloudWatch Logs, section 10); None: the console only. ``notify_sender``
        (a :class:`~jobman_cli.notify.send.Sender`): deliver notifications with it (None: this
        daemon delivers none; another daemon on the same store, or a later start, will)."""
        self.settings = settings
        self.clock = clock or SystemClock()
        self.daemon_id = daemon_id or new_daemon_id()
        self.exclusive = exclusive
        self.public_url = settings.effective_public_url
        #: The --callback-ca PEM, read and validated once here (ConfigError if unusable).
        self.callback_ca = (load_callback_ca(settings.callback_ca, self.public_url)
                            if getattr(settings, "callback_ca", None) else None)
        self._write_log = log or stderr_log
        self._log_lock = threading.Lock()
        self._wake = Waker()
        self._stop_requested = False  # a plain flag: a signal handler may set it (see stop())
        self.launch_lease = float(launch_lease if launch_lease is not None
                                  else getattr(settings, "launch_lease", DEFAULT_LAUNCH_LEASE))

        self.observer = Observer(store, self.log)
        self.store = RecordingStore(store, self.observer)
        self.service = service or JobService(self.store, self.clock)
        self.leases = LeaseKeeper(self.store, self.clock, daemon_id=self.daemon_id, lease=self.launch_lease,
                                  exclusive=exclusive, log=self.log,
                                  stamp_margin=ONCE_SKEW_MARGIN if getattr(settings, "once", False) else None)
        self.pool = LaunchPool(self.store, self.clock, settings, log=self.log, wake=self._wake.set,
                               finished=self.leases.release)
        #: Shared by every launch of this daemon: RunInstances' own request rate (see :mod:`.throttle`).
        self.bucket = TokenBucket(settings.launch_burst, settings.launch_rate)
        self.launch = Launch(self.store, launcher, self.clock, settings, public_url=self.public_url,
                             callback_ca=self.callback_ca, log_target=log_target, bucket=self.bucket, log=self.log, wake=self._wake.set,
                             stopping=lambda: self.stopping, defer=self.pool.defer)
        self.adopter = Adopter(self.store, launcher, self.clock, daemon_id=self.daemon_id, pool=self.pool,
                               leases=self.leases, launch=self.launch, log=self.log, stopping=lambda: self.stopping,
                               look_again_after=settings.reconcile_interval)
        self.starter = Starter(self.store, self.clock, daemon_id=self.daemon_id, exclusive=exclusive, pool=self.pool,
                               leases=self.leases, launch=self.launch, log=self.log, stopping=lambda: self.stopping)
        self.reconciler = Reconciler(self.store, launcher, timeout_grace=settings.timeout_grace, log=self.log,
                                     in_flight=self.pool.in_flight)
        self._next_reconcile: datetime | None = None
        self.retention = Retention(self.store, getattr(settings, "retention", None), log=self.log)
        #: None for a store without schedules (a test's minimal fake store).
        self.schedules = (Materializer(self.store, self.service, terminate=lambda iid: launcher.terminate([iid]),
                                       log=self.log, stopping=lambda: self.stopping)
                          if hasattr(self.store, "list_schedules") else None)
        self._schedules_trouble: str | None = None
        #: The loop's schedule passes run here, so a slow one (1,000 occurrences due at once, a
        #: throttled store) never delays the launch of a due job, its own first jobs included.
        self._schedules_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobman-schedules")
        self._materializing: Future | None = None
        self._reconcile_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobman-reconcile")
        self._reconciling: Future | None = None
        #: Cost receipts of ended jobs (None: not EC2, or receipts off); its thread starts with :meth:`run`.
        #: Its write goes through ``self.store``, so the observer pokes the notifier with the receipt.
        self.costing = costing_for(self.store, launcher, self.clock, log=self.log)
        #: Its threads start with :meth:`run` (``--once``: :meth:`Notifier.run_once`); with costing on,
        #: a first notification waits (bounded) for the job's receipt.
        self.notifier = (Notifier(self.store, self.clock, notify or NotifySettings(), notify_sender,
                                  owner=self.daemon_id, exclusive=exclusive, log=self.log,
                                  receipts=self.costing is not None)
                         if notify_sender is not None else None)
        if self.notifier is not None:
            self.observer.listeners.append(self.notifier.poke)
            if self.notifier.schedule_events is not None:  # missed/refused occurrences notify too
                self.notifier.schedule_events.defaults = lambda: self.service.notify_defaults
                if self.schedules is not None:
                    self.schedules.on_event = self.notifier.schedule_events.poke
        if self.costing is not None:
            self.observer.listeners.append(self.costing.poke)

        self.service.subscribe(self._on_service_change)
        self.leases.start()  # shared stores only

    # ------------------------------------------------------------------ small helpers
    def log(self, line: str) -> None:
        with self._log_lock:
            self._write_log(f"{format_time(self.clock.now())} {line}")

    def in_flight(self, job_id: int) -> bool:
        return self.pool.in_flight(job_id)

    def observe(self) -> None:
        """Log the changes other processes made to active jobs (see :class:`~.observer.Observer`),
        and show the lease keeper the other daemons' claims as they are now (their renewals)."""
        self.leases.watch(self.observer.step())
        if self.schedules is not None:
            self.schedules.invalidate()

    def renew_claims(self) -> int:
        """Renew this daemon's launch claims now (see :class:`~.lease.LeaseKeeper`)."""
        return self.leases.step()

    def _on_service_change(self, job: Job) -> None:
        """A change made through the service (the API): log it and wake the loop at once."""
        self.observer.service_changed(job)
        if self.notifier is not None:
            self.notifier.busy()
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
            futures += self.adopter.step(now, out)
            self._materialize(now, out, wait=wait_launches)
            futures += self.starter.step(now, out)
        if wait_launches and futures:
            wait(futures)
        do_reconcile = reconcile if reconcile is not None else (
            self._next_reconcile is None or now >= self._next_reconcile)
        if do_reconcile:
            self._next_reconcile = now + timedelta(seconds=self.settings.reconcile_interval)
            if wait_launches:
                self.reconciler.step(now, out)
            elif self._reconciling is None or self._reconciling.done():
                self._reconciling = self._reconcile_thread.submit(self._reconcile_in_background, now, out)
        if not self.stopping and self.retention.due(now):  # a prune of a big store must not delay launches
            if wait_launches:
                self.retention.run(now)
            else:
                self._reconcile_thread.submit(self._retain_in_background, now)
        if wait_launches and self.costing is not None:  # --once and tests; the loop has the cost thread
            self.costing.run_once()
        return out.report(do_reconcile)

    def _materialize(self, now: datetime, out: Collector, *, wait: bool = True) -> None:
        """The schedules' due occurrences become jobs: in this pass when it waits (tests,
        ``--once``), else in the schedules thread (one pass at a time; each job it creates wakes the
        loop through the service, and its end wakes it to look at the next occurrence)."""
        if self.schedules is None:
            return
        if wait:
            self._schedules_step(now, out)
        elif self._materializing is None or self._materializing.done():
            self._materializing = self._schedules_thread.submit(self._schedules_in_background, now, out)

    def _schedules_in_background(self, now: datetime, out: Collector) -> None:
        try:
            self._schedules_step(now, out)
        finally:
            self._wake.set()

    def _schedules_step(self, now: datetime, out: Collector) -> None:
        """One schedules pass; a store that cannot list its schedules is logged (once while it
        lasts) and never keeps the due jobs of a pass from starting."""
        assert self.schedules is not None
        try:
            self.schedules.step(now, out)
            self._schedules_trouble = None
        except Exception as exc:
            text = error_text(exc)
            if text != self._schedules_trouble:
                self.log(f"schedules: cannot read them, looking again at the next pass: {text}")
            self._schedules_trouble = text

    def _retain_in_background(self, now: datetime) -> None:
        try:
            self.retention.run(now)
        except Exception as exc:  # same as the reconciliation: log, keep the thread
            self.log(f"retention: unexpected error: {error_text(exc)}")

    def _reconcile_in_background(self, now: datetime, out: Collector) -> None:
        try:
            self.reconciler.step(now, out)
        except Exception as exc:  # a broken store or cloud must not end the reconciliation thread
            self.log(f"reconcile: unexpected error: {error_text(exc)}")

    def next_wake(self, after: datetime | None = None) -> datetime | None:
        """The earliest time (later than ``after``) a job whose handling crashed may be looked at again,
        or a schedule's next occurrence is due to become a job."""
        wakes = [self.pool.next_wake(after), self.schedules.next_wake(after) if self.schedules else None]
        return min((w for w in wakes if w is not None), default=None)

    @property
    def next_reconcile(self) -> datetime | None:
        """When the next pass reconciles (None: the next pass does)."""
        return self._next_reconcile

    def sleep(self, seconds: float) -> None:
        """Sleep until ``seconds`` passed or something woke the loop (API change, launch end, signal)."""
        self._wake.wait(seconds)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Loop until :meth:`stop`; then finish the launches in flight. Returns the exit code 0."""
        try:
            if self.notifier is not None:
                self.notifier.start()
            if self.costing is not None:
                self.costing.start()
            run_loop(self)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        """Stop claiming, cancel queued work, wait for the launches already talking to AWS."""
        self._stop_requested = True
        self.pool.close()
        self.leases.close()
        self._reconcile_thread.shutdown(wait=True, cancel_futures=True)
        self._schedules_thread.shutdown(wait=True, cancel_futures=True)
        if self.notifier is not None:
            self.notifier.close()
        if self.costing is not None:
            self.costing.close()
        self._wake.close()
