"""The daemon's tick at fixed times, against moto's in-process EC2 and a real TinyDB file.

Every test drives :meth:`Daemon.tick` with a :class:`FixedClock`; nothing sleeps (a launch's pauses
move that clock). Faults that moto cannot produce (throttling, capacity, lost answers) come from a
launcher wrapper that raises exactly what the EC2 adapter raises for the matching botocore error (it
goes through the adapter's own mapping, :func:`run_instances_error`), before RunInstances reached
moto or after moto created the instance.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import moto  # noqa: F401  (must precede boto3 client creation)

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from jobman_cli.clock import FixedClock
from jobman_cli.daemon import CLAIMED_BY, Daemon, format_duration
from jobman_cli.daemon.main import DaemonLock, check_public_url, run_daemon
from jobman_cli.errors import ConfigError, InvalidInput, LaunchError
from jobman_cli.launchers.base import EC2Settings, LaunchOutcomeUnknown, LaunchThrottled, LaunchTokenInUse
from jobman_cli.launchers.ec2 import EC2Launcher, run_instances_error
from jobman_cli.launchers.userdata import render_user_data
from jobman_cli.model import Job, JobStatus, ReasonCode, format_time, hash_callback_token
from jobman_cli.daemon.common import (ADOPTED, CANCELLED_DURING_LAUNCH, ERROR, LAUNCH_FAILED, LAUNCHED, MISSED,
                                      REAPED, RETRYING, TIMED_OUT, VANISHED, Collector)
from jobman_cli.service import JobService, ScheduleRequest, launch_token_for
from jobman_cli.settings import DaemonSettings, daemon_settings
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
T0 = datetime(2031, 3, 4, 5, 6, 0, tzinfo=UTC)
PUBLIC = "http://10.1.2.3:8321"


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def aws_env(isolated_aws, tmp_path):
    isolated_aws.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    return isolated_aws


@pytest.fixture
def ec2(aws_env, mock_ec2):
    return mock_ec2


class Counting:
    """A launcher wrapper: counts RunInstances calls and lets a test hook into each launch."""

    def __init__(self, inner, before: Callable[[Job], None] | None = None,
                 after: Callable[[Job, str], None] | None = None) -> None:
        self.inner = inner
        self.before = before
        self.after = after
        self.launches: list[tuple[int, int, str]] = []
        self.lock = threading.Lock()

    def launch(self, job, *, user_data, store_id):
        with self.lock:
            self.launches.append((job.id, job.attempts, job.launch_token))
        if self.before:
            self.before(job)
        instance_id = self.inner.launch(job, user_data=user_data, store_id=store_id)
        if self.after:
            self.after(job, instance_id)
        return instance_id

    def __getattr__(self, name):
        return getattr(self.inner, name)


def aws_error(code: str, message: str, status: int = 400, job: Job | None = None) -> LaunchError:
    """The LaunchError the EC2 adapter raises for this RunInstances error (through its own mapping)."""
    exc = ClientError({"Error": {"Code": code, "Message": message},
                       "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")
    return run_instances_error(exc, job or Job(id=1, title="", date_time=T0, docker_image="x", env_variables={},
                                               status=JobStatus.LAUNCHING, created_at=T0), "token")


def raise_(exc: BaseException) -> None:
    raise exc


class World:
    def __init__(self, tmp_path, ec2, **overrides) -> None:
        self.ec2 = ec2
        self.clock = FixedClock(T0)
        self.store = TinyDBStore(tmp_path / "jobs.json")
        self.store_path = tmp_path / "jobs.json"
        self.service = JobService(self.store, self.clock)
        self.launcher = Counting(EC2Launcher(EC2Settings()))
        defaults = dict(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, launch_workers=4,
                        max_attempts=3, backoff_base=15.0, backoff_max=600.0, reconcile_interval=30.0,
                        timeout_grace=600.0)
        defaults.update(overrides)
        self.settings = DaemonSettings(**defaults)
        self.lines: list[str] = []
        self.daemon = self.make_daemon()

    def make_daemon(self, **kw) -> Daemon:
        kw.setdefault("exclusive", True)
        kw.setdefault("log", self.lines.append)
        daemon = Daemon(self.store, kw.pop("launcher", self.launcher), self.settings, clock=self.clock,
                        service=self.service, **kw)
        if isinstance(self.clock, FixedClock):  # a launch's pauses move the test's clock instead
            from jobman_cli.daemon.throttle import TokenBucket

            self.pauses: list[float] = []
            daemon.launch.pause = self._pause
            daemon.launch.bucket = TokenBucket(self.settings.launch_burst, self.settings.launch_rate,
                                               monotonic=lambda: self.clock.now().timestamp())
        return daemon

    def _pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.clock.advance(seconds)
        return True

    def schedule(self, at: datetime, **fields) -> Job:
        request = ScheduleRequest(image=fields.pop("image", "alpine:3.20"), when=format_time(at), **fields)
        job, _ = self.service.schedule(request)
        return job

    def tick(self, at: datetime, **kw):
        self.clock.set(at)
        return self.daemon.tick(at, **kw)

    def get(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def store_text(self) -> str:
        return self.store_path.read_text()

    def instances(self, **filters) -> list[dict]:
        flt = [{"Name": f"tag:{k}", "Values": [v]} for k, v in filters.items()]
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=flt)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def state(self, instance_id: str) -> str:
        found = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return found["State"]["Name"]

    def close(self) -> None:
        self.daemon.close()
        self.store.close()


@pytest.fixture
def world(tmp_path, ec2):
    w = World(tmp_path, ec2)
    yield w
    w.close()


def tags_of(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


# ---------------------------------------------------------------------- launching
def test_launches_at_due_time_and_not_before(world):
    job = world.schedule(T0 + timedelta(minutes=10))
    report = world.tick(T0 + timedelta(minutes=10) - timedelta(seconds=1))
    assert report.job_ids(LAUNCHED) == []
    assert world.instances() == [] and world.get(job.id).status is JobStatus.SCHEDULED

    due = T0 + timedelta(minutes=10)
    report = world.tick(due)
    assert report.job_ids(LAUNCHED) == [job.id]
    after = world.get(job.id)
    (instance,) = world.instances()
    assert after.status is JobStatus.RUNNING
    assert after.instance_id == instance["InstanceId"] == report.of(LAUNCHED)[0].instance_id
    assert after.attempts == 1 and after.launched_at == due
    assert any(f"job {job.id} scheduled -> launching (attempt 1)" in line for line in world.lines)
    assert any(f"job {job.id} launching -> running (instance {after.instance_id}" in line for line in world.lines)
    # A second pass launches nothing more.
    assert world.tick(due + timedelta(seconds=1)).job_ids(LAUNCHED) == []
    assert len(world.instances()) == 1


def test_instance_tags_shutdown_behaviour_and_user_data(world):
    job = world.schedule(T0 + timedelta(minutes=1), env={"GREETING": "it's $HOME; `x`"}, title="nightly")
    world.tick(T0 + timedelta(minutes=1))
    (instance,) = world.instances()
    tags = tags_of(instance)
    assert tags["jobman:job-id"] == str(job.id)
    assert tags["jobman:attempt"] == "1"
    assert tags["jobman:store"] == world.store.store_id
    iid = instance["InstanceId"]
    behaviour = world.ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    raw = world.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(raw).decode()
    assert f"{PUBLIC}/jobMan/v1.1/jobs/{job.id}/callback" in script
    assert "alpine:3.20" in script
    # Exactly what the renderer makes for the stored job: the daemon adds nothing of its own.
    # Exactly what the renderer makes for the stored job and this attempt's token, whose hash alone
    # is stored: the daemon adds nothing of its own, and the store cannot forge a callback.
    token = re.search(r"^callback_token=(\S+)$", script, re.M).group(1)
    stored = world.get(job.id)
    assert stored.callback_hashes == (hash_callback_token(token),)
    assert token not in world.store_text()
    assert script == render_user_data(stored, callback_url=f"{PUBLIC}/jobMan/v1.1/jobs/{job.id}/callback",
                                      callback_token=token)


def test_job_is_claimed_before_run_instances(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    seen: list[Job] = []
    world.launcher.before = lambda j: seen.append(world.store.get(j.id))
    world.tick(T0 + timedelta(minutes=1))
    (during,) = seen
    assert during.status is JobStatus.LAUNCHING and during.attempts == 1
    assert during.launch_token == launch_token_for(world.store.store_id, job.id, 1)
    assert during.extra[CLAIMED_BY] == world.daemon.daemon_id
    assert world.launcher.launches == [(job.id, 1, during.launch_token)]


def test_burst_is_launched_in_parallel_once_each(world):
    jobs = [world.schedule(T0 + timedelta(minutes=1)) for _ in range(12)]
    active = []
    peak = []
    lock = threading.Lock()
    gate = threading.Barrier(4, timeout=10)

    def before(job):
        with lock:
            active.append(job.id)
            peak.append(len(active))
        if len(peak) <= 4:
            gate.wait()  # the first four launches are only released once all four are in flight
        with lock:
            active.remove(job.id)

    world.launcher.before = before
    report = world.tick(T0 + timedelta(minutes=1))
    assert report.job_ids(LAUNCHED) == sorted(j.id for j in jobs)
    assert max(peak) == 4  # settings.launch_workers
    per_job = {}
    for instance in world.instances():
        per_job.setdefault(tags_of(instance)["jobman:job-id"], []).append(instance["InstanceId"])
    assert sorted(per_job) == sorted(str(j.id) for j in jobs)
    assert all(len(ids) == 1 for ids in per_job.values())


# ---------------------------------------------------------------------- launch errors
@pytest.mark.parametrize("code,message,status", [
    # (Capacity refusals of the launch ladder keep trying until the start deadline instead:
    # tests/test_capacity_ladder.py.)
    ("InstanceLimitExceeded", "Your quota allows for 0 more running instance(s). You requested at least 1", 400),
    ("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of 32 allows.", 400),
])
def test_errors_where_nothing_started_back_off_then_fail_with_the_aws_message(world, code, message, status):
    """Capacity and quotas: EC2 started nothing, so each is a failed attempt (a new attempt, a new
    ClientToken, after a backoff), and the job fails after max_attempts."""
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.before = lambda j: raise_(aws_error(code, message, status, j))
    start = T0 + timedelta(minutes=1)

    report = world.tick(start)
    assert report.job_ids(RETRYING) == [job.id]
    after = world.get(job.id)
    assert after.status is JobStatus.SCHEDULED and after.attempts == 1
    assert after.not_before == start + timedelta(seconds=15)  # backoff_base * 2**0
    assert message in after.reason

    assert world.tick(start + timedelta(seconds=14)).job_ids(RETRYING) == []  # still backing off
    report = world.tick(start + timedelta(seconds=15))
    assert report.job_ids(RETRYING) == [job.id]
    after = world.get(job.id)
    assert after.attempts == 2 and after.not_before == start + timedelta(seconds=15 + 30)

    report = world.tick(start + timedelta(seconds=45))
    assert report.job_ids(LAUNCH_FAILED) == [job.id]
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED and final.attempts == 3  # max_attempts
    assert final.reason == f"launch error after 3 attempts: {code}: {message}"
    assert final.reason_code is ReasonCode.LAUNCH_FAILED
    assert [a for _, a, _ in world.launcher.launches] == [1, 2, 3]
    assert len({t for _, _, t in world.launcher.launches}) == 3  # nothing started: each attempt its own token
    assert world.instances() == []


def test_backoff_is_capped(tmp_path, ec2):
    w = World(tmp_path, ec2, max_attempts=10, backoff_base=100.0, backoff_max=250.0)
    try:
        job = w.schedule(T0 + timedelta(minutes=1))
        w.launcher.before = lambda j: raise_(aws_error("InsufficientInstanceCapacity", "none left", 500, j))
        at = T0 + timedelta(minutes=1)
        gaps = []
        for _ in range(4):
            w.tick(at)
            nxt = w.get(job.id).not_before
            gaps.append((nxt - at).total_seconds())
            at = nxt
        assert gaps == [100.0, 200.0, 250.0, 250.0]
    finally:
        w.close()


def test_non_retryable_error_fails_at_once_with_the_aws_message(tmp_path, ec2):
    w = World(tmp_path, ec2)
    w.launcher = Counting(EC2Launcher(EC2Settings(subnet_id="subnet-doesnotexist")))
    w.daemon = w.make_daemon()
    try:
        job = w.schedule(T0 + timedelta(minutes=1))
        report = w.tick(T0 + timedelta(minutes=1))
        assert report.job_ids(LAUNCH_FAILED) == [job.id]
        final = w.get(job.id)
        assert final.status is JobStatus.FAILED and final.attempts == 1
        assert final.reason.startswith("launch error: InvalidSubnetID.NotFound: ")
        assert final.reason_code is ReasonCode.LAUNCH_FAILED
        assert "subnet-doesnotexist" in final.reason
        assert len(w.launcher.launches) == 1
    finally:
        w.close()


# ---------------------------------------------------------------------- ambiguous launch failures
AMBIGUOUS = {
    "read timeout": lambda: ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
    "connection closed": lambda: ConnectionClosedError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
    "500 InternalError": lambda: ClientError({"Error": {"Code": "InternalError", "Message": "An internal error"},
                                              "ResponseMetadata": {"HTTPStatusCode": 500}}, "RunInstances"),
    "503 Unavailable": lambda: ClientError({"Error": {"Code": "Unavailable", "Message": "Service unavailable"},
                                            "ResponseMetadata": {"HTTPStatusCode": 503}}, "RunInstances"),
}


def lost(name: str, job: Job) -> LaunchError:
    """What the EC2 adapter raises when RunInstances fails this way (its own mapping)."""
    return run_instances_error(AMBIGUOUS[name](), job, job.launch_token)


@pytest.mark.parametrize("fault", sorted(AMBIGUOUS))
def test_a_lost_answer_after_ec2_started_the_instance_is_found_not_launched_again(world, fault):
    """The fault lands once the request reached EC2: moto created the instance, then the answer
    was lost. The same attempt is looked up by tag before anything is sent again: one instance,
    one ClientToken, attempt 1, and the job runs on that instance."""
    job = world.schedule(T0 + timedelta(minutes=1))
    faults = {"left": 1}

    def after(j, instance_id):
        if faults["left"]:
            faults["left"] -= 1
            raise lost(fault, j)

    world.launcher.after = after
    report = world.tick(T0 + timedelta(minutes=1))
    assert isinstance(lost(fault, world.get(job.id)), LaunchOutcomeUnknown)
    (instance,) = world.instances()
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.attempts == 1, world.lines
    assert final.instance_id == instance["InstanceId"] and report.job_ids(LAUNCHED) == [job.id]
    assert world.launcher.launches == [(job.id, 1, launch_token_for(world.store.store_id, job.id, 1))]
    assert report.of(RETRYING) == [] and report.of(LAUNCH_FAILED) == []
    assert any(f"job {job.id}: found instance {final.instance_id}" in line for line in world.lines)
    assert world.pauses == [1.0]  # one backoff before the lookup
    # The next reconciliation has nothing to reap: there is no second instance.
    assert world.tick(T0 + timedelta(minutes=2), reconcile=True).of(REAPED) == []


def test_a_lost_request_is_sent_again_with_the_same_token_and_user_data(world):
    """The same fault before the request reached EC2: the lookup finds nothing, so the same attempt
    is sent again, with the same ClientToken and byte-identical user-data (one callback token)."""
    job = world.schedule(T0 + timedelta(minutes=1))
    sent: list[str] = []
    inner_launch = world.launcher.inner.launch

    def recording_launch(j, *, user_data, store_id):
        sent.append(user_data)
        if len(sent) <= 2:
            raise lost("read timeout", j)
        return inner_launch(j, user_data=user_data, store_id=store_id)

    world.launcher.inner = type("Inner", (), {"launch": staticmethod(recording_launch),
                                              "__getattr__": lambda self, n: getattr(EC2Launcher(EC2Settings()), n)})()
    world.daemon = world.make_daemon()
    world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    (instance,) = world.instances()
    assert final.status is JobStatus.RUNNING and final.attempts == 1 and final.instance_id == instance["InstanceId"]
    token = launch_token_for(world.store.store_id, job.id, 1)
    assert world.launcher.launches == [(job.id, 1, token)] * 3
    assert len(sent) == 3 and len(set(sent)) == 1  # the same user-data, so the same callback token
    assert len(world.get(job.id).callback_hashes) == 1
    assert world.pauses == [1.0, 2.0]  # backoff doubles


def test_unknown_outcomes_until_the_start_deadline_fail_the_job_as_missed(world):
    job = world.schedule(T0 + timedelta(minutes=1), start_deadline="2m")
    world.launcher.before = lambda j: raise_(lost("connection closed", j))
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    assert report.job_ids(MISSED) == [job.id] and final.status is JobStatus.FAILED, world.lines
    assert final.reason_code is ReasonCode.MISSED_START_DEADLINE and final.attempts == 1
    assert "ConnectionClosedError" in final.reason
    assert {t for _, _, t in world.launcher.launches} == {launch_token_for(world.store.store_id, job.id, 1)}
    assert world.instances() == [] and max(world.pauses) <= 30.0
    assert sum(world.pauses) > 60  # it kept trying (1+2+4+...) until the deadline


def test_after_an_unknown_outcome_a_failed_lookup_never_leads_to_a_resend(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    failures = {"launch": 1, "lookup": 2}
    real_find = world.launcher.inner.find_instances

    def before(j):
        if failures["launch"]:
            failures["launch"] -= 1
            raise lost("read timeout", j)

    def find_instances(*args, **kw):
        if failures["lookup"]:
            failures["lookup"] -= 1
            raise LaunchError("RequestLimitExceeded: too many describes", retryable=True, code="RequestLimitExceeded")
        return real_find(*args, **kw)

    world.launcher.before = before
    world.launcher.find_instances = find_instances
    world.tick(T0 + timedelta(minutes=1))
    assert len(world.launcher.launches) == 2  # the first, then one resend after a successful lookup
    assert world.pauses == [1.0, 2.0, 4.0]
    assert world.get(job.id).status is JobStatus.RUNNING and len(world.instances()) == 1


def test_after_an_unknown_outcome_a_capacity_error_keeps_the_attempt(world):
    """Once an attempt may own an instance, a retryable 'nothing started' error does not give the
    attempt up (a new attempt would be a new token and, if the first send did launch, a second
    instance): the same attempt is looked up and sent again."""
    job = world.schedule(T0 + timedelta(minutes=1))
    errors = [lambda j: lost("500 InternalError", j),
              lambda j: aws_error("InsufficientInstanceCapacity", "no capacity", 500, j)]

    def before(j):
        if errors:
            raise errors.pop(0)(j)

    world.launcher.before = before
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.attempts == 1 and report.of(RETRYING) == []
    assert {t for _, _, t in world.launcher.launches} == {launch_token_for(world.store.store_id, job.id, 1)}


def test_a_cancel_during_unknown_outcomes_stops_the_resends(world):
    job = world.schedule(T0 + timedelta(minutes=1))

    def before(j):
        if len(world.launcher.launches) == 2:
            world.service.cancel(j.id)
        raise lost("read timeout", j)

    world.launcher.before = before
    world.tick(T0 + timedelta(minutes=1))
    assert world.get(job.id).status is JobStatus.CANCELLED
    assert len(world.launcher.launches) == 2 and world.instances() == []


def test_a_daemon_stopping_during_unknown_outcomes_leaves_the_job_launching(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.before = lambda j: raise_(lost("read timeout", j))
    world.daemon.launch.pause = lambda seconds: (world.daemon.stop(), False)[1]
    world.tick(T0 + timedelta(minutes=1))
    after = world.get(job.id)
    assert after.status is JobStatus.LAUNCHING and after.attempts == 1
    assert any("left in launching" in line for line in world.lines)
    assert len(world.launcher.launches) == 1


def test_a_daemon_stopping_while_pacing_gives_unsent_claims_back(world):
    """A fresh claim waiting for a RunInstances token when the daemon stops was never accepted by
    EC2: it goes back to ``scheduled`` (nothing half launched). One that had an unknown outcome, or
    a take-over of another daemon's attempt, stays ``launching`` for a lookup."""
    from jobman_cli.daemon.throttle import TokenBucket

    jobs = [world.schedule(T0 + timedelta(minutes=1)) for _ in range(2)]
    world.daemon.launch.bucket = TokenBucket(1, 0.001, monotonic=lambda: 0.0)  # one launch, then a long wait
    world.daemon.launch.pause = lambda seconds: (world.daemon.stop(), False)[1]
    report = world.tick(T0 + timedelta(minutes=1))
    statuses = sorted(world.get(j.id).status.value for j in jobs)
    assert statuses == ["running", "scheduled"], world.lines
    assert len(report.of(RETRYING)) == 1 and len(world.instances()) == 1 and len(world.launcher.launches) == 1
    (waiting,) = [world.get(j.id) for j in jobs if world.get(j.id).status is JobStatus.SCHEDULED]
    assert waiting.attempts == 1 and waiting.not_before == T0 + timedelta(minutes=1)
    assert "the daemon stopped while pacing RunInstances" in waiting.reason


