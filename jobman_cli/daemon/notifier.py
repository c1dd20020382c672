"""The :class:`Notifier`: delivers the notifications jobs owe, on its own threads (and, through its
:class:`~.schedule_notifier.ScheduleEvents`, those of schedules' missed/refused occurrences).

What is owed is read from the store, never kept only in memory (see
:mod:`jobman_cli.notify.deliveries`): a terminal job whose ``notify-on`` covers its end owes one
delivery per target until each is ``delivered`` or ``failed``. So the notifier finds its work

* at once, when this process sees a job end: :meth:`poke` (the observer calls it for every change
  this process makes — an instance's callback through the API, the reconciler's, its own — and for
  active jobs other processes ended, e.g. a CLI ``cancel``);
* by a scan of the store's terminal jobs at start (deliveries left by a daemon that stopped or
  crashed, retries whose time has come) and every ``scan_interval`` (anything no hook announced).

Each delivery — one target of one job — is owned before it is sent, and its outcome is handed to
the recorder as soon as it is known (not when the job's other targets are done: a slow target must
neither let a fast one's claim expire nor keep its outcome unwritten through a crash). On a shared
store (several daemons on one DynamoDB table) the claim is a conditional write of the job
(:func:`~jobman_cli.notify.deliveries.claim`) just before that one attempt: of two daemons only one
wins it, so one event is sent once; the claim's lease (``max(60 s, 4 x timeout)``) outlasts the
attempt's deadline (``timeout``). On an exclusive store (the TinyDB file, one daemon by its lock) the
claim is in memory and written with the outcome. Either way a crash between sending and recording
(about :data:`~.notify_recorder.WINDOW`) means that attempt is made again (at least once; the event
id header lets the receiver drop the repeat); a crash between two attempts loses nothing and
repeats nothing. At shutdown, attempts still in flight after ``CLOSE_GRACE`` are abandoned
unrecorded: made again later, like a crash's.

Nothing here blocks the loop, a launch or a callback: :meth:`poke` only puts a job id on a heap;
the sending happens in a bounded pool (``workers`` threads), the waiting in one dispatcher thread,
the recording in the :class:`~.notify_recorder.Recorder` (outcomes written in batches). While
callbacks are arriving (:meth:`busy`, called for every change the API makes) at most
``busy_workers`` attempts are in flight: the failures that owe notifications arrive as callbacks,
and those come first (the cost of a 1,000-job burst to the callbacks: BENCHMARKS.md, ``notify``).

The cost receipt (``cost``, ``cost-basis`` in the body) is made on the costing thread after the job
ended, usually within a second. With ``receipts`` (this daemon makes them: EC2 launcher, receipts
on), the *first* attempt of a delivery for a job that will get one (:func:`~.costing.wants_receipt`)
is held until the receipt is stored or ``receipt_wait`` seconds after the job's ``finished-at``,
whichever comes first; the receipt's write goes through the observer, whose :meth:`poke` queues the
delivery at once. After the wait it goes without (``cost`` and ``cost-basis`` null). Jobs that never
ran on an instance, daemons without costing and jobs already past the wait never wait; retries
never wait (they send the first claim's snapshot: :mod:`jobman_cli.notify.deliveries`).
"""

from __future__ import annotations

import heapq
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import Any

from ..errors import JobmanError
from ..model import TERMINAL_STATES, Job, job_from_record
from ..notify import deliveries as plan
from ..notify.deliveries import Outcome
from ..notify.message import body
from ..notify.settings import NotifySettings
from ..notify.targets import EVENTS, redact
from .common import Log, error_text
from .costing import wants_receipt
from .notify_recorder import Pass, Recorder, Write
from .schedule_notifier import ScheduleEvents

UTC = timezone.utc
#: The dispatcher looks at the wall clock at least this often (a clock step is noticed within it).
MAX_WAIT = 1.0
#: Seconds after an API change during which deliveries yield to callbacks (see Notifier.busy).
BUSY_WINDOW = 0.5
#: Seconds close() waits for attempts in flight before abandoning them.
CLOSE_GRACE = 3.0


