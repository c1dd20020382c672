"""What the DynamoDB store's items look like, and how a job becomes one and back.

Table design (one table, on-demand billing, made by ``jobman store init``; see the README section "Scaling out: the DynamoDB store")::

    pk (S, hash key)   other attributes
    "meta"             format="jobman", schema=1, store_id (uuid4 hex), created_at
    "counter"          n (N): the last job id handed out (an atomic conditional UpdateItem, never
                       reused); nn (S): the nonce of the last increment;
                       seq (N): bumped after every write, the change marker
    "idem#<key>"       job_id (N): an idempotency key, written in one transaction with its job;
                       wn (L of S): the nonce of that transaction
    "job#<id>"         job_id (N), status (S), version (N), record (S: job_to_record as JSON,
                       empty fields left out),
                       due_ms (N: due time in epoch ms while scheduled/launching/running; its
                       end while it owes a cost receipt, see below; else absent),
                       run_of (N: the schedule id of a schedule's run; else absent),
                       wn (L of S): the nonces of the last writes (at most NONCES_KEPT)

    GSI "status-due": hash status, range due_ms, projection ALL. A terminal job carries due_ms only
    while it owes a cost receipt (ended on an instance, no receipt yet: ``cost.runs.owes_receipt``),
    so the index is sparse: it holds live jobs and the few awaiting a receipt, however long the
    history grows; the daemon finds the latter with a Query (``due_ms >= start of the window``).
    GSI "schedule-runs": hash run_of, range job_id, projection KEYS_ONLY. Only a schedule's runs
    carry run_of: ``list --schedule N`` is a Query (newest first) plus a consistent BatchGetItem.
    The meta item's ``features`` (SS) holds "schedule-runs" once both indexes may be trusted (the
    table was made with them, or ``jobman store init`` added and backfilled them on an older table);
    without it the store reads as before (a Scan), so a table of an older jobman keeps working.

Write nonces (``nn``, ``wn``) let a write recognise itself when botocore resends it after its answer
was lost (see :mod:`.dynamodb`). Items written before nonces existed simply carry none.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson

from ..cost.runs import owes_receipt
from ..errors import StoreError, one_line
from ..model import ACTIVE_STATES, Job, JobStatus, job_to_record

FORMAT, SCHEMA = "jobman", 1
INDEX = "status-due"
#: The index of a schedule's runs, and the meta ``features`` entry that says it (and receipts in
#: the status index) can be trusted.
RUNS_INDEX = RUNS_FEATURE = "schedule-runs"
META_PK, COUNTER_PK, JOB_PREFIX, IDEM_PREFIX = "meta", "counter", "job#", "idem#"
LIVE_STATES = frozenset({JobStatus.SCHEDULED}) | ACTIVE_STATES
#: Write nonces an item keeps (its last writers'), so a resend that meets its own committed write
#: recognises it even if a few other writes landed in between.
NONCES_KEPT = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def encode_job(job: Job, write_nonces: list[str]) -> dict[str, Any]:
    """The job's item; ``write_nonces``: the nonces it keeps (the last is this write's)."""
    item: dict[str, Any] = {
        "pk": {"S": f"{JOB_PREFIX}{job.id}"},
        "job_id": {"N": str(job.id)},
        "status": {"S": job.status.value},
        "version": {"N": str(job.version)},
        "record": {"S": orjson.dumps(_compact(job)).decode()},
    }
    if job.status in LIVE_STATES:
        item["due_ms"] = {"N": str(ms(job.due_at))}
    elif owes_receipt(job):
        item["due_ms"] = {"N": str(ms(job.finished_at or job.updated_at or job.created_at))}
    if job.schedule_id is not None:
        item["run_of"] = {"N": str(job.schedule_id)}
    item["wn"] = nonce_list(write_nonces[-NONCES_KEPT:])
    return item


def decoded(item: dict[str, Any], convert: Callable[[dict[str, Any]], Any] | None, location: str) -> Any:
    """``convert(record)`` of a job item (None: the record itself, its id checked), or a one-line
    StoreError naming the item if it is malformed or its record names another job."""
    try:
        record = orjson.loads(item["record"]["S"])
        result = convert(record) if convert is not None else record
        job_id = result.id if isinstance(result, Job) else int(result["id"])
        if f"{JOB_PREFIX}{job_id}" != item["pk"]["S"]:
            raise ValueError(f"its record says id {job_id}")
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise StoreError(f"{location}: item {item.get('pk', {}).get('S', '?')} is malformed "
                         f"({type(exc).__name__}: {one_line(exc)})") from None
    return result


def _compact(job: Job) -> dict[str, Any]:
    """``job_to_record`` without its empty fields (read back as None): a typical job item stays
    under 1 KB, the unit DynamoDB bills writes in. Unknown (``extra``) fields are kept as they are."""
    return {k: v for k, v in job_to_record(job).items() if v is not None or k in job.extra}


def new_nonce() -> str:
    """A write nonce: 32 hex characters, also a valid ``ClientRequestToken`` (at most 36)."""
    return secrets.token_hex(16)


def nonces(item: dict[str, Any] | None) -> list[str]:
    """The write nonces an item carries (none on items written before nonces existed)."""
    return [value.get("S", "") for value in (item or {}).get("wn", {}).get("L", [])]


def nonce_list(values: list[str]) -> dict[str, Any]:
    return {"L": [{"S": nonce} for nonce in values]}


def item_key(pk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": pk}}


def due_ms(item: dict[str, Any]) -> int:
    return int(item["due_ms"]["N"])


def ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_ms(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)
