"""A schedule item stays far below DynamoDB's 400 KB item limit whatever its targets answer
(review finding SN4: 100 owed records x 10 targets with full delivery histories reached 404 KiB,
then every write of that schedule failed with ValidationException).

Worst case built with the real claim/settle functions on in-process mock_aws DynamoDB: 120 refused
records (more than the cap), each owing 10 targets with 2,000-character URLs, every delivery failing
with 300-character outcomes; then the trim every materializer write applies. Measured bound:
about 241 KiB (record JSON); asserted under 300 KiB and written to DynamoDB.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import orjson
from test_schedule_notify import T0, Setup
from test_store_dynamodb import aws, make_handle, table  # noqa: F401  (fixtures)

from jobman_cli.notify import schedule_events as ev
from jobman_cli.notify.deliveries import Outcome, Policy
from jobman_cli.schedules.model import MAX_RECORDS, schedule_to_record


def test_the_worst_case_schedule_item_is_bounded_and_dynamodb_accepts_it(make_handle):  # noqa: F811
    store = make_handle()
    setup = Setup(store)
    targets = tuple(f"https://hooks{i}.example.com/" + "p" * 2000 for i in range(10))
    made = setup.create(every="1m", title="t" * 200, notify=list(targets))
    policy = Policy(max_age=10**9)
    records = [{"occurrence": f"2026-12-0{1 + m // 60}T12:{m % 60:02d}:00Z", "outcome": "refused", "job-id": None,
                "at": "2026-12-01T12:00:00Z", "detail": "max-cost: " + "d" * 190, "notifications": []}
               for m in range(MAX_RECORDS + 20)]
    schedule = dataclasses.replace(store.get_schedule(made.id), records=tuple(records))
    now = T0 + timedelta(hours=4)
    for record in records:
        for index in range(len(targets)):
            for attempt in range(1, 5):  # more attempts than any kept history
                now += timedelta(hours=1)
                schedule = ev.claim(schedule, record["occurrence"], "refused", index, targets, now,
                                    "daemon-" + "o" * 40, policy, "e" * 80)
                schedule = ev.settle(schedule, record["occurrence"], "refused", index, targets, attempt,
                                     "daemon-" + "o" * 40, Outcome(False, "x" * 300), now, policy)
    kept, lost = ev.trim(schedule, schedule.records, MAX_RECORDS, targets)
    assert len(lost) == MAX_RECORDS + 20 - ev.MAX_DETAILED
    schedule = dataclasses.replace(schedule, records=kept)
    size = len(orjson.dumps(schedule_to_record(schedule)))
    assert size < 300 * 1024, size
    store.update_schedule(made.id, lambda current: dataclasses.replace(schedule, version=current.version + 1))
    assert len(store.get_schedule(made.id).records) == MAX_RECORDS