def test_a_take_over_stopping_while_pacing_stays_launching(world):
    from jobman_cli.daemon.throttle import TokenBucket

    job = world.schedule(T0 + timedelta(minutes=1))
    _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    world.daemon.launch.bucket = TokenBucket(1, 0.001, monotonic=lambda: 0.0)
    world.daemon.launch.bucket.reserve()
    world.daemon.launch.pause = lambda seconds: (world.daemon.stop(), False)[1]
    world.tick(T0 + timedelta(minutes=1, seconds=5))
    assert world.get(job.id).status is JobStatus.LAUNCHING and world.launcher.launches == []
    assert any("left in launching" in line for line in world.lines)


# ---------------------------------------------------------------------- take-over: IdempotentParameterMismatch
class MismatchingEC2(Counting):
    """EC2 as it answers a take-over: the dead daemon's RunInstances DID launch the attempt, the
    take-over sends the same ClientToken with other user-data (another callback token), so EC2
    answers IdempotentParameterMismatch. Tag lookups miss the instance ``tag_misses`` times
    (eventual consistency); ``by_token`` says whether the client-token filter finds it."""

    def __init__(self, inner, tag_misses: int, by_token: bool) -> None:
        super().__init__(inner)
        self.tag_misses, self.by_token = tag_misses, by_token
        self.lookups: list[str | None] = []

    def launch(self, job, *, user_data, store_id):
        with self.lock:
            self.launches.append((job.id, job.attempts, job.launch_token))
        raise aws_error("IdempotentParameterMismatch", "The client token you have provided is associated with a "
                        "resource that is already deleted or has different parameters.", 400, job)

    def find_instances(self, store_id, **kw):
        self.lookups.append(kw.get("client_token"))
        found = self.inner.find_instances(store_id, **{k: v for k, v in kw.items() if k != "client_token"})
        if self.tag_misses > 0:
            self.tag_misses -= 1
            return found if self.by_token and kw.get("client_token") else []
        return found


