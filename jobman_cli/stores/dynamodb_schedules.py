"""Schedules in the DynamoDB table: items of their own, beside the jobs.

Items (same table, so ``jobman store init`` and IAM policies need nothing new)::

    "schedcounter"     n (N): the last schedule id handed out (atomic conditional UpdateItem,
                       never reused); nn (S): the nonce of the last increment
    "sched#<id>"       schedule_id (N), version (N), record (S: schedule_to_record as JSON),
                       wn (L of S): the nonces of the last writes
    "schedseq"         seq (N): bumped in the same transaction as every schedule write, so
                       ``schedule_marker`` (one GetItem) tells the daemon when to list again;
                       ids (NS): the ids of the schedules, changed in the add's/delete's transaction

No Scan: ``list_schedules`` reads the set of ids from the marker item and the items by consistent
BatchGetItem, so it costs about a read unit per schedule whatever the number of jobs (a Scan would
read the whole table), and the daemon lists only when :meth:`~DynamoDBSchedules.schedule_marker`
moved. Writes are conditional like the jobs' and each is one transaction with the bump
of ``schedseq`` (a transaction bills twice: about 4 write units per schedule write under 1 KB,
where a plain PutItem is 1; schedule writes are rare, one per occurrence): ``add_schedule`` under
``attribute_not_exists(pk)``, ``update_schedule`` compare-and-set on ``version`` with the change
applied again to the current item on a conflict, and a write nonce so that a resend after a lost
answer recognises its own committed write (see :mod:`.dynamodb`); each attempt has its own
``ClientRequestToken``, so botocore's resend of a transaction is idempotent. Every write also moves
the store's change marker.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable

import orjson

from ..errors import ScheduleNotFound, StoreError, one_line
from ..schedules.model import Schedule, as_stored, schedule_from_record, schedule_to_record
from .dynamodb_api import LostAnswer
from .dynamodb_items import NONCES_KEPT, item_key, new_nonce, nonce_list, nonces

SCHEDULE_PREFIX, SCHEDULE_COUNTER_PK, SCHEDULE_MARKER_PK = "sched#", "schedcounter", "schedseq"
_CHECK_FAILED = ("ConditionalCheckFailedException",)
MAX_ATTEMPTS = 40
MIN_CAS_SECONDS = 15.0
ScheduleChange = Callable[[Schedule], Schedule]


def encode_schedule(schedule: Schedule, write_nonces: list[str]) -> dict[str, Any]:
    return {
        "pk": {"S": f"{SCHEDULE_PREFIX}{schedule.id}"},
        "schedule_id": {"N": str(schedule.id)},
        "version": {"N": str(schedule.version)},
        "record": {"S": orjson.dumps(schedule_to_record(schedule)).decode()},
        "wn": nonce_list(write_nonces[-NONCES_KEPT:]),
    }


class DynamoDBSchedules:
    """The schedule half of :class:`~jobman_cli.stores.dynamodb.DynamoDBStore` (see the port)."""

    # The store provides these (and ``_next_id(counter)``, ``_touch``, ``_pages``, ``_read``).
    table: str
    location: str
    _api: Any

    def _decode_schedule(self, item: dict[str, Any]) -> Schedule:
        try:
            schedule = schedule_from_record(orjson.loads(item["record"]["S"]))
            if f"{SCHEDULE_PREFIX}{schedule.id}" != item["pk"]["S"]:
                raise ValueError(f"its record says id {schedule.id}")
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise StoreError(f"{self.location}: item {item.get('pk', {}).get('S', '?')} is malformed "
                             f"({type(exc).__name__}: {one_line(exc)})") from None
        return schedule

    def _transact(self, write: dict[str, Any], index: str = "") -> tuple[str, dict[str, Any] | None]:
        """``write`` (one Put or Delete) and the schedule marker's bump in one transaction, so the
        marker moves exactly when a schedule changed. ``("done", None)``; ``("failed", item)`` when
        the write's condition failed (``item``: the item as it is, if DynamoDB returned it);
        ``("again", None)`` when cancelled for another reason (a conflicting transaction, throttling:
        nothing was written). A lost answer raises LostAnswer (the caller reads the item back)."""
        from botocore.exceptions import ClientError

        bump: dict[str, Any] = {"TableName": self.table, "Key": item_key(SCHEDULE_MARKER_PK),
                                "UpdateExpression": "ADD seq :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}
        if index:  # "ADD id" (a new schedule) or "DELETE id" (a deleted one): the set of ids list reads
            verb, schedule_id = index.split()
            bump["UpdateExpression"] += ", ids :id" if verb == "ADD" else " DELETE ids :id"
            bump["ExpressionAttributeValues"][":id"] = {"NS": [schedule_id]}
        bump = {"Update": bump}
        try:
            self._api.write("transact_write_items", expect=("TransactionCanceledException",),
                            TransactItems=[write, bump], ClientRequestToken=new_nonce())
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            codes = [r.get("Code") for r in reasons]
            if codes[:1] == ["ConditionalCheckFailed"]:
                return "failed", reasons[0].get("Item")
            if "ValidationError" in codes:
                raise StoreError(f"{self.location}: DynamoDB refused a schedule write ({one_line(exc)})") from None
            return "again", None
        return "done", None

    def schedule_marker(self) -> int:
        """A value that moves whenever a schedule is added, changed or deleted (and only then):
        one consistent GetItem of a tiny item, bumped in the same transaction as each schedule write.
        The daemon re-lists schedules (a Scan) only when it moved."""
        item = self._call("get_item", TableName=self.table, Key=item_key(SCHEDULE_MARKER_PK),
                          ProjectionExpression="seq", ConsistentRead=True).get("Item", {})
        return int(item.get("seq", {}).get("N", "0"))

    def add_schedule(self, draft: Schedule) -> Schedule:
        """A fresh id from the schedule counter, then the item under ``attribute_not_exists``
        (an id someone else holds — a counter set back by hand — takes the next id)."""
        schedule_id = 0
        for attempt in range(MAX_ATTEMPTS):
            nonce = new_nonce()
            schedule = as_stored(dataclasses.replace(draft, id=schedule_id or self._next_id(SCHEDULE_COUNTER_PK)))
            pk = f"{SCHEDULE_PREFIX}{schedule.id}"
            put = {"Put": {"TableName": self.table, "Item": encode_schedule(schedule, [nonce]),
                           "ConditionExpression": "attribute_not_exists(pk)",
                           "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
            try:
                outcome, item = self._transact(put, f"ADD {schedule.id}")
            except LostAnswer as lost:
                item = self._read(pk)
                if item is None:
                    from . import WriteOutcomeUnknown

                    raise WriteOutcomeUnknown(f"{self.location}: no answer from DynamoDB ({lost.detail}); schedule "
                                              f"{schedule.id} may or may not have been added; see 'jobman schedules "
                                              "list' before adding it again") from None
                outcome = "done" if nonce in nonces(item) else "failed"
            if outcome == "again":
                schedule_id = schedule.id  # nothing written: the same id once more
                _pause(attempt)
                continue
            if outcome == "failed" and nonce not in nonces(item or self._read(pk)):
                schedule_id = 0  # the id is someone else's: take the next one
                continue
            self._touch()
            return schedule
        raise StoreError(f"{self.location}: could not add a schedule after {MAX_ATTEMPTS} attempts")

    def get_schedule(self, schedule_id: int) -> Schedule:
        schedule_id = _as_schedule_id(schedule_id)
        item = self._read(f"{SCHEDULE_PREFIX}{schedule_id}")
        if item is None:
            raise ScheduleNotFound(schedule_id)
        return self._decode_schedule(item)

    def list_schedules(self) -> list[Schedule]:
        """Every schedule by id, read consistently and without a Scan: the ids from the marker item
        (its set ``ids`` changes in the same transaction as each add and delete), then the items by
        BatchGetItem, 100 keys a call. Cost: about one read unit per schedule, however many jobs the
        table holds."""
        marker = self._call("get_item", TableName=self.table, Key=item_key(SCHEDULE_MARKER_PK),
                            ProjectionExpression="ids", ConsistentRead=True).get("Item", {})
        ids = sorted(int(n) for n in marker.get("ids", {}).get("NS", []))
        items: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):
            keys = [item_key(f"{SCHEDULE_PREFIX}{i}") for i in ids[start:start + 100]]
            request = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(MAX_ATTEMPTS):
                answer = self._call("batch_get_item", RequestItems=request)
                items += answer.get("Responses", {}).get(self.table, [])
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                _pause(attempt + 2)
            else:
                raise StoreError(f"{self.location}: could not read the schedules (throttled)")
        return sorted((self._decode_schedule(item) for item in items), key=lambda s: s.id)

    def update_schedule(self, schedule_id: int, change: ScheduleChange) -> Schedule:
        """Compare-and-set on ``version``; ``change`` may run once per conflicting writer, always
        on the schedule as currently stored."""
        schedule_id = _as_schedule_id(schedule_id)
        pk, nonce = f"{SCHEDULE_PREFIX}{schedule_id}", new_nonce()
        item = self._read(pk)
        deadline = time.monotonic() + MIN_CAS_SECONDS
        for attempt in itertools.count():
            if attempt >= MAX_ATTEMPTS and time.monotonic() >= deadline:
                raise StoreError(f"{self.location}: schedule {schedule_id}: gave up after {attempt} conflicting writes")
            if item is None:
                raise ScheduleNotFound(schedule_id)
            current = self._decode_schedule(item)
            new = change(current)
            if new is current:
                return current
            if not isinstance(new, Schedule) or new.id != schedule_id:
                raise TypeError(f"a change of schedule {schedule_id} must return that schedule (got {new!r:.60})")
            if new.version <= current.version:
                new = dataclasses.replace(new, version=current.version + 1)
            new = as_stored(new)
            put = {"Put": {"TableName": self.table, "Item": encode_schedule(new, nonces(item) + [nonce]),
                           "ConditionExpression": "version = :v",
                           "ExpressionAttributeValues": {":v": {"N": str(current.version)}},
                           "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
            try:
                outcome, found = self._transact(put)
            except LostAnswer as lost:
                found = self._read(pk)
                if found is not None and nonce not in nonces(found) and int(found["version"]["N"]) == current.version:
                    from . import WriteOutcomeUnknown

                    raise WriteOutcomeUnknown(f"{self.location}: no answer from DynamoDB ({lost.detail}); the change "
                                              f"of schedule {schedule_id} may or may not have been applied; retrying "
                                              "is safe") from None
                outcome = "done" if found is not None and nonce in nonces(found) else "failed"
            if outcome == "done":
                self._touch()
                return new
            if outcome == "failed":
                item = found if found is not None else self._read(pk)  # as it is now (None: deleted)
                if item is not None and nonce in nonces(item):
                    self._touch()
                    return new
            _pause(attempt)
        raise AssertionError("unreachable")

    def delete_schedule(self, schedule_id: int) -> None:
        """Delete the item (its jobs stay); ScheduleNotFound when there is none. Read first: once
        it was seen, a failed ``attribute_exists`` means it is gone (a resend of our own delete
        whose answer was lost, or another process's delete), which is the outcome asked for."""
        schedule_id = _as_schedule_id(schedule_id)
        pk = f"{SCHEDULE_PREFIX}{schedule_id}"
        if self._read(pk) is None:
            raise ScheduleNotFound(schedule_id)
        delete = {"Delete": {"TableName": self.table, "Key": item_key(pk), "ConditionExpression": "attribute_exists(pk)"}}
        for attempt in range(MAX_ATTEMPTS):
            try:
                outcome, _ = self._transact(delete, f"DELETE {schedule_id}")
            except LostAnswer:
                if self._read(pk) is not None:
                    raise StoreError(f"{self.location}: no answer from DynamoDB deleting schedule {schedule_id}, and "
                                     "it is still there; retrying is safe") from None
                outcome = "done"
            if outcome in ("done", "failed"):
                self._touch()
                return
            _pause(attempt)
        raise StoreError(f"{self.location}: could not delete schedule {schedule_id} (constant conflicts)")


def _pause(attempt: int) -> None:
    if attempt >= 2:
        import random

        time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))


def _as_schedule_id(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ScheduleNotFound(str(value))
