"""``jobman store init`` for DynamoDB: create the table and its index, check an existing one.

Kept apart from :mod:`.dynamodb` (the store's read/write paths) because it runs once per table.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from ..errors import StoreError, one_line
from .dynamodb import FORMAT, INDEX, META_PK, SCHEMA
from .dynamodb_api import SCHEME, _Api, describe_error, make_client, parse_url

_ATTRIBUTES = {"pk": "S", "status": "S", "due_ms": "N"}
_TABLE_KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}]
_INDEX_KEYS = [{"AttributeName": "status", "KeyType": "HASH"}, {"AttributeName": "due_ms", "KeyType": "RANGE"}]


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
                                             "Projection": {"ProjectionType": "ALL"}}])
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
        try:
            api.call("put_item", expect=("ConditionalCheckFailedException",), TableName=table, Item=meta,
                     ConditionExpression="attribute_not_exists(pk)")
        except ClientError:
            pass  # already initialised (earlier, by one running now, or by our own resent write)
        stored = api.read_meta()
        # A table made in the last minute whose meta item is ours was made by this init (its
        # CreateTable answer lost), not found: say "Created", as the user expects.
        created = created or (raced and stored == store_id and _new(description))
        return created, stored
    except ClientError as exc:
        raise StoreError(describe_error(table, exc.response.get("Error", {}).get("Code", ""), exc)) from None
    except BotoCoreError as exc:  # the waiter's own error included
        raise StoreError(f"{where}: {one_line(exc)}") from None


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
    if description.get("TableStatus") in ("DELETING", "ARCHIVING", "ARCHIVED", "INACCESSIBLE_ENCRYPTION_CREDENTIALS"):
        return f"it is {description['TableStatus']}"
    return None
