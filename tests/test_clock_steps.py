"""Wall-clock steps and clock skew, in process: the real loop (``Daemon.run``) on a clock whose wall
side a test steps while its monotonic side keeps running (DESIGN.md section 5; issue 9 items 3-4).

* :class:`SteppedClock`: the wall clock is the real one plus an offset the test moves (as NTP, a
  resumed VM or a migrated one moves it); the monotonic clock is the real ``time.monotonic``.
* The EC2 side is moto in process (``mock_ec2``); the store a real TinyDB file.
* Jobs are scheduled by *another* service over the same file (as a CLI on the same host would,
  reading the same stepped clock), so the daemon notices them only through the store's marker,
  not through an API wake-up.

What a step means (the module doc of ``jobman_cli/daemon/loop.py``): whether a job is due or late
is always the store's ``due <= now`` on the wall clock; how long to sleep and how long a lease has
gone unrenewed are measured on the monotonic clock.

Real ``jobman daemon`` processes under libfaketime are in ``test_clock_steps_process.py``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import moto  # noqa: F401  (must precede boto3 client creation)
import pytest

from jobman_cli.clock import FixedClock
from jobman_cli.daemon import CLAIMED_BY, Daemon
from jobman_cli.daemon.common import LAUNCHED
from jobman_cli.launchers.base import EC2Settings
from jobman_cli.launchers.ec2 import EC2Launcher
from jobman_cli.model import Job, JobStatus, ReasonCode, format_time
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.settings import DaemonSettings
from jobman_cli.stores.tinydb import TinyDBStore

PUBLIC = "http://10.1.2.3:8321"
UTC = timezone.utc
#: Longest wait, after a step, for a job the step made due (typically 0.2-0.7 s; a loop that kept the
#: old wall-clock time stalled for the step, minutes). Generous for a loaded 2-core CI box.
LATE = 10.0


class SteppedClock:
    """Real time, with a wall clock the test can step (``step``); monotonic time never steps."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def step(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class CountingLauncher:
    """The real EC2 launcher (moto), counting RunInstances per job."""

    def __init__(self) -> None:
        self.inner = EC2Launcher(EC2Settings())
        self.launches: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def launch(self, job, *, user_data, store_id):
        with self.lock:
            self.launches.append((job.id, job.attempts))
        return self.inner.launch(job, user_data=user_data, store_id=store_id)

    def of(self, job_id: int) -> int:
        with self.lock:
            return sum(1 for j, _ in self.launches if j == job_id)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Running:
    """A daemon on its real loop in a thread, over ``store`` and ``clock``."""

    def __init__(self, tmp_path, store: TinyDBStore, clock, launcher, **overrides) -> None:
        settings = dict(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, launch_workers=4,
                        max_attempts=3, backoff_base=15.0, backoff_max=600.0, reconcile_interval=30.0,
                        timeout_grace=600.0)
        settings.update(overrides)
        self.lines: list[str] = []
        self.daemon = Daemon(store, launcher, DaemonSettings(**settings), clock=clock,
                             exclusive=overrides.get("exclusive", True), log=self.lines.append)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.daemon.run()), daemon=True)

    def start(self) -> "Running":
        self.thread.start()
        assert wait_for(lambda: any(" ready;" in line for line in self.lines), 20), self.lines
        return self

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(30)
        assert self.result == [0] and not self.thread.is_alive()


def wait_for(check: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


@pytest.fixture
def world(tmp_path, mock_ec2, monkeypatch):
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = SteppedClock()
    launcher = CountingLauncher()
    running = Running(tmp_path, store, clock, launcher)
    other = JobService(TinyDBStore(tmp_path / "jobs.json"), clock)  # "a CLI on the same host"
    yield store, clock, launcher, running, other
    if running.thread.is_alive():
        running.stop()
    other.store.close()
    store.close()


def schedule(service: JobService, at: datetime, **fields) -> Job:
    return service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(at), **fields))[0]


