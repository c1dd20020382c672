"""Schedules become jobs: each occurrence, just in time, one ordinary job (DESIGN.md section 14).

Driven by :meth:`~jobman_cli.daemon.wiring.Daemon.tick` with the pass's ``now`` (a test drives it
with a fixed clock), before the due jobs are started, so an occurrence created late in a pass is
launched by the same pass. For each unpaused schedule whose ``next_at`` is at or before
``now + LEAD`` (created a few seconds early, so that its launch is on time; the job's date-time is
the occurrence itself), occurrence after occurrence until ``next_at`` is in the future:

* several occurrences at or before ``now`` (the daemon was down, or a pass came late): all but
  the latest are recorded as ``missed`` — one record per occurrence for a short outage (up to
  :data:`PER_OCCURRENCE_RECORDS`), else ONE range record (first, ``until`` last, ``count``),
  whether older than the start deadline or superseded by the later one — and only the latest goes
  on (as Kubernetes' CronJob does): never more than one job per schedule per pass for past
  occurrences, never a burst of stale runs; the latest too is missed if older than the deadline;
* ``overlap`` ``forbid`` (the default) while the previous run (``last_job_id``) is still
  scheduled, launching or running: recorded as ``skipped``; ``replace``: the previous run is
  cancelled as ``jobman cancel`` does (the cancellation stored, then its instance terminated; its
  reason "replaced by the run of <occurrence> (schedule N)") and recorded as ``replaced-previous``;
  ``allow``: nothing to check. The overlap is decided AT the occurrence, not ``LEAD`` early: a
  schedule whose previous run is still active waits for the pass at its occurrence (a run that
  ends in those last seconds is not skipped nor cancelled);
* otherwise the job is created through :meth:`JobService.schedule` from the template with
  ``date-time`` = the occurrence, ``schedule_id``/``occurrence`` and the idempotency key
  ``schedule-{id}-{occurrence}``. No record is stored for it (the run is a job carrying
  ``schedule-id``/``occurrence``; ``schedules show`` lists the runs from the jobs): records are
  only the exceptional outcomes, so a schedule stays a small store record however long it runs;
* refused by the job rules (``InvalidInput``/``IdempotencyConflict``: a template that no longer
  validates, a ``--max-cost`` over the cached prices...): recorded as ``refused`` with the reason,
  logged once, and the schedule moves on (never retried every few seconds). It notifies only when
  its reason differs from the previous refusal's or a run was created since (:func:`_refused_again`).

A missed or refused event of a schedule whose runs would notify owes ONE notification (one per
outage, however many occurrences it covers): its record gets a ``notifications`` list, the
notifier's schedule part (:mod:`.schedule_notifier`) is poked and delivers it
(:mod:`jobman_cli.notify.schedule_events`).

Records past the newest ``MAX_RECORDS`` go, except those whose notification is still owed
(:func:`jobman_cli.notify.schedule_events.trim`: bounded, a given-up one is logged).

Then ``next_at`` moves to the next occurrence and the records are appended, in one
compare-and-set (:meth:`update_schedule`) that first checks ``next_at`` is still the occurrence
handled. **Exactly once with several daemons** comes from the key, not from the schedule write:
the store's ``add`` is atomic on it, so two daemons handling one occurrence at the same time
create one job (the second gets the first's), and only one of them advances ``next_at`` (the other
finds it moved and stops). **Paused or deleted** meanwhile: each occurrence is decided on the copy
the last compare-and-set returned, so a schedule paused before that write creates nothing more.

**Cheap when idle**: the ``next_at`` of the unpaused schedules are cached (a sorted list of
``(next_at, id)``), kept up to date by this daemon's own writes; the schedules are listed again only
after the loop saw the store's change marker move (it calls :meth:`Materializer.invalidate`) *and*
the schedules' own marker moved — a tick or a wake-up with nothing due reads no schedule at all,
and a pass reads only the schedules that are due.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Callable, Hashable

from ..errors import IdempotencyConflict, InvalidInput, JobmanError, one_line
from ..model import JobStatus, format_time
from ..schedules.model import MAX_RECORDS  # how many records a schedule keeps (newest last)
from ..service import JobService
from .common import Log, error_text

#: How early an occurrence's job is created (its date-time stays the occurrence): the loop wakes for
#: it this much before, so the job is stored and the launch starts on time.
LEAD = timedelta(seconds=5)
#: Threads handling due schedules at once (see :meth:`Materializer.step`).
WORKERS = 32
#: A schedule whose handling failed (the store unreachable) is looked at again after this.
RETRY = timedelta(seconds=10)
#: A schedule that missed more occurrences than this (a minutely one, a year without a daemon) is
#: not walked occurrence by occurrence: the walk jumps to the start deadline's window.
MAX_MISSED_WALK = 1_000
#: An outage that missed at most this many occurrences of a schedule records each one (an hourly
#: schedule, a day without a daemon); a longer one is ONE range record (first, until, count), so a
#: schedule's stored size stays bounded however long the daemon was away.
PER_OCCURRENCE_RECORDS = 24
#: States in which the previous run counts as still active for ``overlap``.
RUNNING_STATES = frozenset({JobStatus.SCHEDULED, JobStatus.LAUNCHING, JobStatus.RUNNING})
_NEVER: Hashable = object()
#: The :class:`~.common.TickReport` outcome kind of a job created for an occurrence.
OCCURRENCE_CREATED = "occurrence-created"


class _Moved(Exception):
    """Raised inside a schedule change: it no longer has the expected ``next_at`` (another daemon
    handled the occurrence, or it was resumed, paused or edited): write nothing, stop."""


class Materializer:
    """Turns due occurrences into jobs (see the module docstring). Thread-safe: one pass at a time."""

    def __init__(self, store: Any, service: JobService, *, terminate: Callable[[str], None], log: Log,
                 lead: timedelta = LEAD, stopping: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        self.service = service
        self.terminate = terminate
        self.log = log
        self.lead = lead
        self.stopping = stopping
        self._lock = threading.Lock()  # one pass (or wake-up computation) at a time
        self._state = threading.Lock()  # the pass's workers: retry times and moved schedules
        self._moved: dict[int, datetime | None] = {}
        self._marker: Hashable = _NEVER  # the change marker read before the cached listing
        self._stale = True
        self._queue: list[tuple[datetime, int]] = []  # (next_at, id) of unpaused schedules, ascending
        self._retry: dict[int, datetime] = {}  # schedule id -> not before (after a failure; or its occurrence)
        self._defer: dict[int, datetime] = {}  # set by a pass: look again at this occurrence (overlap)
        self._out: Any = None
        #: Called with a schedule's id after it recorded an event that notifies (the notifier's
        #: :meth:`~.schedule_notifier.ScheduleEvents.poke`; None: the notifier's scan finds it).
        self.on_event: Callable[[int], None] | None = None
        #: How many times the schedules were listed (the idle-cost tests and benchmark read it).
        self.listings = 0

    # ------------------------------------------------------------------ the cache
    def invalidate(self) -> None:
        """The store changed (the loop saw its change marker move): list again before next use."""
        self._stale = True

    def _refresh(self) -> None:
        """List the schedules again if they changed since the last listing (the store's
        ``schedule_marker()`` if it has one — on DynamoDB a job write does not move it, so a busy
        job stream costs no Scan — else its ``change_marker()``)."""
        if not self._stale:
            return
        # Cleared BEFORE reading (never after): an invalidate() that lands while the marker or the
        # listing is read (the loop's thread) must leave the cache stale for the next use.
        self._stale = False
        try:
            read_marker = getattr(self.store, "schedule_marker", None) or self.store.change_marker
            marker = read_marker()  # read before the listing: a later write moves it again
            if marker == self._marker and self._marker is not _NEVER:
                return
            queue = sorted((s.next_at, s.id) for s in self.store.list_schedules()
                           if not s.paused and s.next_at is not None)
        except BaseException:
            self._stale = True  # not read: still to do
            raise
        self.listings += 1
        self._queue, self._marker = queue, marker
        known = {schedule_id for _, schedule_id in queue}
        self._retry = {k: v for k, v in self._retry.items() if k in known}

    def _requeue(self, schedule_id: int, next_at: datetime | None) -> None:
        """Remember a schedule's new ``next_at`` (None: no longer waiting); applied after the pass."""
        with self._state:
            self._moved[schedule_id] = next_at

    def next_wake(self, after: datetime | None = None) -> datetime | None:
        """When the loop should run a pass for the next occurrence (``LEAD`` before it), later than
        ``after``; None if no schedule is waiting, or while a pass runs (its end wakes the loop).
        No store read unless the store changed."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            try:
                self._refresh()
            except (JobmanError, OSError):
                return None  # the loop's own store calls report the trouble; the next pass retries
            best: datetime | None = None
            for next_at, schedule_id in self._queue:
                wake = max(next_at - self.lead, self._retry.get(schedule_id, next_at - self.lead))
                if (after is None or wake > after) and (best is None or wake < best):
                    best = wake
                if best is not None and next_at - self.lead >= best:
                    break  # sorted by next_at: nothing later can wake earlier (the loop asks twice a second)
            return best
        finally:
            self._lock.release()

    def summary(self) -> str:
        """One start-up line: how many schedules wait, and the next occurrence (lists them once)."""
        with self._lock:
            try:
                self._refresh()
            except (JobmanError, OSError) as exc:
                return f"schedules: cannot read them yet ({one_line(str(exc))}); looking again at each pass"
            if not self._queue:
                return "schedules: none active"
            return (f"schedules: {len(self._queue)} active; next occurrence {format_time(self._queue[0][0])} "
                    f"(each run is created {int(self.lead.total_seconds())}s before its occurrence)")

    # ------------------------------------------------------------------ one pass
    def step(self, now: datetime, out: Any = None) -> int:
        """Handle every due occurrence; returns how many jobs were created (each also reported to
        ``out``, a :class:`~.common.Collector`, as :data:`OCCURRENCE_CREATED`).

        Due schedules are handled by up to :data:`WORKERS` threads, one schedule per thread at a
        time: a store write is an fsync (TinyDB, which commits concurrent writers as one group) or
        a network round trip (DynamoDB), so 1,000 schedules due in the same minute must not wait
        for each other's writes one by one."""
        self._out = out
        with self._lock:
            self._refresh()  # reads nothing unless invalidated (the loop saw the store change)
            horizon = now + self.lead
            due = [schedule_id for next_at, schedule_id in self._queue
                   if next_at <= horizon and self._retry.get(schedule_id, now) <= now]
            if not due:
                return 0
            self._moved = {}
            if len(due) == 1:
                created = self._guarded(due[0], now)
            else:
                with ThreadPoolExecutor(min(WORKERS, len(due)), thread_name_prefix="jobman-schedules") as pool:
                    created = sum(pool.map(lambda schedule_id: self._guarded(schedule_id, now), due))
            moved, self._moved = self._moved, {}
            self._queue = sorted([item for item in self._queue if item[1] not in moved]
                                 + [(at, i) for i, at in moved.items() if at is not None])
            return created

    def _guarded(self, schedule_id: int, now: datetime) -> int:
        """:meth:`_one`, with a failure logged and the schedule looked at again after :data:`RETRY`."""
        if self.stopping():
            return 0
        try:
            created = self._one(schedule_id, now)
            with self._state:
                self._retry.pop(schedule_id, None)
                if schedule_id in self._defer:  # the overlap is decided at the occurrence
                    self._retry[schedule_id] = self._defer.pop(schedule_id)
            return created
        except Exception as exc:  # one broken schedule or a store hiccup must not stop the others
            with self._state:
                self._retry[schedule_id] = now + RETRY
            text = one_line(str(exc)) if isinstance(exc, JobmanError) else error_text(exc)
            self.log(f"schedule {schedule_id}: not handled, looking again in {int(RETRY.total_seconds())}s: {text}")
            return 0

    def _one(self, schedule_id: int, now: datetime) -> int:
        from ..errors import ScheduleNotFound
        from ..schedules.model import Overlap
        from ..schedules.occurrences import next_occurrence

        try:
            current = self.store.get_schedule(schedule_id)
        except ScheduleNotFound:
            self._requeue(schedule_id, None)
            return 0
        created = 0
        horizon = now + self.lead
        try:
            while (not current.paused and current.next_at is not None and current.next_at <= horizon
                   and not self.stopping()):
                occurrence = current.next_at
                deadline = now - timedelta(seconds=current.start_deadline())
                if occurrence <= now:
                    following = self._next(current, occurrence, next_occurrence)
                    if occurrence < deadline or (following is not None and following <= now):
                        current = self._missed(current, now, deadline)  # all but the latest: one record
                        continue
                records: list[dict[str, Any]] = []
                previous = self._active_previous(current)
                if previous is not None and current.overlap is not Overlap.ALLOW and occurrence > now:
                    with self._state:  # decide at the occurrence, not LEAD early (the run may end by then)
                        self._defer[schedule_id] = occurrence
                    break
                if previous is not None and current.overlap is Overlap.FORBID:
                    records.append(_record(occurrence, "skipped", None, now,
                                           f"job {previous.id} is still {previous.status.value} (overlap forbid)"))
                    self.log(f"schedule {current.id}: occurrence {format_time(occurrence)} skipped: job "
                             f"{previous.id} is still {previous.status.value} (overlap forbid)")
                    current = self._advance(current, occurrence, records, now)
                    continue
                if previous is not None and current.overlap is Overlap.REPLACE:
                    records.append(_record(occurrence, "replaced-previous", previous.id, now,
                                           self._cancel(current, previous, occurrence)))
                try:
                    job, new = self.service.schedule(self._request(current, occurrence))
                except (InvalidInput, IdempotencyConflict) as exc:  # permanent: record once, go on
                    reason = one_line(str(exc))
                    refused = {**_record(occurrence, "refused", None, now, reason), RUN_BEFORE: current.last_job_id}
                    again = _refused_again(current, refused)
                    records.append(refused if again else self._owed(current, refused))
                    self.log(f"schedule {current.id}: occurrence {format_time(occurrence)} refused: {reason}"
                             + (" (as the previous occurrence: no new notification)" if again else ""))
                    current = self._advance(current, occurrence, records, now)
                    self._announce(current, records)
                    continue
                created += int(new)
                if new and self._out is not None:
                    self._out.add(OCCURRENCE_CREATED, job.id, f"schedule {current.id} {format_time(occurrence)}")
                # no record: the run is the job (schedule-id, occurrence); show lists it from the jobs
                current = self._advance(current, occurrence, records, now, last_job_id=job.id)
        except (_Moved, ScheduleNotFound):
            try:  # another daemon (or a pause, resume or delete) changed it: take it as it is now
                current = self.store.get_schedule(schedule_id)
            except ScheduleNotFound:
                self._requeue(schedule_id, None)
                return created
        self._requeue(schedule_id, None if current.paused else current.next_at)
        return created

    # ------------------------------------------------------------------ the rules
    def _missed(self, schedule: Any, now: datetime, deadline: datetime) -> Any:
        """Record every occurrence from ``next_at`` that gets no run (one record each, or ONE range
        record past :data:`PER_OCCURRENCE_RECORDS`): those
        older than the start deadline and those at or before ``now`` superseded by a later one (the
        latest past occurrence within the deadline goes on); one compare-and-set for all."""
        from ..schedules.occurrences import next_occurrence

        first = schedule.next_at
        last, count, old, jumped = first, 0, 0, False
        walked: list[datetime] = []
        nxt: datetime | None = first
        while nxt is not None and nxt <= now:
            following = self._next(schedule, nxt, next_occurrence)
            if nxt >= deadline and (following is None or following > now):
                break  # the latest past occurrence, within the deadline: it goes on
            last, count, old = nxt, count + 1, old + int(nxt < deadline)
            if len(walked) <= PER_OCCURRENCE_RECORDS:
                walked.append(nxt)
            nxt = following
            if not jumped and count >= MAX_MISSED_WALK and nxt is not None and nxt < deadline:
                # a minutely schedule, months without a daemon: jump to the deadline's window
                jumped, nxt = True, self._next(schedule, deadline - timedelta(microseconds=1), next_occurrence)
        why = []
        if old:
            why.append(f"{old}{'+' if jumped else ''} older than the start deadline "
                       f"({_duration(schedule.start_deadline())})")
        if count - old:
            to = f"the run of {format_time(nxt)}" if nxt is not None and nxt <= now else "a later occurrence"
            why.append(f"{count - old} superseded by {to}")
        detail = "; ".join(why) + (" (too many to walk: the count is a lower bound)" if jumped else "")
        span = format_time(first) if count == 1 else f"{format_time(first)} .. {format_time(last)}"
        self.log(f"schedule {schedule.id}: {count}{'+' if jumped else ''} occurrence(s) missed ({span}): {detail}")
        if not jumped and count <= PER_OCCURRENCE_RECORDS:
            # a short outage: one record per occurrence, each saying why it got no run
            later = f"the run of {format_time(nxt)}" if nxt is not None and nxt <= now else "a later occurrence"
            old_why = f"older than the start deadline ({_duration(schedule.start_deadline())})"
            records = [{**_record(when, "missed", None, now, old_why if when < deadline else f"superseded by {later}"),
                        "until": format_time(when), "count": 1} for when in walked]
            # one outage, one notification: the first record carries it, for the whole span
            records[0] = self._owed(schedule, records[0], {"until": format_time(last), "count": count,
                                                           "detail": detail} if count > 1 else None)
            advanced = self._advance(schedule, first, records, now, next_at=nxt)
            self._announce(advanced, records)
            return advanced
        record = _record(first, "missed", None, now, detail)
        record.update({"until": format_time(last), "count": count})
        record = self._owed(schedule, record)
        advanced = self._advance(schedule, first, [record], now, next_at=nxt)
        self._announce(advanced, [record])
        return advanced

    def _owed(self, schedule: Any, record: dict[str, Any], span: dict[str, Any] | None = None) -> dict[str, Any]:
        from ..notify.schedule_events import owed

        return owed(record, schedule.template, self.service.notify_defaults, span)

    def _announce(self, schedule: Any, records: list[dict[str, Any]]) -> None:
        """Tell this process's notifier (after the write) that ``schedule`` has an event to send."""
        from ..notify.schedule_events import owes

        if self.on_event is not None and any(owes(r) for r in records):
            self.on_event(schedule.id)  # a dict update under a lock: cannot fail

    @staticmethod
    def _next(schedule: Any, after: datetime, next_occurrence: Callable[..., Any]) -> datetime | None:
        """The occurrence after ``after``; None when the expression has no further one."""
        try:
            return next_occurrence(schedule.cron, schedule.every, schedule.tz, after, anchor=schedule.created_at)
        except ValueError:
            return None

    def _active_previous(self, schedule: Any) -> Any:
        """The schedule's latest run if it is still scheduled, launching or running, else None."""
        from ..errors import JobNotFound

        if schedule.last_job_id is None:
            return None
        try:
            job = self.store.get(schedule.last_job_id)
        except JobNotFound:  # pruned
            return None
        return job if job.status in RUNNING_STATES else None

    def _cancel(self, schedule: Any, previous: Any, occurrence: datetime) -> str:
        """``overlap replace``: cancel the previous run as ``jobman cancel`` does (with a reason that
        says why: not "cancelled by operator"); what happened."""
        reason = f"replaced by the run of {format_time(occurrence)} (schedule {schedule.id})"
        try:
            self.service.cancel(previous.id, terminate=self.terminate, reason=reason)
        except JobmanError as exc:
            try:
                job = self.store.get(previous.id)
            except JobmanError:
                job = None
            if job is None or job.status in RUNNING_STATES:
                text = one_line(str(exc))
                self.log(f"schedule {schedule.id}: previous run job {previous.id} not cancelled: {text}")
                return f"job {previous.id} could not be cancelled: {text}"
            if job.status is JobStatus.CANCELLED:  # cancelled, but terminating failed: the reaper will
                return f"job {previous.id} cancelled (overlap replace); {one_line(str(exc))}"
            return f"job {previous.id} had already ended ({job.status.value})"
        return f"job {previous.id} was {previous.status.value}; cancelled (overlap replace)"

    def _request(self, schedule: Any, occurrence: datetime) -> Any:
        from ..schedules.service import template_to_request

        return template_to_request(
            schedule.template, when=format_time(occurrence), schedule_id=schedule.id, occurrence=occurrence,
            idempotency_key=occurrence_key(schedule.id, occurrence))

    def _advance(self, schedule: Any, occurrence: datetime, records: list[dict[str, Any]], now: datetime, *,
                 last_job_id: int | None = None, next_at: Any = _NEVER) -> Any:
        """Compare-and-set: ``next_at`` from ``occurrence`` to the next one, records appended."""
        from ..schedules.occurrences import next_occurrence

        from ..notify.schedule_events import MAX_DETAILED, targets_of, trim

        following = self._next(schedule, occurrence, next_occurrence) if next_at is _NEVER else next_at
        lost: list[Any] = []

        def change(current: Any) -> Any:
            if current.next_at != occurrence:
                raise _Moved
            # past the cap, a record still owing a delivery is kept (bounded): never silently lost
            targets = targets_of(current.template, self.service.notify_defaults)
            kept, lost[:] = trim(current, tuple(current.records) + tuple(records), MAX_RECORDS, targets)
            changes: dict[str, Any] = {"next_at": following, "updated_at": now, "version": current.version + 1,
                                       "records": kept}
            if last_job_id is not None:
                changes["last_job_id"] = last_job_id
            return dataclasses.replace(current, **changes)

        updated = self.store.update_schedule(schedule.id, change)
        for record in lost:  # only after the write that dropped them (a retried change re-decides)
            self.log(f"schedule {schedule.id}: the {record.get('outcome')} event of {record.get('occurrence')} "
                     f"given up before it was delivered to every target: more than {MAX_DETAILED} newer events "
                     f"owe notifications; it is not sent")
        return updated


