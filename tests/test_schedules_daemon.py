"""Schedules in the daemon, driven with a fixed clock (``tick(now)``) against moto's in-process EC2
and a real TinyDB file, the way :func:`~jobman_cli.daemon.loop.run_loop` drives it: after each pass
the clock jumps to the daemon's next wake-up (``next_wake``: an occurrence's lead time) or the next
due job, whichever comes first; the loop's ``observe`` runs between passes.

* A DST week in three zones: the exact list of jobs created, computed independently here (a walk
  over every UTC minute; an occurrence is the first instant whose local wall time reaches a
  matching minute), no duplicate, none missing, each job launched at its occurrence.
* Overlap ``forbid``/``replace``/``allow`` with the previous run still running at the next occurrence.
* A daemon stopped for 3 hours over an hourly schedule: one launch, the others recorded as missed
  (one range record); a backlog never creates more than one job per schedule in a pass.
* Paused or deleted before a pass: nothing created. Idle with 1,000 schedules: nothing listed again.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest

from test_daemon import World, aws_env, ec2  # noqa: F401  (fixtures)

from jobman_cli.daemon.schedules import LEAD, occurrence_key
from jobman_cli.model import JobStatus, format_time
from jobman_cli.schedules.model import Schedule, schedule_to_api
from jobman_cli.schedules.service import ScheduleService

UTC = timezone.utc
MINUTE = timedelta(minutes=1)


# ---------------------------------------------------------------------- the independent oracle
def expected_occurrences(tz: str, matches: Callable[[datetime], bool], start: datetime,
                         end: datetime) -> list[datetime]:
    """Every UTC minute in (start, end]: an occurrence when local wall time moved forward past a
    matching wall minute (one occurrence even if the move jumped over several: a DST gap); a wall
    time seen before (the repeated hour) never fires again."""
    zone = ZoneInfo(tz)
    found = []
    seen = start.astimezone(zone).replace(tzinfo=None)  # the highest wall time reached so far
    at = start.replace(second=0, microsecond=0) + MINUTE
    while at <= end:
        wall = at.astimezone(zone).replace(tzinfo=None)
        if wall > seen:
            walls = [seen + MINUTE * (k + 1) for k in range(int((wall - seen) / MINUTE))]
            if any(matches(w) for w in walls):
                found.append(at)
            seen = wall
        at += MINUTE
    return found


def new_schedule(world: World, **body: Any) -> Schedule:
    return ScheduleService(world.service).create({"docker-image": "alpine:3.20", **body})


def run_like_the_loop(world: World, until: datetime) -> None:
    """Pass after pass, each at the next moment the loop would wake for (see the module doc)."""
    now = world.clock.now()
    while now <= until:
        world.tick(now, reconcile=False)
        world.daemon.observe()
        wakes = [world.daemon.next_wake(after=now), world.store.next_due_at()]
        later = [w for w in wakes if w is not None and w > now]
        if not later:
            return
        now = min(later)


def schedule_jobs(world: World, schedule_id: int) -> list:
    return sorted((j for j in world.store.list() if j.schedule_id == schedule_id), key=lambda j: j.id)


# ---------------------------------------------------------------------- a DST week
WEEKS = {
    # the gap: 02:30 does not exist on 2027-03-28; it runs once, at 03:00 CEST (01:00Z)
    "berlin-spring": ("Europe/Berlin", "30 2 * * *", lambda w: (w.hour, w.minute) == (2, 30),
                      datetime(2027, 3, 25, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)),
    # the repeat: 02:30 happens twice on 2027-10-31; it runs once, at the first (CEST, 00:30Z)
    "berlin-autumn": ("Europe/Berlin", "30 2 * * *", lambda w: (w.hour, w.minute) == (2, 30),
                      datetime(2027, 10, 28, tzinfo=UTC), datetime(2027, 11, 4, tzinfo=UTC)),
    # hourly across the November repeat: 01:00 local runs once (EDT), 24 runs that 25-hour day
    "new-york-hourly": ("America/New_York", "0 * * * *", lambda w: w.minute == 0,
                        datetime(2027, 11, 4, tzinfo=UTC), datetime(2027, 11, 11, tzinfo=UTC)),
}


@pytest.mark.parametrize("week", sorted(WEEKS))
def test_a_dst_week_creates_exactly_the_expected_jobs_each_launched_at_its_occurrence(tmp_path, ec2, week):
    tz, cron, matches, start, end = WEEKS[week]
    world = World(tmp_path, ec2)
    world.clock.set(start)
    schedule = new_schedule(world, cron=cron, tz=tz, overlap="allow")
    run_like_the_loop(world, until=end)

    expected = expected_occurrences(tz, matches, start, end)
    jobs = schedule_jobs(world, schedule.id)
    assert [j.occurrence for j in jobs] == expected  # no duplicate, none missing, in order
    for job in jobs:
        assert job.date_time == job.occurrence
        assert job.idempotency_key == occurrence_key(schedule.id, job.occurrence)
        assert job.created_at == job.occurrence - LEAD < job.occurrence  # created just in time...
        assert job.claimed_at == job.occurrence  # ...and its launch started on time
        assert job.status in (JobStatus.LAUNCHING, JobStatus.RUNNING)
    stored = world.store.get_schedule(schedule.id)
    assert stored.records == ()  # a run is its job (schedule-id, occurrence): no record per run
    assert stored.last_job_id == jobs[-1].id
    assert stored.next_at > end
    if week == "berlin-spring":
        assert [format_time(t) for t in expected] == [
            "2027-03-25T01:30:00Z", "2027-03-26T01:30:00Z", "2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z",
            "2027-03-29T00:30:00Z", "2027-03-30T00:30:00Z", "2027-03-31T00:30:00Z"]
    if week == "berlin-autumn":
        assert "2027-10-31T00:30:00Z" in [format_time(t) for t in expected]
        assert "2027-10-31T01:30:00Z" not in [format_time(t) for t in expected]
    if week == "new-york-hourly":
        day = [t for t in expected if t.astimezone(ZoneInfo(tz)).date().isoformat() == "2027-11-07"]
        assert len(day) == 24 and datetime(2027, 11, 7, 6, tzinfo=UTC) not in day


# ---------------------------------------------------------------------- overlap
T = datetime(2030, 6, 3, 10, 0, 30, tzinfo=UTC)
ELEVEN, NOON = datetime(2030, 6, 3, 11, tzinfo=UTC), datetime(2030, 6, 3, 12, tzinfo=UTC)


def first_run_still_running(tmp_path, ec2, overlap: str) -> tuple[World, Schedule, Any]:
    world = World(tmp_path, ec2)
    world.clock.set(T)
    schedule = new_schedule(world, cron="0 * * * *", tz="UTC", overlap=overlap)
    world.tick(ELEVEN - LEAD)
    world.tick(ELEVEN)
    [first] = schedule_jobs(world, schedule.id)
    assert first.occurrence == ELEVEN and first.status is JobStatus.RUNNING and first.instance_id
    return world, schedule, first


def instance_state(ec2, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]


def test_overlap_forbid_records_the_occurrence_as_skipped(tmp_path, ec2):
    world, schedule, first = first_run_still_running(tmp_path, ec2, "forbid")
    world.tick(NOON - LEAD)
    world.tick(NOON)
    assert schedule_jobs(world, schedule.id) == [world.get(first.id)]  # no second job
    assert world.get(first.id).status is JobStatus.RUNNING
    records = world.store.get_schedule(schedule.id).records
    assert [(r["occurrence"], r["outcome"], r["job-id"]) for r in records] == [
        ("2030-06-03T12:00:00Z", "skipped", None)]
    assert f"job {first.id} is still running" in records[-1]["detail"]
    world.service.report(first.id, "finished", 0)  # the run ends: the next occurrence runs again
    world.tick(NOON + timedelta(hours=1))
    assert [j.occurrence for j in schedule_jobs(world, schedule.id)] == [ELEVEN, NOON + timedelta(hours=1)]


def test_overlap_replace_cancels_the_previous_run_and_terminates_its_instance(tmp_path, ec2):
    world, schedule, first = first_run_still_running(tmp_path, ec2, "replace")
    world.tick(NOON - LEAD)
    world.tick(NOON)
    old, new = schedule_jobs(world, schedule.id)
    assert old.id == first.id and old.status is JobStatus.CANCELLED
    assert instance_state(ec2, first.instance_id) in ("shutting-down", "terminated")
    assert new.occurrence == NOON and new.status is JobStatus.RUNNING
    records = world.store.get_schedule(schedule.id).records
    assert [(r["occurrence"], r["outcome"], r["job-id"]) for r in records] == [
        ("2030-06-03T12:00:00Z", "replaced-previous", first.id)]
    assert old.reason == f"replaced by the run of 2030-06-03T12:00:00Z (schedule {schedule.id})"


def test_overlap_allow_runs_both(tmp_path, ec2):
    world, schedule, first = first_run_still_running(tmp_path, ec2, "allow")
    world.tick(NOON - LEAD)
    world.tick(NOON)
    old, new = schedule_jobs(world, schedule.id)
    assert (old.id, old.status, new.occurrence, new.status) == (first.id, JobStatus.RUNNING, NOON, JobStatus.RUNNING)
    assert world.store.get_schedule(schedule.id).records == ()


# ---------------------------------------------------------------------- a daemon that was down
def test_daemon_stopped_for_three_hours_launches_once_and_records_the_rest_as_missed(tmp_path, ec2):
    world = World(tmp_path, ec2)
    world.clock.set(datetime(2030, 6, 3, 10, 10, tzinfo=UTC))
    schedule = new_schedule(world, cron="@hourly", tz="UTC", **{"start-deadline": "30m"})
    assert schedule.next_at == ELEVEN
    back = datetime(2030, 6, 3, 14, 20, tzinfo=UTC)  # no daemon from 10:10 to 14:20
    report = world.tick(back)
    jobs = schedule_jobs(world, schedule.id)
    assert [j.occurrence for j in jobs] == [datetime(2030, 6, 3, 14, tzinfo=UTC)]  # within the deadline
    assert report.job_ids("launched") == [jobs[0].id]
    records = world.store.get_schedule(schedule.id).records  # one record per missed occurrence
    assert [(r["occurrence"], r["outcome"], r["job-id"]) for r in records] == [
        ("2030-06-03T11:00:00Z", "missed", None), ("2030-06-03T12:00:00Z", "missed", None),
        ("2030-06-03T13:00:00Z", "missed", None)]
    assert all(r["detail"] == "older than the start deadline (30m)" for r in records)
    shown = schedule_to_api(world.store.get_schedule(schedule.id))  # what `schedules show` prints
    assert [r["outcome"] for r in shown["records"]] == ["missed"] * 3
    assert shown["next-at"] == "2030-06-03T15:00:00Z"
    world.tick(back + MINUTE)  # nothing more: never a late burst, never another record
    assert len(world.store.get_schedule(schedule.id).records) == 3 and len(schedule_jobs(world, schedule.id)) == 1
    assert any("3 occurrence(s) missed" in line for line in world.lines)


def test_a_minutely_schedule_down_for_a_year_is_recorded_without_walking_every_minute(tmp_path, ec2):
    world = World(tmp_path, ec2)
    world.clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    schedule = new_schedule(world, cron="* * * * *", tz="UTC", overlap="allow", **{"start-deadline": "2m"})
    back = datetime(2031, 1, 1, 0, 0, 30, tzinfo=UTC)
    world.tick(back)
    stored = world.store.get_schedule(schedule.id)
    # ONE range record; one job, for the latest occurrence (23:59 is within the deadline but
    # superseded by 00:00: never two jobs from one backlog)
    [missed] = stored.records
    assert (missed["outcome"], missed["occurrence"], missed["until"]) == (
        "missed", "2030-01-01T00:01:00Z", "2030-12-31T23:59:00Z")
    assert missed["count"] == 1001 and "lower bound" in missed["detail"]
    assert "1 superseded by the run of 2031-01-01T00:00:00Z" in missed["detail"]
    assert [j.occurrence for j in schedule_jobs(world, schedule.id)] == [back - timedelta(seconds=30)]
    assert stored.next_at == back + timedelta(seconds=30)
    assert any("1001+ occurrence(s) missed" in line for line in world.lines)


def test_an_occurrence_whose_template_no_longer_validates_is_recorded_not_retried_forever(tmp_path, ec2):
    import dataclasses

    world = World(tmp_path, ec2)
    world.clock.set(T)
    draft = ScheduleService(world.service).validate({"docker-image": "alpine:3.20", "cron": "0 * * * *", "tz": "UTC"})
    schedule = world.store.add_schedule(dataclasses.replace(draft, template={**draft.template, "timeout": "forever"}))
    world.tick(ELEVEN)
    stored = world.store.get_schedule(schedule.id)
    assert [(r["outcome"], r["job-id"]) for r in stored.records] == [("refused", None)]
    assert stored.records[0]["detail"].startswith("timeout")
    assert stored.next_at == NOON and schedule_jobs(world, schedule.id) == []


# ---------------------------------------------------------------------- paused, deleted, idle
def test_paused_or_deleted_before_the_pass_creates_nothing(tmp_path, ec2):
    world = World(tmp_path, ec2)
    world.clock.set(T)
    service = ScheduleService(world.service)
    paused = new_schedule(world, cron="0 * * * *", tz="UTC")
    deleted = new_schedule(world, cron="0 * * * *", tz="UTC")
    kept = new_schedule(world, cron="0 * * * *", tz="UTC")
    world.tick(T)  # the daemon has listed all three (its cache says: due at 11:00)
    service.pause(paused.id)
    service.delete(deleted.id)  # no observe(): the cache is stale, the pass must not trust it
    world.tick(ELEVEN)
    assert [j.schedule_id for j in world.store.list() if j.schedule_id] == [kept.id]
    assert world.store.get_schedule(paused.id).records == ()
    world.daemon.observe()
    assert world.daemon.schedules.next_wake(after=ELEVEN) == NOON - LEAD


def test_idle_ticks_with_1000_schedules_read_none_of_them(tmp_path, ec2, monkeypatch):
    world = World(tmp_path, ec2)
    world.clock.set(T)
    service = ScheduleService(world.service)
    draft = service.validate({"docker-image": "alpine:3.20", "cron": "0 3 * * *", "tz": "UTC"})
    for _ in range(1000):
        world.store.add_schedule(draft)
    calls: list[str] = []
    for name in ("list_schedules", "get_schedule"):
        real = getattr(world.store, name)
        monkeypatch.setattr(world.store, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    world.tick(T)
    world.daemon.observe()
    assert world.daemon.next_wake(after=T) == datetime(2030, 6, 4, 3, tzinfo=UTC) - LEAD
    assert calls == ["list_schedules"]
    assert world.daemon.schedules.summary().startswith("schedules: 1000 active; next occurrence 2030-06-04T03:00:00Z")
    for second in range(1, 101):  # a hundred idle passes and wake-up computations
        world.tick(T + timedelta(seconds=second))
        world.daemon.next_wake(after=T + timedelta(seconds=second))
    assert calls == ["list_schedules"]
    assert world.daemon.schedules.listings == 1
    world.schedule(T + timedelta(days=3))  # job traffic moves the store's marker, not the schedules'
    world.daemon.observe()
    world.daemon.next_wake(after=T)
    assert calls == ["list_schedules"]
    service.create({"docker-image": "alpine:3.20", "cron": "0 1 * * *", "tz": "UTC"})
    world.daemon.observe()  # the loop saw the marker move: one new listing finds the new schedule
    assert world.daemon.next_wake(after=T) == datetime(2030, 6, 4, 1, tzinfo=UTC) - LEAD
    assert calls == ["list_schedules", "list_schedules"]


def test_a_slow_schedule_pass_does_not_hold_up_due_launches(tmp_path, ec2, monkeypatch):
    """The loop's passes (``wait_launches=False``) hand the schedules to their own thread: while
    one schedule write hangs, the same pass still claims and launches a due job."""
    import threading
    import time

    world = World(tmp_path, ec2)
    world.clock.set(T)
    schedule = new_schedule(world, cron="0 * * * *", tz="UTC")
    job = world.schedule(ELEVEN)
    entered, release = threading.Event(), threading.Event()
    real = world.store.update_schedule

    def hanging(schedule_id, change):
        entered.set()
        assert release.wait(60)
        return real(schedule_id, change)

    monkeypatch.setattr(world.store, "update_schedule", hanging)
    world.clock.set(ELEVEN)
    ticking = threading.Thread(target=world.daemon.tick, args=(ELEVEN,), kwargs={"wait_launches": False})
    ticking.start()
    assert entered.wait(30)  # the schedules pass is stuck in its write...
    ticking.join(15)  # generous: the pass itself takes milliseconds
    assert not ticking.is_alive()  # ...and the pass is over: its launch of the due job goes on
    deadline = time.monotonic() + 30  # liveness only: the launch pool claims the job in a worker
    while world.get(job.id).status is JobStatus.SCHEDULED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.get(job.id).status is not JobStatus.SCHEDULED and not release.is_set()
    release.set()
    world.daemon._materializing.result(timeout=30)
    [run] = schedule_jobs(world, schedule.id)
    assert run.occurrence == ELEVEN and world.store.get_schedule(schedule.id).next_at == NOON
