"""Delivery records: the outbox is the job itself.

A job that asked for notifications (``Job.notify``, ``Job.notify_on``) and reached a terminal state
that ``notify_on`` covers owes one delivery per target. Nothing has to be written at the moment of
the transition — whoever makes it (an instance's callback through the API, the daemon's
reconciler, ``jobman cancel`` from another process): the debt follows from the stored state
(:func:`wanted`), so no in-process hook can be missed. Each delivery's progress is a record in
``Job.deliveries`` (JSON, shown by ``status --json`` as ``"notifications"``)::

    {"target": "<redacted>", "target-index": 0, "event": "failed", "event-id": "...",
     "state": "pending" | "sending" | "delivered" | "failed",
     "attempts": 2, "history": [{"at": "...", "outcome": "HTTP 500"}, ...],
     "next-attempt-at": "..." | null, "claimed-by": "..." | null, "claimed-until": "..." | null,
     "receipt": {"cost": 0.15 | null, "cost-basis": "..." | null}}

``receipt`` is the job's cost receipt as the delivery's first claim saw it, kept by every later
claim and settle: every attempt's body is built from it (:func:`sent_receipt`), so a retry made
after the receipt was written sends the same bytes, signature and event id as the first attempt.

The functions here are pure (a :class:`~jobman_cli.model.Job` in, a new one out, or an exception
that makes the store's compare-and-set write nothing), like the model's transitions:

* :func:`claim` — ``sending``, owned by one daemon until ``claimed-until``; on a shared store it is
  written (conditionally) *before* anything is sent, so of several daemons only one sends;
* :func:`settle` — the attempt's outcome: ``delivered``, ``failed`` (final: a 4xx other than
  408/429, or no success within ``max_age`` of the event), or ``pending`` again with the next
  attempt after an exponential backoff. Only the claim's owner may settle it;
* a claim whose owner died (``claimed-until`` passed) is due again; its attempt is recorded as
  unknown (it may have reached the receiver, whose event id header lets it drop the duplicate);
* past ``max_age`` after the job ended (a daemon that was down for days), a delivery is due at once
  and :func:`claim` marks it ``failed`` ("gave up: ...") instead of claiming it: nothing is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from .targets import EVENTS, redact

FINAL_STATES = ("delivered", "failed")
#: Attempts whose outcome a record keeps (the count is kept in full).
HISTORY_KEPT = 20


class NotDue(Exception):
    """The delivery is not (or no longer) this caller's to send: nothing is written."""


@dataclass(frozen=True)
class Policy:
    """Retry policy (a value, so tests and settings pass it around)."""

    backoff_base: float = 30.0
    backoff_max: float = 3600.0
    #: No attempt is started later than this after the event (the job's ``finished-at``).
    max_age: float = 86400.0
    #: How long a claim is honoured by other daemons. A claim covers one attempt to one target, so
    #: this must be well over one attempt's deadline (the sender's timeout) plus its recording.
    lease: float = 120.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempts + 1``: base·2^(attempts-1), capped; a receiver's
        ``Retry-After`` stretches it (never beyond the cap)."""
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        if retry_after is not None:
            delay = min(self.backoff_max, max(delay, retry_after))
        return delay


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to. ``final``: do not try again (a 4xx other than 408/429)."""

    ok: bool
    text: str
    final: bool = False
    retry_after: float | None = None


def event_id(store_id: str, job_id: int, event: str) -> str:
    """The same for every attempt and every daemon: receivers drop duplicates by it."""
    return f"jobman-{store_id[:16]}-{job_id}-{event}"


def wanted(job: Any) -> list[tuple[int, str]]:
    """(target index, event) of every delivery the job owes (none until it is terminal)."""
    if not job.notify or job.status.value not in EVENTS.get(job.notify_on, ()):
        return []
    return [(index, job.status.value) for index in range(len(job.notify))]


def record_of(job: Any, index: int, event: str) -> Mapping[str, Any] | None:
    for record in job.deliveries:
        if record.get("target-index") == index and record.get("event") == event:
            return record
    return None


def _time(text: Any) -> datetime | None:
    from ..model import parse_time

    return parse_time(text) if isinstance(text, str) else None


def due_at(job: Any, index: int, event: str, now: datetime, policy: Policy,
           receipt_wait: float | None = None) -> datetime | None:
    """When delivery ``index`` may next be attempted (None: it is done). ``receipt_wait``: the job
    will get a cost receipt, so its first attempt waits for it up to this long after the job ended
    (never more than half of ``max_age``), unless it has it already."""
    record = record_of(job, index, event)
    if record is None:
        if receipt_wait is not None and job.finished_at is not None and job.cost_basis is None:
            return job.finished_at + timedelta(seconds=min(receipt_wait, policy.max_age / 2))
        return job.finished_at or now
    state = record.get("state")
    if state in FINAL_STATES:
        return None
    if state == "sending":  # a live claim is honoured even past max_age (its owner is sending)
        return _time(record.get("claimed-until")) or now
    if expired(job, now, policy):
        return now  # due at once: claim() records that it gave up
    return _time(record.get("next-attempt-at")) or job.finished_at or now


def expired(job: Any, now: datetime, policy: Policy) -> bool:
    """Whether no attempt may start any more: more than ``max_age`` after the job ended."""
    end = job.finished_at
    return end is not None and now > end + timedelta(seconds=policy.max_age)


