"""Delivers the notifications of schedule events (missed / refused occurrences), on its own thread.

The events and their delivery records live on the schedule's records (see
:mod:`jobman_cli.notify.schedule_events`); this is the part of the :class:`~.notifier.Notifier`
that sends them. They are rare (one per outage or refusal, never one per missed minute), so it is
kept simple: one thread, one attempt at a time, each attempt claimed by a compare-and-set write of
the schedule before it is sent and settled by another after (on every store, not only shared ones:
two writes per attempt of a rare event cost nothing, and the claim is what keeps two daemons on one
DynamoDB table from both sending it).

It finds its work

* by :meth:`poke` (the materializer of this process just recorded an event: sent at once);
* by :meth:`scan` at start and every ``scan_interval`` while the schedules changed (events of
  another daemon that stopped before sending them, retries whose time came). The scan lists the
  schedules only when the store's schedule marker moved since the last listing; otherwise it
  re-reads just the schedules it knows still owe a delivery.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable, Hashable

from ..errors import JobmanError, ScheduleNotFound
from ..notify import deliveries as plan
from ..notify import schedule_events as events
from ..notify.targets import redact
from .common import Log, error_text

_NEVER: Hashable = object()
#: The thread looks at the clock at least this often (a due retry is noticed within it).
MAX_WAIT = 1.0


class ScheduleEvents:
    def __init__(self, store: Any, clock: Any, policy: plan.Policy, sender: Any, *, owner: str, log: Log,
                 scan_interval: float = 60.0,
                 defaults: Callable[[], tuple[tuple[str, ...], str]] = lambda: ((), "failure")) -> None:
        """``defaults``: the daemon's ``[notify]`` targets (for a template that names none)."""
        self.store = store
        self.clock = clock
        self.policy = policy
        self.sender = sender
        self.owner = owner
        self.log = log
        self.scan_interval = scan_interval
        self.defaults = defaults
        self._due: dict[int, float] = {}  # schedule id -> earliest due (epoch seconds)
        self._marker: Hashable = _NEVER
        self._cond = threading.Condition()
        self._pass = threading.Lock()  # one pass at a time (the thread, or run_once)
        self._stop = False
        self._abandoned = False  # close() gave up waiting: an outcome still arriving is not recorded
        self._thread: threading.Thread | None = None
        self.attempts = 0  # attempts sent (tests)

    # ------------------------------------------------------------------ finding work
    def poke(self, schedule_id: int) -> None:
        """The schedule just got an event: look at it now (cheap; never blocks on the store)."""
        with self._cond:
            self._due[schedule_id] = float("-inf")
            self._cond.notify_all()

    def _targets(self, schedule: Any) -> tuple[str, ...]:
        return events.targets_of(schedule.template, self.defaults())

    def _note(self, schedule: Any, now: datetime) -> None:
        when = events.next_due(schedule, self._targets(schedule), now, self.policy)
        with self._cond:
            if when is None:
                self._due.pop(schedule.id, None)
            else:
                self._due[schedule.id] = min(self._due.get(schedule.id, float("inf")), when.timestamp())

    def scan(self) -> int:
        """Remember every schedule that owes a delivery (lists them only if they changed)."""
        read = getattr(self.store, "schedule_marker", None) or self.store.change_marker
        marker = read()
        if marker == self._marker and self._marker is not _NEVER:
            return 0
        found = 0
        now = self.clock.now()
        for schedule in self.store.list_schedules():
            if any(events.owes(r) for r in schedule.records):
                self._note(schedule, now)
                found += 1
        self._marker = marker
        return found

    # ------------------------------------------------------------------ sending
    def run_due(self) -> int:
        """One attempt of every delivery due now, each recorded. Returns how many were sent."""
        with self._pass:
            now = self.clock.now().timestamp()
            with self._cond:
                due = sorted(sid for sid, at in self._due.items() if at <= now)
            sent = 0
            for schedule_id in due:
                if self._stop:
                    break
                try:
                    sent += self.deliver(schedule_id)
                except Exception as exc:  # a store error or a bug: the next scan finds it again
                    with self._cond:
                        self._due[schedule_id] = now + self.scan_interval
                    self.log(f"notify: schedule {schedule_id}: {error_text(exc)}")
            return sent

    def deliver(self, schedule_id: int) -> int:
        """Every attempt of ``schedule_id``'s events that is due now."""
        with self._cond:
            self._due.pop(schedule_id, None)
        try:
            schedule = self.store.get_schedule(schedule_id)
        except ScheduleNotFound:
            return 0  # deleted: its events go with it
        targets = self._targets(schedule)
        sent = 0
        for record, index in events.pending(schedule, targets):
            if self._stop:
                break
            now = self.clock.now()
            when = events.due_at(schedule, record, index, targets, now, self.policy)
            if when is None or when > now:
                continue
            schedule, one = self._attempt(schedule, record, index, targets, now)
            sent += one
        self._note(schedule, self.clock.now())
        return sent

    def _attempt(self, schedule: Any, record: Any, index: int, targets: tuple[str, ...],
                 now: datetime) -> tuple[Any, int]:
        occurrence, outcome = str(record.get("occurrence")), str(record.get("outcome"))
        eid = events.event_id(self.store.store_id, schedule.id, record)
        name, shown = events.event_name(record), redact(targets[index])
        try:
            claimed = self.store.update_schedule(schedule.id, lambda s: events.claim(
                s, occurrence, outcome, index, targets, now, self.owner, self.policy, eid))
        except plan.NotDue:
            return schedule, 0  # another daemon has it, or it was just done
        stored = events.delivery(claimed, occurrence, outcome, index)
        if stored.get("state") != "sending" or stored.get("claimed-by") != self.owner:  # given up (max_age)
            text = (stored.get("history") or [{}])[-1].get("outcome", "gave up")
            self.log(f"schedule {schedule.id} notification ({name} {occurrence}) to {shown}: {text} -> failed")
            return claimed, 0
        attempt = int(stored.get("attempts") or 1)
        sent_eid = str(stored.get("event-id") or eid)
        result = self.sender.send(targets[index], events.body(claimed, record, sent_eid))
        self.attempts += 1
        if self._abandoned:  # close() said this attempt is made again later: its claim expires, as said
            return claimed, 1
        done_at = self.clock.now()
        try:
            written = self.store.update_schedule(schedule.id, lambda s: events.settle(
                s, occurrence, outcome, index, targets, attempt, self.owner, result, done_at, self.policy))
        except plan.NotDue:
            self.log(f"notify: schedule {schedule.id}: {shown} attempt {attempt} not recorded: "
                     "its claim was taken over")
            return claimed, 1
        except ScheduleNotFound:  # deleted meanwhile: nothing is made again
            self.log(f"notify: schedule {schedule.id} was deleted during the attempt to {shown}; "
                     "its events go with it")
            return claimed, 1
        except (JobmanError, OSError) as exc:
            self.log(f"notify: schedule {schedule.id}: outcome to {shown} not recorded ({error_text(exc)}); "
                     "the attempt will be made again")
            return claimed, 1
        state = events.delivery(written, occurrence, outcome, index).get("state")
        self.log(f"schedule {schedule.id} notification ({name} {occurrence}) to {shown}: "
                 f"attempt {attempt}: {result.text} -> {state}")
        return written, 1

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobman-notify-schedules", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_scan = time.monotonic()
        while True:
            if time.monotonic() >= next_scan:
                try:
                    self.scan()
                except Exception as exc:  # a broken store: the next scan tries again
                    self.log(f"notify: cannot look for schedule events: {error_text(exc)}")
                next_scan = time.monotonic() + self.scan_interval
            sent = 0
            try:
                sent = self.run_due()
            except Exception as exc:  # a bug: logged, the thread goes on
                self.log(f"notify: schedule events: {error_text(exc)}")
            with self._cond:
                if self._stop:
                    return
                now = self.clock.now().timestamp()
                top = min(self._due.values(), default=now + MAX_WAIT)
                if top <= now and not sent:  # still due but nothing went: never spin (a poke wakes it)
                    top = now + MAX_WAIT
                pause = min(MAX_WAIT, max(0.0, top - now), max(0.0, next_scan - time.monotonic()))
                if pause > 0:
                    self._cond.wait(pause)
                if self._stop:
                    return

    def run_once(self) -> int:
        """``--once``: scan, then one attempt of every delivery due now."""
        self.scan()
        return self.run_due()

    def close(self, grace: float) -> bool:
        """Stop; True if the thread ended within ``grace`` seconds (else an attempt is in flight:
        the caller aborts the sender's connections, and the claim is retried after its lease)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout=grace)
        if self._thread.is_alive():
            self._abandoned = True  # before the caller aborts the connection: the outcome is not recorded
            return False
        return True
