"""The scale-out store: one Amazon DynamoDB table shared by any number of daemons and CLIs.

Chosen with ``--store dynamodb://TABLE`` (optionally ``?region=R&endpoint=URL``). boto3 is imported
here only, and this module only when such a URL is opened, so the TinyDB path never pays for it.

Table design (one table, on-demand billing, made by ``jobman store init``; see docs/dynamodb.md)::

    pk (S, hash key)   other attributes
    "meta"             format="jobman", schema=1, store_id (uuid4 hex), created_at
    "counter"          n (N): the last job id handed out (UpdateItem ADD: atomic, never reused);
                       seq (N): bumped after every write, the change marker
    "idem#<key>"       job_id (N): an idempotency key, written in one transaction with its job
    "job#<id>"         job_id (N), status (S), version (N), record (S: job_to_record as JSON,
                       empty fields left out),
                       due_ms (N: due time in epoch ms; only while scheduled/launching/running)

    GSI "status-due": hash status, range due_ms, projection ALL. Terminal jobs carry no due_ms, so
    the index is sparse: it holds only live jobs, however long the history grows.

Reads and writes, and why:

* ``update`` is compare-and-set on ``version``: a consistent GetItem, ``change(job)``, then a PutItem
  conditioned on ``version = <the version read>``. On a conflict the failed write returns the
  current item (``ReturnValuesOnConditionCheckFailure``) and the change is applied again to it, so
  of two daemons claiming one job exactly one write succeeds and the other's change function sees
  ``launching`` and steps aside. A change that forgets to bump the version gets it bumped here:
  an unchanged version would let a concurrent writer's condition pass.
* ``due``/``next_due_at``/``active`` Query the index (never Scan). Index reads are eventually
  consistent; that is safe because every claim re-reads the job consistently inside ``update``.
* ``get`` is a consistent GetItem; ``list`` (an operator command) is a consistent, paginated Scan.
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

import dataclasses
import os
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Collection, Hashable
from urllib.parse import parse_qs, urlsplit

import orjson

from ..errors import JobNotFound, StoreError, one_line
from ..model import ACTIVE_STATES, Job, JobStatus, as_stored, job_from_record, job_to_record
from .base import JobChange

SCHEME = "dynamodb://"
FORMAT, SCHEMA = "jobman", 1
INDEX = "status-due"
META_PK, COUNTER_PK, JOB_PREFIX, IDEM_PREFIX = "meta", "counter", "job#", "idem#"
LIVE_STATES = frozenset({JobStatus.SCHEDULED}) | ACTIVE_STATES
#: Conflicting writers on one job before ``update`` gives up (each loser re-reads for free).
MAX_CAS_ATTEMPTS = 40
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAMES = {"#s": "status"}  # ``status`` is a DynamoDB reserved word
_THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
           "ExpiredTokenException", "MissingAuthenticationTokenException", "IncompleteSignature"}


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """``dynamodb://TABLE?region=R&endpoint=URL`` -> ``(table, options)``; bad URLs are StoreErrors."""
    if not url.startswith(SCHEME):
        raise StoreError(f"{url}: not a DynamoDB store URL (expected dynamodb://TABLE)")
    parts = urlsplit(url)
    table = parts.netloc + parts.path
    if not table or len(table) > 255 or not all(c.isalnum() or c in "_.-" for c in table) or len(table) < 3:
        raise StoreError(f"{url}: table name must be 3-255 characters of letters, digits, '_', '-' and '.'")
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(options) - {"region", "endpoint"}
    if unknown:
        raise StoreError(f"{url}: unknown option {sorted(unknown)[0]!r} (known: region, endpoint)")
    return table, options


