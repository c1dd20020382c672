"""The DynamoDB store's plumbing: its URL, its boto3 client, and calls that fail in one line.

Kept apart from :mod:`.dynamodb` (what the store writes and why) so that each reads on its own.
boto3 is imported inside the functions: this module is only loaded for a ``dynamodb://`` store.

Lost answers. A write whose answer never arrived (connection closed or reset, read timeout, a 5xx,
or a throttle after such a resend) may have been applied. botocore resends it on its own, and the
store recognises its own committed write on the resend (a nonce in the item, see
:mod:`.dynamodb`). When botocore gives up, :meth:`_Api.write` raises :class:`LostAnswer` instead of
a plain error, so the caller can settle the outcome by reading (never by guessing), and raise
:class:`~jobman_cli.stores.WriteOutcomeUnknown` only if the read cannot tell.
"""

from __future__ import annotations

import os
from typing import Any, Collection
from urllib.parse import parse_qs, urlsplit

from ..errors import StoreError, one_line

SCHEME = "dynamodb://"
_THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
           "ExpiredTokenException", "MissingAuthenticationTokenException", "IncompleteSignature"}
#: Error codes after which a write may have been applied (by this send or by an earlier resend).
_UNSETTLED = _THROTTLED | {"InternalServerError", "InternalFailure", "ServiceUnavailable",
                           "TransactionInProgressException", "RequestTimeout"}


class LostAnswer(Exception):
    """A write got no usable answer after botocore's retries; it may or may not have been applied."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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
    to stderr when putting it back. ``max_attempts`` counts *retries*: up to 7 sends of a request."""
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


class _Api:
    """Calls on one table: every failure but the ``expect``-ed error codes becomes a one-line
    StoreError naming the table (botocore has already retried throttling and 5xx by then)."""

    def __init__(self, table: str, client: Any) -> None:
        self.table, self.location, self.client, self.closed = table, f"{SCHEME}{table}", client, False
        #: The meta item's ``features`` as last read (:meth:`read_meta`): which indexes to trust.
        self.features: frozenset[str] = frozenset()

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

    def write(self, operation: str, *, expect: Collection[str] = (), **kwargs: Any) -> dict:
        """:meth:`call` for a write: a failure after which it may have been applied (see the
        module doc) raises :class:`LostAnswer`, for the caller to settle by reading."""
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        if self.closed:
            raise StoreError(f"{self.location}: store is closed")
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in expect:
                raise
            if code in _UNSETTLED or status >= 500:
                raise LostAnswer(f"{code or status}: {one_line(exc)}") from None
            raise StoreError(describe_error(self.table, code, exc)) from None
        except (HTTPClientError, ConnectionError) as exc:  # closed, reset, timed out, refused
            raise LostAnswer(one_line(exc)) from None
        except BotoCoreError as exc:  # never sent (credentials, parameters)
            raise StoreError(f"{self.location}: cannot reach DynamoDB: {one_line(exc)}") from None

    def read_meta(self) -> str:
        """The store id from the meta item; a missing or foreign one is a StoreError."""
        from .dynamodb import FORMAT, META_PK, SCHEMA

        item = self.call("get_item", TableName=self.table, Key={"pk": {"S": META_PK}}, ConsistentRead=True).get("Item")
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
        self.features = frozenset(item.get("features", {}).get("SS", []))
        return store_id


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
