"""``jobman store init`` for DynamoDB: create the table and its indexes, check an existing one,
upgrade one made by an older jobman (:func:`upgrade`).

Kept apart from :mod:`.dynamodb` (the store's read/write paths) because it runs once per table.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson

from ..errors import StoreError, one_line
from ..model import job_from_record
from .dynamodb import FORMAT, INDEX, META_PK, SCHEMA
from .dynamodb_items import JOB_PREFIX, RUNS_FEATURE, RUNS_INDEX, encode_job, item_key
from .dynamodb_api import SCHEME, _Api, describe_error, make_client, parse_url

_ATTRIBUTES = {"pk": "S", "status": "S", "due_ms": "N", "run_of": "N", "job_id": "N"}
_TABLE_KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}]
_INDEX_KEYS = [{"AttributeName": "status", "KeyType": "HASH"}, {"AttributeName": "due_ms", "KeyType": "RANGE"}]
_RUNS_KEYS = [{"AttributeName": "run_of", "KeyType": "HASH"}, {"AttributeName": "job_id", "KeyType": "RANGE"}]
_RUNS = {"IndexName": RUNS_INDEX, "KeySchema": _RUNS_KEYS, "Projection": {"ProjectionType": "KEYS_ONLY"}}


def init_table(url: str, *, client: Any = None, wait_delay: float = 2.0) -> tuple[bool, str]:
    """``jobman store init``: create the table, its index and its meta item; idempotent.

    Returns ``(created, store_id)``. An existing table with jobman's design is kept (and gets its
    meta item if it has none, e.g. a table made by CloudFormation); any other table is a
    StoreError saying what differs. The table is on-demand (no capacity to plan for).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    table, options = parse_url(url)
    where = f"{SCHEME}{table}"
    client = client if client is not None else make_client(options.get("region"), options.get("endpoint"), where)
    created = raced = False
    try:
        description = _describe(client, table)
        if description is None:
            try:
                client.create_table(
                    TableName=table, BillingMode="PAY_PER_REQUEST", KeySchema=_TABLE_KEYS,
                    AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in _ATTRIBUTES.items()],
                    GlobalSecondaryIndexes=[{"IndexName": INDEX, "KeySchema": _INDEX_KEYS,
                                             "Projection": {"ProjectionType": "ALL"}}, _RUNS])
                created = True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                    raise
                # Another init created it just now, or our own CreateTable did and botocore resent
                # it after its answer was lost: decided below by whose meta item wins.
                description = _describe(client, table)
                raced = True
        problem = schema_problem(description) if description is not None else None
        if problem:
            raise StoreError(f"{where}: table {table} already exists but is not a jobman table: {problem}; "
                             "choose another table name")
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": wait_delay, "MaxAttempts": 90})
        api = _Api(table, client)
        store_id = uuid.uuid4().hex
        meta = {"pk": {"S": META_PK}, "format": {"S": FORMAT}, "schema": {"N": str(SCHEMA)},
                "store_id": {"S": store_id}, "created_at": {"S": datetime.now(timezone.utc).isoformat()}}
        if created:  # made just now with both indexes, and no job can be written before this item exists
            meta["features"] = {"SS": [RUNS_FEATURE]}
        try:
            api.call("put_item", expect=("ConditionalCheckFailedException",), TableName=table, Item=meta,
                     ConditionExpression="attribute_not_exists(pk)")
        except ClientError:
            pass  # already initialised (earlier, by one running now, or by our own resent write)
        stored = api.read_meta()
        if RUNS_FEATURE not in api.features:  # made by an older jobman (or just now): index its jobs
            upgrade(api, description or _describe(client, table) or {}, wait_delay)
        # A table made in the last minute whose meta item is ours was made by this init (its
        # CreateTable answer lost), not found: say "Created", as the user expects.
        created = created or (raced and stored == store_id and _new(description))
        return created, stored
    except ClientError as exc:
        raise StoreError(describe_error(table, exc.response.get("Error", {}).get("Code", ""), exc)) from None
    except BotoCoreError as exc:  # the waiter's own error included
        raise StoreError(f"{where}: {one_line(exc)}") from None


