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
              created_at=T0).claimed(T0, "tok", "h")
    assert job.reported("failed", None, T0, "interrupted").status is JobStatus.SCHEDULED


def test_status_shows_the_rung_and_the_interruptions():
    rows = dict(sheet_rows(running()))
    assert rows["placement"] == "m5.large us-east-1b (spot, subnet-0000000b)"
    assert rows["interruptions"] == "0 of at most 3"
    assert rows["capacity"].startswith("spot")
    plain = Job(id=2, title="", date_time=T0, docker_image="alpine", env_variables={}, status=JobStatus.SCHEDULED,
                created_at=T0)
    assert not {"placement", "capacity", "interruptions"} & set(dict(sheet_rows(plain)))
