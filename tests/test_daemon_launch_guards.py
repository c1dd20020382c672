"""The daemon's launch path where AWS answers something that must *not* end a job.

Same world as :mod:`test_daemon` (moto's in-process EC2, a TinyDB file, a fixed clock that a
launch's pauses move): the faults come from a launcher double that raises what the EC2 adapter
raises for the matching botocore error (through the adapter's own mapping).

* a request refused for this host's clock (off by more than AWS's ~5 minutes): nothing started, so
  no attempt is burnt and no job fails; the attempt is sent again with a capped back-off, one line
  says the clock looks wrong;
* a non-retryable refusal of a resend after an unknown outcome: the first send may have started the
  instance, so one more lookup decides (never a failure without one);
* a lookup of a take-over that fails (throttled DescribeInstances): the job is looked up again
  later, never crashed into ``launch-failed``; and a crash of a running job's task never fails it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import ClientError

from jobman_cli.daemon.common import ADOPTED, ERROR, LAUNCH_FAILED, LAUNCHED, MISSED, REAPED, RETRYING
from jobman_cli.errors import LaunchError
from jobman_cli.launchers.base import LaunchThrottled
from jobman_cli.launchers.ec2_errors import LaunchClockSkew, run_instances_error, to_launch_error
from jobman_cli.model import JobStatus, ReasonCode
from jobman_cli.service import launch_token_for
from test_daemon import T0, _claim_as_dead_daemon, aws_env, aws_error, ec2, lost, world  # noqa: F401  (fixtures)

CLOCK_LINE = "this host's clock looks wrong"

#: What AWS answers a request signed more than ~5 minutes off its clock (code, message, HTTP status).
SKEWED = {
    "RequestExpired": ("RequestExpired", "Request has expired.", 400),
    "AuthFailure": ("AuthFailure", "Signature expired: 20310304T045000Z is now earlier than 20310304T050100Z "
                    "(20310304T050600Z - 5 min.)", 401),
    "AuthFailure not yet current": ("AuthFailure", "Signature not yet current: 20310304T052000Z is still later "
                                    "than 20310304T051100Z (20310304T050600Z + 5 min.)", 401),
    "RequestTimeTooSkewed": ("RequestTimeTooSkewed", "The difference between the request time and the current "
                             "time is too large.", 403),
    "RequestInTheFuture": ("RequestInTheFuture", "Request is not yet valid.", 400),
    "InvalidSignatureException": ("InvalidSignatureException", "Signature expired: 20310304T045000Z is now "
                                  "earlier than 20310304T050100Z (20310304T050600Z - 5 min.)", 400),
}


def client_error(code: str, message: str, status: int, operation: str = "RunInstances") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


# ---------------------------------------------------------------------- 1. this host's clock is off
@pytest.mark.parametrize("name", list(SKEWED))
def test_a_request_refused_for_the_hosts_clock_means_nothing_started_try_again(name):
    code, message, status = SKEWED[name]
    launch = run_instances_error(client_error(code, message, status), None, "token")  # type: ignore[arg-type]
    lookup = to_launch_error(client_error(code, message, status, "DescribeInstances"))
    for exc in (launch, lookup):
        assert isinstance(exc, LaunchClockSkew) and isinstance(exc, LaunchThrottled), exc
        assert exc.retryable and exc.code == code and getattr(exc, "clock_skew", False)
        assert str(exc) == f"{code}: {message}"


@pytest.mark.parametrize("code,message,status", [
    ("AuthFailure", "AWS was not able to validate the provided access credentials", 401),
    ("AuthFailure", "The security token included in the request is expired", 401),  # credentials, not the clock
    ("InvalidSignatureException", "The request signature we calculated does not match the signature you "
                                  "provided.", 400),
    ("UnauthorizedOperation", "You are not authorized to perform this operation.", 403),
])
def test_other_authentication_failures_are_not_the_clock(code, message, status):
    exc = run_instances_error(client_error(code, message, status), None, "token")  # type: ignore[arg-type]
    assert type(exc) is LaunchError and not exc.retryable and not getattr(exc, "clock_skew", False)


@pytest.mark.parametrize("name", ["RequestExpired", "AuthFailure"])
def test_a_wrong_host_clock_never_burns_an_attempt_or_fails_the_job(world, name):
    """AWS refuses this host's clock 7 times in a row (more than max_attempts, 3): the same attempt
    is sent again after a back-off doubling from 1 s to at most 30 s; the job never goes back to
    ``scheduled`` nor fails, and launches once at attempt 1 when the clock is right."""
    code, message, status = SKEWED[name]
    job = world.schedule(T0 + timedelta(minutes=1))
    refusals = {"left": 7}

    def before(j):
        if refusals["left"]:
            refusals["left"] -= 1
            raise aws_error(code, message, status, j)

    world.launcher.before = before
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.attempts == 1, world.lines
    assert report.job_ids(LAUNCHED) == [job.id]
    assert report.of(RETRYING) == [] and report.of(LAUNCH_FAILED) == [] and report.of(ERROR) == []
    assert world.launcher.launches == [(job.id, 1, launch_token_for(world.store.store_id, job.id, 1))] * 8
    assert len(world.instances()) == 1
    assert world.pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # capped, and no pacing wait on top
    (line,) = [line for line in world.lines if CLOCK_LINE in line]
    assert f"{code}: {message}" in line
    assert len([line for line in world.lines if "accepts this host's clock again" in line]) == 1


def test_a_wrong_host_clock_is_logged_once_for_all_jobs(world):
    """Three jobs refused for the clock, each at least 4 times, before AWS accepts it again: one
    line says the clock looks wrong (not one per job or per refusal), one that it is right again."""
    import time

    jobs = [world.schedule(T0 + timedelta(minutes=1)) for _ in range(3)]
    refused = {j.id: 0 for j in jobs}

    def before(j):
        with world.launcher.lock:
            if min(refused.values()) < 4:
                refused[j.id] += 1
                raise aws_error(*SKEWED["RequestExpired"], j)

    world.launcher.before = before
    world.daemon.launch.pause = lambda seconds: (time.sleep(0.005), world._pause(seconds))[1]  # let the others in
    report = world.tick(T0 + timedelta(minutes=1))
    assert report.job_ids(LAUNCHED) == sorted(j.id for j in jobs), world.lines
    assert report.of(RETRYING) == [] and report.of(LAUNCH_FAILED) == []
    assert all(world.get(j.id).attempts == 1 for j in jobs) and len(world.instances()) == 3
    assert len([line for line in world.lines if CLOCK_LINE in line]) == 1, world.lines
    assert len([line for line in world.lines if "accepts this host's clock again" in line]) == 1


def test_a_wrong_host_clock_past_the_start_deadline_fails_the_job_as_missed_only(world):
    job = world.schedule(T0 + timedelta(minutes=1), start_deadline="3m")
    world.launcher.before = lambda j: (_ for _ in ()).throw(aws_error(*SKEWED["RequestExpired"], j))
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    assert report.job_ids(MISSED) == [job.id] and report.of(LAUNCH_FAILED) == [], world.lines
    assert final.reason_code is ReasonCode.MISSED_START_DEADLINE and final.attempts == 1
    assert "RequestExpired: Request has expired." in final.reason
    assert world.instances() == [] and len(world.launcher.launches) <= 12  # 1+2+4+...+30+30: not hammered
    assert len([line for line in world.lines if CLOCK_LINE in line]) == 1


def test_a_daemon_stopping_while_the_clock_is_wrong_gives_the_unsent_claim_back(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    world.launcher.before = lambda j: (_ for _ in ()).throw(aws_error(*SKEWED["RequestExpired"], j))
    world.daemon.launch.pause = lambda seconds: (world.daemon.stop(), False)[1]
    report = world.tick(T0 + timedelta(minutes=1))
    assert world.get(job.id).status is JobStatus.SCHEDULED and report.of(LAUNCH_FAILED) == []


# ---------------------------------------------------------------------- 2. unknown outcome, then a refusal
def _first_send_launches_but_its_answer_is_lost(world, refusal):
    """Send 1: EC2 launched the instance, the answer was lost. Send 2: refused with ``refusal``.
    The first lookup misses the instance (tag lookups lag on real AWS)."""
    sends = {"n": 0}

    def before(j):
        sends["n"] += 1
        if sends["n"] == 2:
            raise refusal(j)

    def after(j, instance_id):
        if sends["n"] == 1:
            raise lost("read timeout", j)

    world.launcher.before, world.launcher.after = before, after
    return sends


def _lookups(world, job_id, script):
    """Replace the launcher's lookups of ``job_id`` by ``script`` (a list of 'miss', 'fail', 'real')."""
    real_find = world.launcher.inner.find_instances
    seen: list[str] = []

    def find_instances(store_id, **kw):
        if kw.get("job_id") == job_id:
            how = script[len(seen)] if len(seen) < len(script) else "real"
            seen.append(how)
            if how == "miss":
                return []
            if how == "fail":
                raise LaunchError("RequestLimitExceeded: Request limit exceeded.", retryable=True,
                                  code="RequestLimitExceeded")
        return real_find(store_id, **{k: v for k, v in kw.items() if k != "client_token"})

    world.launcher.find_instances = find_instances
    return seen