# ---------------------------------------------------------------------- backward steps
@pytest.mark.parametrize("step", [-600, -7200], ids=["back-10m", "back-2h"])
def test_after_a_backward_step_a_job_due_now_launches_at_once(world, step):
    store, clock, launcher, running, other = world
    later = schedule(other, clock.now() + timedelta(minutes=2))  # due in 2 min before the step (a slow start-up too)
    running.start()
    # A first job launched before the step: the loop's last pass happened at the old time.
    first = schedule(other, clock.now())
    assert wait_for(lambda: store.get(first.id).status is JobStatus.RUNNING, 30), running.lines
    clock.step(step)
    job = schedule(other, clock.now())  # "now" on the stepped clock
    scheduled = time.monotonic()
    assert wait_for(lambda: store.get(job.id).status is JobStatus.RUNNING, 30), running.lines
    took = time.monotonic() - scheduled
    print(f"\nstep {step}s: job due now running after {took:.3f}s")
    assert took < LATE  # watch interval 0.5 s: noticed at once (typically 0.2-0.7 s), not after a 10 min stall
    final = store.get(job.id)
    assert final.attempts == 1 and final.reason_code is None and launcher.of(job.id) == 1
    # Wall-clock semantics for the job due 2 min after the old time: by the store's times it is now
    # due in 2 min + |step|, so it waits; nothing failed it as missed.
    time.sleep(1.0)
    assert store.get(later.id).status is JobStatus.SCHEDULED
    running.stop()
    assert launcher.of(first.id) == 1


# ---------------------------------------------------------------------- forward steps
def test_after_a_forward_10_minute_step_jobs_now_due_launch_once(world):
    store, clock, launcher, running, other = world
    soon = schedule(other, clock.now() + timedelta(minutes=5))  # 5 min late after the step
    later = schedule(other, clock.now() + timedelta(minutes=20))  # due in 10 min after it
    running.start()
    time.sleep(0.6)
    clock.step(600)
    stepped = time.monotonic()
    assert wait_for(lambda: store.get(soon.id).status is JobStatus.RUNNING, 30), running.lines
    print(f"\nstep +10m: job 5 min late running after {time.monotonic() - stepped:.3f}s")
    assert time.monotonic() - stepped < LATE  # typically 0.2-0.7 s; the bug stalled minutes
    time.sleep(2.0)  # several passes later: still one launch, the other job still waits
    assert launcher.of(soon.id) == 1 and store.get(soon.id).attempts == 1
    assert store.get(later.id).status is JobStatus.SCHEDULED and launcher.of(later.id) == 0
    running.stop()


def test_a_forward_2_hour_step_makes_jobs_due_and_judges_start_deadlines_by_the_store(world):
    """+2 h: every job whose time the new clock has passed is due at once. By the store's times a
    job due in 30 min is then 1 h 30 min late, past its default 1 h start deadline: failed as
    missed, as after any downtime (the daemon cannot tell a clock corrected forward from a host
    that was suspended for 2 h). One due in 90 min is 30 min late: launched, once. One due in 3 h
    is due in 1 h: it waits. One due in 30 min with a 3 h deadline: launched."""
    store, clock, launcher, running, other = world
    base = clock.now()
    missed = schedule(other, base + timedelta(minutes=30))
    late = schedule(other, base + timedelta(minutes=90))
    waits = schedule(other, base + timedelta(hours=3))
    patient = schedule(other, base + timedelta(minutes=30), start_deadline="3h")
    running.start()
    time.sleep(0.6)
    clock.step(7200)
    stepped = time.monotonic()
    assert wait_for(lambda: all(store.get(j.id).status is not JobStatus.SCHEDULED
                                for j in (missed, late, patient)), 30), running.lines
    print(f"\nstep +2h: due jobs handled after {time.monotonic() - stepped:.3f}s")
    assert time.monotonic() - stepped < LATE  # typically 0.2-0.7 s; the bug stalled minutes
    assert wait_for(lambda: store.get(late.id).status is JobStatus.RUNNING
                    and store.get(patient.id).status is JobStatus.RUNNING, 30), running.lines
    time.sleep(2.0)
    gone = store.get(missed.id)
    assert gone.status is JobStatus.FAILED and gone.reason_code is ReasonCode.MISSED_START_DEADLINE
    assert "1h30m" in gone.reason, gone.reason  # "... (due ..., 1h30m1s late)"
    assert [launcher.of(j.id) for j in (missed, late, waits, patient)] == [0, 1, 0, 1]
    assert store.get(waits.id).status is JobStatus.SCHEDULED
    running.stop()


