"""The store port: the few operations the service needs, and nothing backend-specific.

Every backend (TinyDB file, DynamoDB table) implements :class:`JobStore` and must pass the one
contract suite in ``tests/store_contract.py``. Writes are compare-and-set: ``update`` hands the
current job to a pure function (one of the :class:`~jobman_cli.model.Job` transition methods) and
persists the result only if nobody changed the job in between, so two processes can never both
claim a job or overwrite each other's transition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Collection, Hashable, Mapping, Protocol, runtime_checkable

from ..model import Job, JobStatus

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

    def list(self, statuses: Collection[JobStatus] | None = None) -> list[Job]:
        """All jobs (optionally only those in ``statuses``), newest (highest id) first."""
        ...

    def list_records(self, statuses: Collection[JobStatus] | None = None) -> list[Mapping[str, Any]]:
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

    def close(self) -> None: ...
