"""``prune`` for the DynamoDB store (kept apart from its hot paths, like :mod:`.dynamodb_admin`).

A consistent Scan of the terminal job items, a page at a time (``Limit``: a bounded batch, so a
year of history never sits in memory at once); each prunable job is deleted under the condition
``version = <the version read>``, so a job that changed meanwhile (a late callback, the notifier
recording a delivery) is kept and judged again by the next prune. A job with an idempotency key
goes in one transaction with its key item (whose condition ``job_id = <id>`` keeps a key that was
re-used by a newer job). The id counter item is never touched: ids stay unused forever.

Lost answers: a delete whose answer was lost is settled by reading the item: gone means deleted
(by us, or by another prune: either way the job is no longer stored), present means not deleted
(the next prune tries again). Nothing is ever guessed in the "removed" list.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..model import TERMINAL_STATES
from . import base as port  # the prune rules, looked up at call time (tests wrap them)
from .dynamodb_api import LostAnswer
from .dynamodb_items import IDEM_PREFIX, JOB_PREFIX, item_key

if TYPE_CHECKING:
    from .dynamodb import DynamoDBStore

#: Items per Scan page (counted before the status filter, as DynamoDB does).
PAGE = 1000
_CHECK_FAILED = ("ConditionalCheckFailedException",)


def prune(store: "DynamoDBStore", cutoff: datetime, *, dry_run: bool = False, page: int = PAGE) -> list[int]:
    terminal = sorted(s.value for s in TERMINAL_STATES)
    values: dict[str, Any] = {":job": {"S": JOB_PREFIX}}
    values.update({f":s{i}": {"S": s} for i, s in enumerate(terminal)})
    kwargs: dict[str, Any] = {
        "TableName": store.table, "ConsistentRead": True, "Limit": page,
        "FilterExpression": f"begins_with(pk, :job) AND #s IN ({', '.join(f':s{i}' for i in range(len(terminal)))})",
        "ExpressionAttributeNames": {"#s": "status"}, "ExpressionAttributeValues": values,
    }
    removed: list[int] = []
    while True:
        answer = store._call("scan", **kwargs)
        gone = 0
        for item in answer.get("Items", []):
            try:
                record = store._decode_record(item)
            except StoreError:
                continue  # malformed: never pruned (``get`` says what is wrong with it)
            if not port.record_prunable(record, cutoff):
                continue
            if dry_run or _delete(store, item, record):
                removed.append(int(record["id"]))
                gone += 1
        if gone and not dry_run:
            store._touch()
        start = answer.get("LastEvaluatedKey")
        if not start:
            return sorted(removed)
        kwargs["ExclusiveStartKey"] = start


def _delete(store: "DynamoDBStore", item: dict[str, Any], record: dict[str, Any]) -> bool:
    """Delete one job if it is still at the version read; True if it is gone now."""
    from botocore.exceptions import ClientError

    pk, job_id = item["pk"]["S"], int(record["id"])
    unchanged = {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": item["version"]}}
    key = record.get("idempotency-key")
    try:
        if key:
            store._api.write("transact_write_items", expect=("TransactionCanceledException",), TransactItems=[
                {"Delete": {"TableName": store.table, "Key": item_key(pk), **unchanged}},
                {"Delete": {"TableName": store.table, "Key": item_key(IDEM_PREFIX + key),
                            "ConditionExpression": "attribute_not_exists(pk) OR job_id = :id",
                            "ExpressionAttributeValues": {":id": {"N": str(job_id)}}}}])
        else:
            store._api.write("delete_item", expect=_CHECK_FAILED, TableName=store.table, Key=item_key(pk),
                             ReturnValuesOnConditionCheckFailure="ALL_OLD", **unchanged)
    except ClientError as exc:
        if key:  # cancelled (changed, a conflicting write, throttling): kept for the next prune
            return False
        return "Item" not in exc.response  # no item: already gone (a resend of ours, another prune)
    except LostAnswer:
        return store._read(pk) is None
    return True
