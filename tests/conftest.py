"""Shared test helpers and fixtures. Keep it tidy: one section per concern, each explained.

Plain helpers are imported with ``from conftest import make_draft, T0`` (pytest puts ``tests/`` on
``sys.path`` because it is not a package).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from jobman_cli.model import Job, JobStatus

# --------------------------------------------------------------------------- jobs
#: A fixed "now" for tests that drive time themselves (times have whole milliseconds, as stored).
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def make_draft(**overrides: Any) -> Job:
    """A valid, unsaved job (``id == 0``, scheduled one hour after :data:`T0`).

    Any :class:`~jobman_cli.model.Job` field can be overridden by keyword. Each draft gets its own
    random callback token.
    """
    fields: dict[str, Any] = {
        "id": 0,
        "title": "test job",
        "date_time": T0 + timedelta(hours=1),
        "docker_image": "alpine:3.19",
        "env_variables": {"GREETING": "hello"},
        "status": JobStatus.SCHEDULED,
        "created_at": T0,
        "callback_token": secrets.token_urlsafe(24),
    }
    fields.update(overrides)
    return Job(**fields)
