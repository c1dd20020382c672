"""The launch ladder in the daemon (issue 15), driven by ``Daemon.tick`` at fixed times against moto's
in-process EC2 (its default VPC's subnets, one per zone) and a real TinyDB file.

Capacity refusals come from the launcher wrapper of tests/test_daemon.py, raised exactly as the EC2
adapter raises them (through :func:`run_instances_error`), before the request reaches moto; a lost
answer is raised after moto created the instance.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import ReadTimeoutError

from jobman_cli.daemon.common import LAUNCH_FAILED, LAUNCHED, MISSED, RETRYING
from jobman_cli.launchers.ec2 import run_instances_error
from jobman_cli.model import JobStatus, ReasonCode
from test_daemon import T0, World, aws_error, ec2, aws_env, raise_, tags_of  # noqa: F401  (fixtures)

CAPACITY = "We currently do not have sufficient {t} capacity in the Availability Zone you requested."


@pytest.fixture
def world(tmp_path, ec2):  # noqa: F811
    w = World(tmp_path, ec2)
    yield w
    w.close()


@pytest.fixture
def zones(ec2) -> dict[str, str]:  # noqa: F811
    """Zone -> subnet id of moto's default VPC (a, b, ...)."""
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}


def rung_token(token: str, index: int) -> str:
    """The ClientToken the contract gives rung ``index`` (written out here, not imported, so a
    change in the code cannot change the expectation with it)."""
    return token if index == 0 else f"{token}-r{index}"


def sent(world) -> list[tuple[int, str]]:
    """(attempt, ClientToken) of every RunInstances the daemon sent."""
    return [(a, t) for _, a, t in world.launcher.launches]


class Refuse:
    """A ``before`` hook: refuse the rungs ``refuse(job)`` says, with AWS's code; record each rung."""

    def __init__(self, refuse, code: str = "InsufficientInstanceCapacity") -> None:
        self.refuse = refuse
        self.code = code
        self.rungs: list[tuple[str, str | None, str]] = []

    def __call__(self, job) -> None:
        rung = (job.instance_type, job.subnet_ids[0] if job.subnet_ids else None, job.capacity)
        self.rungs.append(rung)
        if self.refuse(rung):
            status = 500 if self.code == "InsufficientInstanceCapacity" else 400  # as EC2 answers them
            raise aws_error(self.code, CAPACITY.format(t=job.instance_type), status, job)


def test_a_capacity_refusal_moves_to_the_next_rung_within_one_tick(world, zones):
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", subnet_ids=[a, b])
    refuse = Refuse(lambda r: r == ("m5.large", a, "on-demand"))
    world.launcher.before = refuse

    report = world.tick(T0 + timedelta(minutes=1))

    assert report.job_ids(LAUNCHED) == [job.id] and report.job_ids(RETRYING) == []
    assert refuse.rungs == [("m5.large", a, "on-demand"), ("m5.large", b, "on-demand")]
    (instance,) = world.instances()
    assert (instance["InstanceType"], instance["SubnetId"]) == ("m5.large", b)
    after = world.get(job.id)
    assert after.status is JobStatus.RUNNING and after.attempts == 1
    assert after.placement == {"instance-type": "m5.large", "availability-zone": "us-east-1b", "subnet-id": b,
                               "market": "on-demand"}
    token = after.launch_token
    assert sent(world) == [(1, token), (1, rung_token(token, 1))]  # a ClientToken per rung
    assert any("rung 1 of 4" in line and "InsufficientInstanceCapacity" in line for line in world.lines)


def test_the_ladder_order_is_types_then_subnets_spot_first(world, zones):
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="c5.large,c4.large", subnet_ids=[a, b],
                         capacity="spot-then-on-demand")
    refuse = Refuse(lambda r: r != ("c4.large", b, "on-demand"), code="InsufficientInstanceCapacity")
    world.launcher.before = refuse

    assert world.tick(T0 + timedelta(minutes=1)).job_ids(LAUNCHED) == [job.id]

    assert refuse.rungs == [("c5.large", a, "spot"), ("c5.large", b, "spot"), ("c4.large", a, "spot"),
                            ("c4.large", b, "spot"), ("c5.large", a, "on-demand"), ("c5.large", b, "on-demand"),
                            ("c4.large", a, "on-demand"), ("c4.large", b, "on-demand")]
    token = world.get(job.id).launch_token
    assert sent(world) == [(1, rung_token(token, i)) for i in range(8)]
    (instance,) = world.instances()
    assert instance.get("InstanceLifecycle") is None  # on-demand
    assert world.get(job.id).placement["market"] == "on-demand"