def make_client(region: str | None = None, endpoint: str | None = None, where: str = "DynamoDB") -> Any:
    """A DynamoDB client from the standard AWS chain, plus ``AWS_REGION`` (botocore reads only
    ``AWS_DEFAULT_REGION``). ``AWS_PROFILE`` and ``AWS_ENDPOINT_URL`` are read by botocore itself.

    The connection pool is sized for the daemon's API (100+ concurrent requests, each a store call):
    botocore does not block on a full pool, it opens another connection and urllib3 logs a warning
    to stderr when putting it back."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)
        config = Config(retries={"mode": "standard", "max_attempts": 6}, max_pool_connections=128,
                        connect_timeout=5, read_timeout=20, user_agent_extra="jobman")
        return session.client("dynamodb", endpoint_url=endpoint or None, config=config)
    except BotoCoreError as exc:
        hint = " (set AWS_REGION or add ?region=... to the store URL)" if "region" in str(exc).lower() else ""
        raise StoreError(f"{where}: cannot reach DynamoDB: {one_line(exc)}{hint}") from None


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)


class _Api:
    """Calls on one table: every failure but the ``expect``-ed error codes becomes a one-line
    StoreError naming the table (botocore has already retried throttling and 5xx by then)."""

    def __init__(self, table: str, client: Any) -> None:
        self.table, self.location, self.client, self.closed = table, f"{SCHEME}{table}", client, False

    def call(self, operation: str, *, expect: Collection[str] = (), **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.closed:
            raise StoreError(f"{self.location}: store is closed")
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in expect:
                raise
            raise StoreError(describe_error(self.table, code, exc)) from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.location}: cannot reach DynamoDB: {one_line(exc)}") from None

    def read_meta(self) -> str:
        """The store id from the meta item; a missing or foreign one is a StoreError."""
        item = self.call("get_item", TableName=self.table, Key=_key(META_PK), ConsistentRead=True).get("Item")
        if item is None:
            raise StoreError(f"{self.location}: table {self.table} has no jobman meta item "
                             f"(run 'jobman store init --store {self.location}')")
        fmt, schema = item.get("format", {}).get("S"), int(item.get("schema", {}).get("N", "0"))
        store_id = item.get("store_id", {}).get("S", "")
        if fmt != FORMAT or not store_id:
            raise StoreError(f"{self.location}: table {self.table} is not a jobman store (foreign meta item)")
        if schema > SCHEMA:
            raise StoreError(f"{self.location}: store schema {schema} is newer than this jobman supports "
                             f"({SCHEMA}); upgrade jobman")
        return store_id


class DynamoDBStore:
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

    # ------------------------------------------------------------------ items
    def _item(self, job: Job) -> dict[str, dict[str, str]]:
        item = {
            "pk": {"S": f"{JOB_PREFIX}{job.id}"},
            "job_id": {"N": str(job.id)},
            "status": {"S": job.status.value},
            "version": {"N": str(job.version)},
            "record": {"S": orjson.dumps(_compact(job)).decode()},
        }
        if job.status in LIVE_STATES:
            item["due_ms"] = {"N": str(_ms(job.due_at))}
        return item

    def _job(self, item: dict[str, Any]) -> Job:
        return self._decoded(item, job_from_record)

    def _record(self, item: dict[str, Any]) -> dict[str, Any]:
        def checked(record: dict[str, Any]) -> dict[str, Any]:
            int(record["id"])
            return record

        return self._decoded(item, checked)

    def _decoded(self, item: dict[str, Any], convert: Any) -> Any:
        try:
            result = convert(orjson.loads(item["record"]["S"]))
            job_id = result.id if isinstance(result, Job) else int(result["id"])
            if f"{JOB_PREFIX}{job_id}" != item["pk"]["S"]:
                raise ValueError(f"its record says id {job_id}")
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise StoreError(f"{self.location}: item {item.get('pk', {}).get('S', '?')} is malformed "
                             f"({type(exc).__name__}: {one_line(exc)})") from None
        return result

    # ------------------------------------------------------------------ writes
    def _next_id(self) -> int:
        answer = self._call("update_item", TableName=self.table, Key=_key(COUNTER_PK), UpdateExpression="ADD n :one",
                            ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW")
        return int(answer["Attributes"]["n"]["N"])

    def add(self, draft: Job) -> tuple[Job, bool]:
        """A fresh id from the counter, then the job item (and the key item, in one transaction),
        both under ``attribute_not_exists``: a used key returns its job; a used id (someone reset
        the counter) takes the next id, so ids are never reused."""
        from botocore.exceptions import ClientError

        key = draft.idempotency_key
        if key:  # the common retry (a cron job scheduling again) then costs no job id
            item = self._call("get_item", TableName=self.table, Key=_key(IDEM_PREFIX + key), ConsistentRead=True)
            if "Item" in item:
                return self._existing(key, item["Item"]), False
        for attempt in range(MAX_CAS_ATTEMPTS):
            job = as_stored(dataclasses.replace(draft, id=self._next_id()))
            put = {"TableName": self.table, "Item": self._item(job), "ConditionExpression": "attribute_not_exists(pk)"}
            try:
                if not key:
                    self._call("put_item", expect=("ConditionalCheckFailedException",), **put)
                    self._touch()
                    return job, True
                idem = {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                        "Item": {"pk": {"S": IDEM_PREFIX + key}, "job_id": {"N": str(job.id)}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
                self._call("transact_write_items", expect=("TransactionCanceledException",),
                           TransactItems=[{"Put": put}, {"Put": idem}])
                self._touch()
                return job, True
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if len(reasons) == 2 and reasons[1] == "ConditionalCheckFailed":
                    return self._existing(key, exc.response["CancellationReasons"][1].get("Item", {})), False
                if "TransactionConflict" in reasons:  # a concurrent add with this key: look again
                    _pause(attempt)
            # otherwise the job id was taken: take another
        raise StoreError(f"{self.location}: could not add a job after {MAX_CAS_ATTEMPTS} attempts "
                         "(job ids taken or constant conflicts)")

    def _existing(self, key: str, item: dict[str, Any]) -> Job:
        if "job_id" not in item:  # the cancelled transaction did not return the item: read it
            item = self._call("get_item", TableName=self.table, Key=_key(IDEM_PREFIX + key),
                              ConsistentRead=True).get("Item", {})
        try:
            return self.get(int(item["job_id"]["N"]))  # type: ignore[index]
        except (JobNotFound, KeyError, TypeError, ValueError):
            raise StoreError(f"{self.location}: idempotency key {key!r} names a job that does not exist") from None

    def update(self, job_id: int, change: JobChange) -> Job:
        """Compare-and-set on ``version`` (see the module doc). ``change`` may run more than once
        (once per conflicting writer), always on the job as currently stored."""
        from botocore.exceptions import ClientError

        item = self._call("get_item", TableName=self.table, Key=_key(f"{JOB_PREFIX}{job_id}"),
                          ConsistentRead=True).get("Item")
        for attempt in range(MAX_CAS_ATTEMPTS):
            if item is None:
                raise JobNotFound(job_id)
            current = self._job(item)
            new = change(current)
            if new is current:
                return current
            if not isinstance(new, Job) or new.id != job_id:
                raise TypeError(f"a change of job {job_id} must return that job (got {new!r:.60})")
            if new.version <= current.version:
                new = dataclasses.replace(new, version=current.version + 1)
            new = as_stored(new)
            try:
                self._call("put_item", expect=("ConditionalCheckFailedException",), TableName=self.table,
                           Item=self._item(new), ConditionExpression="version = :v",
                           ExpressionAttributeValues={":v": {"N": str(current.version)}},
                           ReturnValuesOnConditionCheckFailure="ALL_OLD")
                self._touch()
                return new
            except ClientError as exc:
                item = exc.response.get("Item")  # the item as it is now (None: it was deleted)
                _pause(attempt)
        raise StoreError(f"{self.location}: job {job_id}: gave up after {MAX_CAS_ATTEMPTS} conflicting writes")

    # ------------------------------------------------------------------ reads
    def get(self, job_id: int) -> Job:
        item = self._call("get_item", TableName=self.table, Key=_key(f"{JOB_PREFIX}{job_id}"),
                          ConsistentRead=True).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return self._job(item)

    def list(self, statuses: Collection[JobStatus] | None = None) -> list[Job]:
        """Newest first. A consistent Scan of the whole table (an operator command: it reads every
        item once, ≈ 1 read unit per 4 KB); ``statuses`` filter server-side, which saves transfer,
        not read units."""
        return sorted((self._job(item) for item in self._scan_jobs(statuses)), key=lambda job: job.id, reverse=True)

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

    def list_records(self, statuses: Collection[JobStatus] | None = None) -> list[dict[str, Any]]:
        """:meth:`list` as stored records (the same Scan, without building Jobs)."""
        return sorted((self._record(item) for item in self._scan_jobs(statuses)), key=lambda r: int(r["id"]),
                      reverse=True)

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
        cutoff = {":now": {"N": str(_ms(now))}}
        if limit is not None and limit <= 0:
            return []

        def enough(items: list[dict[str, Any]]) -> bool:  # past the limit and past its due-time ties
            return limit is not None and len(items) > limit and _due(items[-1]) > _due(items[limit - 1])

        page = {"Limit": max(limit + 1, 25)} if limit is not None else {}
        items = self._query_index(JobStatus.SCHEDULED, " AND due_ms <= :now", cutoff, stop=enough, **page)
        jobs = sorted((self._job(item) for item in items), key=lambda job: (job.due_at, job.id))
        return jobs[:limit] if limit is not None else jobs

    def active(self) -> list[Job]:
        """Query the index for ``launching`` and for ``running`` jobs, by id."""
        items = [item for status in (JobStatus.LAUNCHING, JobStatus.RUNNING) for item in self._query_index(status)]
        return sorted((self._job(item) for item in items), key=lambda job: job.id)

    def next_due_at(self) -> datetime | None:
        """One index Query with ``Limit=1``: the earliest due time of a scheduled job."""
        answer = self._call("query", TableName=self.table, IndexName=INDEX, KeyConditionExpression="#s = :s",
                            ExpressionAttributeNames=_NAMES, ExpressionAttributeValues={":s": {"S": "scheduled"}},
                            ScanIndexForward=True, Limit=1)
        items = answer.get("Items", [])
        return _from_ms(_due(items[0])) if items else None

    def change_marker(self) -> Hashable:
        """The write sequence number (an eventually consistent GetItem of a tiny item; module doc)."""
        item = self._call("get_item", TableName=self.table, Key=_key(COUNTER_PK), ProjectionExpression="seq"
                          ).get("Item", {})
        return int(item.get("seq", {}).get("N", "0"))

    def _touch(self) -> None:
        """Move the change marker after a successful write (best effort: the write stands anyway)."""
        try:
            self._call("update_item", TableName=self.table, Key=_key(COUNTER_PK), UpdateExpression="ADD seq :one",
                       ExpressionAttributeValues={":one": {"N": "1"}})
        except StoreError:
            pass

    def close(self) -> None:
        if not self._api.closed:
            self._api.closed = True
            close = getattr(self.client, "close", None)
            if close is not None:
                close()


def _compact(job: Job) -> dict[str, Any]:
    """``job_to_record`` without its empty fields (read back as None): a typical job item stays
    under 1 KB, the unit DynamoDB bills writes in. Unknown (``extra``) fields are kept as they are."""
    return {k: v for k, v in job_to_record(job).items() if v is not None or k in job.extra}


def _key(pk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": pk}}


def _due(item: dict[str, Any]) -> int:
    return int(item["due_ms"]["N"])


def _pause(attempt: int) -> None:
    """Back off between conflicting writes after the first few (full jitter, at most 0.2 s)."""
    if attempt >= 2:
        time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))


def describe_error(table: str, code: str, exc: Exception) -> str:
    """One line for a failed DynamoDB call, naming the table and what to do."""
    from botocore.exceptions import ClientError

    message = one_line(exc.response.get("Error", {}).get("Message", "")) if isinstance(exc, ClientError) else ""
    operation = getattr(exc, "operation_name", "") or "call"
    where = f"{SCHEME}{table}"
    if code == "ResourceNotFoundException":
        return f"{where}: table {table} does not exist (create it with 'jobman store init --store {where}')"
    if code in _DENIED:
        return f"{where}: access denied to table {table} for dynamodb:{operation} ({code}: {message})"
    if code in _THROTTLED:
        return f"{where}: DynamoDB throttled {operation} on table {table} after retries ({message})"
    if code == "ValidationException" and "key" in message.lower() and "schema" in message.lower():
        return f"{where}: table {table} is not a jobman table ({message})"
    return f"{where}: DynamoDB {operation} on table {table} failed: {code or 'error'}: {message or one_line(exc)}"


def init_table(url: str, *, client: Any = None, wait_delay: float = 2.0) -> tuple[bool, str]:
    """``jobman store init`` (in :mod:`.dynamodb_admin`, kept apart from the store's hot paths)."""
    from .dynamodb_admin import init_table as _init

    return _init(url, client=client, wait_delay=wait_delay)
