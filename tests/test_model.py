"""The job model: transitions and the one serializer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import make_draft

from jobman_cli.errors import InvalidInput, TransitionNotAllowed
from jobman_cli.model import (JobStatus, job_from_record, job_to_api, job_to_record, record_to_api)

NOW = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=timezone.utc)


def states():
    """A job in every state, with every optional field set somewhere."""
    base = make_draft(id=5, date_time=NOW, env_variables={"A": "1", "NL": "x\ny"}, instance_type="t3.small",
                      idempotency_key="k")
    launching = base.claimed(NOW, "tok")
    running = launching.launched("i-0abc", NOW + timedelta(seconds=1))
    return {
        "scheduled": base,
        "launching": launching,
        "running": running,
        "finished": running.reported("finished", None, NOW + timedelta(minutes=1)),
        "failed": running.reported("failed", 3, NOW + timedelta(minutes=1)),
        "cancelled": base.cancelled(NOW),
        "retry": launching.retry_later("Throttling: slow down", NOW + timedelta(seconds=30), NOW),
    }


@pytest.mark.parametrize("name", sorted(states()))
def test_record_to_api_equals_job_to_api(name: str) -> None:
    job = states()[name]
    record = job_to_record(job)
    assert record_to_api(record) == job_to_api(job_from_record(record))
    assert list(record_to_api(record)) == list(job_to_api(job))


def test_record_to_api_fills_defaults_for_sparse_records() -> None:
    record = {k: v for k, v in job_to_record(states()["scheduled"]).items() if v not in (None, "", {}, 0)}
    assert record_to_api(record) == job_to_api(job_from_record(record))


def test_api_shape_never_contains_secrets() -> None:
    for job in states().values():
        api = job_to_api(job)
        assert "callback-token" not in api and "launch-token" not in api
        assert job.callback_token not in str(api)


def test_only_forward_transitions() -> None:
    s = states()
    with pytest.raises(TransitionNotAllowed):
        s["finished"].cancelled(NOW)
    with pytest.raises(TransitionNotAllowed):
        s["scheduled"].reported("finished", 0, NOW)
    with pytest.raises(TransitionNotAllowed):
        s["finished"].reported("failed", 1, NOW)
    with pytest.raises(TransitionNotAllowed):
        s["running"].claimed(NOW, "again")
    assert s["finished"].reported("finished", 0, NOW) is s["finished"]  # repeated report: no-op
    assert s["running"].reported("running", None, NOW) is s["running"]
    assert s["launching"].reported("running", None, NOW).status is JobStatus.RUNNING
    assert s["retry"].status is JobStatus.SCHEDULED and s["retry"].due_at == NOW + timedelta(seconds=30)


@pytest.mark.parametrize("status,code", [("finished", 3), ("failed", 0), ("failed", 256), ("failed", -1),
                                         ("failed", True), ("done", None)])
def test_inconsistent_reports_are_invalid(status: str, code) -> None:
    with pytest.raises(InvalidInput):
        states()["running"].reported(status, code, NOW)


def test_failure_reasons_are_human() -> None:
    s = states()
    assert s["failed"].reason == "exit code 3" and s["failed"].exit_code == 3
    assert s["finished"].exit_code == 0 and s["finished"].reason is None
    assert s["cancelled"].reason == "cancelled by operator"
    assert s["finished"].finished_at is not None
