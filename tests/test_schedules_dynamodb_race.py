"""Two real ``jobman daemon`` processes on one DynamoDB table (moto servers over HTTP, DynamoDB's
conditional writes atomic as on AWS): each occurrence of each schedule creates exactly one job.

The schedules are stored *after* both daemons are ready, with every occurrence of the last eight
minutes due and within the start deadline: both daemons see the store change within their watch
interval and materialize the same pile at the same time — the seven older occurrences are ONE
"missed" range record (superseded by the latest; a backlog never launches a burst), written once
by a compare-and-set, and the latest gets exactly one job, raced for through its idempotency key. No sleeps order anything: the test waits for
store states (every schedule advanced past the pile), then checks the jobs. Without the
idempotency key per occurrence, this test sees duplicates (tried: see the report of issue 16).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from datetime import datetime, timedelta, timezone

import pytest

from moto_server import moto_server, moto_server_process  # noqa: F401
from test_dynamodb_race import (dynamodb_server, dynamodb_server_process, env, start_daemons, store,  # noqa: F401
                                WAIT)
from test_e2e_daemon import DaemonProcess

from jobman_cli.daemon.schedules import occurrence_key
from jobman_cli.model import format_time
from jobman_cli.service import JobService
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.stores.dynamodb import DynamoDBStore

pytestmark = pytest.mark.slow

SCHEDULES = 10
MINUTE = timedelta(minutes=1)
PILE = 8  # occurrences due per schedule when it is stored (one a minute, the last eight minutes)


def store_piles(store: DynamoDBStore) -> dict[int, list[datetime]]:  # noqa: F811
    """SCHEDULES schedules ``every 1m``, each created (anchored) PILE minutes ago: PILE occurrences
    are due at once. Returns schedule id -> its due occurrences."""
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    draft = ScheduleService(JobService(store)).validate(
        {"docker-image": "alpine:3.20", "every": "1m", "tz": "UTC", "overlap": "allow", "start-deadline": "1h"})
    piles = {}
    for n in range(SCHEDULES):
        anchor = minute - timedelta(minutes=PILE)  # ``every`` counts from the anchor's whole minute
        first = anchor + timedelta(minutes=1)
        schedule = store.add_schedule(dataclasses.replace(draft, created_at=anchor, next_at=first,
                                                          title=f"race {n}"))
        piles[schedule.id] = [first + timedelta(minutes=k) for k in range(PILE)]
    return piles


def wait_until_advanced(store: DynamoDBStore, piles: dict[int, list[datetime]],  # noqa: F811
                        daemons: list[DaemonProcess]) -> None:
    """Every schedule's next_at past its pile (the store's word, polled; WAIT is liveness only)."""
    deadline = time.monotonic() + WAIT
    while True:
        schedules = {s.id: s for s in store.list_schedules()}
        if all(schedules[i].next_at is not None and schedules[i].next_at > pile[-1] for i, pile in piles.items()):
            return
        for daemon in daemons:
            assert daemon.proc.poll() is None, daemon.text()
        assert time.monotonic() < deadline, "\n".join(d.text() for d in daemons)
        time.sleep(0.2)


def test_two_daemons_on_one_table_create_one_job_per_occurrence(store, start_daemons):  # noqa: F811
    daemons = start_daemons(2)
    piles = store_piles(store)
    wait_until_advanced(store, piles, daemons)
    for daemon in daemons:
        assert daemon.stop() == 0

    jobs = [j for j in store.list() if j.schedule_id is not None]
    per_occurrence = collections.Counter((j.schedule_id, j.occurrence) for j in jobs)
    duplicates = {k: n for k, n in per_occurrence.items() if n > 1}
    assert duplicates == {}
    for schedule_id, pile in piles.items():
        mine = sorted(j.occurrence for j in jobs if j.schedule_id == schedule_id)
        assert mine and mine[0] >= pile[-1]  # one run for the pile (a later minute may have come meanwhile)
        stored = store.get_schedule(schedule_id)
        assert all(r["outcome"] == "missed" for r in stored.records)
        # the pile before its run: missed (one record each, or a range record), from its first minute on
        assert stored.records[0]["occurrence"] == format_time(pile[0])
        before_run = [r for r in stored.records if r["occurrence"] < format_time(mine[0])]
        assert sum(r["count"] for r in before_run) == PILE - 1 + (mine[0] - pile[-1]) // MINUTE
        # every occurrence up to the latest run: a job or counted in a missed record, never both, never twice
        handled = int((mine[-1] - pile[0]) / MINUTE) + 1
        assert sum(r["count"] for r in stored.records) + len(mine) == handled
    for job in jobs:
        assert job.idempotency_key == occurrence_key(job.schedule_id, job.occurrence)
    # Both daemons did materialize (the race was real): each logged the jobs it created (the one
    # line per state change: "job N scheduled for T"; the daemon that lost an occurrence logs nothing).
    creators = [sum(" scheduled for " in line for line in d.text().splitlines()) for d in daemons]
    assert sum(creators) == len(jobs)
