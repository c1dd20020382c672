"""The model's side of spot interruptions and placement (issue 15): the one new step back
(``running``/``launching -> scheduled``) exists only for an ``interrupted`` report within the budget,
the start deadline of a relaunch counts from the interruption, and ``status`` shows the rung.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobman_cli.errors import TransitionNotAllowed
from jobman_cli.model import ALLOWED_TRANSITIONS, Job, JobStatus, ReasonCode, as_stored
from jobman_cli.render import sheet_rows

T0 = datetime(2031, 1, 1, tzinfo=timezone.utc)


def running(**changes) -> Job:
    job = Job(id=1, title="", date_time=T0, docker_image="alpine", env_variables={}, status=JobStatus.SCHEDULED,
              created_at=T0, capacity="spot", **changes)
    job = job.claimed(T0, "tok-1", "hash-1")
    return job.launched("i-0123456789abcdef0", T0, {"instance-type": "m5.large", "availability-zone": "us-east-1b",
                                                   "subnet-id": "subnet-0000000b", "market": "spot"})


def test_running_to_scheduled_exists_only_for_an_interruption_within_budget():
    assert JobStatus.SCHEDULED in ALLOWED_TRANSITIONS[JobStatus.RUNNING]
    job = running(max_interruptions=2)
    with pytest.raises(TransitionNotAllowed):
        job.retry_later("capacity", T0, T0)  # a launch error never takes a running job back
    for code in ("exited", "timed-out", "image-pull-failed"):
        ended = job.reported("failed", 1 if code == "exited" else None, T0, code)
        assert ended.status is JobStatus.FAILED
    t = T0 + timedelta(hours=5)
    back = job.reported("failed", None, t, "interrupted", "notice")
    assert back.status is JobStatus.SCHEDULED and back.interruptions == 1
    assert (back.instance_id, back.launch_token, back.callback_hashes, back.reason_code) == (None, None, (), None)
    assert back.due_at == t and back.start_by == t + timedelta(seconds=back.start_deadline)
    assert back.terminal is False and back.finished_at is None
    assert as_stored(back).interrupted_at == t  # survives the store


def test_the_budget_spent_fails_as_interrupted_and_a_repeat_is_a_no_op():
    job = running(max_interruptions=1, interruptions=1)
    failed = job.reported("failed", None, T0, "interrupted")
    assert failed.status is JobStatus.FAILED and failed.reason_code is ReasonCode.INTERRUPTED
    assert failed.interruptions == 2 and "budget of 1 is spent" in failed.reason
    assert failed.reported("failed", None, T0, "interrupted") is failed


def test_an_interruption_while_launching_also_goes_back():
    job = Job(id=1, title="", date_time=T0, docker_image="alpine", env_variables={}, status=JobStatus.SCHEDULED,
              created_at=T0, capacity="spot").claimed(T0, "tok", "h")
    assert job.reported("failed", None, T0, "interrupted").status is JobStatus.SCHEDULED


def test_status_shows_the_rung_and_the_interruptions():
    rows = dict(sheet_rows(running()))
    assert rows["placement"] == "m5.large us-east-1b (spot, subnet-0000000b)"
    assert rows["interruptions"] == "0 of at most 3"
    assert rows["capacity"].startswith("spot")
    plain = Job(id=2, title="", date_time=T0, docker_image="alpine", env_variables={}, status=JobStatus.SCHEDULED,
                created_at=T0)
    assert not {"placement", "interruptions"} & set(dict(sheet_rows(plain))) and dict(sheet_rows(plain))["capacity"] == "on-demand"


def test_the_interruption_fields_survive_a_dynamodb_store(monkeypatch):
    """A relaunch's start deadline depends on ``interrupted-at``: it must round-trip in every store
    (TinyDB: ``as_stored`` above; DynamoDB under moto here), with the placement and the count."""
    from moto import mock_aws

    from jobman_cli.stores.dynamodb import DynamoDBStore
    from jobman_cli.stores.dynamodb_admin import init_table

    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with mock_aws():
        url = "dynamodb://jobman-spot-test"
        assert init_table(url, wait_delay=0)[0]
        store = DynamoDBStore.from_url(url)
        try:
            draft = Job(id=0, title="", date_time=T0, docker_image="alpine", env_variables={},
                        status=JobStatus.SCHEDULED, created_at=T0, capacity="spot")
            job, _ = store.add(draft)
            store.update(job.id, lambda j: j.claimed(T0, "tok", "h"))
            store.update(job.id, lambda j: j.launched("i-0123456789abcdef0", T0, {"market": "spot"}))
            t = T0 + timedelta(hours=2)
            store.update(job.id, lambda j: j.reported("failed", None, t, "interrupted"))
            back = store.get(job.id)
            assert (back.status, back.interruptions, back.interrupted_at) == (JobStatus.SCHEDULED, 1, t)
            assert back.placement is None and [j.id for j in store.due(t)] == [job.id]
            assert back.past_runs == ({"instance-id": "i-0123456789abcdef0", "placement": {"market": "spot"},
                                       "launched-at": "2031-01-01T00:00:00Z", "ended-at": "2031-01-01T02:00:00Z"},)
        finally:
            store.close()


PLACED = {"instance-type": "m5.large", "availability-zone": "us-east-1b", "subnet-id": "subnet-0000000b",
          "market": "spot"}


def test_an_interrupted_run_is_kept_for_the_cost_receipt():
    """Review finding 2 (model part): the relaunch clears the instance, its launch time and its
    placement, but the interrupted run was billed: it is kept in ``past_runs``, oldest first."""
    job = running(max_interruptions=2)
    t1 = T0 + timedelta(hours=5)
    back = job.reported("failed", None, t1, "interrupted", "notice")
    assert (back.instance_id, back.launched_at, back.placement) == (None, None, None)
    first = {"instance-id": "i-0123456789abcdef0", "placement": PLACED, "launched-at": "2031-01-01T00:00:00Z",
             "ended-at": "2031-01-01T05:00:00Z"}
    assert back.past_runs == (first,)
    # The relaunch reports running before the daemon records it: its launch time is its own.
    t2 = t1 + timedelta(minutes=2)
    second = back.claimed(t2, "tok-2", "hash-2").reported("running", None, t2)
    assert second.launched_at == t2
    second = second.launched("i-0fedcba9876543210", t2, {**PLACED, "availability-zone": "us-east-1c"})
    t3 = t2 + timedelta(hours=1)
    again = second.reported("failed", None, t3, "interrupted")
    assert again.past_runs == (first, {"instance-id": "i-0fedcba9876543210",
                                       "placement": {**PLACED, "availability-zone": "us-east-1c"},
                                       "launched-at": "2031-01-01T05:02:00Z", "ended-at": "2031-01-01T06:02:00Z"})
    # Budget spent: the last run stays the job's own (instance_id), not a past run.
    third = again.claimed(t3, "tok-3", "h").launched("i-0000000000000000c", t3, PLACED)
    failed = third.reported("failed", None, t3 + timedelta(minutes=1), "interrupted")
    assert failed.status is JobStatus.FAILED and failed.instance_id == "i-0000000000000000c"
    assert failed.past_runs == again.past_runs
    # Public (status --json, the API) and round-trips through a record.
    from jobman_cli.model import API_KEYS, job_to_api, job_to_record, record_to_api

    assert "past-runs" in API_KEYS
    assert job_to_api(failed)["past-runs"] == [first, again.past_runs[1]]
    assert record_to_api(job_to_record(failed)) == job_to_api(failed)
    assert as_stored(failed).past_runs == failed.past_runs
    plain = running()
    assert job_to_api(plain)["past-runs"] == [] and record_to_api({**job_to_record(plain), "past-runs": None}) == \
        job_to_api(plain)


def test_status_json_shows_the_past_runs(tmp_path):
    """The real program reads a TinyDB store holding an interrupted job."""
    import json
    import os
    import subprocess
    import sys

    from jobman_cli.stores.tinydb import TinyDBStore

    path = tmp_path / "jobs.json"
    with TinyDBStore(path) as store:
        draft = Job(id=0, title="", date_time=T0, docker_image="alpine", env_variables={},
                    status=JobStatus.SCHEDULED, created_at=T0, capacity="spot")
        job, _ = store.add(draft)
        store.update(job.id, lambda j: j.claimed(T0, "tok", "h"))
        store.update(job.id, lambda j: j.launched("i-0123456789abcdef0", T0, PLACED))
        store.update(job.id, lambda j: j.reported("failed", None, T0 + timedelta(hours=1), "interrupted"))
    env = dict(os.environ, JOBMAN_DB=str(path), JOBMAN_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "jobman_cli", "status", str(job.id), "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["past-runs"] == [
        {"instance-id": "i-0123456789abcdef0", "placement": PLACED, "launched-at": "2031-01-01T00:00:00Z",
         "ended-at": "2031-01-01T01:00:00Z"}]