# ---------------------------------------------------------------------- leases: skew and steps
def _claim_as(store: TinyDBStore, job: Job, daemon_id: str, at: datetime) -> Job:
    def claim(current: Job) -> Job:
        claimed = current.claimed(at, f"token-{job.id}")
        return dataclasses.replace(claimed, extra={**claimed.extra, CLAIMED_BY: daemon_id})

    return store.update(job.id, claim)


def test_a_lease_is_judged_on_the_observers_monotonic_clock_not_on_stamps(tmp_path, mock_ec2, monkeypatch):
    """Another daemon's claim is honoured while it keeps being renewed, whatever its ``updated_at``
    says (skewed hours either way, or a wall-clock step on the observer), and taken over only once
    it stayed unchanged for a full lease of the observer's monotonic time."""
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(datetime(2031, 3, 4, 5, 6, tzinfo=UTC))
    other = JobService(store, clock)
    launcher = CountingLauncher()
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, launch_workers=2,
                              reconcile_interval=3600.0)
    observer = Daemon(store, launcher, settings, clock=clock, exclusive=False, launch_lease=60.0,
                      daemon_id="observer", log=lambda line: None)
    try:
        job = schedule(other, clock.now(), start_deadline="6h")  # not missed after the step below
        # The holder's clock is 10 minutes behind: its stamp looks 10 minutes old to the observer.
        claim = _claim_as(store, job, "holder", clock.now() - timedelta(minutes=10))
        assert observer.tick(clock.now(), reconcile=False).outcomes == ()
        for _ in range(5):  # renewed every 20 s (a third of the lease), for 100 s
            clock.advance(20)
            claim = store.update(job.id, lambda cur: dataclasses.replace(cur, version=cur.version + 1))
            assert observer.tick(clock.now(), reconcile=False).outcomes == ()
        # A wall-clock step of the observer (forward 2 h) changes nothing either.
        clock.step(7200)
        assert observer.tick(clock.now(), reconcile=False).outcomes == ()
        clock.advance(59)  # 59 s without a renewal: still honoured
        assert observer.tick(clock.now(), reconcile=False).outcomes == ()
        assert launcher.launches == [] and store.get(job.id).status is JobStatus.LAUNCHING
        clock.advance(2)  # a full lease since the last renewal was seen: abandoned
        report = observer.tick(clock.now(), reconcile=False)
        assert report.job_ids(LAUNCHED) == [job.id]
        final = store.get(job.id)
        assert final.extra[CLAIMED_BY] == "observer" and final.attempts == claim.attempts == 1
        assert launcher.launches == [(job.id, 1)]
    finally:
        observer.close()
        store.close()


def test_a_once_pass_trusts_a_claims_stamp_only_beyond_a_generous_skew_margin(tmp_path, mock_ec2, monkeypatch):
    """``--once`` cannot watch renewals over time: it takes a claim over when its stamp is older
    than the lease plus ONCE_SKEW_MARGIN (10 min) by its own wall clock, and honours anything newer,
    so a holder up to 10 minutes behind is safe from it too."""
    from jobman_cli.daemon.lease import ONCE_SKEW_MARGIN

    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(datetime(2031, 3, 4, 5, 6, tzinfo=UTC))
    other = JobService(store, clock)
    launcher = CountingLauncher()
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, launch_workers=2,
                              reconcile_interval=3600.0, once=True)
    once = Daemon(store, launcher, settings, clock=clock, exclusive=False, launch_lease=60.0, daemon_id="once",
                  log=lambda line: None)
    try:
        stale = schedule(other, clock.now(), start_deadline="6h")
        live = schedule(other, clock.now(), start_deadline="6h")
        _claim_as(store, stale, "dead", clock.now() - timedelta(seconds=60 + ONCE_SKEW_MARGIN + 1))
        _claim_as(store, live, "skewed", clock.now() - timedelta(seconds=60 + ONCE_SKEW_MARGIN - 5))
        report = once.tick(clock.now(), reconcile=False)
        assert report.job_ids(LAUNCHED) == [stale.id]
        assert store.get(live.id).extra[CLAIMED_BY] == "skewed" and launcher.of(live.id) == 0
    finally:
        once.close()
        store.close()