@pytest.mark.parametrize("tag_misses,by_token", [(1, False), (3, False), (99, True)])
def test_a_take_over_answered_idempotent_parameter_mismatch_adopts_the_existing_instance(world, tag_misses, by_token):
    job = world.schedule(T0 + timedelta(minutes=1))
    claimed = _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    iid = world.launcher.inner.launch(claimed, user_data="#!/bin/bash\n# the dead daemon's", store_id=world.store.store_id)
    ec2 = MismatchingEC2(world.launcher.inner, tag_misses, by_token)
    daemon = world.make_daemon(launcher=ec2)
    try:
        world.clock.set(T0 + timedelta(minutes=1, seconds=5))
        report = daemon.tick(world.clock.now())
    finally:
        daemon.close()
    assert isinstance(aws_error("IdempotentParameterMismatch", "x"), LaunchTokenInUse)
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.instance_id == iid and final.attempts == 1, world.lines
    assert report.job_ids(ADOPTED) == [job.id] and report.of(LAUNCH_FAILED) == []
    assert ec2.launches == [(job.id, 1, claimed.launch_token)] and len(world.instances()) == 1
    assert claimed.launch_token in ec2.lookups  # the client-token filter was asked too
    assert any("IdempotentParameterMismatch); adopting it" in line for line in world.lines)


