"""The daemon's receipts (daemon/costing.py): made once per ended job, off the callback path,
retried on transient errors, "unknown: why" on a final one; and end to end through a real daemon
pass over moto's EC2 with the Price List stubbed."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from conftest import make_draft
from jobman_cli.clock import FixedClock
from jobman_cli.cost.quote import PriceUnavailable
from jobman_cli.cost.receipt import Receipt
from jobman_cli.daemon.costing import MAX_TRIES, Costing
from jobman_cli.model import JobStatus
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
T0 = datetime(2031, 3, 4, 5, 6, 0, tzinfo=UTC)


class Pricer:
    """Answers from a script: a Receipt, or an exception to raise; counts calls per job."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[int] = []

    def receipt(self, job):
        self.calls.append(job.id)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def store(tmp_path):
    s = TinyDBStore(tmp_path / "jobs.json")
    yield s
    s.close()


def ended(store, **kw):
    job, _ = store.add(make_draft(**kw))
    store.update(job.id, lambda j: j.claimed(T0, "tok"))
    store.update(job.id, lambda j: j.launched("i-0abc", T0))
    return store.update(job.id, lambda j: j.reported("finished", 0, T0 + timedelta(hours=1)))


def test_one_receipt_per_ended_job_even_when_poked_again(store):
    clock = FixedClock(T0 + timedelta(hours=1))
    pricer = Pricer(Receipt(0.25, "on-demand ...; 3600 s"))
    lines: list[str] = []
    costing = Costing(store, lambda: pricer, clock, log=lines.append)
    job = ended(store)
    costing.poke(job)
    costing.poke(job)               # already queued: one entry per job
    assert costing.step() == 1
    stored = store.get(job.id)
    assert (stored.cost, stored.cost_basis) == (0.25, "on-demand ...; 3600 s")
    costing.poke(stored)            # has its receipt: nothing queued
    costing.poke(job)               # a stale view of the job: queued, but the store says it is done
    costing.step()
    assert pricer.calls == [job.id]
    assert store.get(job.id).version == stored.version
    assert lines == [f"job {job.id} cost $0.25 (on-demand ...; 3600 s)"]


def test_two_daemons_on_one_store_store_one_receipt(store):
    """Both read the job before either wrote (a shared store): the second write keeps the first receipt."""
    clock = FixedClock(T0 + timedelta(hours=1))
    job = ended(store)
    first = Costing(store, lambda: Pricer(Receipt(0.25, "first")), clock, log=lambda line: None)
    second = Costing(store, lambda: Pricer(Receipt(0.26, "second")), clock, log=lambda line: None)
    read = store.get
    stale = store.get(job.id)
    store.get = lambda job_id: stale  # the second daemon's read happened before the first's write
    first.poke(job)
    first.step()
    second.poke(job)
    second.step()
    store.get = read
    stored = store.get(job.id)
    assert (stored.cost, stored.cost_basis) == (0.25, "first")


def test_jobs_without_an_instance_or_not_ended_get_none(store):
    clock = FixedClock(T0)
    pricer = Pricer(Receipt(1.0, "x"))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    scheduled, _ = store.add(make_draft())
    cancelled = store.update(store.add(make_draft())[0].id, lambda j: j.cancelled(T0))
    for job in (scheduled, cancelled):
        costing.poke(job)
    assert costing.run_once() == 0 and pricer.calls == []


def test_transient_errors_are_retried_with_backoff_then_stored(store):
    clock = FixedClock(T0 + timedelta(hours=1))
    flaky = PriceUnavailable("Price List price of ...: ThrottlingException: slow down", transient=True)
    pricer = Pricer(flaky, flaky, Receipt(0.5, "fine"))
    lines: list[str] = []
    costing = Costing(store, lambda: pricer, clock, log=lines.append)
    job = ended(store)
    costing.poke(job)
    costing.step()
    assert store.get(job.id).cost_basis is None and "trying again in 30s" in lines[-1]
    costing.step()                       # not due yet: nothing asked
    assert len(pricer.calls) == 1
    clock.advance(30)
    costing.step()
    assert "trying again in 60s" in lines[-1]
    clock.advance(60)
    costing.step()
    assert (store.get(job.id).cost, store.get(job.id).cost_basis) == (0.5, "fine")
    assert len(pricer.calls) == 3


