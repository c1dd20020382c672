"""The job model: transitions and the one serializer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import make_draft

from jobman_cli.errors import InvalidInput, TransitionNotAllowed
from jobman_cli.model import (JobStatus, ReasonCode, callback_token_matches, hash_callback_token, job_from_record,
                              job_to_api, job_to_record, record_to_api)

NOW = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=timezone.utc)
TOKEN = "the-attempts-callback-token"


def states():
    """A job in every state, with every optional field set somewhere."""
    base = make_draft(id=5, date_time=NOW, env_variables={"A": "1", "NL": "x\ny"}, instance_type="t3.small",
                      idempotency_key="k")
    launching = base.claimed(NOW, "tok", hash_callback_token(TOKEN))
    running = launching.launched("i-0abc", NOW + timedelta(seconds=1))
    return {
        "scheduled": base,
        "launching": launching,
        "running": running,
        "finished": running.reported("finished", None, NOW + timedelta(minutes=1)),
        "failed": running.reported("failed", 3, NOW + timedelta(minutes=1)),
        "cancelled": base.cancelled(NOW),
        "retry": launching.retry_later("Throttling: slow down", NOW + timedelta(seconds=30), NOW),
        "pull-failed": running.reported("failed", None, NOW, "image-pull-failed", "manifest unknown"),
        "missed": base.failed("missed start deadline", NOW, ReasonCode.MISSED_START_DEADLINE),
        "with-command": make_draft(id=6, date_time=NOW, command=("sh", "-c", "echo $1", "x y"), entrypoint="/bin/sh",
                                   disk_gb=30),
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
        assert "callback-token" not in api and "launch-token" not in api and "callback-hashes" not in api
        assert TOKEN not in str(api) and hash_callback_token(TOKEN) not in str(api)


def test_the_store_keeps_only_the_tokens_hash_and_each_attempt_has_its_own() -> None:
    s = states()
    record = job_to_record(s["running"])
    assert TOKEN not in str(record) and record["callback-hashes"] == [hash_callback_token(TOKEN)]
    assert callback_token_matches(TOKEN, job_from_record(record).callback_hashes)
    assert not callback_token_matches(hash_callback_token(TOKEN), s["running"].callback_hashes)  # the hash is no token
    assert not callback_token_matches("other", s["running"].callback_hashes)
    assert not callback_token_matches(TOKEN, ())
    # a retry forgets the old attempt's token; the next claim knows only its own
    retried = s["retry"]
    assert retried.callback_hashes == ()
    again = retried.claimed(NOW, "tok-2", hash_callback_token("second"))
    assert not callback_token_matches(TOKEN, again.callback_hashes)
    assert callback_token_matches("second", again.callback_hashes)
    # a take-over adds its own token to the same attempt; the first launcher's stays valid
    both = again.with_callback_hash(hash_callback_token("third"))
    assert callback_token_matches("second", both.callback_hashes) and callback_token_matches("third", both.callback_hashes)


def test_a_record_from_before_hashing_keeps_working() -> None:
    record = job_to_record(states()["running"])
    del record["callback-hashes"]
    record["callback-token"] = "legacy-clear-token"
    job = job_from_record(record)
    assert callback_token_matches("legacy-clear-token", job.callback_hashes)
    assert "legacy-clear-token" not in str(job_to_record(job))  # the next write drops the clear text


@pytest.mark.parametrize("name, code", [("finished", "exited"), ("failed", "exited"), ("cancelled", "cancelled"),
                                        ("pull-failed", "image-pull-failed"), ("missed", "missed-start-deadline"),
                                        ("scheduled", None), ("running", None)])
def test_every_terminal_job_has_a_reason_code(name: str, code: str | None) -> None:
    job = states()[name]
    assert job_to_api(job)["reason-code"] == code
    assert job_from_record(job_to_record(job)).reason_code == (ReasonCode(code) if code else None)


def test_a_reported_failure_keeps_the_instances_words_clipped() -> None:
    running = states()["running"]
    job = running.reported("failed", None, NOW, "image-pull-failed", "pull access denied\n" + "x" * 2000)
    assert job.reason_code is ReasonCode.IMAGE_PULL_FAILED and job.exit_code is None
    assert job.reason.startswith("the image could not be pulled: pull access denied x")
    assert "\n" not in job.reason and len(job.reason) < 600
    timed = running.reported("failed", 124, NOW, "timed-out")
    assert timed.reason_code is ReasonCode.TIMED_OUT and timed.exit_code == 124
    exited = running.reported("failed", 124, NOW)  # a container that exits 124 by itself
    assert exited.reason_code is ReasonCode.EXITED and exited.reason == "exit code 124"
    # a repeat of the same report is a no-op; a different code for an ended job is refused
    assert timed.reported("failed", 124, NOW, "timed-out") is timed
    with pytest.raises(TransitionNotAllowed):
        timed.reported("failed", 124, NOW, "exited")


def test_a_reported_reason_cannot_carry_terminal_escapes() -> None:
    hostile = "\x1b[31mRED\x1b]0;title\x07 \u202eevil\x9b2J tab\there\r\n end"
    job = states()["running"].reported("failed", None, NOW, "image-pull-failed", hostile)
    assert job.reason == "the image could not be pulled: [31mRED ]0;title evil 2J tab here end"
    assert all(ch.isprintable() for ch in job.reason)


def test_a_reason_code_from_a_newer_jobman_does_not_make_the_job_unreadable() -> None:
    record = job_to_record(states()["failed"])
    record["reason-code"] = "some-future-code"
    job = job_from_record(record)
    assert job.status is JobStatus.FAILED and job.reason_code is ReasonCode.EXITED  # inferred from its words
    assert record_to_api(record)["reason-code"] == "some-future-code"  # shown as stored


@pytest.mark.parametrize("status, code, reason", [
    ("failed", "launch-failed", None),     # only the daemon knows that one
    ("failed", "cancelled", None),
    ("failed", "bogus", None),
    ("failed", 7, None),
    ("running", "timed-out", None),
    ("running", None, "why"),              # a finished report may carry a reason (log incomplete)
    ("failed", None, 42),
])
def test_bad_reason_codes_in_reports_are_invalid(status: str, code, reason) -> None:
    with pytest.raises(InvalidInput) as err:
        states()["running"].reported(status, 1 if status == "failed" else None, NOW, code, reason)
    assert err.value.field in ("reason-code", "reason")


@pytest.mark.parametrize("status, reason, exit_code, code", [
    ("failed", "exit code 3", 3, "exited"),
    ("failed", "missed start deadline (due 2026-01-01T00:00:00Z, 2h late)", None, "missed-start-deadline"),
    ("failed", "launch error: InvalidAMIID.Malformed", None, "launch-failed"),
    ("failed", "instance vanished without reporting (state: terminated)", None, "instance-vanished"),
    ("failed", "timed out after 60s", None, "timed-out"),
    ("failed", "container failed (no exit code reported)", None, "exited"),
    ("cancelled", "cancelled by operator", None, "cancelled"),
    ("finished", None, 0, "exited"),
])
def test_jobs_stored_before_reason_codes_read_back_with_one(status, reason, exit_code, code) -> None:
    record = job_to_record(states()["running"])
    record.update({"status": status, "reason": reason, "exit-code": exit_code})
    del record["reason-code"]
    assert job_from_record(record).reason_code is ReasonCode(code)
    assert record_to_api(record)["reason-code"] == code


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
    # The instance's first "running" on a running job records when the container started, and
    # changes nothing else; its repeats are no-ops.
    first = s["running"].reported("running", None, NOW + timedelta(seconds=5))
    assert first.status is JobStatus.RUNNING and first.started_at == NOW + timedelta(seconds=5)
    assert first.reported("running", None, NOW + timedelta(seconds=9)) is first
    via_callback = s["launching"].reported("running", None, NOW)
    assert via_callback.status is JobStatus.RUNNING and via_callback.started_at == NOW
    assert s["launching"].claimed_at is not None and via_callback.claimed_at == s["launching"].claimed_at
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