def upgrade(api: _Api, description: dict[str, Any], wait_delay: float = 2.0) -> int:
    """Make a table of an older jobman answer a schedule's runs and the jobs owing a receipt
    without a Scan: add the ``schedule-runs`` index if it is missing (and wait until it is ACTIVE),
    give every existing job item the attributes the indexes read (``run_of``; ``due_ms`` for a job
    owing a receipt) by ONE Scan, then add the feature to the meta item, after which stores opened
    from then on Query instead of Scan. Idempotent; safe while daemons run (each item write is
    conditional on its version, and this jobman's own writes set the attributes themselves). Run it
    once every host runs this version: an older one writing a run would leave it out of the index.
    Returns how many items were given attributes."""
    from botocore.exceptions import ClientError

    client, table = api.client, api.table
    if not any(i.get("IndexName") == RUNS_INDEX for i in description.get("GlobalSecondaryIndexes", [])):
        client.update_table(
            TableName=table,  # every attribute restated: the index's keys are added to the table's
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in _ATTRIBUTES.items()],
            GlobalSecondaryIndexUpdates=[{"Create": _RUNS}])
    for _ in range(900):  # a backfill of a big table takes minutes on AWS
        index = next((i for i in (_describe(client, table) or {}).get("GlobalSecondaryIndexes", [])
                      if i.get("IndexName") == RUNS_INDEX), {})
        if index.get("IndexStatus", "ACTIVE") == "ACTIVE":
            break
        time.sleep(wait_delay)
    else:
        raise StoreError(f"{api.location}: index {RUNS_INDEX!r} is not ACTIVE yet; run 'jobman store init' again later")
    changed = 0
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True, "FilterExpression": "begins_with(pk, :job)",
                              "ExpressionAttributeValues": {":job": {"S": JOB_PREFIX}}}
    while True:
        answer = api.call("scan", **kwargs)
        for item in answer.get("Items", []):
            try:
                job = job_from_record(orjson.loads(item["record"]["S"]))
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
                continue  # malformed: ``get`` says what is wrong with it
            wanted = {k: v for k, v in encode_job(job, []).items() if k in ("run_of", "due_ms") and k not in item}
            if not wanted:
                continue
            names = {f"#a{i}": k for i, k in enumerate(wanted)}
            values = {f":a{i}": v for i, v in enumerate(wanted.values())}
            try:
                api.call("update_item", expect=("ConditionalCheckFailedException",), TableName=table,
                         Key=item_key(item["pk"]["S"]), ConditionExpression="version = :v",
                         UpdateExpression="SET " + ", ".join(f"{n} = {v}" for n, v in zip(names, values)),
                         ExpressionAttributeNames=names, ExpressionAttributeValues={**values, ":v": item["version"]})
                changed += 1
            except ClientError:
                pass  # changed meanwhile: that write (by this jobman) carried the attributes
        start = answer.get("LastEvaluatedKey")
        if not start:
            break
        kwargs["ExclusiveStartKey"] = start
    api.call("update_item", TableName=table, Key=item_key(META_PK), UpdateExpression="ADD features :f",
             ExpressionAttributeValues={":f": {"SS": [RUNS_FEATURE]}})
    api.features = api.features | {RUNS_FEATURE}
    return changed


def _new(description: dict[str, Any] | None, seconds: float = 60.0) -> bool:
    made = (description or {}).get("CreationDateTime")
    return isinstance(made, datetime) and (datetime.now(timezone.utc) - made).total_seconds() < seconds


def _describe(client: Any, table: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def schema_problem(description: dict[str, Any]) -> str | None:
    """What makes a described table unusable for jobman, or None if its design is jobman's."""
    types = {a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])}
    keys = description.get("KeySchema", [])
    if keys != _TABLE_KEYS or types.get("pk") != "S":
        shown = ", ".join(f"{k['AttributeName']} ({types.get(k['AttributeName'], '?')}, {k['KeyType']})" for k in keys)
        return f"its key is [{shown}], jobman needs [pk (S, HASH)]"
    index = next((i for i in description.get("GlobalSecondaryIndexes", []) if i.get("IndexName") == INDEX), None)
    if index is None:
        return f"it has no global secondary index {INDEX!r} (status S HASH, due_ms N RANGE, projection ALL)"
    if (index.get("KeySchema") != _INDEX_KEYS or types.get("status") != "S" or types.get("due_ms") != "N"
            or index.get("Projection", {}).get("ProjectionType") != "ALL"):
        return f"its index {INDEX!r} is not (status S HASH, due_ms N RANGE, projection ALL)"
    runs = next((i for i in description.get("GlobalSecondaryIndexes", []) if i.get("IndexName") == RUNS_INDEX), None)
    if runs is not None and (runs.get("KeySchema") != _RUNS_KEYS or types.get("run_of") != "N"
                             or types.get("job_id") != "N"):
        return f"its index {RUNS_INDEX!r} is not (run_of N HASH, job_id N RANGE)"
    if description.get("TableStatus") in ("DELETING", "ARCHIVING", "ARCHIVED", "INACCESSIBLE_ENCRYPTION_CREDENTIALS"):
        return f"it is {description['TableStatus']}"
    return None