@pytest.mark.parametrize("refusal", [
    ("UnauthorizedOperation", "You are not authorized to perform this operation.", 403),
    ("InvalidParameterValue", "Invalid value for parameter.", 400),
    SKEWED["RequestExpired"],  # the reviewer's case: the host clock stepped between the two sends
])
def test_a_refused_resend_after_an_unknown_outcome_looks_once_more_and_records_the_instance(world, refusal):
    job = world.schedule(T0 + timedelta(minutes=1))
    _first_send_launches_but_its_answer_is_lost(world, lambda j: aws_error(*refusal, j))
    seen = _lookups(world, job.id, ["miss"])
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    (instance,) = world.instances()
    assert final.status is JobStatus.RUNNING and final.attempts == 1, (final.reason, world.lines)
    assert final.instance_id == instance["InstanceId"] and report.job_ids(LAUNCHED) == [job.id]
    assert report.of(LAUNCH_FAILED) == [] and len(seen) == 2  # the one that missed, then the one that found it
    assert world.tick(T0 + timedelta(minutes=2), reconcile=True).of(REAPED) == []


def test_a_refused_resend_after_an_unknown_outcome_whose_lookup_fails_stays_launching(world):
    job = world.schedule(T0 + timedelta(minutes=1))
    _first_send_launches_but_its_answer_is_lost(world, lambda j: aws_error("UnauthorizedOperation", "no", 403, j))
    seen = _lookups(world, job.id, ["miss", "fail"])
    report = world.tick(T0 + timedelta(minutes=1), reconcile=False)
    assert world.get(job.id).status is JobStatus.LAUNCHING and report.of(LAUNCH_FAILED) == [], world.lines
    assert any("cannot be looked up; left in launching" in line for line in world.lines)
    # Deferred for the reconcile interval (30 s), then taken over: the lookup finds and adopts it.
    at = world.clock.now()
    assert world.tick(at + timedelta(seconds=20), reconcile=False).outcomes == ()
    report = world.tick(at + timedelta(seconds=31), reconcile=False)
    (instance,) = world.instances()
    final = world.get(job.id)
    assert report.job_ids(ADOPTED) == [job.id] and final.status is JobStatus.RUNNING
    assert final.instance_id == instance["InstanceId"] and final.attempts == 1 and len(seen) == 3
    assert len(world.launcher.launches) == 2  # no resend without a lookup


