"""The instances a job ran on: the runs its receipt prices and sums.

A spot job that EC2 interrupts goes back to ``scheduled`` and is relaunched on a new instance;
the interrupted instance was billed all the same. The model keeps each such earlier run in
``Job.past_runs`` (``{"instance-id", "placement", "launched-at", "ended-at"}``, appended when an
interrupted job is sent back to ``scheduled``); the current attempt's instance is ``instance_id``
with ``placement``, ``launched_at`` and the job's end. A receipt covers all of them: each run is
priced with its own type, zone and market, and the basis names each (see :mod:`.pricer`). A price
unknown for any run makes the whole receipt unknown, never a partial figure shown as the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from ..model import TERMINAL_STATES, Job, ReasonCode, parse_time
from .receipt import Receipt, format_usd, unknown


@dataclass(frozen=True)
class Run:
    """One instance of the job: ``instance_id`` None when jobman never learnt it (the run is still
    priced from its placement and times), ``end`` None when not known. ``interrupted``: a spot
    interruption ended the run (its end is when jobman recorded the notice)."""

    instance_id: str | None
    placement: Mapping[str, Any]
    launched_at: datetime | None
    end: datetime | None
    interrupted: bool = False


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    try:
        return parse_time(str(value))
    except (TypeError, ValueError):
        return None


def past_runs(job: Job) -> tuple[Mapping[str, Any], ...]:
    """The job's earlier runs (``()`` with a model that does not keep them)."""
    return tuple(getattr(job, "past_runs", None) or ())


def runs_of(job: Job) -> list[Run]:
    """Every instance the job ran on, oldest first; the current one last (once: an id already
    among the earlier runs is not counted twice)."""
    runs: list[Run] = []
    for past in past_runs(job):
        if not isinstance(past, Mapping):
            continue
        instance_id = past.get("instance-id")
        runs.append(Run(str(instance_id) if instance_id else None, dict(past.get("placement") or {}),
                        _time(past.get("launched-at")), _time(past.get("ended-at")), interrupted=True))
    if job.instance_id is not None and job.instance_id not in {r.instance_id for r in runs}:
        runs.append(Run(job.instance_id, dict(job.placement or {}), job.launched_at,
                        job.finished_at or job.updated_at,
                        interrupted=job.reason_code is ReasonCode.INTERRUPTED))  # the budget was spent
    return runs


def ran_on_an_instance(record: Mapping[str, Any]) -> bool:
    """A stored record (``jobman cost``, the daemon's start-up scan): did the job ever have an
    instance (the current one, or an earlier run ended by a spot interruption)?"""
    return bool(record.get("instance-id") or record.get("past-runs"))


_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATES)


def owes_receipt(job: Job) -> bool:
    """Ended, ran on an instance (the current one, or an earlier run a spot interruption ended: a
    job cancelled before its relaunch was still billed for that run), and no receipt yet. The
    stores index such jobs (DynamoDB: in its status index) so the daemon finds them without a Scan."""
    return (job.status in TERMINAL_STATES and (job.instance_id is not None or bool(past_runs(job)))
            and job.cost_basis is None)


def record_owes_receipt(record: Mapping[str, Any]) -> bool:
    """:func:`owes_receipt` of a stored record (``model.job_to_record``'s shape); cheap, for a
    store filtering every record it holds."""
    return (record.get("cost-basis") is None and record.get("status") in _TERMINAL_VALUES
            and ran_on_an_instance(record))


def label(run: Run, index: int, count: int) -> str:
    name = run.instance_id or "instance id not recorded"
    return f"run {index} of {count} ({name}{', ended by a spot interruption' if run.interrupted else ''})"


def combine(runs: Sequence[Run], receipts: Sequence[Receipt]) -> Receipt:
    """One receipt from one per run: the exact sum (``math.fsum``), each run named with its figure
    and basis (the caller keeps a single run's receipt as it is). Any run without a figure: the
    whole is unknown, naming that run."""
    for i, (run, receipt) in enumerate(zip(runs, receipts), 1):
        if receipt.cost is None:
            why = receipt.basis.removeprefix("unknown: ")
            return unknown(f"{label(run, i, len(runs))}: {why}")
    total = math.fsum(r.cost for r in receipts if r.cost is not None)
    parts = [f"{label(run, i, len(runs))}: {format_usd(r.cost)} = {r.basis}"
             for i, (run, r) in enumerate(zip(runs, receipts), 1)]
    return Receipt(total, f"{len(runs)} instances: " + " | ".join(parts))
