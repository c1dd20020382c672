"""An ``interrupted`` report from an on-demand run (finding F11): EC2 sends no interruption notice
to an on-demand instance, so the job is not relaunched as a "spot interruption" (which bought up to
3 more instances): the report is kept -- the instance is ending, its last word must not be lost --
and the job ends ``failed`` with reason-code ``interrupted``. The market is the one the run actually
launched on, so a ``spot-then-on-demand`` job on its on-demand rung is on-demand too."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import make_draft
from jobman_cli.clock import FixedClock
from jobman_cli.model import Job, JobStatus
from jobman_cli.model.reasons import ReasonCode
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
T0 = datetime(2031, 1, 1, tzinfo=UTC)
RUNG = {"instance-type": "m5.large", "availability-zone": "us-east-1b", "subnet-id": "subnet-0000000b"}


def placed(capacity: str, market: str | None) -> Job:
    job = Job(id=1, title="", date_time=T0, docker_image="alpine", env_variables={}, status=JobStatus.SCHEDULED,
              created_at=T0, capacity=capacity).claimed(T0, "tok", "h")
    placement = None if market is None else {**RUNG, "market": market}
    return job.launched("i-0123456789abcdef0", T0, placement).reported("running", None, T0)


@pytest.mark.parametrize("capacity, market", [("on-demand", "on-demand"), ("spot-then-on-demand", "on-demand"),
                                              ("on-demand", None)],
                         ids=["on-demand", "spot-then-on-demand-on-its-on-demand-rung", "on-demand-no-placement"])
def test_an_on_demand_run_reported_interrupted_fails_without_a_relaunch(capacity, market):
    job = placed(capacity, market)
    t = T0 + timedelta(hours=1)
    ended = job.reported("failed", 143, t, "interrupted", "SIGTERM")
    assert ended.status is JobStatus.FAILED and ended.reason_code is ReasonCode.INTERRUPTED
    assert ended.reason == "interrupted (on-demand: not relaunched): SIGTERM"
    assert (ended.exit_code, ended.interruptions, ended.attempts, ended.past_runs) == (143, 0, job.attempts, ())
    assert ended.instance_id == "i-0123456789abcdef0" and ended.finished_at == t   # its receipt prices this run
    assert ended.reported("failed", 143, t, "interrupted") is ended                  # the instance repeats itself
    assert job.reported("failed", None, t, "interrupted").reason == "interrupted (on-demand: not relaunched)"


@pytest.mark.parametrize("capacity, market", [("spot", "spot"), ("spot-then-on-demand", "spot"), ("spot", None)],
                         ids=["spot", "spot-then-on-demand-on-a-spot-rung", "spot-no-placement"])
def test_a_spot_run_reported_interrupted_is_still_relaunched(capacity, market):
    back = placed(capacity, market).reported("failed", None, T0 + timedelta(hours=1), "interrupted")
    assert back.status is JobStatus.SCHEDULED and back.interruptions == 1


def test_the_callback_of_an_on_demand_job_is_accepted_and_not_relaunched(tmp_path):
    """Through the service (``jobman callback`` / the instance's PUT): stored, due for no launch."""
    clock = FixedClock(T0)
    store = TinyDBStore(tmp_path / "jobs.json")
    try:
        service = JobService(store, clock)
        job, _ = store.add(make_draft())
        store.update(job.id, lambda j: j.claimed(T0, "tok"))
        store.update(job.id, lambda j: j.launched("i-0abc", T0, {**RUNG, "market": "on-demand"}))
        clock.set(T0 + timedelta(minutes=5))
        reported = service.report(job.id, "failed", 143, "interrupted")
        stored = store.get(job.id)
        assert stored == reported and stored.status is JobStatus.FAILED
        assert stored.reason == "interrupted (on-demand: not relaunched)" and stored.interruptions == 0
        assert store.due(clock.now() + timedelta(days=1)) == []
    finally:
        store.close()