def test_idempotent_parameter_mismatch_never_fails_the_job_even_when_nothing_is_found_yet(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    ec2 = MismatchingEC2(world.launcher.inner, tag_misses=10**6, by_token=False)
    daemon = world.make_daemon(launcher=ec2)
    try:
        world.clock.set(T0 + timedelta(minutes=1, seconds=5))
        report = daemon.tick(world.clock.now(), reconcile=False)
        assert world.get(job.id).status is JobStatus.LAUNCHING and report.of(LAUNCH_FAILED) == []
        assert len(ec2.lookups) == 1 + 5  # the take-over's lookup, then five more after the answer
        assert world.pauses == [1.0, 2.0, 4.0, 8.0]  # the clock is now 15 s later
        # Deferred for the reconcile interval (30 s): the next passes leave it alone until then ...
        assert daemon.tick(world.clock.now() + timedelta(seconds=29), reconcile=False).outcomes == ()
        assert len(ec2.launches) == 1, world.lines
        # ... then take it over again: a lookup first, and still never a failure.
        world.clock.advance(31)
        report = daemon.tick(world.clock.now(), reconcile=False)
        assert len(ec2.launches) == 2 and report.of(LAUNCH_FAILED) == []
        assert world.get(job.id).status is JobStatus.LAUNCHING
    finally:
        daemon.close()


# ---------------------------------------------------------------------- throttling
def test_request_limit_exceeded_never_burns_an_attempt_or_fails_the_job(world):
    """EC2's throttling refuses before anything starts: the same attempt is sent again at the
    request rate, as often as it takes; no backoff into ``scheduled``, never ``launch-failed``."""
    job = world.schedule(T0 + timedelta(minutes=1))
    refusals = {"left": 7}  # more than max_attempts (3)

    def before(j):
        if refusals["left"]:
            refusals["left"] -= 1
            raise aws_error("RequestLimitExceeded", "Request limit exceeded.", 503, j)

    world.launcher.before = before
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    assert isinstance(aws_error("RequestLimitExceeded", "x", 503), LaunchThrottled)
    assert final.status is JobStatus.RUNNING and final.attempts == 1, world.lines
    assert report.of(RETRYING) == [] and report.of(LAUNCH_FAILED) == []
    assert world.launcher.launches == [(job.id, 1, launch_token_for(world.store.store_id, job.id, 1))] * 8
    assert len(world.instances()) == 1
    assert len([line for line in world.lines if "throttled" in line]) == 1  # logged once per job
    assert all(p == pytest.approx(0.5) for p in world.pauses)  # each resend waits for a token (2/s)


class BucketEC2(Counting):
    """EC2's RunInstances token bucket in front of moto: beyond it, RequestLimitExceeded."""

    def __init__(self, inner, capacity: float, refill: float) -> None:
        from jobman_cli.daemon.throttle import TokenBucket

        super().__init__(inner)
        self.bucket = TokenBucket(capacity, refill)
        self.refused = 0

    def launch(self, job, *, user_data, store_id):
        with self.lock:
            self.launches.append((job.id, job.attempts, job.launch_token))
            if self.bucket.available < 1:
                self.refused += 1
                raise aws_error("RequestLimitExceeded", "Request limit exceeded.", 503, job)
            self.bucket.reserve()
        return self.inner.launch(job, user_data=user_data, store_id=store_id)


@pytest.mark.parametrize("burst,rate", [(4, 2.0), (1000, 2.0)])
def test_a_burst_larger_than_ec2s_bucket_is_paced_and_none_fails(tmp_path, ec2, burst, rate):
    """12 jobs due at once against an EC2 bucket of 4 refilled at 2/s. With the daemon's bucket
    set the same, it paces itself; with the default burst (1000: larger than this EC2's), the
    refusals that come back slow every worker down. Either way all 12 launch once, none fails,
    and it takes at least the bucket's own minimum, (12 - 4) / 2 s. (A refill of 10/s made the
    default case flaky on a loaded machine: slow claims spread the calls enough that EC2's bucket
    refilled in time and never refused.)"""
    import time as real_time

    from jobman_cli.clock import SystemClock

    w = World(tmp_path, ec2, launch_burst=burst, launch_rate=rate)
    w.clock = SystemClock()
    w.service = JobService(w.store, w.clock)
    w.launcher = BucketEC2(w.launcher.inner, capacity=4, refill=2.0)
    w.daemon = w.make_daemon()
    try:
        jobs = [w.service.schedule(ScheduleRequest(image="alpine:3.20", when="now"))[0] for _ in range(12)]
        started = real_time.monotonic()
        report = w.daemon.tick(wait_launches=True, reconcile=False)
        elapsed = real_time.monotonic() - started
        assert report.job_ids(LAUNCHED) == sorted(j.id for j in jobs), w.lines
        assert all(w.get(j.id).attempts == 1 for j in jobs)
        assert report.of(LAUNCH_FAILED) == [] and report.of(RETRYING) == []
        assert len(w.instances()) == 12 and elapsed >= (12 - 4) / 2.0 * 0.9
        if burst == 4:
            assert w.launcher.refused <= 1, w.lines  # paced: EC2 (almost) never had to refuse
        else:
            assert w.launcher.refused >= 1
    finally:
        w.close()


def test_token_bucket_reserves_in_order_and_drains_on_refusal():
    from jobman_cli.daemon.throttle import TokenBucket

    now = [100.0]
    bucket = TokenBucket(3, 2.0, monotonic=lambda: now[0])
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    now[0] += 1.0  # two tokens back: the two waiting callers are now due
    assert bucket.reserve() == pytest.approx(0.5)
    now[0] += 10.0
    assert bucket.available == 3.0  # never more than the capacity
    bucket.drain()
    assert bucket.available == 0.0 and bucket.reserve() == 0.5
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)


