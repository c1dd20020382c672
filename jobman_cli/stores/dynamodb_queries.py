"""The DynamoDB store's reads that must not Scan: a schedule's runs, and jobs owing a receipt.

Why: ``list --schedule N``, ``GET jobs?schedule=N`` and ``schedules show`` ask for one schedule's
runs on every call, and the daemon asks for the jobs owing a cost receipt at every start. A Scan
reads the whole table for each (100k jobs: ~1,000 read units and seconds, for 20 answers).

* A schedule's runs: a Query of the sparse KEYS_ONLY index ``schedule-runs`` (hash ``run_of``, range
  ``job_id``), newest first, a page at a time, then a consistent BatchGetItem of those items; the
  status/``since`` filters apply to what was read, and the pages stop once ``limit`` runs matched.
  Cost: about one read unit per run returned (plus the keys, 0.5 unit per 4 KB page), whatever the
  table holds. The index is eventually consistent: a run created a moment ago may show a moment
  later (the items themselves are read consistently, so what shows is current).
* Owing a receipt: a terminal job that owes one carries ``due_ms`` (its end), so it sits in the
  ``status-due`` index; one Query per terminal status, ``due_ms >= since``.

Both are trusted only when the meta item says so (``features``: the table was made by this jobman,
or ``jobman store init`` upgraded it: see :func:`backfill`); otherwise the store falls back to its
old Scan, so a table made by an older jobman keeps answering correctly, only at the old cost.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Collection

from ..errors import StoreError
from ..model import TERMINAL_STATES, JobStatus
from . import base as port
from .dynamodb_items import JOB_PREFIX, RUNS_FEATURE, RUNS_INDEX, item_key, ms

if TYPE_CHECKING:
    from .dynamodb import DynamoDBStore

#: Keys per index page when a filter may drop some of them (else exactly the runs still wanted).
PAGE = 100
_BATCH = 100  # BatchGetItem's own maximum
_MAX_TRIES = 40


def indexed(store: "DynamoDBStore") -> bool:
    """Whether this table's indexes of runs and receipts can be trusted (read with the meta item)."""
    return RUNS_FEATURE in store._api.features


def batch_get(store: "DynamoDBStore", keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items at ``keys`` (consistent reads, 100 keys a call; missing ones simply absent),
    unprocessed keys sent again with a growing pause (throttling)."""
    items: list[dict[str, Any]] = []
    for start in range(0, len(keys), _BATCH):
        request = {store.table: {"Keys": keys[start:start + _BATCH], "ConsistentRead": True}}
        for attempt in range(_MAX_TRIES):
            answer = store._call("batch_get_item", RequestItems=request)
            items += answer.get("Responses", {}).get(store.table, [])
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(0.5, 0.01 * 2 ** attempt))
        else:
            raise StoreError(f"{store.location}: could not read the jobs (throttled)")
    return items


def schedule_items(store: "DynamoDBStore", schedule: int, statuses: Collection[JobStatus] | None,
                   limit: int | None, since: datetime | None) -> list[dict[str, Any]]:
    """The job items of ``schedule``'s runs, newest first, filtered, at most ``limit`` (see the
    module doc: a Query of ``schedule-runs`` and BatchGetItem, never a Scan)."""
    wanted = {JobStatus(s).value for s in statuses} if statuses else None
    filtered = wanted is not None or since is not None
    query: dict[str, Any] = {"TableName": store.table, "IndexName": RUNS_INDEX, "ScanIndexForward": False,
                             "KeyConditionExpression": "run_of = :s",
                             "ExpressionAttributeValues": {":s": {"N": str(int(schedule))}}}
    chosen: list[dict[str, Any]] = []
    while limit is None or len(chosen) < limit:
        page = PAGE if filtered or limit is None else min(PAGE, limit - len(chosen))
        answer = store._call("query", Limit=page, **query)
        keys = [item_key(item["pk"]["S"]) for item in answer.get("Items", [])]
        for item in sorted(batch_get(store, keys), key=_job_id, reverse=True):
            record = store._decode_record(item)
            if (port.of_schedule(record, schedule) and (wanted is None or record.get("status") in wanted)
                    and port.created_since(record, since)):
                chosen.append(item)
        start = answer.get("LastEvaluatedKey")
        if not start:
            break
        query["ExclusiveStartKey"] = start
    return chosen if limit is None else chosen[:limit]


def owing_items(store: "DynamoDBStore", since: datetime) -> list[dict[str, Any]]:
    """Job items that owe a receipt and ended at or after ``since``: one Query of ``status-due`` per
    terminal status (only such terminal jobs carry ``due_ms``)."""
    values = {":since": {"N": str(ms(since))}}
    return [item for status in sorted(TERMINAL_STATES, key=lambda s: s.value)
            for item in store._query_index(status, " AND due_ms >= :since", values)]


def _job_id(item: dict[str, Any]) -> int:
    try:
        return int(item["pk"]["S"][len(JOB_PREFIX):])
    except (KeyError, TypeError, ValueError):
        return -1
