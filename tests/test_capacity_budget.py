"""``max_attempts`` limits failed launches only (review finding 6): relaunches after spot
interruptions and passes where every rung was refused for capacity are attempts too, but must not
use up the daemon's budget for launch errors. Driven by ``Daemon.tick`` against moto's in-process
EC2 and a real TinyDB file (the World of tests/test_daemon.py, ``max_attempts=3``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobman_cli.daemon.common import LAUNCH_FAILED, LAUNCHED, RETRYING
from jobman_cli.model import JobStatus, ReasonCode
from test_daemon import T0, World, aws_error, ec2, aws_env  # noqa: F401  (fixtures)

VCPU = ("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit")


@pytest.fixture
def world(tmp_path, ec2):  # noqa: F811
    w = World(tmp_path, ec2)
    yield w
    w.close()


def refuse_first(n: int, code: str, message: str):
    """A ``before`` hook: the first ``n`` RunInstances fail with ``code``."""
    left = [n]

    def before(job):
        if left[0] > 0:
            left[0] -= 1
            raise aws_error(code, message, 400, job)
    return before


def test_interruptions_do_not_use_up_the_launch_retry_budget(world):
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot", max_interruptions=10)
    t = T0 + timedelta(minutes=1)
    for _ in range(3):  # as many interruptions as max_attempts, each relaunched
        assert world.tick(t).job_ids(LAUNCHED) == [job.id]
        world.service.report(job.id, "failed", None, "interrupted", "notice")
        t += timedelta(minutes=1)  # the relaunch is due at once (its start deadline counts from the report)
    assert world.get(job.id).status is JobStatus.SCHEDULED and world.get(job.id).attempts == 3
    world.launcher.before = refuse_first(2, *VCPU)
    for _ in range(2):  # two transient quota errors on the relaunch: each retried, not failed
        report = world.tick(t)
        assert report.job_ids(RETRYING) == [job.id], world.get(job.id).reason
        t = world.get(job.id).not_before
    assert world.tick(t).job_ids(LAUNCHED) == [job.id]
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.attempts == 6 and final.launch_failures == 2


def test_the_budget_still_ends_failed_launches_after_interruptions(world):
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot", max_interruptions=10)
    t = T0 + timedelta(minutes=1)
    for _ in range(2):
        assert world.tick(t).job_ids(LAUNCHED) == [job.id]
        world.service.report(job.id, "failed", None, "interrupted", "notice")
        t += timedelta(minutes=1)  # the relaunch is due at once (its start deadline counts from the report)
    world.launcher.before = refuse_first(10, *VCPU)
    for _ in range(2):
        assert world.tick(t).job_ids(RETRYING) == [job.id]
        t = world.get(job.id).not_before
    assert world.tick(t).job_ids(LAUNCH_FAILED) == [job.id]  # the 3rd failed launch (max_attempts 3)
    final = world.get(job.id)
    assert final.reason_code is ReasonCode.LAUNCH_FAILED
    assert final.reason.startswith("launch error after 3 attempts: VcpuLimitExceeded")
    assert final.attempts == 5


def test_every_rung_refused_passes_do_not_use_up_the_launch_retry_budget(world):
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", start_deadline="2h")
    world.launcher.before = refuse_first(2 * 3, "InsufficientInstanceCapacity", "no capacity")  # 3 passes
    t = T0 + timedelta(minutes=1)
    for _ in range(3):
        assert world.tick(t).job_ids(RETRYING) == [job.id]
        t = world.get(job.id).not_before
    world.launcher.before = refuse_first(1, *VCPU)
    assert world.tick(t).job_ids(RETRYING) == [job.id], world.get(job.id).reason  # a first failed launch
    t = world.get(job.id).not_before
    world.launcher.before = None
    assert world.tick(t).job_ids(LAUNCHED) == [job.id]
    assert world.get(job.id).launch_failures == 1
