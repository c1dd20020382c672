"""A spot interruption end to end, in one process: the daemon's tick (moto's in-process EC2, a real
TinyDB file), the REST API on 127.0.0.1 taking the instance's callbacks, and the REAL user-data
script the daemon rendered for each attempt (read back from EC2), run with bash, stub tools and a
stub IMDSv2 that starts serving ``spot/instance-action`` while the container runs.

Interrupted within the budget -> ``scheduled`` at once, relaunched as a new attempt (new instance,
new ClientToken, new callback token), which finishes. Budget spent -> ``failed``/``interrupted``.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.daemon.common import LAUNCHED
from jobman_cli.model import JobStatus, ReasonCode
from test_daemon import T0, World, aws_env, ec2  # noqa: F401  (fixtures)
from test_spot_userdata import run_spot_instance

@pytest.fixture
def world(tmp_path, ec2):  # noqa: F811
    w = World(tmp_path, ec2)
    api = ApiServer(w.service, api_token="api-token-for-the-spot-test-0123456789").start()
    w.daemon.launch.public_url = f"http://127.0.0.1:{api.port}"  # the instances call back here
    yield w
    api.stop()
    w.close()


def user_data_of(world, attempt: int) -> str:
    (instance,) = world.instances(**{"jobman:attempt": str(attempt)})
    raw = world.ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    return base64.b64decode(raw["UserData"]["Value"]).decode()


def run_attempt(world, tmp_path, attempt: int, *, interrupt: bool) -> None:
    """Run attempt ``attempt``'s user-data as its instance would; with ``interrupt``, EC2's notice
    comes while the container runs."""
    tools = run_spot_instance(user_data_of(world, attempt), tmp_path / f"attempt-{attempt}", interrupt=interrupt)
    assert tools.powered_off
    stops = [c.args for c in tools.calls("docker") if c.args[:1] == ["stop"]]
    assert bool(stops) == interrupt  # the container was stopped only for the notice


def test_an_interrupted_spot_job_is_relaunched_and_its_second_attempt_finishes(world, tmp_path):
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot", max_interruptions=1, notify_on="end",
                         notify=["https://hooks.example.invalid/jobman"])
    assert world.tick(T0 + timedelta(minutes=1)).job_ids(LAUNCHED) == [job.id]
    first = world.get(job.id)
    assert first.placement["market"] == "spot"

    world.clock.set(T0 + timedelta(hours=3))  # it ran for hours: past its first start deadline
    run_attempt(world, tmp_path, 1, interrupt=True)

    back = world.get(job.id)
    assert back.status is JobStatus.SCHEDULED and back.interruptions == 1 and back.attempts == 1
    assert back.reason_code is None and "interruption 1 of at most 1" in back.reason
    assert back.instance_id is None and back.callback_hashes == ()  # the old instance cannot report again
    assert back.deliveries == ()  # not an end: nothing is owed to the notification targets

    report = world.tick(T0 + timedelta(hours=3, seconds=1))
    assert report.job_ids(LAUNCHED) == [job.id]  # due at once; its deadline counts from the interruption
    second = world.get(job.id)
    assert second.attempts == 2 and second.instance_id != first.instance_id
    assert second.launch_token != first.launch_token

    run_attempt(world, tmp_path, 2, interrupt=False)

    done = world.get(job.id)
    assert done.status is JobStatus.FINISHED and done.exit_code == 0
    assert (done.attempts, done.interruptions) == (2, 1)
    assert len(world.instances(**{"jobman:job-id": str(job.id)})) == 2  # one per attempt, no more


def test_when_the_budget_is_spent_the_job_fails_as_interrupted(world, tmp_path):
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot", max_interruptions=1)
    world.tick(T0 + timedelta(minutes=1))
    run_attempt(world, tmp_path, 1, interrupt=True)
    assert world.get(job.id).status is JobStatus.SCHEDULED
    world.tick(world.clock.now() + timedelta(seconds=1))
    run_attempt(world, tmp_path, 2, interrupt=True)

    final = world.get(job.id)
    assert final.status is JobStatus.FAILED and final.reason_code is ReasonCode.INTERRUPTED
    assert final.interruptions == 2 and final.attempts == 2
    assert "the budget of 1 is spent" in final.reason
    # Nothing more is launched for it.
    assert world.tick(world.clock.now() + timedelta(minutes=5)).job_ids(LAUNCHED) == []


def test_max_interruptions_zero_fails_on_the_first_notice(world, tmp_path):
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot-then-on-demand", max_interruptions=0)
    world.tick(T0 + timedelta(minutes=1))
    run_attempt(world, tmp_path, 1, interrupt=True)
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED and final.reason_code is ReasonCode.INTERRUPTED
    assert final.interruptions == 1


def test_a_spot_instance_reclaimed_without_a_report_counts_as_an_interruption(world):
    """The notice was missed or the report lost: EC2's state reason says the spot instance was
    reclaimed, so the reconciler applies the interruption budget, not ``instance-vanished``."""
    import dataclasses

    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot", max_interruptions=1)
    world.tick(T0 + timedelta(minutes=1))
    first = world.get(job.id)
    world.ec2.terminate_instances(InstanceIds=[first.instance_id])  # moto: a user-initiated shutdown
    inner = world.launcher.inner

    def describe(ids):  # ... which EC2 would have named Server.SpotInstanceTermination
        return {i: dataclasses.replace(info, state_reason="Server.SpotInstanceTermination")
                for i, info in inner.describe(ids).items()}

    world.launcher.describe = describe
    world.tick(T0 + timedelta(minutes=5), reconcile=True)
    back = world.get(job.id)
    assert back.status is JobStatus.SCHEDULED and back.interruptions == 1
    assert "Server.SpotInstanceTermination" in back.reason

    assert world.tick(T0 + timedelta(minutes=5, seconds=1)).job_ids(LAUNCHED) == [job.id]
    second = world.get(job.id)
    world.ec2.terminate_instances(InstanceIds=[second.instance_id])
    world.tick(T0 + timedelta(minutes=10), reconcile=True)
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED and final.reason_code is ReasonCode.INTERRUPTED


def test_an_on_demand_instance_that_vanished_is_still_instance_vanished(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    world.ec2.terminate_instances(InstanceIds=[world.get(job.id).instance_id])
    world.tick(T0 + timedelta(minutes=5), reconcile=True)
    assert world.get(job.id).reason_code is ReasonCode.INSTANCE_VANISHED
