"""Cost receipts of ended jobs, made off the callback path on one background thread.

A job that ended after running on an instance (finished, failed or cancelled; an earlier run a
spot interruption ended counts: see :mod:`jobman_cli.cost.runs`) gets ``cost`` and
``cost-basis`` once (see :mod:`jobman_cli.cost`). The work is found like the notifier finds its:

* :meth:`Costing.poke`, an observer listener: every job this process wrote and every active job
  another process ended. It only puts an id on a queue (never blocks a callback);
* :meth:`Costing.scan` at start: jobs that ended in the last :data:`RECENT` without a receipt
  (a daemon stopped before making it), by the store's ``owing_receipts`` (no full read). Older ones are left without (their instances are long gone
  from EC2's listing, and the spot history keeps 90 days); ``jobman cost`` lists them as unpriced.

A transient failure (throttling, a network error, a 5xx) is tried again with a doubling backoff,
:data:`MAX_TRIES` times at most. A job has at most one pending entry: a poke of a job already
queued, being priced or waiting out its backoff is ignored (every write of an ended job pokes --
each notification attempt's record, the reaper's terminate -- and re-queueing each one burnt the
tries in seconds instead of the ~45 minutes the backoff promises). After the last try, or at
once for a final failure, the receipt is stored as ``unknown: <why>``. The write is a compare-and-set that keeps an existing receipt, so a job gets
one receipt even when two daemons on one shared store both compute it.

Off when the daemon's launcher is not EC2 (tests with a fake cloud), or with
``JOBMAN_COST_RECEIPTS=off`` / ``[cost] receipts = false``.
"""

from __future__ import annotations

import heapq
import os
import threading
from datetime import datetime, timedelta
from typing import Any, Callable

from ..errors import JobmanError
from ..model import Job
from .common import Log, error_text

RECENT = timedelta(days=7)
MAX_TRIES = 8
FIRST_BACKOFF = 30.0
MAX_BACKOFF = 900.0


def wants_receipt(job: Job) -> bool:
    """Ended, ran on an instance (the current one, or an earlier run a spot interruption ended: a
    job cancelled before its relaunch was still billed for that run), and no receipt yet (the rule
    lives beside the runs it reads, where the stores index it too)."""
    from ..cost.runs import owes_receipt

    return owes_receipt(job)


