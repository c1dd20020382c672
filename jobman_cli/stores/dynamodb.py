"""The scale-out store: one Amazon DynamoDB table shared by any number of daemons and CLIs.

Chosen with ``--store dynamodb://TABLE`` (optionally ``?region=R&endpoint=URL``). boto3 is imported
here only, and this module only when such a URL is opened, so the TinyDB path never pays for it.

Table design: :mod:`.dynamodb_items` (one table, on-demand billing, made by ``jobman store init``).
This module is the store itself: its table and client, its reads, and its change marker. Its
halves live beside it: the job writes (``add``, ``update``: compare-and-set on ``version``, and the
nonces that settle a write whose answer was lost, DESIGN.md section 5) in :mod:`.dynamodb_writes`,
the schedules in :mod:`.dynamodb_schedules`, the reads that must not Scan in :mod:`.dynamodb_queries`,
``prune`` in :mod:`.dynamodb_prune` and ``jobman store init`` in :mod:`.dynamodb_admin`.

Reads, and why:

* ``due``/``next_due_at``/``active`` Query the index (never Scan). Index reads are eventually
  consistent; that is safe because every claim re-reads the job consistently inside ``update``.
* ``get`` is a consistent GetItem; ``list`` (an operator command) is a consistent, paginated Scan,
  but a schedule's runs and the jobs owing a receipt are index Queries (:mod:`.dynamodb_queries`).
* DynamoDB has no cheap change signal, so the store keeps one: every successful write is followed
  by ``ADD seq 1`` on the counter item, and ``change_marker`` is an eventually consistent GetItem
  of ``seq`` (0.5 read units; it may lag a write by the replication delay, like the index the
  daemon then queries). Pollers re-read only when it moved: the daemon's ``next_due_at`` Query,
  the ``status --wait`` GetItem. The bump is best effort (a failed bump does not undo a persisted
  write; the marker then moves with the next write); one item takes every bump, which caps a
  whole fleet at ≈ 1000 writes/s, far above what EC2's own launch rate allows.

Every AWS failure becomes a one-line :class:`~jobman_cli.errors.StoreError` naming the table.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Collection, Hashable

from ..errors import JobNotFound, StoreError
from ..model import TERMINAL_STATES, Job, JobStatus, job_from_record
from . import WriteOutcomeUnknown
from .base import created_since, of_schedule
from .dynamodb_api import SCHEME, _Api, describe_error, make_client, parse_url
from .dynamodb_schedules import DynamoDBSchedules
from .dynamodb_items import (COUNTER_PK, FORMAT, INDEX, JOB_PREFIX, META_PK, SCHEMA, decoded, due_ms, from_ms,
                             item_key, ms)
from .dynamodb_writes import DynamoDBWrites

__all__ = ["DynamoDBStore", "WriteOutcomeUnknown", "describe_error", "init_table", "make_client", "parse_url",
           "FORMAT", "SCHEMA", "INDEX", "META_PK"]

_NAMES = {"#s": "status"}  # ``status`` is a DynamoDB reserved word


class DynamoDBStore(DynamoDBWrites, DynamoDBSchedules):
    """The :class:`~jobman_cli.stores.base.JobStore` over one DynamoDB table (see the module doc).

    Thread-safe (one boto3 client, which is). ``client`` is for tests that watch or inject calls.
    The table must exist and carry the meta item (``jobman store init`` makes both).
    """

    def __init__(self, table: str, *, client: Any = None, region: str | None = None,
                 endpoint: str | None = None) -> None:
        self.table = table
        self.location = f"{SCHEME}{table}"
        self.client = client if client is not None else make_client(region, endpoint, self.location)
        self._api = _Api(table, self.client)
        self._unsettled: dict[int, tuple[Job, int, str]] = {}  # id(draft) -> (draft, job id, nonce)
        self._lock = threading.Lock()
        self.store_id = self._api.read_meta()

    @classmethod
    def from_url(cls, url: str) -> "DynamoDBStore":
        table, options = parse_url(url)
        return cls(table, region=options.get("region"), endpoint=options.get("endpoint"))

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.location!r})"

    def __enter__(self) -> "DynamoDBStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, operation: str, *, expect: Collection[str] = (), **kwargs: Any) -> dict:
        return self._api.call(operation, expect=expect, **kwargs)

    def _decode_job(self, item: dict[str, Any]) -> Job:
        return decoded(item, job_from_record, self.location)

    def _decode_record(self, item: dict[str, Any]) -> dict[str, Any]:
        return decoded(item, None, self.location)

    # ------------------------------------------------------------------ reads
    def _read(self, pk: str) -> dict[str, Any] | None:
        return self._call("get_item", TableName=self.table, Key=item_key(pk), ConsistentRead=True).get("Item")

    def get(self, job_id: int) -> Job:
        item = self._read(f"{JOB_PREFIX}{job_id}")
        if item is None:
            raise JobNotFound(job_id)
        return self._decode_job(item)

    def list(self, statuses: Collection[JobStatus] | None = None, *, limit: int | None = None,
             since: datetime | None = None, schedule: int | None = None) -> list[Job]:
        """Newest first. A consistent Scan of the whole table (an operator command: it reads every
        item once, ≈ 1 read unit per 4 KB; a Scan has no order, so ``limit`` saves no reads);
        ``statuses`` filter server-side, which saves transfer, not read units. A ``schedule``'s
        runs: an index Query, never a Scan (:mod:`.dynamodb_queries`)."""
        return [self._decode_job(item) for item in self._chosen(statuses, limit, since, schedule)]

    def _scan_jobs(self, statuses: Collection[JobStatus] | None) -> list[dict[str, Any]]:
        values: dict[str, dict[str, str]] = {":job": {"S": JOB_PREFIX}}
        condition = "begins_with(pk, :job)"
        kwargs: dict[str, Any] = {}
        if statuses:
            wanted = sorted({JobStatus(s).value for s in statuses})
            values.update({f":s{i}": {"S": s} for i, s in enumerate(wanted)})
            condition += f" AND #s IN ({', '.join(f':s{i}' for i in range(len(wanted)))})"
            kwargs["ExpressionAttributeNames"] = _NAMES
        return self._pages("scan", TableName=self.table, ConsistentRead=True, FilterExpression=condition,
                           ExpressionAttributeValues=values, **kwargs)

    def list_records(self, statuses: Collection[JobStatus] | None = None, *, limit: int | None = None,
                     since: datetime | None = None, schedule: int | None = None) -> list[dict[str, Any]]:
        """:meth:`list` as stored records (the same reads, without building Jobs)."""
        return [self._decode_record(item) for item in self._chosen(statuses, limit, since, schedule)]

    def owing_receipts(self, since: datetime) -> list[dict[str, Any]]:
        """See the port: Queries of the status index (:mod:`.dynamodb_queries`); a Scan only on a
        table of an older jobman that ``jobman store init`` has not upgraded yet."""
        from . import dynamodb_queries as queries
        from .base import owing_since

        if queries.indexed(self):
            return owing_since(map(self._decode_record, queries.owing_items(self, since)), since)
        return owing_since(self.list_records(TERMINAL_STATES), since)

    def _chosen(self, statuses: Collection[JobStatus] | None, limit: int | None,
                since: datetime | None, schedule: int | None = None) -> list[dict[str, Any]]:
        """The job items :meth:`list` returns, in its order (only those are decoded, and the
        others only if ``since`` or ``schedule`` needs their record)."""
        from . import dynamodb_queries as queries

        if schedule is not None and queries.indexed(self):
            return queries.schedule_items(self, schedule, statuses, limit, since)
        items = self._scan_jobs(statuses)
        if since is not None or schedule is not None:
            items = [item for item in items if created_since(record := self._decode_record(item), since)
                     and of_schedule(record, schedule)]

        def job_id(item: dict[str, Any]) -> int:
            try:
                return int(item["pk"]["S"][len(JOB_PREFIX):])
            except (KeyError, TypeError, ValueError):
                raise StoreError(f"{self.location}: item {item.get('pk', {}).get('S', '?')!r} is malformed") from None

        items.sort(key=job_id, reverse=True)
        return items if limit is None else items[:limit]

    def _pages(self, operation: str, *, stop: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a paginated Scan/Query (until ``stop(items)`` says enough)."""
        items: list[dict[str, Any]] = []
        while True:
            answer = self._call(operation, **kwargs)
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start or (stop is not None and stop(items)):
                return items
            kwargs["ExclusiveStartKey"] = start

    def _query_index(self, status: JobStatus, condition: str = "", values: dict | None = None,
                     **kwargs: Any) -> list[dict[str, Any]]:
        return self._pages("query", TableName=self.table, IndexName=INDEX,
                           KeyConditionExpression="#s = :s" + condition, ExpressionAttributeNames=_NAMES,
                           ExpressionAttributeValues={":s": {"S": status.value}, **(values or {})}, **kwargs)

    def due(self, now: datetime, limit: int | None = None) -> list[Job]:
        """Query the index: ``status = scheduled AND due_ms <= now``, earliest first (ties by id)."""
        cutoff = {":now": {"N": str(ms(now))}}
        if limit is not None and limit <= 0:
            return []

        def enough(items: list[dict[str, Any]]) -> bool:  # past the limit and past its due-time ties
            return limit is not None and len(items) > limit and due_ms(items[-1]) > due_ms(items[limit - 1])

        page = {"Limit": max(limit + 1, 25)} if limit is not None else {}
        items = self._query_index(JobStatus.SCHEDULED, " AND due_ms <= :now", cutoff, stop=enough, **page)
        jobs = sorted((self._decode_job(item) for item in items), key=lambda job: (job.due_at, job.id))
        return jobs[:limit] if limit is not None else jobs

    def active(self) -> list[Job]:
        """Query the index for ``launching`` and for ``running`` jobs, by id."""
        items = [item for status in (JobStatus.LAUNCHING, JobStatus.RUNNING) for item in self._query_index(status)]
        return sorted((self._decode_job(item) for item in items), key=lambda job: job.id)

    def next_due_at(self) -> datetime | None:
        """One index Query with ``Limit=1``: the earliest due time of a scheduled job."""
        answer = self._call("query", TableName=self.table, IndexName=INDEX, KeyConditionExpression="#s = :s",
                            ExpressionAttributeNames=_NAMES, ExpressionAttributeValues={":s": {"S": "scheduled"}},
                            ScanIndexForward=True, Limit=1)
        items = answer.get("Items", [])
        return from_ms(due_ms(items[0])) if items else None

    def prune(self, cutoff: datetime, *, dry_run: bool = False) -> list[int]:
        """See the port; a paged Scan and conditional deletes (:mod:`.dynamodb_prune`)."""
        from .dynamodb_prune import prune

        return prune(self, cutoff, dry_run=dry_run)

    def change_marker(self) -> Hashable:
        """The write sequence number (an eventually consistent GetItem of a tiny item; module doc)."""
        item = self._call("get_item", TableName=self.table, Key=item_key(COUNTER_PK), ProjectionExpression="seq"
                          ).get("Item", {})
        return int(item.get("seq", {}).get("N", "0"))

    def _touch(self) -> None:
        """Move the change marker after a successful write (best effort: the write stands anyway)."""
        try:
            self._call("update_item", TableName=self.table, Key=item_key(COUNTER_PK), UpdateExpression="ADD seq :one",
                       ExpressionAttributeValues={":one": {"N": "1"}})
        except StoreError:
            pass

    def close(self) -> None:
        if not self._api.closed:
            self._api.closed = True
            close = getattr(self.client, "close", None)
            if close is not None:
                close()


def init_table(url: str, *, client: Any = None, wait_delay: float = 2.0) -> tuple[bool, str]:
    """``jobman store init`` (in :mod:`.dynamodb_admin`, kept apart from the store's hot paths)."""
    from .dynamodb_admin import init_table as _init

    return _init(url, client=client, wait_delay=wait_delay)
