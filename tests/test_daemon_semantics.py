"""Daemon semantics a hostile review found wrong (findings F15, F4, F10a), in process.

* F15, DESIGN.md section 5 "exactly one line per state change": a repeated cancel and a ``running``
  callback on a job the daemon already marked running change no state, so they log nothing and
  tell no listener (the loop's wake-up, the notifier's and costing's pokes); a cancel is worded
  by who cancelled ("cancelled via the API", "cancelled: replaced by the run of ..."), never
  "(reported)"; a no-op of the daemon's own after another process's change does not swallow that
  change's "(by another process)" line.
* F4: a front end's idempotency key in the materializer's namespace (``schedule-<id>-<occurrence>``)
  is refused with a usage error, the store untouched, and the schedule's run happens.
* F10a: a ``--max-cost`` that cannot be *checked* (the Price List throttled, denied) is
  ``MaxCostUnchecked``, not ``MaxCostExceeded``; a transient one is checked again with the usual
  back-off without counting against ``max_attempts`` (no ``RunInstances`` was sent) until the start
  deadline, then ``missed-start-deadline``; a final one is ``launch-failed`` at once.

The daemon runs with a fixed clock against moto's in-process EC2 and a real TinyDB file
(``test_daemon.World``); the API's service writes through the daemon's recording store, as
``jobman daemon`` wires it (daemon/main.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cost_fixtures import instance_answer, instance_params, stubbed_pricing
from test_daemon import T0, World, aws_env, ec2  # noqa: F401  (fixtures)

from jobman_cli.cost.cache import PriceCache
from jobman_cli.cost.prices_ondemand import OnDemandPrices
from jobman_cli.daemon.schedules import LEAD, occurrence_key
from jobman_cli.errors import InvalidInput
from jobman_cli.model import JobStatus, ReasonCode, format_time
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import API_FIELDS, CLI_FIELDS, JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc


def api_world(tmp_path, ec2, **settings) -> World:  # noqa: F811
    world = World(tmp_path, ec2, **settings)
    world.service.store = world.daemon.store  # the API's writes are the daemon's own (daemon/main.py)
    return world


def about(world: World, job_id: int, since: int = 0) -> list[str]:
    """The daemon's log lines about ``job_id`` (without their time stamps) from line ``since`` on."""
    return [line.split(" ", 1)[1] for line in world.lines[since:] if f"job {job_id} " in line
            or f"job {job_id}:" in line]


def running_job(world: World):
    job = world.schedule(T0)
    world.tick(T0, reconcile=False)
    job = world.get(job.id)
    assert job.status is JobStatus.RUNNING and job.started_at is None  # the daemon recorded the launch
    world.daemon.observe()  # the observer's first look (it only remembers)
    return job


# ---------------------------------------------------------------------------- F15
def test_a_repeated_cancel_logs_one_line_and_tells_the_listeners_once(tmp_path, ec2):  # noqa: F811
    world = api_world(tmp_path, ec2)
    told: list[tuple[int, str]] = []
    poked: list[tuple[int, int]] = []
    world.service.subscribe(lambda j: told.append((j.id, j.status.value)))  # beside the daemon's wake-up
    world.daemon.observer.listeners.append(lambda j: poked.append((j.id, j.version)))  # the notifier's poke
    try:
        job = running_job(world)
        told.clear()
        poked.clear()
        since = len(world.lines)
        first = world.service.cancel(job.id)
        assert poked and set(poked) == {(job.id, first.version)}  # the change itself (noted once or twice)
        poked.clear()
        for _ in range(2):  # `jobman --server URL cancel N` again: "Job N is cancelled", exit 0
            again = world.service.cancel(job.id)
            assert (again.status, again.version) == (JobStatus.CANCELLED, first.version)
        world.daemon.observe()
        assert about(world, job.id, since) == [f"job {job.id} -> cancelled (cancelled via the API)"]
        assert told == [(job.id, "cancelled")]
        assert poked == []  # the repeats poked nobody
        assert world.get(job.id).version == first.version  # the store untouched by the repeats
    finally:
        world.close()


def test_a_running_callback_on_a_running_job_logs_nothing(tmp_path, ec2):  # noqa: F811
    world = api_world(tmp_path, ec2)
    told: list[tuple[int, str]] = []
    world.service.subscribe(lambda j: told.append((j.id, j.status.value)))
    try:
        job = running_job(world)
        told.clear()
        since = len(world.lines)
        world.service.report(job.id, "running")  # the instance's first report: only when it came
        world.service.report(job.id, "running")  # its curl, retried
        world.daemon.observe()
        assert world.get(job.id).started_at is not None  # the report was stored
        assert about(world, job.id, since) == []
        assert told == []
        world.service.report(job.id, "finished", 0)  # a change: one line, "reported" (the instance did)
        assert about(world, job.id, since) == [f"job {job.id} -> finished (reported, exit code 0)"]
        assert told == [(job.id, "finished")]
    finally:
        world.close()


