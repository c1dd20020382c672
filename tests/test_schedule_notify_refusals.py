"""A schedule refused on every occurrence notifies once per distinct reason (review finding SN2).

Every refused occurrence is still recorded (``schedules show`` lists them) and logged, but a refusal
with the same reason as the schedule's previous refusal, and no run created in between, owes no new
notification: a minutely schedule with a broken template pages once, not 1,440 times a day.
A new reason, or a refusal after a run, notifies again. Fixed clock, real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
from datetime import timedelta

from test_schedule_notify import T0, Setup, _notified, _records, hook  # noqa: F401  (fixture)

from jobman_cli.stores.tinydb import TinyDBStore


def _template(setup: Setup, schedule_id: int, **changes: object) -> None:
    setup.store.update_schedule(schedule_id, lambda s: s.changed(T0, template={**s.template, **changes}))


def _minutes(setup: Setup, first: int, last: int) -> None:
    for minute in range(first, last + 1):
        setup.step(T0 + timedelta(minutes=minute))
        setup.events.run_once()


def test_an_hour_of_identical_refusals_is_one_post_a_new_reason_or_a_run_between_is_another(tmp_path, hook):  # noqa: F811
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", title="t", overlap="allow", notify=[hook.url])
    _template(setup, made.id, timeout=-5)
    _minutes(setup, 1, 60)
    refused = [r for r in _records(setup.store, made.id) if r["outcome"] == "refused"]
    assert len(refused) == 60  # every occurrence recorded ...
    assert hook.count() == 1  # ... one notification
    assert len(_notified(setup.store, made.id)) == 1
    assert sum("refused" in line for line in setup.lines if line.startswith(f"schedule {made.id}: occurrence")) == 60
    assert sum("no new notification" in line for line in setup.lines) == 59

    _template(setup, made.id, timeout=-7)  # another reason: notified again, once
    _minutes(setup, 61, 70)
    assert hook.count() == 2
    assert json.loads(hook.requests[0].body)["reason"] != json.loads(hook.requests[1].body)["reason"]

    _template(setup, made.id, timeout=3600)  # fixed: a run is created
    _minutes(setup, 71, 71)
    assert setup.store.get_schedule(made.id).last_job_id is not None
    _template(setup, made.id, timeout=-7)  # the reason of minute 61 again, after a run
    _minutes(setup, 72, 80)
    assert hook.count() == 3