class Notifier:
    def __init__(self, store: Any, clock: Any, settings: NotifySettings, sender: Any, *, owner: str,
                 exclusive: bool, log: Log, receipts: bool = False) -> None:
        """``receipts``: this daemon makes cost receipts (its costing is on), so a first attempt may
        wait for one (see the module docstring)."""
        self.store = store
        self.receipts = receipts
        self.clock = clock
        self.settings = settings
        self.policy = settings.policy
        self.sender = sender
        self.owner = owner
        self.exclusive = exclusive
        self.log = log
        self._heap: list[tuple[float, int]] = []
        self._next: dict[int, float] = {}  # job id -> earliest time on the heap
        self._running: set[int] = set()
        self._again: set[int] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="jobman-notify")
        self._thread: threading.Thread | None = None
        self._busy_until = 0.0  # monotonic; see busy()
        self._sending = 0  # jobs dispatched whose attempts are not all sent yet (the limit counts these)
        self._futures: set[Future] = set()
        self._abandoned = False  # close() gave up waiting: outcomes still arriving are not recorded
        #: (Under the condition.) A job due before this wall time wakes the dispatcher; -inf while
        #: it is awake (it looks at the heap again anyway) or waits for room (a new job cannot be
        #: sent before room is made): a burst of 1,000 failures costs no wakeup per callback.
        self._wake_at = float("-inf")
        self.recorder = Recorder(store, log, hold=self._calm_in)
        #: A schedule's missed/refused occurrences (None: a store without schedules). The daemon
        #: sets its ``defaults`` (``[notify]``) and pokes it from the materializer.
        self.schedule_events = (ScheduleEvents(store, clock, self.policy, sender, owner=owner, log=log,
                                               scan_interval=settings.scan_interval)
                                if hasattr(store, "list_schedules") else None)

    # ------------------------------------------------------------------ finding work
    def poke(self, job: Job) -> None:
        """A job changed in this process's view: if it owes a delivery, queue it. Cheap, never blocks
        on the store or the network (called on the API's and the daemon's write paths)."""
        if not job.notify or job.status not in TERMINAL_STATES:
            return
        when = self._next_due(job, self.clock.now())
        if when is not None:
            self._schedule(job.id, when.timestamp())

    def _wait(self, job: Job) -> float | None:
        """Seconds a first attempt may wait for the job's cost receipt (None: it does not wait)."""
        return self.settings.receipt_wait if self.receipts and wants_receipt(job) else None

    def _next_due(self, job: Job, now: datetime) -> datetime | None:
        return plan.next_due(job, now, self.policy, self._wait(job))

    def scan(self) -> int:
        """Queue every job in the store that still owes a delivery. Returns how many."""
        found = 0
        now = self.clock.now()
        for record in self.store.list_records(TERMINAL_STATES):
            if not record.get("notify-targets") or record.get("status") not in EVENTS.get(
                    record.get("notify-on") or "failure", ()):
                continue
            try:
                job = job_from_record(record)
            except (KeyError, TypeError, ValueError):
                continue
            when = self._next_due(job, now)
            if when is not None:
                self._schedule(job.id, when.timestamp())
                found += 1
        return found

    def _schedule(self, job_id: int, at: float) -> None:
        with self._cond:
            known = self._next.get(job_id)
            if known is not None and known <= at:
                return
            self._next[job_id] = at
            heapq.heappush(self._heap, (at, job_id))
            if at < self._wake_at:
                self._cond.notify()

    # ------------------------------------------------------------------ the dispatcher
    def start(self) -> None:
        self._thread = threading.Thread(target=self._dispatch, name="jobman-notify-dispatch", daemon=True)
        self._thread.start()
        if self.schedule_events is not None:
            self.schedule_events.start()

    def _dispatch(self) -> None:
        next_scan = self.clock.monotonic()
        while True:
            if self.clock.monotonic() >= next_scan:
                try:
                    self.scan()
                except Exception as exc:  # a broken store: the next scan tries again
                    self.log(f"notify: cannot look for deliveries: {error_text(exc)}")
                next_scan = self.clock.monotonic() + self.settings.scan_interval
            with self._cond:
                while not self._stop:
                    now = self.clock.now().timestamp()
                    limit, calm_in = self._limit()
                    ready = self._ready(now, limit - self._sending)
                    if ready:
                        break
                    top = self._heap[0][0] if self._heap else now + MAX_WAIT
                    if top <= now:  # due, but no room: a finishing job notifies; or the callbacks calm down
                        pause = calm_in if calm_in > 0 else MAX_WAIT
                    else:
                        pause = top - now
                    pause = min(pause, MAX_WAIT, next_scan - self.clock.monotonic())
                    if pause <= 0:
                        break
                    self._wake_at = now + pause if limit > self._sending else float("-inf")
                    self._cond.wait(pause)
                    self._wake_at = float("-inf")
                if self._stop:
                    return
            for job_id in ready:
                try:
                    self._submit(job_id)
                except RuntimeError:  # the pool is shut down (close() raced the dispatcher)
                    return

    def busy(self) -> None:
        """The API just changed a job (a callback): for :data:`BUSY_WINDOW` seconds, at most
        ``busy_workers`` deliveries are in flight, so a burst of failures does not slow the
        callbacks that report them (they share the CPU, and on a TinyDB file the commits)."""
        self._busy_until = self.clock.monotonic() + BUSY_WINDOW

    def _calm_in(self) -> float:
        """Seconds until the callbacks are calm (0: they are): the recorder holds outcomes meanwhile."""
        return max(0.0, self._busy_until - self.clock.monotonic())

    def _limit(self) -> tuple[int, float]:
        """(Holding the condition.) How many jobs may be in work now, and seconds until calm."""
        calm_in = self._busy_until - self.clock.monotonic()
        if calm_in > 0:
            return min(self.settings.busy_workers, self.settings.workers), calm_in
        return self.settings.workers, 0.0

    def _ready(self, now: float, room: int) -> list[int]:
        """(Holding the condition.) Pop up to ``room`` job ids due by ``now``; one in work is
        looked at again after it."""
        ready: list[int] = []
        while self._heap and self._heap[0][0] <= now and len(ready) < room:
            at, job_id = heapq.heappop(self._heap)
            if self._next.get(job_id) != at:
                continue  # superseded by an earlier entry
            del self._next[job_id]
            if job_id in self._running:
                self._again.add(job_id)
            else:
                self._running.add(job_id)
                self._sending += 1
                ready.append(job_id)
        return ready

    def _work(self, job_id: int | None) -> None:
        """Deliver ``job_id``, then the next due job while there is room for it: a worker that
        takes the next job itself spares the dispatcher's wakeup and a hand-over to another
        thread per delivery (a burst of 1,000 is 1,000 of each fewer)."""
        while job_id is not None:
            deferred = False
            following = None
            try:
                deferred = self.deliver(job_id)
            except Exception as exc:  # a store error or a bug: logged; the next scan finds the job again
                self.log(f"notify: job {job_id}: {error_text(exc)}")
            finally:
                with self._cond:
                    self._sending -= 1  # room for the next send (the job stays ours until recorded)
                    if not self._stop:
                        limit, _ = self._limit()
                        taken = self._ready(self.clock.now().timestamp(), min(1, limit - self._sending))
                        following = taken[0] if taken else None
                    if following is None:
                        self._cond.notify_all()  # the dispatcher decides what comes next
                if not deferred:
                    self._finish(job_id)
            job_id = following

    def _released(self, job_id: int, written: Job | None) -> None:
        """The last outcome of a pass is written: release the job, queue its next attempt."""
        self._finish(job_id)
        if written is not None and not self._stop:
            self.poke(written)

    def _finish(self, job_id: int) -> None:
        """The job's attempts are sent and recorded: it may be dispatched again."""
        with self._cond:
            self._running.discard(job_id)
            again = job_id in self._again
            self._again.discard(job_id)
        if again:
            self._schedule(job_id, self.clock.now().timestamp())

    # ------------------------------------------------------------------ one job's deliveries
    def deliver(self, job_id: int) -> bool:
        """Make every attempt of ``job_id`` that is due now, one target after the other. Each
        target's outcome goes to the recorder as soon as it is known (not once per job: a job with
        slow targets must not hold a fast target's outcome until its claim has expired, nor lose it
        in a crash). Returns True when writes were submitted (the last one releases the job)."""
        try:
            job = self.store.get(job_id)  # as stored now: a poke's copy may be older than our last write
        except JobmanError as exc:
            self.log(f"notify: job {job_id}: {exc}")
            return False
        pass_ = Pass(lambda written: self._released(job_id, written))
        for index, event in plan.wanted(job):
            if self._stop:
                break  # closing: the rest is found again by the next daemon's scan
            now = self.clock.now()
            when = plan.due_at(job, index, event, now, self.policy, self._wait(job))
            if when is None or when > now:
                continue
            try:
                self._attempt(job, index, event, now, pass_)
            except Exception as exc:  # a store error or a bug: this target only; the others go on
                self.log(f"notify: job {job.id}: {redact(job.notify[index])}: {error_text(exc)}")
        if not pass_.close():
            later = self._next_due(job, self.clock.now())
            if later is not None and not self._stop:
                self._schedule(job.id, later.timestamp())
            return False
        return True

    def _attempt(self, job: Job, index: int, event: str, now: datetime, pass_: "Pass") -> None:
        """Claim and send one delivery and hand its outcome to the recorder. Nothing is sent when
        another daemon has it or it was just done, or (past ``max_age``) it is given up."""
        eid = plan.event_id(self.store.store_id, job.id, event)
        owner, policy = self.owner, self.policy

        def take(current: Job) -> Job:
            return plan.claim(current, index, event, now, owner, policy, eid)

        try:
            claimed = take(job) if self.exclusive else self.store.update(job.id, take)
        except plan.NotDue:
            return
        record = plan.record_of(claimed, index, event) or {}
        if not plan.claimed(claimed, index, event, owner):  # given up (max_age): nothing to send
            text = (record.get("history") or [{}])[-1].get("outcome", "gave up")
            if self.exclusive:
                def give_up(current: Job) -> Job:
                    try:
                        return take(current)
                    except plan.NotDue:
                        return current

                pass_.add()
                self.recorder.submit(Write(job.id, give_up, lambda written, error: self._given_up(
                    job, index, event, text, written, error, pass_)))
            else:
                self._given_up(job, index, event, text, claimed, None, None)
            return
        attempt = int(record.get("attempts") or 1)
        receipt = plan.sent_receipt(record)  # the first claim's: every attempt sends the same bytes
        outcome = self.sender.send(job.notify[index], body(claimed, str(record.get("event-id") or eid), receipt))
        if self._abandoned:
            return  # shut down mid-attempt: not recorded (made again: exclusive now, shared after the lease)
        pass_.add()
        self._record(job, index, event, attempt, outcome, now, pass_, receipt)

    def _given_up(self, job: Job, index: int, event: str, text: str, written: Job | None,
                  error: BaseException | None, pass_: "Pass | None") -> None:
        try:
            if written is not None:
                self.log(f"job {job.id} notification ({event}) to {redact(job.notify[index])}: {text} -> failed")
            else:
                self.log(f"notify: job {job.id}: giving up not recorded ({error_text(error)})")
        finally:
            if pass_ is not None:
                pass_.done()

    def _record(self, job: Job, index: int, event: str, attempt: int, outcome: Outcome, claimed_at: datetime,
                pass_: "Pass", receipt: Any = None) -> None:
        """One target's outcome (exclusive store: with its claim) to the recorder, which writes
        the outcomes that arrive together in one write per job. ``receipt``: the snapshot the
        attempt sent, written with the exclusive claim (the stored job may have got its receipt
        since the claim was made in memory; the record must keep what was sent)."""
        done_at = self.clock.now()
        owner, policy = self.owner, self.policy
        eid = plan.event_id(self.store.store_id, job.id, event)
        lost: list[bool] = []

        def change(current: Job) -> Job:
            lost.clear()
            try:
                if self.exclusive:
                    current = plan.claim(current, index, event, claimed_at, owner, policy, eid, receipt)
                return plan.settle(current, index, event, attempt, owner, outcome, done_at, policy)
            except plan.NotDue:
                lost.append(True)
                return current

        def recorded(written: Job | None, error: BaseException | None) -> None:
            try:
                shown = redact(job.notify[index])
                if written is None:
                    self.log(f"notify: job {job.id}: outcome to {shown} not recorded ({error_text(error)}); "
                             "the attempt will be made again")
                elif lost:
                    self.log(f"notify: job {job.id}: {shown} attempt {attempt} not recorded: its claim was taken over")
                else:
                    state = (plan.record_of(written, index, event) or {}).get("state")
                    self.log(f"job {job.id} notification ({event}) to {shown}: "
                             f"attempt {attempt}: {outcome.text} -> {state}")
            finally:
                pass_.done(written)

        self.recorder.submit(Write(job.id, change, recorded))

    # ------------------------------------------------------------------ once / stop
    def _submit(self, job_id: int) -> Future:
        """Start one job's attempts on the pool. Submitted and tracked under the lock that
        :meth:`close` takes to stop and to list what is in flight, so an attempt is either in that
        list (waited for, then abandoned) or never started: submitting first and tracking after
        let an attempt begin unseen by a close() in between, which then neither waited for it nor
        abandoned it."""
        with self._cond:
            if self._stop:
                raise RuntimeError("the notifier is closed")
            future = self._pool.submit(self._work, job_id)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._cond:
            self._futures.discard(future)

    def run_once(self) -> None:
        """``jobman daemon --once``: one attempt of every delivery due now, recorded, then return."""
        self.scan()
        with self._cond:
            ready = self._ready(self.clock.now().timestamp(), len(self._heap))
        wait([self._submit(job_id) for job_id in ready])
        self.recorder.flush()
        if self.schedule_events is not None:
            self.schedule_events.run_once()

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop dispatching; attempts in flight get ``grace`` seconds to finish, then are abandoned
        (their connections shut, nothing recorded: they are made again later), so a slow receiver
        never holds the daemon's shutdown. Outcomes already known are written first."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            futures = set(self._futures)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        _, left = wait(futures, timeout=grace)
        events_ended = self.schedule_events is None or self.schedule_events.close(grace)
        if left or not events_ended:
            self._abandoned = True
            abort = getattr(self.sender, "abort", None)
            if abort is not None:
                abort()
            self.log(f"notify: {len(left) + int(not events_ended)} notification attempt(s) still in flight at "
                     "shutdown abandoned; "
                     "they are made again later")
        self.recorder.flush()
        self.recorder.close()