def test_a_callback_that_starts_a_launching_job_is_still_logged_as_reported(tmp_path, ec2):  # noqa: F811
    """The instance may report before the daemon recorded its launch: that is a change (one line)."""
    world = api_world(tmp_path, ec2)
    try:
        job = world.schedule(T0)
        world.daemon.store.update(job.id, lambda j: j.claimed(T0, "token"))
        since = len(world.lines)
        world.service.report(job.id, "running")
        world.service.report(job.id, "running")
        assert about(world, job.id, since) == [f"job {job.id} -> running (reported)"]
    finally:
        world.close()


def test_a_no_op_of_the_daemon_does_not_hide_another_process_s_cancel(tmp_path, ec2):  # noqa: F811
    """A CLI ``cancel`` (another process), then the same cancel through the daemon's API before the
    observer looks: the change is logged once, as another process's (the API's no-op wrote nothing,
    so the version it read is not the daemon's own)."""
    world = api_world(tmp_path, ec2)
    other = JobService(TinyDBStore(tmp_path / "jobs.json"), world.clock)
    try:
        job = running_job(world)
        since = len(world.lines)
        other.cancel(job.id)
        world.service.cancel(job.id)
        world.daemon.observe()
        world.daemon.observe()
        assert about(world, job.id, since) == [f"job {job.id} running -> cancelled (by another process)"]
    finally:
        other.store.close()
        world.close()


T = datetime(2030, 6, 3, 10, 0, 30, tzinfo=UTC)
ELEVEN, NOON = datetime(2030, 6, 3, 11, tzinfo=UTC), datetime(2030, 6, 3, 12, tzinfo=UTC)


def test_an_overlap_replace_cancel_says_why_not_reported(tmp_path, ec2):  # noqa: F811
    world = api_world(tmp_path, ec2)
    try:
        world.clock.set(T)
        schedule = ScheduleService(world.service).create({"docker-image": "alpine:3.20", "cron": "0 * * * *",
                                                          "tz": "UTC", "overlap": "replace"})
        world.tick(ELEVEN - LEAD, reconcile=False)
        world.tick(ELEVEN, reconcile=False)
        [first] = [j for j in world.store.list() if j.schedule_id == schedule.id]
        assert first.status is JobStatus.RUNNING
        since = len(world.lines)
        world.tick(NOON - LEAD, reconcile=False)
        world.tick(NOON, reconcile=False)
        world.daemon.observe()
        assert world.get(first.id).status is JobStatus.CANCELLED
        assert about(world, first.id, since) == [
            f"job {first.id} -> cancelled (cancelled: replaced by the run of 2030-06-03T12:00:00Z "
            f"(schedule {schedule.id}))"]
    finally:
        world.close()


# ---------------------------------------------------------------------------- F4
@pytest.mark.parametrize("names", [API_FIELDS, CLI_FIELDS], ids=["api", "cli"])
def test_a_front_end_cannot_take_a_schedule_run_s_key(tmp_path, ec2, names):  # noqa: F811
    world = api_world(tmp_path, ec2)
    try:
        world.clock.set(T)
        schedule = ScheduleService(world.service).create({"docker-image": "alpine:3.20", "cron": "0 * * * *",
                                                          "tz": "UTC"})
        key = occurrence_key(schedule.id, ELEVEN)  # predictable: the id and next-at are public
        assert key == f"schedule-{schedule.id}-2030-06-03T11:00:00Z"
        with pytest.raises(InvalidInput) as refused:
            world.service.schedule(ScheduleRequest(image="busybox", when="+2h", idempotency_key=key), names)
        assert str(refused.value) == (f"{names.idempotency_key}: {key!r} is reserved: keys that begin "
                                      "'schedule-<number>-' name the runs of recurring schedules")
        assert world.store.list() == []
        world.tick(ELEVEN - LEAD, reconcile=False)
        world.tick(ELEVEN, reconcile=False)
        [run] = world.store.list()
        assert (run.schedule_id, run.occurrence, run.idempotency_key, run.docker_image) == (
            schedule.id, ELEVEN, key, "alpine:3.20")
        assert world.store.get_schedule(schedule.id).records == ()  # nothing refused
        for free in ("schedule-nightly", "schedule-7", "my-schedule-7-x", "Schedule-7-x"):  # outside the namespace
            job, created = world.service.schedule(ScheduleRequest(image="busybox", when="+2h", idempotency_key=free),
                                                  names)
            assert created and job.idempotency_key == free
    finally:
        world.close()


