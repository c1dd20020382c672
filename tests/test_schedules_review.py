"""The schedules materializer after the hostile review (/tmp/jobman-lead/findings-schedules.md),
driven directly (``Materializer.step(now)`` with a fixed clock) over a real TinyDB file; no EC2
needed: the runs stay scheduled, which is what the overlap rules look at.

* finding 2: a schedule's stored size stays bounded after 1,000 occurrences handled (no record per
  created run; an outage is ONE range record; at most MAX_RECORDS records);
* finding 1: several occurrences due at or before now -> one job (the latest), the others one
  "missed" range record, with every overlap mode;
* finding 3: an invalidate() that lands during the listing is not lost;
* finding 4: a run refused by the job rules is recorded "refused" once, logged once, not retried;
* finding 8: a run cancelled by ``overlap replace`` says why;
* finding 7: the overlap is decided at the occurrence, not LEAD early.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from jobman_cli.clock import FixedClock
from jobman_cli.daemon.schedules import LEAD, Materializer
from jobman_cli.errors import InvalidInput
from jobman_cli.model import JobStatus, format_time
from jobman_cli.schedules.model import MAX_RECORDS, schedule_to_record
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

UTC = timezone.utc
T0 = datetime(2030, 6, 3, 10, 0, 30, tzinfo=UTC)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.store = open_store(tmp_path / "jobs.json", create=True)
        self.clock = FixedClock(T0)
        self.service = JobService(self.store, self.clock)
        self.lines: list[str] = []
        self.terminated: list[str] = []
        self.m = Materializer(self.store, self.service, terminate=self.terminated.append, log=self.lines.append)

    def create(self, **body: Any) -> Any:
        return ScheduleService(self.service).create({"docker-image": "alpine:3.20", "tz": "UTC", **body})

    def step(self, now: datetime) -> int:
        self.clock.set(now)
        return self.m.step(now)

    def runs(self, schedule_id: int) -> list:
        return sorted((j for j in self.store.list() if j.schedule_id == schedule_id), key=lambda j: j.id)


@pytest.fixture()
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def stored_size(rig: Rig, schedule_id: int) -> int:
    return len(json.dumps(schedule_to_record(rig.store.get_schedule(schedule_id))))


# ---------------------------------------------------------------------- finding 2
def test_stored_size_stays_bounded_after_1000_occurrences(rig):
    """1,000 occurrences of a minutely schedule, handled by passes every 10 minutes (9 superseded
    + 1 run each) and by passes at each occurrence: the schedule holds no record per created run
    and at most MAX_RECORDS records — a few KB, not 500 records (~62 KB)."""
    s = rig.create(every="1m", overlap="allow")
    empty = stored_size(rig, s.id)
    now = s.next_at
    handled = 0
    while handled < 900:  # 90 passes, each 10 occurrences late
        now += timedelta(minutes=10)
        rig.step(now)
        handled += 10
    for _ in range(100):  # 100 on time: created, nothing recorded
        now = rig.store.get_schedule(s.id).next_at
        rig.step(now - LEAD)
    stored = rig.store.get_schedule(s.id)
    assert len(rig.runs(s.id)) == 90 + 100
    # 10 + 89 x 9 = 811 missed occurrences, one record each (short outages), the newest MAX_RECORDS kept
    assert len(stored.records) == MAX_RECORDS
    assert all(r["outcome"] == "missed" for r in stored.records)
    assert stored_size(rig, s.id) - empty < MAX_RECORDS * 300  # ~200 bytes a record
    for _ in range(30):  # the cap holds
        now = rig.store.get_schedule(s.id).next_at + timedelta(minutes=5)
        rig.step(now)
    assert len(rig.store.get_schedule(s.id).records) == MAX_RECORDS
    assert stored_size(rig, s.id) - empty < MAX_RECORDS * 300


# ---------------------------------------------------------------------- finding 1
@pytest.mark.parametrize("overlap", ["allow", "replace", "forbid"])
def test_a_backlog_creates_one_job_for_the_latest_occurrence_and_one_missed_range(rig, overlap):
    """``*/5``, deadline 1 h, daemon down 10:01-13:01: 35 occurrences get no run (24 older than
    the deadline, 11 superseded), ONE range record says so, and only 13:00 gets a job — no burst,
    no cancellation, no skip."""
    start = datetime(2030, 6, 3, 10, 1, tzinfo=UTC)
    rig.clock.set(start)
    s = rig.create(cron="*/5 * * * *", overlap=overlap)
    back = datetime(2030, 6, 3, 13, 1, tzinfo=UTC)
    assert rig.step(back) == 1
    runs = rig.runs(s.id)
    assert [j.occurrence for j in runs] == [datetime(2030, 6, 3, 13, 0, tzinfo=UTC)]
    assert runs[0].status is JobStatus.SCHEDULED
    stored = rig.store.get_schedule(s.id)
    assert len(stored.records) == 1
    record = stored.records[0]
    assert (record["outcome"], record["occurrence"], record["until"], record["count"]) == (
        "missed", "2030-06-03T10:05:00Z", "2030-06-03T12:55:00Z", 35)
    assert "24 older than the start deadline" in record["detail"]
    assert "11 superseded by the run of 2030-06-03T13:00:00Z" in record["detail"]
    assert stored.next_at == datetime(2030, 6, 3, 13, 5, tzinfo=UTC) and stored.last_job_id == runs[0].id
    assert rig.terminated == [] and len([line for line in rig.lines if "missed" in line]) == 1


def test_hourly_schedule_down_three_hours_one_launch_the_others_missed(rig):
    """The issue's case: hourly, stopped for 3 hours, back 20 min after an occurrence (deadline
    1 h): one job for that occurrence, the two before it missed (one record)."""
    rig.clock.set(datetime(2030, 6, 3, 9, 30, tzinfo=UTC))
    s = rig.create(cron="0 * * * *")
    assert rig.step(datetime(2030, 6, 3, 12, 20, tzinfo=UTC)) == 1
    assert [j.occurrence.hour for j in rig.runs(s.id)] == [12]
    records = rig.store.get_schedule(s.id).records  # a short outage: one record per occurrence
    assert [(r["occurrence"], r["outcome"]) for r in records] == [("2030-06-03T10:00:00Z", "missed"),
                                                                  ("2030-06-03T11:00:00Z", "missed")]
    # both older than 12:20 - 1h; each record is a range of one, so consumers read every record alike
    assert [(r["detail"], r["until"], r["count"]) for r in records] == [
        ("older than the start deadline (1h)", "2030-06-03T10:00:00Z", 1),
        ("older than the start deadline (1h)", "2030-06-03T11:00:00Z", 1)]


# ---------------------------------------------------------------------- finding 3
def test_an_invalidate_during_the_listing_is_not_lost(rig):
    """The loop's thread calls invalidate() while the schedules' thread is inside list_schedules
    (a CLI just added a schedule): the next use lists again and sees it."""
    rig.create(cron="0 3 * * *")
    real = rig.store.list_schedules
    added: list[Any] = []

    def listing_while_a_cli_adds() -> list:
        found = real()
        if not added:
            added.append(rig.create(cron="0 11 * * *"))
            rig.m.invalidate()
        return found

    rig.store.list_schedules = listing_while_a_cli_adds  # type: ignore[method-assign]
    rig.step(T0)
    rig.store.list_schedules = real  # type: ignore[method-assign]
    eleven = datetime(2030, 6, 3, 11, tzinfo=UTC)
    assert rig.m.next_wake(after=T0) == eleven - LEAD
    assert rig.step(eleven - LEAD) == 1 and [j.occurrence for j in rig.runs(added[0].id)] == [eleven]


# ---------------------------------------------------------------------- finding 4
def test_a_run_refused_by_the_job_rules_is_recorded_refused_once_and_not_retried(rig, monkeypatch):
    s = rig.create(cron="0 * * * *")
    real = JobService.validate

    def validate(self, request, *args, **kwargs):
        if request.occurrence is not None:  # e.g. the --max-cost hook now sees cached prices
            raise InvalidInput("max-cost", "the worst case is $1.23, over the limit of $1.00")
        return real(self, request, *args, **kwargs)

    monkeypatch.setattr(JobService, "validate", validate)
    eleven = datetime(2030, 6, 3, 11, tzinfo=UTC)
    now = eleven - LEAD
    while now < eleven + timedelta(minutes=30):  # a pass every 10 s, as the loop retries
        rig.step(now)
        now += timedelta(seconds=10)
    stored = rig.store.get_schedule(s.id)
    assert [(r["occurrence"], r["outcome"]) for r in stored.records] == [("2030-06-03T11:00:00Z", "refused")]
    assert "max-cost" in stored.records[0]["detail"] and "\n" not in stored.records[0]["detail"]
    assert stored.next_at == datetime(2030, 6, 3, 12, tzinfo=UTC) and rig.runs(s.id) == []
    assert len([line for line in rig.lines if f"schedule {s.id}" in line]) == 1


# ---------------------------------------------------------------------- findings 8 and 7
def test_replace_cancels_the_previous_run_with_a_reason_naming_the_occurrence(rig):
    s = rig.create(cron="0 * * * *", overlap="replace")
    eleven, noon = datetime(2030, 6, 3, 11, tzinfo=UTC), datetime(2030, 6, 3, 12, tzinfo=UTC)
    rig.step(eleven - LEAD)
    rig.step(noon)
    first, second = rig.runs(s.id)
    assert first.status is JobStatus.CANCELLED and second.status is JobStatus.SCHEDULED
    assert first.reason == f"replaced by the run of {format_time(noon)} (schedule {s.id})"
    assert [r["outcome"] for r in rig.store.get_schedule(s.id).records] == ["replaced-previous"]


@pytest.mark.parametrize("overlap", ["forbid", "replace"])
def test_the_overlap_is_decided_at_the_occurrence_not_lead_early(rig, overlap):
    """The previous run is still active LEAD before the occurrence and ends at it: nothing is
    skipped or cancelled; the pass LEAD early defers the schedule to the occurrence itself."""
    s = rig.create(cron="0 * * * *", overlap=overlap)
    eleven, noon = datetime(2030, 6, 3, 11, tzinfo=UTC), datetime(2030, 6, 3, 12, tzinfo=UTC)
    rig.step(eleven - LEAD)
    (first,) = rig.runs(s.id)
    assert rig.step(noon - LEAD) == 0  # still scheduled: not decided yet
    assert rig.store.get_schedule(s.id).next_at == noon and rig.store.get_schedule(s.id).records == ()
    assert rig.m.next_wake(after=noon - LEAD) == noon
    rig.store.update(first.id, lambda j: j.cancelled(noon))  # it ended in the last seconds
    assert rig.step(noon) == 1
    assert [j.occurrence for j in rig.runs(s.id)] == [eleven, noon]
    assert rig.store.get_schedule(s.id).records == ()
