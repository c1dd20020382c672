"""What every part of the daemon shares: the outcome kinds a pass reports, the store helpers that
turn "the job moved on" into a no-op, and the one-line messages.

Nothing here has a side effect beyond the store write it is asked to make.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from ..clock import Clock
from ..errors import JobNotFound, TransitionNotAllowed
from ..launchers.base import InstanceInfo
from ..model import Job, JobStatus, ReasonCode, format_time
from ..stores.base import JobChange, JobStore

#: ``Job.extra`` key naming the daemon that claimed a job (extra keys persist in every store).
CLAIMED_BY = "claimed-by"
#: How long a claim by another daemon is honoured before its job counts as abandoned.
DEFAULT_LAUNCH_LEASE = 60.0

# Outcome kinds, one per kind of thing a pass did.
LAUNCHED = "launched"
ADOPTED = "adopted"
RETRYING = "retrying"
LAUNCH_FAILED = "launch-failed"
MISSED = "missed"
TIMED_OUT = "timed-out"
VANISHED = "vanished"
REAPED = "reaped"
CANCELLED_DURING_LAUNCH = "cancelled-during-launch"
ERROR = "error"

Log = Callable[[str], None]


class Skip(Exception):
    """Raised inside a store change function: the job moved on, write nothing."""


@dataclass(frozen=True)
class Outcome:
    kind: str
    job_id: int | None
    detail: str = ""
    instance_id: str | None = None


@dataclass(frozen=True)
class TickReport:
    """What one :meth:`~jobman_cli.daemon.Daemon.tick` did (complete only when it waited)."""

    outcomes: tuple[Outcome, ...] = ()
    reconciled: bool = False

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def job_ids(self, kind: str) -> list[int]:
        return sorted(o.job_id for o in self.of(kind) if o.job_id is not None)


class Collector:
    """Outcomes gathered from the loop thread and the launch workers."""

    def __init__(self) -> None:
        self._items: list[Outcome] = []
        self._lock = threading.Lock()

    def add(self, kind: str, job_id: int | None, detail: str = "", instance_id: str | None = None) -> None:
        with self._lock:
            self._items.append(Outcome(kind, job_id, detail, instance_id))

    def report(self, reconciled: bool) -> TickReport:
        with self._lock:
            return TickReport(tuple(self._items), reconciled)


def new_daemon_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def format_duration(seconds: float) -> str:
    """``2h5m``, ``45s``: the duration grammar the CLI accepts, for messages."""
    rest = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def missed_reason(job: Job, now: datetime) -> str:
    reason = f"missed start deadline (due {format_time(job.date_time)}, {format_duration((now - job.date_time).total_seconds())} late)"
    if job.reason and job.attempts:  # it was waiting for a retry: say why it was not launched
        reason += f"; last launch error: {job.reason}"
    return reason


def error_text(exc: BaseException) -> str:
    """``KeyError: 'x'`` on one line: an unexpected exception, for a log line or a reason."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def stderr_log(line: str) -> None:
    """One line to stderr. A daemon whose stderr went away (its reader died, a closed terminal)
    keeps working: losing a log line must never fail a launch or the loop."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def now_at_least(clock: Clock, at_least: datetime) -> datetime:
    """The clock's time, but never earlier than ``at_least`` (a pass's own ``now``, a stored time)."""
    now = clock.now()
    return now if now > at_least else at_least


def best_instance(instances: list[InstanceInfo]) -> InstanceInfo:
    """Of several instances of one attempt (only possible where ``ClientToken`` is ignored), the one
    to keep: a live one first, then the earliest launched. The reaper ends the others."""
    return sorted(instances, key=lambda i: (i.gone, i.launch_time is None, i.launch_time or 0, i.instance_id))[0]


def guarded_update(store: JobStore, job_id: int, change: JobChange) -> Job | None:
    """``store.update`` that answers ``None`` when the change decided the job had moved on."""
    try:
        return store.update(job_id, change)
    except (Skip, TransitionNotAllowed, JobNotFound):
        return None


def describe_change(before: Job, after: Job, detail: str = "") -> str:
    """``job 12 running -> failed (timed out after 60s)``: the one log line per state change."""
    text = f"job {after.id} {before.status.value} -> {after.status.value}"
    return f"{text} ({detail})" if detail else text


def fail_attempt(current: Job, attempt: Job, reason: str, now: datetime, code: ReasonCode) -> Job:
    """Fail the job if it is still in the launch ``attempt`` we handled (else write nothing)."""
    if current.status is not JobStatus.LAUNCHING or current.attempts != attempt.attempts:
        raise Skip
    return current.failed(reason, now, code)


def fail_and_report(store: JobStore, attempt: Job, reason: str, now: datetime, code: ReasonCode, kind: str,
                    log: Log, out: Collector) -> Job | None:
    """End the launch ``attempt`` as failed with ``reason`` and ``code`` (only if the job is still in
    it: :func:`fail_attempt`), then log the change and report it as ``kind`` (``launch-failed``,
    ``missed``). The one way every launch path ends an attempt, so the store write, the log line
    and the pass's outcome never disagree. None: the job had moved on; nothing was written."""
    after = guarded_update(store, attempt.id, lambda current: fail_attempt(current, attempt, reason, now, code))
    if after is not None:
        log(describe_change(attempt, after, reason))
        out.add(kind, attempt.id, reason)
    return after