def next_due(job: Any, now: datetime, policy: Policy, receipt_wait: float | None = None) -> datetime | None:
    """The earliest time any of the job's deliveries is due (None: nothing left to do)."""
    times = [t for index, event in wanted(job)
             if (t := due_at(job, index, event, now, policy, receipt_wait)) is not None]
    return min(times) if times else None


def pending(job: Any) -> bool:
    """Whether the job still owes a delivery (cheap: no clock, for scans)."""
    return any((record_of(job, i, e) or {}).get("state") not in FINAL_STATES for i, e in wanted(job))


def _replace(job: Any, index: int, event: str, record: dict[str, Any], now: datetime) -> Any:
    others = tuple(r for r in job.deliveries if not (r.get("target-index") == index and r.get("event") == event))
    records = tuple(sorted(others + (record,), key=lambda r: (r.get("target-index", 0), r.get("event", ""))))
    return dataclasses.replace(job, deliveries=records, updated_at=now, version=job.version + 1)


def snapshot(job: Any) -> dict[str, Any]:
    """The job's cost receipt as a delivery sends it (both None while it has none)."""
    return {"cost": job.cost, "cost-basis": job.cost_basis}


def sent_receipt(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The receipt snapshot a delivery's attempts send (None: a record made before snapshots)."""
    receipt = record.get("receipt")
    return receipt if isinstance(receipt, Mapping) else None


def claim(job: Any, index: int, event: str, now: datetime, owner: str, policy: Policy, eid: str,
          receipt: Mapping[str, Any] | None = None) -> Any:
    """The job with delivery ``index`` claimed by ``owner`` (attempt count + 1). Raises
    :class:`NotDue` when it is done, not due yet, or claimed by another and not expired. Past
    ``max_age`` after the job ended, the delivery comes back ``failed`` instead (see
    :func:`claimed`): the caller sends nothing and writes it.

    The record keeps the ``receipt`` snapshot of an earlier claim; the first claim takes
    ``receipt`` if given (an exclusive daemon writing the claim it sent with: the job may have got
    its receipt since), else the job's own (:func:`snapshot`)."""
    from ..model import format_time

    if (index, event) not in wanted(job):
        raise NotDue(f"job {job.id} owes no {event} delivery to target {index}")
    when = due_at(job, index, event, now, policy)
    if when is None or when > now:
        raise NotDue(f"job {job.id}: delivery {index} is done or not due")
    old = dict(record_of(job, index, event) or {})
    history = list(old.get("history") or [])
    if old.get("state") == "sending":  # its owner stopped before recording the outcome
        history.append({"at": old.get("claimed-at") or format_time(now),
                        "outcome": f"unknown: {old.get('claimed-by')} stopped before recording it"})
    if expired(job, now, policy):  # too late to start an attempt: the delivery ends here, unsent
        history.append({"at": format_time(now),
                        "outcome": f"gave up: more than {_age(policy.max_age)} after the job ended"})
        record = {
            "target": redact(job.notify[index]), "target-index": index, "event": event,
            "event-id": old.get("event-id") or eid, "state": "failed",
            "attempts": int(old.get("attempts") or 0), "history": history[-HISTORY_KEPT:],
            "next-attempt-at": None, "claimed-by": None, "claimed-at": None, "claimed-until": None,
        }
        return _replace(job, index, event, record, now)
    kept = sent_receipt(old)
    record = {
        "target": redact(job.notify[index]), "target-index": index, "event": event,
        "event-id": old.get("event-id") or eid, "state": "sending",
        "attempts": int(old.get("attempts") or 0) + 1, "history": history[-HISTORY_KEPT:],
        "next-attempt-at": None, "claimed-by": owner, "claimed-at": format_time(now),
        "claimed-until": format_time(now + timedelta(seconds=policy.lease)),
        "receipt": dict(kept if kept is not None else receipt if receipt is not None else snapshot(job)),
    }
    return _replace(job, index, event, record, now)


def claimed(job: Any, index: int, event: str, owner: str) -> bool:
    """Whether :func:`claim` left delivery ``index`` to ``owner`` to send (not given up)."""
    record = record_of(job, index, event) or {}
    return record.get("state") == "sending" and record.get("claimed-by") == owner


def settle(job: Any, index: int, event: str, attempt: int, owner: str, outcome: Outcome, now: datetime,
           policy: Policy) -> Any:
    """Record the outcome of ``owner``'s attempt ``attempt``. Raises :class:`NotDue` if the claim
    is no longer ``owner``'s (it expired and another daemon took it over)."""
    from ..model import format_time

    record = dict(record_of(job, index, event) or {})
    if (record.get("state") != "sending" or record.get("claimed-by") != owner
            or int(record.get("attempts") or 0) != attempt):
        raise NotDue(f"job {job.id}: delivery {index} attempt {attempt} is no longer {owner}'s")
    history = list(record.get("history") or [])
    text = outcome.text
    if outcome.ok:
        state, next_at = "delivered", None
    elif outcome.final:
        state, next_at = "failed", None
    else:
        start = job.finished_at or now
        next_at = now + timedelta(seconds=policy.delay(attempt, outcome.retry_after))
        if next_at > start + timedelta(seconds=policy.max_age):
            state, next_at = "failed", None
            text += f"; gave up after {attempt} attempts (no success within {_age(policy.max_age)} of the event)"
        else:
            state = "pending"
    history.append({"at": format_time(now), "outcome": text})
    record.update({"state": state, "history": history[-HISTORY_KEPT:], "next-attempt-at": format_time(next_at),
                   "claimed-by": None, "claimed-until": None, "claimed-at": None})
    return _replace(job, index, event, record, now)


def _age(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"