def test_a_refused_resend_after_an_unknown_outcome_fails_only_when_the_lookup_finds_nothing(world):
    """The lost first send never reached EC2 (nothing exists): then the refusal does fail the job,
    after the lookup that says so."""
    job = world.schedule(T0 + timedelta(minutes=1))
    sends = {"n": 0}

    def before(j):
        sends["n"] += 1
        raise lost("read timeout", j) if sends["n"] == 1 else aws_error("UnauthorizedOperation", "no", 403, j)

    world.launcher.before = before
    seen = _lookups(world, job.id, [])
    report = world.tick(T0 + timedelta(minutes=1))
    final = world.get(job.id)
    assert report.job_ids(LAUNCH_FAILED) == [job.id] and final.reason_code is ReasonCode.LAUNCH_FAILED
    assert "UnauthorizedOperation" in final.reason and len(seen) == 2 and world.instances() == []


# ---------------------------------------------------------------------- 3. take-over lookups, crashes
@pytest.mark.parametrize("reported_running", [False, True])
def test_a_take_over_whose_lookup_is_throttled_looks_again_later_and_never_fails(world, reported_running):
    """DescribeInstances throttled (or a 5xx) four times in a row, more than max_attempts: the
    take-over leaves the job as it is and looks again after the reconcile interval; it is never
    failed, its instance never reaped, and it is adopted once a lookup works."""
    due = T0 + timedelta(minutes=1)
    job = world.schedule(due)
    claimed = _claim_as_dead_daemon(world, job, due)
    iid = world.launcher.inner.launch(claimed, user_data="#!/bin/bash\n", store_id=world.store.store_id)
    if reported_running:
        world.service.report(job.id, "running")
    status = JobStatus.RUNNING if reported_running else JobStatus.LAUNCHING
    seen = _lookups(world, job.id, ["fail"] * 4)
    for seconds in (5, 40, 80, 120):
        report = world.tick(due + timedelta(seconds=seconds), reconcile=False)
        assert report.of(ERROR) == [] and report.of(LAUNCH_FAILED) == [], world.lines
        assert world.get(job.id).status is status
    assert len(seen) == 4 and world.launcher.launches == []
    assert any(f"job {job.id}: cannot look attempt 1 up (RequestLimitExceeded" in line for line in world.lines)
    report = world.tick(due + timedelta(seconds=160))
    final = world.get(job.id)
    assert report.job_ids(ADOPTED) == [job.id] and report.of(REAPED) == []
    assert final.status is JobStatus.RUNNING and final.instance_id == iid and world.state(iid) == "running"


