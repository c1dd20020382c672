"""Shared test helpers and fixtures. Keep it tidy: one section per concern, each explained.

Plain helpers are imported with ``from conftest import make_draft, T0`` (pytest puts ``tests/`` on
``sys.path`` because it is not a package).
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from jobman_cli.model import Job, JobStatus

# --------------------------------------------------------------------------- jobs
#: A fixed "now" for tests that drive time themselves (times have whole milliseconds, as stored).
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def make_draft(**overrides: Any) -> Job:
    """A valid, unsaved job (``id == 0``, scheduled one hour after :data:`T0`).

    Any :class:`~jobman_cli.model.Job` field can be overridden by keyword. A draft has no callback
    token: a claim gives the attempt one (see :func:`claim_with_token`).
    """
    fields: dict[str, Any] = {
        "id": 0,
        "title": "test job",
        "date_time": T0 + timedelta(hours=1),
        "docker_image": "alpine:3.19",
        "env_variables": {"GREETING": "hello"},
        "status": JobStatus.SCHEDULED,
        "created_at": T0,
    }
    fields.update(overrides)
    return Job(**fields)


# --------------------------------------------------------------------------- stores
@pytest.fixture
def tinydb_handles(tmp_path):
    """A function that opens a *new* :class:`~jobman_cli.stores.tinydb.TinyDBStore` handle on one and
    the same file (``tmp_path/jobs.json``), as another process would; every handle is closed at the
    end. The ``make_store`` of the TinyDB store contracts (jobs and schedules)."""
    from jobman_cli.stores.tinydb import TinyDBStore

    handles: list[TinyDBStore] = []

    def make() -> TinyDBStore:
        handles.append(TinyDBStore(tmp_path / "jobs.json"))
        return handles[-1]

    yield make
    for handle in handles:
        handle.close()


# --------------------------------------------------------------------------- AWS (in-process moto)
@pytest.fixture
def isolated_aws(monkeypatch, tmp_path):
    """No AWS setting of the developer's machine leaks in: no AWS_* variables, empty config and
    credentials files, no instance metadata service. Returns the monkeypatch to add settings."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    (tmp_path / "aws-empty").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-empty"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def mock_ec2(isolated_aws):
    """Fake credentials in us-east-1 under moto's ``mock_aws``; yields an EC2 client."""
    import boto3
    from moto import mock_aws

    isolated_aws.setenv("AWS_ACCESS_KEY_ID", "testing")
    isolated_aws.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    isolated_aws.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("ec2")


def claim_with_token(store: Any, job_id: int, now: datetime, launch_token: str = "launch") -> str:
    """Claim a job as the daemon does (scheduled -> launching) and return the attempt's callback
    token in clear; the store keeps only its hash."""
    from jobman_cli.model import hash_callback_token

    token = secrets.token_urlsafe(32)
    store.update(job_id, lambda j: j.claimed(now, launch_token, hash_callback_token(token)))
    return token