def test_a_transient_error_that_lasts_ends_as_unknown_after_max_tries(store):
    clock = FixedClock(T0 + timedelta(hours=1))
    pricer = Pricer(PriceUnavailable("spot price history of spot m7i.large in us-east-1a: "
                                     "EndpointConnectionError: no route", transient=True))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    job = ended(store)
    costing.poke(job)
    for _ in range(MAX_TRIES):
        costing.step()
        clock.advance(3600)
    stored = store.get(job.id)
    assert len(pricer.calls) == MAX_TRIES
    assert stored.cost is None
    assert stored.cost_basis == ("unknown: spot price history of spot m7i.large in us-east-1a: "
                                 f"EndpointConnectionError: no route (after {MAX_TRIES} tries)")


def test_a_final_error_is_stored_at_once_as_unknown_with_why(store):
    clock = FixedClock(T0 + timedelta(hours=1))
    pricer = Pricer(PriceUnavailable("the Price List has no on-demand USD price for on-demand x9.huge in us-east-1"))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    job = ended(store)
    costing.poke(job)
    costing.step()
    stored = store.get(job.id)
    assert (stored.cost, stored.cost_basis) == (
        None, "unknown: the Price List has no on-demand USD price for on-demand x9.huge in us-east-1")


def interrupted_then_cancelled(store):
    """A spot job EC2 interrupted (its run is kept in past_runs), cancelled before its relaunch: the
    job has no instance now, but the interrupted instance was billed."""
    job, _ = store.add(make_draft(capacity="spot"))
    store.update(job.id, lambda j: j.claimed(T0, "tok"))
    store.update(job.id, lambda j: j.launched("i-0first", T0, {"instance-type": "m7i.large",
                                                              "availability-zone": "us-east-1a", "market": "spot"}))
    store.update(job.id, lambda j: j.reported("failed", None, T0 + timedelta(hours=5), "interrupted", "notice"))
    done = store.update(job.id, lambda j: j.cancelled(T0 + timedelta(hours=5, minutes=1)))
    assert done.status is JobStatus.CANCELLED and done.instance_id is None and len(done.past_runs) == 1
    return done


def test_a_job_cancelled_after_an_interruption_gets_a_receipt(store):
    """(review finding 2) Both ways the daemon finds work: the observer's poke and the start-up scan."""
    clock = FixedClock(T0 + timedelta(hours=6))
    job = interrupted_then_cancelled(store)
    pricer = Pricer(Receipt(0.5, "spot ..."))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    assert costing.scan() == 1
    costing.poke(job)
    costing.step()
    assert pricer.calls == [job.id] and store.get(job.id).cost == 0.5


def test_the_start_scan_finds_recent_ended_jobs_without_a_receipt_only(store):
    recent = ended(store)
    old, _ = store.add(make_draft())
    store.update(old.id, lambda j: j.claimed(T0, "t"))
    store.update(old.id, lambda j: j.launched("i-old", T0))
    store.update(old.id, lambda j: j.reported("finished", 0, T0 + timedelta(hours=1)))
    clock = FixedClock(T0 + timedelta(days=7, hours=1, seconds=1))   # 'old' ended 7 days + 1 s ago ...
    store.update(recent.id, lambda j: j.with_cost(None, "unknown: x", T0))  # ... and 'recent' has its receipt
    fresh = ended(store)
    store.update(fresh.id, lambda j: dataclasses.replace(j, finished_at=clock.now() - timedelta(days=1)))
    pricer = Pricer(Receipt(0.1, "y"))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    assert costing.run_once() == 1 and pricer.calls == [fresh.id]


def test_the_thread_makes_receipts_and_stops(store):
    import threading

    clock = FixedClock(T0 + timedelta(hours=1))
    done = threading.Event()
    pricer = Pricer(Receipt(0.3, "z"))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: done.set())
    job = ended(store)
    costing.start()
    costing.poke(job)
    assert done.wait(30)
    costing.close()
    assert store.get(job.id).cost == 0.3