def test_a_running_job_whose_handling_keeps_crashing_is_never_failed(world):
    """A bug (not an AWS error) in the take-over of a job that reported running: it cools down and
    is looked at again, for ever; it is running, so it is never failed as an internal error."""
    due = T0 + timedelta(minutes=1)
    job = world.schedule(due)
    _claim_as_dead_daemon(world, job, due)
    world.service.report(job.id, "running")

    def find_instances(store_id, **kw):
        raise KeyError("nope")

    world.launcher.find_instances = find_instances
    at = due
    for _ in range(5):  # more than max_attempts (3)
        assert world.tick(at, reconcile=False).job_ids(ERROR) == [job.id]
        at += timedelta(minutes=15)
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.reason_code is None, final.reason
    assert any("not failing it (running, no instance recorded yet)" in line for line in world.lines)


def test_the_pool_never_fails_a_job_that_has_an_instance(world):
    """``LaunchPool._crashed`` after ``max_attempts`` crashes: a job with an instance is kept."""
    from jobman_cli.daemon.common import Collector

    due = T0 + timedelta(minutes=1)
    job = world.schedule(due)
    world.store.update(job.id, lambda cur: cur.claimed(due, "tok").launched("i-0123456789abcdef0", due))
    pool = world.daemon.pool

    def task(j, now, out):
        raise RuntimeError("boom")

    at = due
    for _ in range(5):
        assert pool.reserve(job.id, at)
        pool.submit(task, world.get(job.id), at, Collector()).result()
        at += timedelta(hours=1)
    final = world.get(job.id)
    assert final.status is JobStatus.RUNNING and final.instance_id == "i-0123456789abcdef0"
    assert any("not failing it (running, instance i-0123456789abcdef0)" in line for line in world.lines)