#: A refused record notes the schedule's last run then: a refusal after a new run notifies again.
RUN_BEFORE = "after-job-id"


def _refused_again(schedule: Any, record: dict[str, Any]) -> bool:
    """Whether ``record`` (a new refusal) repeats the schedule's previous refused record: the same
    reason and no run created in between. One notification per distinct reason while a refusal
    persists, not one per occurrence (a minutely schedule would page 1,440 times a day, and every
    owed record weighs on the schedule's item)."""
    for previous in reversed(schedule.records):
        if previous.get("outcome") == "refused":
            return (previous.get("detail") == record.get("detail")
                    and previous.get(RUN_BEFORE) == record.get(RUN_BEFORE))
    return False


def occurrence_key(schedule_id: int, occurrence: datetime) -> str:
    """The idempotency key of an occurrence's job: the same in every daemon, so one job each."""
    return f"schedule-{schedule_id}-{format_time(occurrence)}"


def _record(occurrence: datetime, outcome: str, job_id: int | None, now: datetime,
            detail: str | None) -> dict[str, Any]:
    return {"occurrence": format_time(occurrence), "outcome": outcome, "job-id": job_id,
            "at": format_time(now), "detail": detail}


def _duration(seconds: float) -> str:
    from .common import format_duration

    return format_duration(seconds)
