"""The store port: the few operations the service needs, and nothing backend-specific.

Every backend (TinyDB file, DynamoDB table) implements :class:`JobStore` and must pass the one
contract suite in ``tests/store_contract.py``. Writes are compare-and-set: ``update`` hands the
current job to a pure function (one of the :class:`~jobman_cli.model.Job` transition methods) and
persists the result only if nobody changed the job in between, so two processes can never both
claim a job or overwrite each other's transition.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Collection, Hashable, Iterable, Mapping, Protocol, runtime_checkable

from ..model import TERMINAL_STATES, Job, JobStatus, parse_time
from ..notify import deliveries

if TYPE_CHECKING:
    from ..schedules.model import Schedule

JobChange = Callable[[Job], Job]


@runtime_checkable
class JobStore(Protocol):
    #: A stable name of this store (uuid made at creation). EC2 instances are tagged with it, so
    #: the orphan reaper only ever touches instances of its own store.
    store_id: str
    #: Where it lives, for messages (a path or ``dynamodb://table``).
    location: str

    def add(self, draft: Job) -> tuple[Job, bool]:
        """Store a new job with a fresh id (never reused) and return ``(job, True)``.

        ``draft.id`` is ignored. If ``draft.idempotency_key`` is already used, nothing is written
        and ``(existing_job, False)`` is returned; the caller decides whether the fields agree.
        """
        ...

    def get(self, job_id: int) -> Job:
        """The job, or raise :class:`~jobman_cli.errors.JobNotFound`."""
        ...

    def list(self, statuses: Collection[JobStatus] | None = None, *, limit: int | None = None,
             since: datetime | None = None, schedule: int | None = None) -> list[Job]:
        """All jobs (optionally only those in ``statuses``, created at or after ``since``, runs of
        schedule ``schedule``), newest (highest id) first, at most ``limit`` of them (``list
        --limit 20`` on a file store reads only the newest lines, not a year of history).

        ``schedule`` must be answered without reading every job: ``list --schedule``, ``GET
        jobs?schedule=`` and ``schedules show`` ask for it on every call (a DynamoDB Scan of a
        100k-job table costs seconds and ~1,000 read units each time)."""
        ...

    def list_records(self, statuses: Collection[JobStatus] | None = None, *, limit: int | None = None,
                     since: datetime | None = None, schedule: int | None = None) -> list[Mapping[str, Any]]:
        """What :meth:`list` returns, as stored records (``model.job_to_record``'s shape).

        For bulk output (``list --json``, ``GET /jobs``) through ``model.record_to_api``: building a
        :class:`Job` per record costs ~30 µs, 300 ms at 10,000 jobs. Callers must not mutate them.
        """
        ...

    def update(self, job_id: int, change: JobChange) -> Job:
        """Compare-and-set: apply ``change`` to the current job and persist the result atomically.

        ``change`` may raise (for example ``TransitionNotAllowed``); then nothing is written and the
        exception propagates. If it returns the very same object, nothing is written (a no-op).
        Raises ``JobNotFound`` for an unknown id.
        """
        ...

    def owing_receipts(self, since: datetime) -> list[Mapping[str, Any]]:
        """Stored records of the jobs that owe a cost receipt (:func:`~jobman_cli.cost.runs.owes_receipt`)
        and ended at or after ``since``, by id. The daemon asks at every start (and each ``--once``):
        like ``schedule`` above, without reading every job."""
        ...

    def due(self, now: datetime, limit: int | None = None) -> list[Job]:
        """Scheduled jobs whose ``due_at`` is at or before ``now``, earliest first."""
        ...

    def active(self) -> list[Job]:
        """Jobs in ``launching`` or ``running`` (the daemon watches these)."""
        ...

    def next_due_at(self) -> datetime | None:
        """The earliest ``due_at`` of any scheduled job, or None."""
        ...

    def change_marker(self) -> Hashable:
        """A cheap value that changes whenever any process changed the store (file: a stat)."""
        ...

    def prune(self, cutoff: datetime, *, dry_run: bool = False) -> list[int]:
        """Delete every job :func:`prunable` at ``cutoff``; return their ids, ascending.

        In bounded batches, each a conditional write: a job that changed meanwhile (a late
        callback, a retry) is re-checked on its current state and kept unless still prunable. Ids
        are never reused afterwards, not even the pruned newest one. An idempotency key dies with
        its job. ``dry_run``: what would go now, nothing written.
        """
        ...

    # ------------------------------------------------------------------ schedules (DESIGN 14)
    def add_schedule(self, draft: "Schedule") -> "Schedule":
        """Store a new schedule with a fresh id from its own counter (never reused); ``draft.id`` is ignored."""
        ...

    def get_schedule(self, schedule_id: int) -> "Schedule":
        """The schedule, or raise :class:`~jobman_cli.errors.ScheduleNotFound`."""
        ...

    def list_schedules(self) -> list["Schedule"]:
        """Every schedule, by id ascending."""
        ...

    def update_schedule(self, schedule_id: int, change: Callable[["Schedule"], "Schedule"]) -> "Schedule":
        """Compare-and-set, exactly like :meth:`update` (``change`` returning the same object writes
        nothing; it may raise; it may run more than once). ``ScheduleNotFound`` for an unknown id."""
        ...

    def delete_schedule(self, schedule_id: int) -> None:
        """Delete a schedule (``ScheduleNotFound`` when absent). Its jobs stay."""
        ...

    def schedule_marker(self) -> Hashable:
        """A cheap value that moves whenever any process added, changed or deleted a schedule (it may
        move for other writes too): the daemon lists the schedules again only when it moved."""
        ...

    def close(self) -> None: ...


#: Records per conditional write of a prune (a TinyDB commit, a page of DynamoDB deletes).
PRUNE_BATCH = 10_000
_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATES)


def ended_at(job: Job) -> datetime:
    """When a terminal job ended: ``finished_at``; for records that lack it (written by hand or
    by an older jobman), its last change, else its creation."""
    return job.finished_at or job.updated_at or job.created_at


def prunable(job: Job, cutoff: datetime) -> bool:
    """Whether ``prune`` may delete ``job``: terminal, ended before ``cutoff``, and owing no
    notification (a delivery still pending or retrying keeps it: the notifier needs the job)."""
    return job.status in TERMINAL_STATES and ended_at(job) < cutoff and not deliveries.pending(job)


class _RecordFacts:
    """The few fields :func:`prunable` reads, straight from a stored record: deciding over 100k
    records must not build 100k Jobs (30 µs each)."""

    __slots__ = ("status", "finished_at", "updated_at", "created_at", "notify", "notify_on", "deliveries")

    def __init__(self, record: Mapping[str, Any]) -> None:
        from ..notify.targets import DEFAULT_NOTIFY_ON

        self.status = JobStatus(record["status"])
        self.finished_at = parse_time(record.get("finished-at"))
        self.updated_at = parse_time(record.get("updated-at"))
        self.created_at = parse_time(record.get("created-at"))
        self.notify = tuple(record.get("notify-targets") or ())
        self.notify_on = record.get("notify-on") or DEFAULT_NOTIFY_ON
        self.deliveries = tuple(r for r in record.get("notifications") or () if isinstance(r, dict))


def created_since(record: Mapping[str, Any], since: datetime | None) -> bool:
    """Whether a stored record was created at or after ``since`` (None: every record). A record
    without a readable ``created-at`` is not (``get`` says what is wrong with it)."""
    if since is None:
        return True
    try:
        created = parse_time(record["created-at"])
    except (KeyError, ValueError, TypeError):
        return False
    return created is not None and created >= since


def record_prunable(record: Mapping[str, Any], cutoff: datetime) -> bool:
    """:func:`prunable` of a stored record (``model.job_to_record``'s shape), cheap for the common
    "not terminal" answer. A malformed record is never prunable (``get`` will say what is wrong)."""
    if record.get("status") not in _TERMINAL_VALUES:
        return False
    try:  # the same rule as ``prunable``, in the order that answers a year of records fastest
        end = parse_time(record.get("finished-at") or record.get("updated-at") or record.get("created-at"))
        if end is None or end >= cutoff:
            return False
        return not record.get("notify-targets") or prunable(_RecordFacts(record), cutoff)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, AttributeError):
        return False


def owing_since(records: Iterable[Mapping[str, Any]], since: datetime) -> list[Mapping[str, Any]]:
    """The records of ``records`` that owe a receipt and ended at or after ``since``, by id (the
    rule of :meth:`JobStore.owing_receipts`, for a backend that filters what it read)."""
    from ..cost.runs import record_owes_receipt

    chosen = []
    for record in records:
        try:
            if not record_owes_receipt(record):
                continue
            end = parse_time(record.get("finished-at") or record.get("updated-at") or record.get("created-at"))
            if end is not None and end >= since:
                chosen.append(record)
        except (ValueError, TypeError, AttributeError):
            continue  # malformed: ``get`` says what is wrong with it
    return sorted(chosen, key=lambda r: int(r["id"]))


def of_schedule(record: Mapping[str, Any], schedule: int | None) -> bool:
    """Whether a stored record is a run of ``schedule`` (None: every record is)."""
    return schedule is None or record.get("schedule-id") == schedule