# ----------------------------------------------------------------------------- a real daemon pass
def test_a_daemon_pass_makes_the_receipt_of_a_job_that_ended(tmp_path, mock_ec2, isolated_aws):
    """Schedule, launch on moto's EC2 through the real EC2 launcher, report the end one hour after
    EC2's launch time, one pass: the job has its receipt; ``status`` shows it."""
    from cost_fixtures import instance_answer, instance_params, stubbed_pricing, volume_answer, volume_params
    from jobman_cli.daemon import Daemon
    from jobman_cli.launchers.base import EC2Settings
    from jobman_cli.launchers.ec2 import EC2Launcher
    from jobman_cli.model import format_time
    from jobman_cli.render import sheet_rows
    from jobman_cli.service import JobService, ScheduleRequest
    from jobman_cli.settings import DaemonSettings

    isolated_aws.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer("t3.micro", usd="0.0104000000"), instance_params("t3.micro"))
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    isolated_aws.setattr("jobman_cli.cost.prices_ondemand.default_pricing_client", lambda: pricing)

    now = datetime.now(UTC).replace(microsecond=0)
    clock = FixedClock(now)
    store = TinyDBStore(tmp_path / "jobs.json")
    service = JobService(store, clock)
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url="http://10.1.2.3:8321")
    lines: list[str] = []
    daemon = Daemon(store, EC2Launcher(EC2Settings()), settings, clock=clock, service=service, exclusive=True,
                    log=lines.append)
    try:
        job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(now), disk_gb=8))
        daemon.tick(now)
        launched = store.get(job.id)
        assert launched.status is JobStatus.RUNNING
        described = mock_ec2.describe_instances(InstanceIds=[launched.instance_id])
        launch_time = described["Reservations"][0]["Instances"][0]["LaunchTime"].astimezone(UTC)
        clock.set(launch_time + timedelta(hours=1))
        daemon.service.report(job.id, "finished", 0)
        daemon.tick(clock.now())
        stored = store.get(job.id)
        stubber.assert_no_pending_responses()
        # 1 h x $0.0104 = 0.0104; 8 GiB x $0.05 x 1 h / 730 h = 0.000547945... -> $0.010947945 -> $0.01
        assert stored.cost == pytest.approx(0.0104 + 8 * 0.05 / 730, abs=1e-12)
        assert stored.cost_basis.startswith("on-demand t3.micro us-east-1 $0.0104/h (Price List, fetched ")
        assert stored.cost_basis.endswith("8 GiB standard $0.05/GB-month (Price List, fetched "
                                          f"{clock.now():%Y-%m-%d}); 3600 s from EC2 launch time")
        assert dict(sheet_rows(stored))["cost"].startswith("$0.01 (on-demand t3.micro")
        assert any(f" job {job.id} cost $0.01 (on-demand t3.micro" in line for line in lines)
    finally:
        daemon.close()
        store.close()


def test_a_daemon_pass_says_unknown_when_the_price_list_is_unreachable(tmp_path, mock_ec2, isolated_aws):
    """moto has no Price List: its answer (404, "Not yet implemented") is a final failure, stored as
    ``unknown: why``; the job is otherwise untouched."""
    from jobman_cli.daemon import Daemon
    from jobman_cli.launchers.base import EC2Settings
    from jobman_cli.launchers.ec2 import EC2Launcher
    from jobman_cli.model import format_time
    from jobman_cli.service import JobService, ScheduleRequest
    from jobman_cli.settings import DaemonSettings

    isolated_aws.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    now = datetime.now(UTC).replace(microsecond=0)
    clock = FixedClock(now)
    store = TinyDBStore(tmp_path / "jobs.json")
    service = JobService(store, clock)
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url="http://10.1.2.3:8321")
    daemon = Daemon(store, EC2Launcher(EC2Settings()), settings, clock=clock, service=service, exclusive=True,
                    log=lambda line: None)
    try:
        job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(now)))
        daemon.tick(now)
        clock.advance(600)
        ended = daemon.service.report(job.id, "failed", 3)
        daemon.tick(clock.now())
        stored = store.get(job.id)
        assert stored.cost is None
        assert stored.cost_basis.startswith("unknown: Price List price of on-demand t3.micro in us-east-1: 404")
        assert (stored.status, stored.exit_code, stored.finished_at) == (ended.status, 3, ended.finished_at)
        assert not (tmp_path / "home" / "prices.json").exists()
    finally:
        daemon.close()
        store.close()