def test_spot_refused_falls_back_to_on_demand_and_spot_launches_as_spot(world):
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot-then-on-demand")
    world.launcher.before = Refuse(lambda r: r[2] == "spot", code="SpotMaxPriceTooLow")
    world.tick(T0 + timedelta(minutes=1))
    (instance,) = world.instances()
    assert instance.get("InstanceLifecycle") is None and world.get(job.id).placement["market"] == "on-demand"

    spot = world.schedule(T0 + timedelta(minutes=2), capacity="spot")
    world.launcher.before = None
    world.tick(T0 + timedelta(minutes=2))
    (instance,) = world.instances(**{"jobman:job-id": str(spot.id)})
    assert instance["InstanceLifecycle"] == "spot"
    placement = world.get(spot.id).placement
    assert placement["market"] == "spot" and placement["instance-type"] == "t3.micro"
    assert placement["availability-zone"] == instance["Placement"]["AvailabilityZone"]


def test_a_lost_answer_on_rung_2_is_found_by_tag_exactly_one_instance(world, zones):
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large", subnet_ids=[a, b])
    world.launcher.before = Refuse(lambda r: r[1] == a)
    lost = []

    def lose_answer(j, instance_id):
        if not lost:
            lost.append(instance_id)
            raise run_instances_error(ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
                                      j, j.launch_token)

    world.launcher.after = lose_answer
    world.tick(T0 + timedelta(minutes=1))

    after = world.get(job.id)
    assert after.status is JobStatus.RUNNING and after.instance_id == lost[0]
    assert len(world.instances()) == 1  # found by tag: never sent again
    token = after.launch_token
    assert sent(world) == [(1, token), (1, rung_token(token, 1))]
    assert after.placement == {"instance-type": "m5.large", "availability-zone": "us-east-1b", "subnet-id": b,
                               "market": "on-demand"}  # read from the instance it found


def test_a_lost_request_on_rung_2_is_resent_on_rung_2_with_its_own_token(world, zones):
    """Nothing found by tag after an unknown outcome: the same rung again, same ClientToken; the
    ladder never moves on from a rung that may have started an instance. Rung 2 is a middle rung
    (a rung 3 exists), so a ladder that moved on after the lost answer would send rung 3's token
    and launch in zone c."""
    a, b, c = zones["us-east-1a"], zones["us-east-1b"], zones["us-east-1c"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large", subnet_ids=[a, b, c])
    refuse = Refuse(lambda r: r[1] == a)
    dropped = []

    def before(j):
        refuse(j)
        if not dropped:  # rung 2's first send: the connection dies before moto saw it
            dropped.append(j.launch_token)
            raise run_instances_error(ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
                                      j, j.launch_token)

    world.launcher.before = before
    world.tick(T0 + timedelta(minutes=1))

    after = world.get(job.id)
    token = after.launch_token
    assert sent(world) == [(1, token), (1, rung_token(token, 1)), (1, rung_token(token, 1))]
    (instance,) = world.instances()
    assert after.status is JobStatus.RUNNING and instance["SubnetId"] == b


def test_every_rung_refused_retries_until_the_start_deadline_then_missed_with_the_aws_error(world, zones):
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", subnet_ids=[a, b],
                         start_deadline="10m")
    world.launcher.before = Refuse(lambda r: True)
    at = T0 + timedelta(minutes=1)
    deadline = at + timedelta(minutes=10)
    attempts = 0
    while True:
        report = world.tick(at)
        current = world.get(job.id)
        if current.status is JobStatus.FAILED:
            break
        assert report.job_ids(RETRYING) == [job.id]
        attempts += 1
        assert current.status is JobStatus.SCHEDULED and current.attempts == attempts
        assert current.not_before <= deadline  # never parked past the start deadline
        at = current.not_before
        assert attempts < 20

    assert attempts > 3  # more than max_attempts (3): capacity is retried until the deadline
    assert current.reason_code is ReasonCode.MISSED_START_DEADLINE
    assert "InsufficientInstanceCapacity" in current.reason and CAPACITY.format(t="m4.large") in current.reason
    assert report.job_ids(MISSED) == [job.id]
    assert world.instances() == []
    # Each attempt sent each of the 4 rungs exactly once, each with its own token.
    by_attempt: dict[int, list[str]] = {}
    for attempt, token in sent(world):
        by_attempt.setdefault(attempt, []).append(token)
    assert all(len(tokens) == 4 and len(set(tokens)) == 4 for tokens in by_attempt.values())
    assert len({t for tokens in by_attempt.values() for t in tokens}) == 4 * len(by_attempt)


