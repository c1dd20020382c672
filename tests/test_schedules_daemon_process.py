"""A real ``jobman daemon`` process (TinyDB, moto_server for EC2) and a schedule stored by another
process while it runs: the loop notices the new schedule through the store's change marker, wakes
``LEAD`` before the occurrence, creates its job before the occurrence and starts its launch at the
occurrence — never before it. Ordered by events (the daemon's "ready" line, then the store's
states); the time bounds are generous liveness limits, not the 1-second latency figure (that one
is the benchmark's).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from moto_server import moto_server, moto_server_process  # noqa: F401
from test_e2e_daemon import WAIT, daemons, env, poll  # noqa: F401

from jobman_cli.daemon.schedules import LEAD, occurrence_key
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow


def test_a_schedule_added_while_the_daemon_runs_is_launched_at_its_occurrence(env, daemons, tmp_path):  # noqa: F811
    daemon = daemons(env)
    daemon.wait_for(lambda line: " ready;" in line)
    store = TinyDBStore(tmp_path / "jobs.json")
    try:
        draft = ScheduleService(JobService(store)).validate(
            {"docker-image": "alpine:3.20", "every": "1h", "tz": "UTC", "title": "soon"})
        occurrence = (datetime.now(timezone.utc) + LEAD + timedelta(seconds=4)).replace(microsecond=0)
        schedule = store.add_schedule(dataclasses.replace(draft, next_at=occurrence))

        def claimed() -> bool:
            jobs = [j for j in store.list() if j.schedule_id == schedule.id]
            return bool(jobs) and jobs[0].claimed_at is not None

        assert poll(claimed, timeout=WAIT), daemon.text()
        [job] = [j for j in store.list() if j.schedule_id == schedule.id]
        assert job.occurrence == job.date_time == occurrence
        assert job.idempotency_key == occurrence_key(schedule.id, occurrence)
        assert job.created_at < occurrence  # created during the lead, before its time
        assert occurrence <= job.claimed_at < occurrence + timedelta(seconds=10)  # never early; not stuck
        stored = store.get_schedule(schedule.id)
        assert stored.records == ()  # the run is its job: no record per created run
        assert stored.next_at is not None and stored.next_at > occurrence
        daemon.wait_for(lambda line: f"job {job.id} scheduled for" in line, timeout=10)
        assert "schedules: none active" in daemon.text()  # the start-up line (the schedule came later)
    finally:
        store.close()
    assert daemon.stop() == 0
