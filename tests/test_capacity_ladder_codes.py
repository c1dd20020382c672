"""Which EC2 refusals climb the launch ladder, and which rungs they skip (issue 15, DESIGN.md
section 13; the rule is :data:`jobman_cli.capacity.LADDER_SCOPES`):

* ``InsufficientFreeAddressesInSubnet``: the next rung in another subnet (every rung left in the
  refused subnet is skipped: it has no free address, whatever the type or market);
* ``VcpuLimitExceeded`` / ``InstanceLimitExceeded``: the next rung of the other market (an account
  quota of that market: the other types of the same market are skipped);
* a pass with no rung left: capacity among its refusals -> retried until the start deadline; only
  quotas and addresses -> a failed launch, bounded by ``max_attempts`` as before.

Driven by ``Daemon.tick`` at fixed times against moto's in-process EC2 (its default VPC's subnets)
and a real TinyDB file. Refusals are raised exactly as the EC2 adapter raises them (through
:func:`run_instances_error`, with AWS's codes and messages) before the request reaches moto. Each
test also checks the exactly-once rules: one ``ClientToken`` per rung (rung ``i``: the attempt's
token plus ``-r<i>``, written out here), and the rung stored on the job before it is sent.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import ReadTimeoutError

from jobman_cli.daemon.common import LAUNCH_FAILED, LAUNCHED, MISSED, RETRYING
from jobman_cli.launchers.ec2 import run_instances_error
from jobman_cli.model import JobStatus, ReasonCode
from test_capacity_ladder import rung_token, world, zones  # noqa: F401  (fixtures: one setup for both ladder files)
from test_daemon import T0, World, _claim_as_dead_daemon, aws_error, ec2, aws_env  # noqa: F401  (fixtures)

MESSAGES = {
    "InsufficientFreeAddressesInSubnet": "There are not enough free addresses in subnet '{s}' to satisfy the "
                                         "requested number of instances.",
    "VcpuLimitExceeded": "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the "
                         "instance bucket that the specified instance type belongs to.",
    "InstanceLimitExceeded": "You have requested more instances (21) than your current instance limit of 20 allows "
                             "for the specified instance type.",
    "InsufficientInstanceCapacity": "We currently do not have sufficient {t} capacity in the Availability Zone "
                                    "you requested.",
}
QUOTAS = ("VcpuLimitExceeded", "InstanceLimitExceeded")


def token_of(launch_token: str, index: int) -> str:
    return rung_token(launch_token, index)


class Answers:
    """A ``before`` hook: answer each rung (type, subnet, market) with the code ``decide`` gives (None:
    let it launch), and record, for each send, the rung and the rung index stored on the job then."""

    def __init__(self, world, decide) -> None:
        self.world = world
        self.decide = decide
        self.sent: list[tuple[str, str | None, str]] = []
        self.stored: list[tuple[int, str]] = []  # (job.rung in the store when sent, ClientToken sent)

    def __call__(self, job) -> None:
        rung = (job.instance_type, job.subnet_ids[0] if job.subnet_ids else None, job.capacity)
        self.sent.append(rung)
        self.stored.append((self.world.get(job.id).rung, job.launch_token))
        code = self.decide(rung)
        if code:
            message = MESSAGES[code].format(s=rung[1], t=rung[0])
            raise aws_error(code, message, 500 if code == "InsufficientInstanceCapacity" else 400, job)

    def check_stored_before_sent(self, launch_token: str) -> None:
        """Every send carried the token of the rung stored on the job at that moment."""
        assert self.stored and all(token == token_of(launch_token, rung) for rung, token in self.stored), self.stored


def test_no_free_address_in_a_subnet_skips_that_subnet_s_other_rungs(world, zones):
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", subnet_ids=[a, b])
    answers = Answers(world, lambda r: {(("m5.large", a)): "InsufficientFreeAddressesInSubnet",
                                        ("m5.large", b): "InsufficientInstanceCapacity"}.get(r[:2]))
    world.launcher.before = answers

    report = world.tick(T0 + timedelta(minutes=1))

    assert report.job_ids(LAUNCHED) == [job.id] and report.job_ids(RETRYING) == []
    # m4.large in subnet a (rung 3) is never sent: subnet a has no address for any type.
    assert answers.sent == [("m5.large", a, "on-demand"), ("m5.large", b, "on-demand"), ("m4.large", b, "on-demand")]
    after = world.get(job.id)
    assert after.status is JobStatus.RUNNING and after.attempts == 1 and after.rung == 3
    assert [t for _, _, t in world.launcher.launches] == [token_of(after.launch_token, i) for i in (0, 1, 3)]
    answers.check_stored_before_sent(after.launch_token)
    (instance,) = world.instances()
    assert (instance["InstanceType"], instance["SubnetId"]) == ("m4.large", b)
    assert any("rung 2 of 4" in line and "skipping 1 rung" in line and f"no free address in {a}" in line
               for line in world.lines), world.lines


@pytest.mark.parametrize("code", QUOTAS)
def test_a_quota_skips_the_rest_of_its_market_and_tries_the_other_market(world, code):
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="c5.large,c4.large", capacity="spot-then-on-demand")
    answers = Answers(world, lambda r: code if r[2] == "spot" else None)
    world.launcher.before = answers

    assert world.tick(T0 + timedelta(minutes=1)).job_ids(LAUNCHED) == [job.id]

    # c4.large on spot (rung 2) is skipped: the quota is the market's, not the type's.
    assert answers.sent == [("c5.large", None, "spot"), ("c5.large", None, "on-demand")]
    after = world.get(job.id)
    assert after.placement["market"] == "on-demand" and after.placement["instance-type"] == "c5.large"
    assert [t for _, _, t in world.launcher.launches] == [token_of(after.launch_token, i) for i in (0, 2)]
    answers.check_stored_before_sent(after.launch_token)
    (instance,) = world.instances()
    assert instance.get("InstanceLifecycle") is None
    assert any("skipping 1 rung (an account quota of the spot market)" in line for line in world.lines)


@pytest.mark.parametrize("code", QUOTAS)
def test_a_quota_with_no_other_market_is_a_failed_launch_bounded_by_max_attempts(world, code):
    """Only quotas refused the pass: as before the ladder climbed on them, each pass is a failed
    launch (back-off, a new attempt), and max_attempts (3) ends it with the last AWS error."""
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", start_deadline="2h")
    answers = Answers(world, lambda r: code)
    world.launcher.before = answers
    at = T0 + timedelta(minutes=1)
    for attempt in (1, 2):
        assert world.tick(at).job_ids(RETRYING) == [job.id]
        current = world.get(job.id)
        assert current.status is JobStatus.SCHEDULED and current.launch_failures == attempt
        at = current.not_before
    assert world.tick(at).job_ids(LAUNCH_FAILED) == [job.id]
    final = world.get(job.id)
    assert final.reason_code is ReasonCode.LAUNCH_FAILED and final.attempts == 3
    assert final.reason.startswith("launch error after 3 attempts: 1 of 2 rungs of the launch ladder refused and "
                                   f"the other 1 skipped (ruled out by {code}); last: {code}: "), final.reason
    assert MESSAGES[code][:40] in final.reason
    assert answers.sent == [("m5.large", None, "on-demand")] * 3  # m4.large: never sent, same quota
    assert world.instances() == []


def test_a_single_rung_quota_refusal_reads_as_before(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.before = Answers(world, lambda r: "VcpuLimitExceeded")
    world.tick(T0 + timedelta(minutes=1))
    current = world.get(job.id)
    assert current.reason == f"launch attempt 1 failed: VcpuLimitExceeded: {MESSAGES['VcpuLimitExceeded']}"


def test_capacity_then_a_quota_is_retried_until_the_start_deadline_naming_the_last_error(world):
    """Spot refused for capacity, on-demand for the vCPU quota: capacity comes back, so the pass is
    a capacity pass (not limited by max_attempts 3) until the start deadline; the job's reason
    names the last AWS error."""
    job = world.schedule(T0 + timedelta(minutes=1), capacity="spot-then-on-demand", start_deadline="10m")
    answers = Answers(world, lambda r: "InsufficientInstanceCapacity" if r[2] == "spot" else "VcpuLimitExceeded")
    world.launcher.before = answers
    at = T0 + timedelta(minutes=1)
    passes = 0
    while True:
        report = world.tick(at)
        current = world.get(job.id)
        if current.status is JobStatus.FAILED:
            break
        passes += 1
        assert report.job_ids(RETRYING) == [job.id] and current.launch_failures == 0
        at = current.not_before
        assert passes < 20
    assert passes > 3
    assert current.reason_code is ReasonCode.MISSED_START_DEADLINE and report.job_ids(MISSED) == [job.id]
    assert current.reason.endswith(f"last: VcpuLimitExceeded: {MESSAGES['VcpuLimitExceeded']}"), current.reason
    assert "all 2 rungs of the launch ladder refused" in current.reason


def test_no_address_in_any_subnet_is_a_failed_launch_naming_the_last_subnet(world, zones):
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", subnet_ids=[a, b])
    answers = Answers(world, lambda r: "InsufficientFreeAddressesInSubnet")
    world.launcher.before = answers
    assert world.tick(T0 + timedelta(minutes=1)).job_ids(RETRYING) == [job.id]
    assert answers.sent == [("m5.large", a, "on-demand"), ("m5.large", b, "on-demand")]
    current = world.get(job.id)
    assert current.launch_failures == 1
    assert "2 of 4 rungs of the launch ladder refused and the other 2 skipped" in current.reason
    assert current.reason.endswith(MESSAGES["InsufficientFreeAddressesInSubnet"].format(s=b))


def test_a_lost_answer_on_the_rung_a_skip_led_to_is_found_by_tag(world, zones):
    """After a skip (rung 1 -> rung 3), a lost answer pins the attempt to rung 3: found by tag, one
    instance, never a second send."""
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", subnet_ids=[a, b],
                         capacity="spot-then-on-demand")
    answers = Answers(world, lambda r: "VcpuLimitExceeded" if r[2] == "spot" else None)
    world.launcher.before = answers
    lost: list[str] = []

    def lose(j, instance_id):
        if not lost:
            lost.append(instance_id)
            raise run_instances_error(ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
                                      j, j.launch_token)

    world.launcher.after = lose
    world.tick(T0 + timedelta(minutes=1))
    after = world.get(job.id)
    assert after.status is JobStatus.RUNNING and after.instance_id == lost[0] and len(world.instances()) == 1
    assert answers.sent == [("m5.large", a, "spot"), ("m5.large", a, "on-demand")]
    assert [t for _, _, t in world.launcher.launches] == [token_of(after.launch_token, i) for i in (0, 4)]
    answers.check_stored_before_sent(after.launch_token)


def test_a_take_over_resumes_at_the_rung_a_skip_stored(world, zones):
    """A daemon that died after storing the rung a skip chose (rung 4: rung 3 was skipped): the
    next daemon looks the attempt up, then sends that rung, with its token, first: never the
    rungs before it again."""
    a, b = zones["us-east-1a"], zones["us-east-1b"]
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", subnet_ids=[a, b])
    at = T0 + timedelta(minutes=1)
    claimed = _claim_as_dead_daemon(world, job, at)
    world.store.update(job.id, lambda cur: cur.at_rung(3, at))  # what Launch stores before sending rung 4
    answers = Answers(world, lambda r: None)
    world.launcher.before = answers
    world.tick(at + timedelta(seconds=5))
    after = world.get(job.id)
    assert after.status is JobStatus.RUNNING and answers.sent == [("m4.large", b, "on-demand")]
    assert [t for _, _, t in world.launcher.launches] == [token_of(claimed.launch_token, 3)]
