"""A daemon killed mid-ladder (review finding 3): the rung being sent is stored before it is sent,
and a take-over resumes there (tag lookup first, then that rung's ``ClientToken``), never at rung 0.

Driven by ``Daemon.tick`` at fixed times against moto's in-process EC2 and a real TinyDB file, as
tests/test_capacity_ladder.py. moto ignores ``ClientToken``; the wrapper below honours it the way
EC2 does (a resend of a token returns the instance that token already started) and makes the tag
lookup lag once (EC2's eventual consistency, as tests/test_daemon.py's MismatchingEC2 models it).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobman_cli.capacity import ladder, narrowed
from jobman_cli.daemon.common import LAUNCHED
from jobman_cli.model import JobStatus, as_stored
from test_daemon import T0, Counting, World, _claim_as_dead_daemon, aws_error, ec2, aws_env  # noqa: F401


@pytest.fixture
def world(tmp_path, ec2):  # noqa: F811
    w = World(tmp_path, ec2)
    yield w
    w.close()


class TokenHonouringLaggyEC2(Counting):
    """EC2's idempotency (same ClientToken -> same instance) and a tag lookup that misses ``tag_misses`` times."""

    def __init__(self, inner, tag_misses: int) -> None:
        super().__init__(inner)
        self.by_token: dict[str, str] = {}
        self.tag_misses = tag_misses

    def launch(self, job, *, user_data, store_id):
        self.launches.append((job.id, job.attempts, job.launch_token))
        if self.before:
            self.before(job)
        if job.launch_token in self.by_token:
            return self.by_token[job.launch_token]
        instance_id = self.inner.launch(job, user_data=user_data, store_id=store_id)
        self.by_token[job.launch_token] = instance_id
        return instance_id

    def find_instances(self, store_id, **kw):
        found = self.inner.find_instances(store_id, **{k: v for k, v in kw.items() if k != "client_token"})
        if self.tag_misses > 0:
            self.tag_misses -= 1
            return []
        return found


def test_the_rung_is_stored_before_it_is_sent(world):
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large,c5.large")
    stored_when_sent: list[tuple[str, int]] = []

    def before(j):
        stored_when_sent.append((j.instance_type, world.get(job.id).rung))
        if j.instance_type != "c5.large":
            raise aws_error("InsufficientInstanceCapacity", f"no {j.instance_type}", 500, j)

    world.launcher.before = before
    assert world.tick(T0 + timedelta(minutes=1)).job_ids(LAUNCHED) == [job.id]
    assert stored_when_sent == [("m5.large", 0), ("m4.large", 1), ("c5.large", 2)]
    assert world.get(job.id).rung == 2


def test_a_new_attempt_starts_at_rung_0_again(world):
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large", max_interruptions=2,
                         capacity="spot")
    refused = []

    def before(j):
        if j.instance_type == "m5.large" and not refused:
            refused.append(j.launch_token)
            raise aws_error("InsufficientInstanceCapacity", "no m5.large", 500, j)

    world.launcher.before = before
    world.tick(T0 + timedelta(minutes=1))
    assert world.get(job.id).rung == 1
    world.service.report(job.id, "failed", None, "interrupted", "notice")  # back to scheduled
    world.launcher.launches.clear()
    world.tick(T0 + timedelta(hours=1))
    after = world.get(job.id)
    assert after.attempts == 2 and after.status is JobStatus.RUNNING and after.rung == 0
    assert [t for _, _, t in world.launcher.launches] == [after.launch_token]  # rung 0's token


def test_a_take_over_resumes_at_the_stored_rung_not_rung_0(world):
    """The dead daemon: rung 1 refused, rung 2 stored and sent (it launched), then killed before
    recording it. The take-over's tag lookup lags; it resends rung 2 with rung 2's token, so EC2
    answers with the same instance: one instance for the attempt (rung 0's token would start a second)."""
    job = world.schedule(T0 + timedelta(minutes=1), instance_type="m5.large,m4.large")
    at = T0 + timedelta(minutes=1)
    claimed = _claim_as_dead_daemon(world, job, at)
    claimed = world.store.update(job.id, lambda cur: cur.at_rung(1, at))  # what Launch stores before rung 2
    laggy = TokenHonouringLaggyEC2(world.launcher.inner, tag_misses=1)
    rungs = ladder(claimed, "t3.micro")
    first = laggy.launch(narrowed(claimed, rungs[1]), user_data="#!/bin/bash\n# dead", store_id=world.store.store_id)
    laggy.launches.clear()

    daemon = world.make_daemon(launcher=laggy)
    try:
        world.clock.set(at + timedelta(seconds=5))
        daemon.tick(world.clock.now())
    finally:
        daemon.close()

    assert laggy.launches == [(job.id, 1, f"{claimed.launch_token}-r1")]  # rung 2's token, not rung 0's
    ours = world.instances(**{"jobman:job-id": str(job.id), "jobman:attempt": "1"})
    assert [i["InstanceId"] for i in ours] == [first]
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.instance_id == first
    assert final.placement["instance-type"] == "m4.large"


def test_the_rung_is_private_bookkeeping_that_round_trips(world):
    from jobman_cli.model import API_KEYS, job_to_api, job_to_record

    job = world.schedule(T0 + timedelta(minutes=1))
    claimed = _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    moved = claimed.at_rung(3, T0)
    assert as_stored(moved).rung == 3 and job_to_record(moved)["rung"] == 3 and job_to_record(claimed)["rung"] is None
    assert "rung" not in job_to_api(moved) and "rung" not in API_KEYS
    assert moved.retry_later("x", T0, T0).claimed(T0, "tok").rung == 0