def test_unsupported_everywhere_fails_at_once(world):
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large")
    world.launcher.before = Refuse(lambda r: True, code="Unsupported")
    report = world.tick(T0 + timedelta(minutes=1))
    assert report.job_ids(LAUNCH_FAILED) == [job.id]
    failed = world.get(job.id)
    assert failed.reason_code is ReasonCode.LAUNCH_FAILED and "all 2 rungs" in failed.reason
    assert "Unsupported" in failed.reason


def test_an_error_that_is_not_about_capacity_does_not_climb_the_ladder(world):
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large")
    refuse = Refuse(lambda r: True, code="InvalidParameterValue")
    world.launcher.before = refuse
    report = world.tick(T0 + timedelta(minutes=1))
    assert report.job_ids(LAUNCH_FAILED) == [job.id] and len(refuse.rungs) == 1


def test_a_lost_request_then_a_capacity_refusal_of_its_resend_moves_to_the_next_rung(world):
    """Review finding 8: after a lost answer on rung 1, the resend with the same ClientToken is
    refused for capacity and nothing is found by tag or token: that send started nothing (EC2
    answers a token that started an instance with the instance), so rung 2 is tried at once
    instead of rung 1 being resent until the start deadline."""
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", start_deadline="10m")
    dropped = []

    def before(j):
        if j.instance_type == "m5.large":
            if not dropped:  # the first send dies before moto saw it
                dropped.append(j.launch_token)
                raise run_instances_error(ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
                                          j, j.launch_token)
            raise aws_error("InsufficientInstanceCapacity", CAPACITY.format(t="m5.large"), 500, j)

    world.launcher.before = before
    assert world.tick(T0 + timedelta(minutes=1)).job_ids(LAUNCHED) == [job.id]
    after = world.get(job.id)
    token = after.launch_token
    assert sent(world) == [(1, token), (1, token), (1, rung_token(token, 1))]
    (instance,) = world.instances()
    assert after.status is JobStatus.RUNNING and instance["InstanceType"] == "m4.large"


class LaggyTags:
    """``find_instances`` answers nothing for the first ``misses`` lookups (EC2's eventual consistency)."""

    def __init__(self, launcher, misses: int) -> None:
        self.launcher = launcher
        self.misses = misses
        self.inner_find = launcher.inner.find_instances

    def __call__(self, store_id, **kw):
        if self.misses > 0:
            self.misses -= 1
            return []
        return self.inner_find(store_id, **kw)


def test_a_refused_resend_never_moves_on_while_the_lost_send_s_instance_is_found(world):
    """The lost send did start an instance; the lookup before the resend lags, the resend is
    (implausibly) refused for capacity: the lookup after the refusal finds the instance, and it is
    recorded: rung 2 is never sent (that would be a second instance for one attempt)."""
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", start_deadline="10m")
    world.launcher.inner.find_instances = LaggyTags(world.launcher, misses=1)
    lost = []

    def before(j):
        if j.instance_type == "m5.large" and lost:
            raise aws_error("InsufficientInstanceCapacity", CAPACITY.format(t="m5.large"), 500, j)

    def after(j, instance_id):
        if not lost:
            lost.append(instance_id)
            raise run_instances_error(ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
                                      j, j.launch_token)

    world.launcher.before, world.launcher.after = before, after
    world.tick(T0 + timedelta(minutes=1))
    current = world.get(job.id)
    assert current.status is JobStatus.RUNNING and current.instance_id == lost[0]
    assert [t for _, t in sent(world)] == [current.launch_token, current.launch_token]  # never rung 2
    assert len(world.instances()) == 1