class Costing:
    """``pricer()`` returns an object with ``receipt(job) -> Receipt`` (built on first use: boto3
    is imported only when a job needs a receipt)."""

    def __init__(self, store: Any, pricer: Callable[[], Any], clock: Any, *, log: Log) -> None:
        self.store = store
        self._make_pricer = pricer
        self._pricer: Any = None
        self.clock = clock
        self.log = log
        self._heap: list[tuple[float, int]] = []
        self._tries: dict[int, int] = {}
        self._due: dict[int, float] = {}  # the one pending entry of each job (queued, running or backing off)
        self._done: set[int] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._scanned = False

    # ------------------------------------------------------------------ finding work
    def poke(self, job: Job) -> None:
        """An observer listener: cheap, never raises, never touches the store or the network."""
        if wants_receipt(job) and job.id not in self._done:
            self._push(job.id, self.clock.now().timestamp())

    def scan(self, now: datetime | None = None) -> int:
        """Queue the jobs that ended in the last :data:`RECENT` owing a receipt: the store's own
        query (DynamoDB: index Queries, never a Scan of the table). Returns how many."""
        now = now or self.clock.now()
        found = 0
        for record in self.store.owing_receipts(now - RECENT):
            self._push(int(record["id"]), now.timestamp())
            found += 1
        return found

    def _push(self, job_id: int, at: float) -> None:
        """Queue ``job_id`` at ``at`` unless it is already pending: its entry (or the try under way,
        which reads the store afresh) covers whatever this write changed, and keeps its backoff."""
        with self._cond:
            if job_id in self._due:
                return
            self._due[job_id] = at
            heapq.heappush(self._heap, (at, job_id))
            self._cond.notify()

    def _finish(self, job_id: int, again_at: float | None) -> None:
        """End the try under way: the job leaves the queue, or waits until ``again_at``."""
        with self._cond:
            if again_at is None:
                self._due.pop(job_id, None)
                return
            self._due[job_id] = again_at
            heapq.heappush(self._heap, (again_at, job_id))
            self._cond.notify()

    # ------------------------------------------------------------------ doing it
    def step(self, now: datetime | None = None) -> int:
        """Make every receipt due by ``now`` (synchronously). Returns how many jobs were looked at."""
        now = now or self.clock.now()
        count = 0
        while True:
            with self._cond:
                if not self._heap or self._heap[0][0] > now.timestamp() or self._stop:
                    return count
                _, job_id = heapq.heappop(self._heap)  # stays in _due while it runs: pokes wait
            count += 1
            again_at: float | None = None
            try:
                again_at = self._one(job_id, now)
            finally:
                self._finish(job_id, again_at)

    def _one(self, job_id: int, now: datetime) -> float | None:
        """One try at ``job_id``'s receipt; returns when to try again (None: done or nothing to do)."""
        from ..cost.quote import PriceUnavailable
        from ..cost.receipt import unknown

        if job_id in self._done:
            return None
        try:
            job = self.store.get(job_id)
        except JobmanError:
            return None  # pruned or unreadable: nothing to receipt
        if not wants_receipt(job):
            self._done.add(job_id)
            return None
        try:
            if self._pricer is None:
                self._pricer = self._make_pricer()
            receipt = self._pricer.receipt(job)
        except PriceUnavailable as exc:
            tries = self._tries.get(job_id, 0) + 1
            if exc.transient and tries < MAX_TRIES:
                self._tries[job_id] = tries
                delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (tries - 1))
                self.log(f"cost: job {job_id}: {exc}; trying again in {delay:g}s")
                return now.timestamp() + delay
            receipt = unknown(f"{exc}" + (f" (after {tries} tries)" if exc.transient else ""))
        except Exception as exc:  # a bug or an unexpected answer: said once, never a made-up number
            receipt = unknown(f"unexpected error: {error_text(exc)}")
        return self._store(job_id, receipt)

    def _store(self, job_id: int, receipt: Any) -> float | None:
        stamp = self.clock.now()

        def change(current: Job) -> Job:
            if current.cost_basis is not None:
                return current  # another daemon made it first: one receipt per job
            return current.with_cost(receipt.cost, receipt.basis, stamp)

        try:
            self.store.update(job_id, change)
        except JobmanError as exc:
            self.log(f"cost: job {job_id}: cannot store the receipt: {exc}")
            return stamp.timestamp() + FIRST_BACKOFF
        self._done.add(job_id)
        self._tries.pop(job_id, None)
        from ..cost.receipt import format_usd

        self.log(f"job {job_id} cost {format_usd(receipt.cost)} ({receipt.basis})")
        return None

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobman-cost", daemon=True)
        self._thread.start()

    def run_once(self) -> int:
        """``--once`` and tests (each pass that waits for its launches): the first call scans the
        store, every call makes the receipts due now (the observer's pokes found the rest)."""
        if not self._scanned:
            self._scanned = True
            self.scan()
        return self.step()

    def _run(self) -> None:
        try:
            self.scan()
        except Exception as exc:
            self.log(f"cost: cannot look for jobs without a receipt: {error_text(exc)}")
        while True:
            with self._cond:
                while not self._stop:
                    now = self.clock.now().timestamp()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(min(1.0, self._heap[0][0] - now) if self._heap else 1.0)
                if self._stop:
                    return
            try:
                self.step()
            except Exception as exc:  # a broken store: logged, the thread lives on
                self.log(f"cost: unexpected error: {error_text(exc)}")

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)


def receipts_enabled() -> bool:
    from ..config import config_section

    env = os.environ.get("JOBMAN_COST_RECEIPTS")
    if env is not None:
        return env.strip().lower() not in ("off", "false", "0", "no")
    value = config_section("cost").get("receipts", True)
    return value is not False


def costing_for(store: Any, launcher: Any, clock: Any, *, log: Log) -> Costing | None:
    """The daemon's receipt maker, or None when its launcher is not EC2 or receipts are off."""
    from ..launchers.base import EC2Settings

    settings = getattr(launcher, "settings", None)
    if type(launcher).__name__ != "EC2Launcher" or not isinstance(settings, EC2Settings) or not receipts_enabled():
        return None

    def make() -> Any:
        from ..cost.cache import PriceCache
        from ..cost.pricer import AwsPricer
        from ..cost.prices_ondemand import OnDemandPrices

        ondemand = OnDemandPrices(PriceCache.default(), clock=clock.now)
        return AwsPricer(ondemand, lambda: launcher._client("ec2"), default_type=settings.instance_type,
                         default_region=settings.region or os.environ.get("AWS_REGION"), clock=clock.now)

    return Costing(store, make, clock, log=log)