# ---------------------------------------------------------------------- deadlines
def test_missed_start_deadline_fails_and_never_launches_late(world):
    due = T0 + timedelta(minutes=1)
    late = world.schedule(due, start_deadline="1h")
    edge = world.schedule(due + timedelta(seconds=1), start_deadline="1h")
    # The daemon comes back 1h0m1s after the first job's time: one second too late for it,
    # exactly on the deadline of the second.
    back = due + timedelta(hours=1, seconds=1)
    report = world.tick(back)
    assert report.job_ids(MISSED) == [late.id]
    failed = world.get(late.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 0
    assert failed.reason == f"missed start deadline (due {format_time(due)}, 1h1s late)"
    assert failed.reason_code is ReasonCode.MISSED_START_DEADLINE
    assert world.get(edge.id).status is JobStatus.RUNNING
    assert [tags_of(i)["jobman:job-id"] for i in world.instances()] == [str(edge.id)]


def test_format_duration():
    assert [format_duration(s) for s in (0, 45, 60, 3661, 90061)] == ["0s", "45s", "1m", "1h1m1s", "1d1h1m1s"]


def test_timeout_terminates_the_instance_and_fails_the_job(world):
    job = world.schedule(T0 + timedelta(minutes=1), timeout="60s")
    launched = T0 + timedelta(minutes=1)
    world.tick(launched)
    iid = world.get(job.id).instance_id
    limit = launched + timedelta(seconds=60 + 600)  # timeout + timeout_grace
    assert world.tick(limit, reconcile=True).job_ids(TIMED_OUT) == []
    assert world.get(job.id).status is JobStatus.RUNNING
    report = world.tick(limit + timedelta(seconds=1), reconcile=True)
    assert report.job_ids(TIMED_OUT) == [job.id]
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED and final.reason.startswith("timed out after 60s")
    assert final.reason_code is ReasonCode.TIMED_OUT
    assert world.state(iid) == "terminated"


# ---------------------------------------------------------------------- reconciliation
def test_vanished_instance_fails_its_job(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    iid = world.get(job.id).instance_id
    world.ec2.terminate_instances(InstanceIds=[iid])  # behind the daemon's back
    report = world.tick(T0 + timedelta(minutes=2), reconcile=True)
    assert report.job_ids(VANISHED) == [job.id]
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED
    assert final.reason == "instance vanished without reporting (state: terminated)"
    assert final.reason_code is ReasonCode.INSTANCE_VANISHED


def test_stopped_instance_counts_as_vanished_and_is_terminated(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    iid = world.get(job.id).instance_id
    world.ec2.stop_instances(InstanceIds=[iid])
    report = world.tick(T0 + timedelta(minutes=2), reconcile=True)
    assert report.job_ids(VANISHED) == [job.id]
    assert world.get(job.id).reason == "instance vanished without reporting (state: stopped)"
    assert world.state(iid) == "terminated"


def test_a_job_that_reported_before_its_instance_ended_is_not_failed(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    iid = world.get(job.id).instance_id
    world.service.report(job.id, "finished", 0)
    world.ec2.terminate_instances(InstanceIds=[iid])  # it powered itself off
    report = world.tick(T0 + timedelta(minutes=2), reconcile=True)
    assert report.job_ids(VANISHED) == [] and report.of(REAPED) == []
    assert world.get(job.id).status is JobStatus.FINISHED


def test_reaper_ends_instances_of_finished_and_unknown_jobs_only(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    running = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    finished_iid = world.get(job.id).instance_id
    running_iid = world.get(running.id).instance_id
    world.service.report(job.id, "finished", 0)  # moto never powers it off: it is still running

    image = boto3.client("ssm").get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]

    def run(tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return world.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                       TagSpecifications=spec)["Instances"][0]["InstanceId"]

    store = world.store.store_id
    unknown = run({"jobman:store": store, "jobman:job-id": "999", "jobman:attempt": "1"})
    no_job = run({"jobman:store": store})
    old_attempt = run({"jobman:store": store, "jobman:job-id": str(running.id), "jobman:attempt": "0"})
    duplicate = run({"jobman:store": store, "jobman:job-id": str(running.id), "jobman:attempt": "1"})
    other_store = run({"jobman:store": "another-store", "jobman:job-id": str(job.id), "jobman:attempt": "1"})
    untagged = run({"Name": "someone-else"})

    report = world.tick(T0 + timedelta(minutes=2), reconcile=True)
    reaped = {o.instance_id for o in report.of(REAPED)}
    assert reaped == {finished_iid, unknown, no_job, old_attempt, duplicate}
    for iid in reaped:
        assert world.state(iid) == "terminated"
    for iid in (running_iid, other_store, untagged):
        assert world.state(iid) == "running"
    assert world.get(running.id).status is JobStatus.RUNNING


def test_reconcile_during_a_launch_in_flight_does_not_reap_it(world):
    """Another daemon (which cannot know what is in flight here) reconciles between RunInstances
    and the recording of its answer: the instance of a job in ``launching`` is left alone."""
    job = world.schedule(T0 + timedelta(minutes=1))
    other = world.make_daemon(exclusive=False, daemon_id="other-daemon")
    reaped: list = []

    def after(j, iid):
        out = Collector()
        other.reconciler.step(world.clock.now(), out)
        reaped.extend(out.report(True).of(REAPED))

    world.launcher.after = after
    world.tick(T0 + timedelta(minutes=1))
    assert reaped == []
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and world.state(final.instance_id) == "running"
    other.close()


def test_cancel_of_a_launched_job_terminates_its_instance(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    iid = world.get(job.id).instance_id
    cancelled = world.service.cancel(job.id, terminate=lambda i: world.launcher.terminate([i]))
    assert cancelled.status is JobStatus.CANCELLED
    assert world.state(iid) == "terminated"
    # Nothing left for the reconciler to do.
    report = world.tick(T0 + timedelta(minutes=2), reconcile=True)
    assert report.of(REAPED) == [] and report.of(VANISHED) == []


def test_cancel_without_terminating_is_caught_by_the_reaper(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.tick(T0 + timedelta(minutes=1))
    iid = world.get(job.id).instance_id
    world.service.cancel(job.id)  # e.g. the CLI could not reach AWS
    report = world.tick(T0 + timedelta(minutes=2), reconcile=True)
    assert [o.instance_id for o in report.of(REAPED)] == [iid]
    assert world.state(iid) == "terminated"


def test_job_cancelled_during_its_launch_gets_its_new_instance_terminated(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.after = lambda j, iid: world.service.cancel(j.id)
    report = world.tick(T0 + timedelta(minutes=1))
    assert report.job_ids(CANCELLED_DURING_LAUNCH) == [job.id]
    final = world.get(job.id)
    (instance,) = world.instances()
    assert final.status is JobStatus.CANCELLED and final.instance_id == instance["InstanceId"]
    assert world.state(final.instance_id) == "terminated"


def test_callback_running_before_the_launch_is_recorded(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.after = lambda j, iid: world.service.report(j.id, "running")
    world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    (instance,) = world.instances()
    assert final.status is JobStatus.RUNNING and final.instance_id == instance["InstanceId"]


# ---------------------------------------------------------------------- abandoned launches
def _claim_as_dead_daemon(world, job: Job, at: datetime) -> Job:
    token = launch_token_for(world.store.store_id, job.id, job.attempts + 1)

    def claim(current: Job) -> Job:
        claimed = current.claimed(at, token)
        return dataclasses.replace(claimed, extra={**claimed.extra, CLAIMED_BY: "dead-daemon"})

    return world.store.update(job.id, claim)


def test_abandoned_launch_with_an_instance_is_adopted_without_a_second_run_instances(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    claimed = _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    # The dead daemon got as far as RunInstances, then died before recording the answer.
    iid = world.launcher.inner.launch(claimed, user_data="#!/bin/bash\n", store_id=world.store.store_id)
    report = world.tick(T0 + timedelta(minutes=1, seconds=5))
    assert report.job_ids(ADOPTED) == [job.id]
    assert world.launcher.launches == []  # no RunInstances at all
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.instance_id == iid and final.attempts == 1
    assert len(world.instances()) == 1


def test_abandoned_launch_without_an_instance_is_launched_exactly_once_with_the_same_token(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    claimed = _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    report = world.tick(T0 + timedelta(minutes=1, seconds=5))
    assert report.job_ids(LAUNCHED) == [job.id]
    assert world.launcher.launches == [(job.id, 1, claimed.launch_token)]
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.attempts == 1
    assert final.extra[CLAIMED_BY] == world.daemon.daemon_id
    world.tick(T0 + timedelta(minutes=2), reconcile=True)
    assert len(world.instances()) == 1 and len(world.launcher.launches) == 1


def test_abandoned_launch_past_its_start_deadline_is_failed_not_launched(world):
    due = T0 + timedelta(minutes=1)
    job = world.schedule(due)
    _claim_as_dead_daemon(world, job, due)
    report = world.tick(due + timedelta(hours=2))  # the daemon was down for two hours
    assert report.job_ids(MISSED) == [job.id] and world.launcher.launches == []
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED
    assert final.reason == f"missed start deadline (due {format_time(due)}, 2h late); its launch was interrupted"
    assert final.reason_code is ReasonCode.MISSED_START_DEADLINE


def test_job_that_reported_running_before_its_daemon_died_gets_its_instance_recorded(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    claimed = _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    iid = world.launcher.inner.launch(claimed, user_data="#!/bin/bash\n", store_id=world.store.store_id)
    world.service.report(job.id, "running")  # the instance called back; the daemon never recorded it
    report = world.tick(T0 + timedelta(minutes=1, seconds=5))
    assert report.job_ids(ADOPTED) == [job.id] and world.launcher.launches == []
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.instance_id == iid


def test_running_job_without_any_instance_is_never_relaunched(world):
    job = world.schedule(T0 + timedelta(minutes=1), timeout="60s")
    _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    world.service.report(job.id, "running")  # e.g. an operator's `jobman callback`
    for seconds in (5, 10, 40):
        assert world.tick(T0 + timedelta(minutes=1, seconds=seconds)).of(LAUNCHED) == []
    assert world.launcher.launches == [] and world.get(job.id).status is JobStatus.RUNNING
    # Its timeout still ends it.
    report = world.tick(T0 + timedelta(minutes=1, seconds=60 + 600 + 1), reconcile=True)
    assert report.job_ids(TIMED_OUT) == [job.id]


def test_shared_store_honours_another_daemons_claim_until_its_lease_expires(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    claimed_at = T0 + timedelta(minutes=1)
    _claim_as_dead_daemon(world, job, claimed_at)
    shared = world.make_daemon(exclusive=False, launch_lease=60.0)
    # The lease runs from when this daemon first sees the claim, on its own monotonic clock
    # (lease.py; tests/test_clock_steps.py covers skew and steps).
    world.clock.set(claimed_at)
    assert shared.tick(claimed_at).outcomes == ()
    world.clock.set(claimed_at + timedelta(seconds=59))
    assert shared.tick(claimed_at + timedelta(seconds=59)).outcomes == ()
    assert world.launcher.launches == [] and world.get(job.id).status is JobStatus.LAUNCHING
    world.clock.set(claimed_at + timedelta(seconds=61))
    report = shared.tick(claimed_at + timedelta(seconds=61))
    assert report.job_ids(LAUNCHED) == [job.id]
    assert len(world.launcher.launches) == 1
    shared.close()


# ---------------------------------------------------------------------- robustness
def test_one_jobs_unexpected_error_stops_neither_the_loop_nor_other_jobs(world):
    jobs = [world.schedule(T0 + timedelta(minutes=1)) for _ in range(3)]
    bad = jobs[1].id
    faults = {"left": 1}

    def before(job):
        if job.id == bad and faults["left"]:
            faults["left"] -= 1
            raise RuntimeError("boom")

    world.launcher.before = before
    report = world.tick(T0 + timedelta(minutes=1))
    assert report.job_ids(LAUNCHED) == sorted(j.id for j in jobs if j.id != bad)
    assert report.job_ids(ERROR) == [bad]
    assert world.get(bad).status is JobStatus.LAUNCHING  # left for the abandoned-launch path
    assert any("unexpected error: RuntimeError: boom" in line for line in world.lines)
    # It cools down (backoff_base), then is resolved as abandoned: one launch of the same attempt.
    assert world.tick(T0 + timedelta(minutes=1, seconds=5)).outcomes == ()
    report = world.tick(T0 + timedelta(minutes=1, seconds=15))
    assert report.job_ids(LAUNCHED) == [bad]
    assert world.get(bad).attempts == 1 and len(world.instances()) == 3


def test_a_job_that_keeps_crashing_is_failed_in_the_end(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.before = lambda j: (_ for _ in ()).throw(KeyError("nope"))
    at = T0 + timedelta(minutes=1)
    for _ in range(3):  # max_attempts
        world.tick(at)
        at += timedelta(minutes=5)
    final = world.get(job.id)
    assert final.status is JobStatus.FAILED and final.reason == "internal error: KeyError: 'nope'"
    assert final.reason_code is ReasonCode.LAUNCH_FAILED
    assert world.instances() == []


def test_run_loop_launches_a_job_added_through_the_service_and_stops_on_request(tmp_path, ec2):
    from jobman_cli.clock import SystemClock

    w = World(tmp_path, ec2)
    w.clock = SystemClock()
    w.service = JobService(w.store, w.clock)
    w.daemon = w.make_daemon()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(w.daemon.run()))
    thread.start()
    try:
        job, _ = w.service.schedule(ScheduleRequest(image="alpine:3.20", when="now"))
        for _ in range(400):  # up to 20 s; no timing is asserted
            if w.get(job.id).status is JobStatus.RUNNING:
                break
            threading.Event().wait(0.05)
        assert w.get(job.id).status is JobStatus.RUNNING, w.lines
    finally:
        w.daemon.stop()
        thread.join(30)
    assert result == [0] and not thread.is_alive()
    assert any("ready" in line for line in w.lines)
    w.store.close()


def test_missing_credentials_is_a_config_error(aws_env, tmp_path):
    aws_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC)
    with pytest.raises(ConfigError) as caught:
        run_daemon(settings, EC2Settings())
    assert "no AWS credentials found" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "jobs.json").exists()  # nothing was touched


def test_a_second_daemon_on_the_same_file_is_refused(tmp_path):
    first = DaemonLock(str(tmp_path / "jobs.json"))
    try:
        with pytest.raises(ConfigError, match="another jobman daemon is already running"):
            DaemonLock(str(tmp_path / "jobs.json"))
    finally:
        first.release()
    DaemonLock(str(tmp_path / "jobs.json")).release()  # free again once the first is gone


# ---------------------------------------------------------------------- EC2 settings (factory)
def _config(aws_env, tmp_path, text: str) -> None:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(text)


def test_ec2_settings_defaults(aws_env):
    from jobman_cli.launchers.factory import ec2_settings

    settings = ec2_settings({})
    assert settings == EC2Settings()
    assert settings.instance_type == "t3.micro" and settings.store_tag_key == "jobman:store"


def test_ec2_settings_precedence_flag_then_env_then_config(aws_env, tmp_path):
    from jobman_cli.launchers.factory import ec2_settings

    _config(aws_env, tmp_path, """
[ec2]
region = "eu-west-1"
instance_type = "t3.small"
ami = "ami-config"
subnet_id = "subnet-config"
security_group_ids = ["sg-1", "sg-2"]
iam_instance_profile = "profile-config"
key_name = "key-config"
store_tag_key = "acme:jobman-store"
tags = { team = "data", cost-center = "42" }
""")
    from_config = ec2_settings({})
    assert (from_config.region, from_config.instance_type, from_config.ami, from_config.subnet_id) == (
        "eu-west-1", "t3.small", "ami-config", "subnet-config")
    assert from_config.security_group_ids == ("sg-1", "sg-2")
    assert (from_config.iam_instance_profile, from_config.key_name) == ("profile-config", "key-config")
    assert from_config.store_tag_key == "acme:jobman-store"
    assert dict(from_config.extra_tags) == {"team": "data", "cost-center": "42"}

    aws_env.setenv("AWS_REGION", "us-west-2")
    aws_env.setenv("JOBMAN_INSTANCE_TYPE", "m5.large")
    aws_env.setenv("JOBMAN_SECURITY_GROUP_IDS", "sg-env1, sg-env2")
    aws_env.setenv("JOBMAN_TAGS", "cost-center=7,owner=ops")
    from_env = ec2_settings({})
    assert (from_env.region, from_env.instance_type) == ("us-west-2", "m5.large")
    assert from_env.security_group_ids == ("sg-env1", "sg-env2")
    assert dict(from_env.extra_tags) == {"team": "data", "cost-center": "7", "owner": "ops"}

    flags = {"region": "ap-south-1", "instance_type": "c5.xlarge", "ami": "ami-flag", "subnet_id": "subnet-flag",
             "security_group_ids": ("sg-flag",), "iam_instance_profile": "arn:aws:iam::1:instance-profile/x",
             "key_name": "key-flag", "tags": ("owner=me", "run=nightly=1")}
    from_flags = ec2_settings(flags)
    assert (from_flags.region, from_flags.instance_type, from_flags.ami) == ("ap-south-1", "c5.xlarge", "ami-flag")
    assert from_flags.security_group_ids == ("sg-flag",) and from_flags.key_name == "key-flag"
    assert dict(from_flags.extra_tags) == {"team": "data", "cost-center": "7", "owner": "me", "run": "nightly=1"}


@pytest.mark.parametrize("tag,error,text", [
    ("novalue", "InvalidInput", "--tag: must be KEY=VALUE"),
    ("=x", "InvalidInput", "--tag: tag key must not be empty"),
    ("aws:thing=x", "InvalidInput", "reserved prefix"),
    ("jobman:job-id=1", "ConfigError", "reserved by jobman"),
])
def test_bad_tags_are_refused_with_one_line(aws_env, tag, error, text):
    from jobman_cli.errors import JobmanError
    from jobman_cli.launchers.factory import ec2_settings

    with pytest.raises(JobmanError) as caught:
        ec2_settings({"tags": (tag,)})
    assert type(caught.value).__name__ == error and text in str(caught.value)
    assert caught.value.exit_code == (2 if error == "InvalidInput" else 1)


def test_bad_config_tags_are_a_config_error(aws_env, tmp_path):
    from jobman_cli.launchers.factory import ec2_settings

    _config(aws_env, tmp_path, '[ec2]\ntags = "team=data"\n')
    with pytest.raises(ConfigError, match=r"\[ec2\] tags"):
        ec2_settings({})


def test_launcher_from_environment_uses_env_and_config(aws_env, tmp_path):
    from jobman_cli.launchers.factory import launcher_from_environment

    _config(aws_env, tmp_path, '[ec2]\nstore_tag_key = "acme:store"\n')
    aws_env.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    launcher = launcher_from_environment()
    assert isinstance(launcher, EC2Launcher)
    assert launcher.settings.store_tag_key == "acme:store" and launcher.settings.region == "eu-central-1"


def test_waker_wakes_a_sleeper_once_and_never_blocks_a_setter():
    from jobman_cli.daemon.waker import Waker

    waker = Waker()
    try:
        for _ in range(100_000):  # far more than a pipe holds: set() must never block or raise
            waker.set()
        pending = threading.Thread(target=waker.wait, args=(600,))  # wake-ups are pending: returns
        pending.start()
        pending.join(30)
        assert not pending.is_alive()
        done = threading.Event()
        sleeper = threading.Thread(target=lambda: (waker.wait(600), done.set()))
        sleeper.start()
        threading.Timer(0.05, waker.set).start()
        sleeper.join(30)
        assert done.is_set()
    finally:
        waker.close()
    waker.set()  # after close: harmless


def test_a_lost_stderr_never_fails_the_daemon(world, monkeypatch):
    import io

    from jobman_cli.daemon.common import stderr_log

    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stderr", closed)
    stderr_log("nobody reads this")  # no exception
    job = world.schedule(T0 + timedelta(minutes=1))
    daemon = world.make_daemon(log=None)  # the real stderr logger, on a closed stream
    assert daemon.tick(T0 + timedelta(minutes=1)).job_ids(LAUNCHED) == [job.id]
    daemon.close()


# ---------------------------------------------------------------------- start-up checks (review fixes)
def _settings(tmp_path, **kw) -> DaemonSettings:
    return DaemonSettings(store_location=str(tmp_path / "jobs.json"), **kw)


@pytest.mark.parametrize("kw, text", [
    (dict(), "instances cannot reach 127.0.0.1"),
    (dict(public_url="http://localhost:8321"), "instances cannot reach localhost"),
    (dict(public_url="https://[::1]:8321/"), "instances cannot reach ::1"),
    (dict(public_url="http://127.8.9.10:8321"), "instances cannot reach 127.8.9.10"),
    (dict(public_url="http://0.0.0.0:8321"), "instances cannot reach 0.0.0.0"),
    (dict(listen_host="0.0.0.0"), "required when listening on all interfaces"),
    (dict(public_url="ftp://10.0.0.5/"), "must be an http:// or https:// URL"),
    (dict(public_url="http://10.0.0.5:99999"), "is not a valid URL"),
    (dict(once=True), "required with --once"),
    (dict(serve_api=False), "required with --no-api"),
])
def test_an_unreachable_or_malformed_public_url_is_a_usage_error_before_anything_starts(aws_env, tmp_path, kw, text):
    aws_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(InvalidInput) as caught:
        check_public_url(_settings(tmp_path, **kw), EC2Settings(region="us-east-1"))
    if not kw:  # and run_daemon checks it first, before credentials, the lock or the store
        with pytest.raises(InvalidInput):
            run_daemon(_settings(tmp_path, **kw), EC2Settings(region="us-east-1"))
    message = str(caught.value)
    assert caught.value.exit_code == 2 and message.startswith("--public-url: ") and text in message, message
    assert "\n" not in message
    assert not (tmp_path / "jobs.json").exists() and not (tmp_path / "jobs.json.daemon.lock").exists()


@pytest.mark.parametrize("how", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "settings"])
def test_loopback_callbacks_are_allowed_with_an_emulator_endpoint_and_say_so(aws_env, tmp_path, how):
    ec2 = EC2Settings(endpoint_url="http://127.0.0.1:5000" if how == "settings" else None)
    if how != "settings":
        aws_env.setenv(how, "http://127.0.0.1:5000")
    for kw in (dict(), dict(once=True), dict(serve_api=False)):
        note = check_public_url(_settings(tmp_path, **kw), ec2)
        assert note is not None and "loopback address 127.0.0.1" in note and "emulator endpoint" in note


def test_a_reachable_public_url_passes_silently(aws_env, tmp_path):
    for url in ("http://10.0.0.5:8321", "https://jobman.example.com/", "http://[2001:db8::5]:8321"):
        assert check_public_url(_settings(tmp_path, public_url=url, once=True), EC2Settings()) is None
    assert check_public_url(_settings(tmp_path, listen_host="10.0.0.5"), EC2Settings()) is None


@pytest.mark.parametrize("flag, value", [("listen", "nonsense"), ("launch_workers", 0), ("max_attempts", 0),
                                         ("reconcile_interval", 0.0), ("launch_lease", 0.5), ("launch_burst", 0),
                                         ("launch_rate", 0.0), ("launch_rate", -1)])
def test_bad_daemon_flags_are_usage_errors_naming_the_flag(aws_env, flag, value):
    with pytest.raises(InvalidInput) as caught:
        daemon_settings("/tmp/x.json", {flag: value})
    assert caught.value.exit_code == 2 and str(caught.value).startswith("--" + flag.replace("_", "-") + ": ")


def test_launch_bucket_settings_by_flag_env_and_config(aws_env, tmp_path):
    defaults = daemon_settings("/tmp/x.json", {})
    assert (defaults.launch_burst, defaults.launch_rate) == (1000, 2.0)  # EC2's own RunInstances bucket
    _config(aws_env, tmp_path, "[daemon]\nlaunch_burst = 50\nlaunch_rate = 5\n")
    assert (daemon_settings("/tmp/x.json", {}).launch_burst, daemon_settings("/tmp/x.json", {}).launch_rate) == (50, 5.0)
    aws_env.setenv("JOBMAN_LAUNCH_RATE", "0.5")
    assert daemon_settings("/tmp/x.json", {}).launch_rate == 0.5
    assert daemon_settings("/tmp/x.json", {"launch_burst": 7}).launch_burst == 7


def test_bad_daemon_env_and_config_values_are_one_line_config_errors(aws_env, tmp_path):
    aws_env.setenv("JOBMAN_LAUNCH_WORKERS", "0")
    with pytest.raises(ConfigError, match=r"^JOBMAN_LAUNCH_WORKERS: must be at least 1"):
        daemon_settings("/tmp/x.json", {})
    aws_env.delenv("JOBMAN_LAUNCH_WORKERS")
    _config(aws_env, tmp_path, "[daemon]\npublic_url = 5\n")
    with pytest.raises(ConfigError) as caught:
        daemon_settings("/tmp/x.json", {})
    assert str(caught.value) == "config file [daemon] public_url: must be a string (got 5)"
    # A flag beats the bad config value, as precedence says.
    assert daemon_settings("/tmp/x.json", {"public_url": "http://10.0.0.5:1"}).public_url == "http://10.0.0.5:1"


def test_the_daemon_lock_creates_a_missing_store_directory_private(tmp_path):
    store = tmp_path / "fresh" / "deeper" / "jobs.json"
    lock = DaemonLock(str(store))
    try:
        assert (tmp_path / "fresh" / "deeper").is_dir()
        assert (tmp_path / "fresh" / "deeper").stat().st_mode & 0o777 == 0o700
        assert lock.path == Path(f"{store}.daemon.lock") and lock.path.exists()
    finally:
        lock.release()


def test_a_symlinked_store_file_shares_the_daemon_lock_of_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "jobs.json"
    target.write_text("")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    first = DaemonLock(str(target))
    try:
        with pytest.raises(ConfigError, match="another jobman daemon is already running"):
            DaemonLock(str(link))
    finally:
        first.release()


# ---------------------------------------------------------------------- shared stores: lease renewal
def test_a_slow_launch_keeps_its_claim_and_is_never_taken_over(tmp_path, ec2):
    """Lease 3 s, a RunInstances that takes 9 s: the launching daemon renews its claim, so the other
    daemon on the same store never takes the launch over, and the attempt gets exactly one instance."""
    from jobman_cli.clock import SystemClock

    w = World(tmp_path, ec2, launch_lease=3.0)
    w.clock = SystemClock()
    w.service = JobService(w.store, w.clock)
    started, release = threading.Event(), threading.Event()

    def slow(job: Job) -> None:
        started.set()
        release.wait(9.0)  # as slow as botocore retrying a call; ends early only if the test fails

    first = w.make_daemon(exclusive=False, launch_lease=3.0, launcher=Counting(w.launcher.inner, before=slow),
                          daemon_id="first")
    second_launcher = Counting(w.launcher.inner)
    second = w.make_daemon(exclusive=False, launch_lease=3.0, launcher=second_launcher, daemon_id="second")
    job, _ = w.service.schedule(ScheduleRequest(image="alpine:3.20", when="now"))
    runner = threading.Thread(target=lambda: first.tick(wait_launches=True, reconcile=False))
    runner.start()
    try:
        assert started.wait(30)
        while runner.is_alive():  # the other daemon looks every 0.1 s for 9 s: 3 leases long
            # (a lease of 3 s, not 1 s: a renewal delayed by a slow fsync on a loaded box is no takeover)
            second.tick(wait_launches=True, reconcile=False)
            if second_launcher.launches or any("launching it again" in line for line in w.lines):
                release.set()  # taken over: fail fast
                break
            threading.Event().wait(0.1)
        runner.join(30)
    finally:
        release.set()
        runner.join(30)
        first.close()
        second.close()
    assert second_launcher.launches == [], w.lines
    final = w.get(job.id)
    instances = w.instances(**{"jobman:job-id": str(job.id)})
    assert final.status is JobStatus.RUNNING and final.extra[CLAIMED_BY] == "first", w.lines
    assert [i["InstanceId"] for i in instances] == [final.instance_id]
    w.store.close()


def test_renewal_only_touches_this_daemons_own_launching_attempt(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    claimed = _claim_as_dead_daemon(world, job, T0 + timedelta(minutes=1))
    shared = world.make_daemon(exclusive=False, launch_lease=3.0, daemon_id="me")
    try:
        shared.leases.hold(claimed)  # as if it held the claim (it does not)
        world.clock.set(T0 + timedelta(minutes=1, seconds=2))
        assert shared.renew_claims() == 0  # claimed by "dead-daemon": never bumped by us
        assert world.get(job.id).version == claimed.version
        assert job.id not in shared.leases._claims
    finally:
        shared.close()


# ---------------------------------------------------------------------- changes by other processes
def test_changes_made_by_other_processes_are_logged_once_and_own_changes_are_not(world):
    jobs = [world.schedule(T0 + timedelta(minutes=1)) for _ in range(3)]
    world.daemon.observe()  # the first look only remembers
    world.tick(T0 + timedelta(minutes=1))
    world.daemon.observe()
    assert not [line for line in world.lines if "by another process" in line]  # its own launches
    other = JobService(world.store, world.clock)  # another process: not the daemon's service
    other.cancel(jobs[0].id)
    world.store.update(jobs[1].id, lambda cur: cur.failed("reported to another daemon", world.clock.now(),
                                                          ReasonCode.EXITED))
    world.daemon.observe()
    logged = [line.split(" ", 1)[1] for line in world.lines if "by another process" in line]
    assert sorted(logged) == [f"job {jobs[0].id} running -> cancelled (by another process)",
                              f"job {jobs[1].id} running -> failed (by another process)"]
    world.daemon.observe()
    assert len([line for line in world.lines if "by another process" in line]) == 2  # logged once
