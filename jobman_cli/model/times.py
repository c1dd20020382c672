"""The one text form of a time in jobman: ISO-8601, UTC, ``Z``, milliseconds only when there are any.

Every store, the REST API and ``--json`` write times through :func:`format_time`, so a job read
back from any of them compares equal to the one written (see :func:`~jobman_cli.model.as_stored`).
"""

from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc


def format_time(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z``; milliseconds only when there are any."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """Inverse of :func:`format_time`; a time without a zone is taken as UTC (older records)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