# ---------------------------------------------------------------------------- F10a
def priced(monkeypatch, tmp_path, *answers) -> object:
    """The daemon's Price List: a botocore Stubber answering ``answers`` in order (a code: that
    error; a number: the on-demand price of m7i.large)."""
    pricing, stubber = stubbed_pricing()
    for answer in answers:
        if isinstance(answer, str):
            stubber.add_client_error("get_products", answer, "no", expected_params=instance_params("m7i.large"))
        else:
            stubber.add_response("get_products", instance_answer("m7i.large", usd=f"{answer:.10f}"),
                                 instance_params("m7i.large"))
    monkeypatch.setattr("jobman_cli.cost.limits._prices",
                        OnDemandPrices(PriceCache(tmp_path / "daemon-prices.json"), lambda: pricing))
    monkeypatch.setenv("JOBMAN_COST_RECEIPTS", "off")
    return stubber


def run_until_settled(world: World, job_id: int, limit: int = 50) -> int:
    """Pass after pass at the job's next due time until it leaves ``scheduled``; the passes."""
    passes = 0
    while world.get(job_id).status is JobStatus.SCHEDULED:
        passes += 1
        assert passes <= limit, world.lines
        world.tick(world.get(job_id).due_at, reconcile=False)
    return passes


def test_a_max_cost_that_cannot_be_checked_is_retried_until_the_start_deadline(tmp_path, ec2, aws_env):  # noqa: F811
    # Each claim's price lookup is throttled. max_attempts is 3: counted as launch failures, the
    # third would have failed the job ("launch error after 3 attempts: MaxCostExceeded: ...").
    stubber = priced(aws_env, tmp_path, *["ThrottlingException"] * 7)
    world = api_world(tmp_path, ec2)
    try:
        job = world.schedule(T0, instance_type="m7i.large", max_cost="5", start_deadline="10m")
        passes = run_until_settled(world, job.id)
        ended = world.get(job.id)
        assert passes == 7 > world.settings.max_attempts  # T0, +15 s, +45, +105, +225, +465, the deadline
        assert (ended.status, ended.reason_code, ended.launch_failures) == (
            JobStatus.FAILED, ReasonCode.MISSED_START_DEADLINE, 0)
        assert ended.reason == (f"missed start deadline (due {format_time(T0)}, 10m late); MaxCostUnchecked: cannot "
                                "check --max-cost $5.00: Price List price of on-demand m7i.large in us-east-1: "
                                "ThrottlingException: no")
        assert world.launcher.launches == []  # no RunInstances, ever
        retries = [line for line in about(world, job.id) if "launching -> scheduled" in line]
        assert len(retries) == 6 and all("MaxCostUnchecked: cannot check --max-cost $5.00" in r for r in retries)
        assert not any("MaxCostExceeded" in line for line in world.lines)
        stubber.assert_no_pending_responses()
    finally:
        world.close()


def test_a_max_cost_checked_once_the_price_list_answers_launches(tmp_path, ec2, aws_env):  # noqa: F811
    stubber = priced(aws_env, tmp_path, "ThrottlingException", "ThrottlingException", "ThrottlingException",
                     0.1008)
    world = api_world(tmp_path, ec2)
    try:
        job = world.schedule(T0, instance_type="m7i.large", max_cost="5", timeout="1h")
        assert run_until_settled(world, job.id) == 4  # three "not checked" passes, then a launch
        launched = world.get(job.id)
        assert (launched.status, launched.launch_failures, launched.attempts) == (JobStatus.RUNNING, 0, 4)
        assert len(world.launcher.launches) == 1
        stubber.assert_no_pending_responses()
    finally:
        world.close()


def test_a_max_cost_that_can_never_be_checked_fails_at_once_as_unchecked(tmp_path, ec2, aws_env):  # noqa: F811
    priced(aws_env, tmp_path, "AccessDeniedException")
    world = api_world(tmp_path, ec2)
    try:
        job = world.schedule(T0, instance_type="m7i.large", max_cost="5")
        world.tick(T0, reconcile=False)
        ended = world.get(job.id)
        assert (ended.status, ended.reason_code) == (JobStatus.FAILED, ReasonCode.LAUNCH_FAILED)
        assert ended.reason == ("launch error: MaxCostUnchecked: cannot check --max-cost $5.00: Price List price of "
                                "on-demand m7i.large in us-east-1: AccessDeniedException: no")
        assert world.launcher.launches == []
    finally:
        world.close()
