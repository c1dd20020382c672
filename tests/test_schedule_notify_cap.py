"""A schedule's record cap never silently drops an event still owed (review finding SN1).

A schedule keeps its newest ``MAX_RECORDS`` records. An event whose delivery is still pending
(the receiver is down, retried until ``max_age``) used to be trimmed away by newer records (overlap
``forbid`` skips every minute): never delivered, nothing logged. Now records whose delivery is not
finished are kept past the cap (at most ``MAX_OWED_EXTRA`` of them); past that bound the oldest
goes and one log line says so. Fixed clock, real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

from datetime import timedelta

from notify_receiver import Receiver
from test_schedule_notify import T0, Setup, _notified, _records

from jobman_cli.notify import schedule_events
from jobman_cli.schedules.model import MAX_RECORDS
from jobman_cli.stores.tinydb import TinyDBStore


def test_a_pending_event_outlives_the_record_cap_and_is_delivered_when_the_receiver_is_back(tmp_path):
    """Missed minutes (one event, the receiver answering 503), then 100+ 'skipped' records (the run
    stays scheduled, overlap forbid): the event is still owed and delivered once the receiver is back."""
    hook = Receiver(then=503)
    try:
        setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
        made = setup.create(every="1m", notify=[hook.url])
        setup.step(T0 + timedelta(minutes=5, seconds=1))  # 12:00..12:04 missed; the 12:05 run stays scheduled
        assert setup.events.run_once() == 1 and hook.count() == 1
        assert _notified(setup.store, made.id)[0]["notifications"][0]["state"] == "pending"
        for minute in range(6, 6 + MAX_RECORDS + 5):
            setup.step(T0 + timedelta(minutes=minute, seconds=1))
        records = _records(setup.store, made.id)
        assert sum(r["outcome"] == "skipped" for r in records) == MAX_RECORDS  # the cap still holds for them
        owed = _notified(setup.store, made.id)
        assert len(owed) == 1 and owed[0]["outcome"] == "missed" and records[0] == owed[0]
        hook.then = 200
        setup.clock.set(T0 + timedelta(hours=3))  # within max_age (24 h)
        assert setup.events.run_once() == 1
        assert hook.count() == 2
        assert _notified(setup.store, made.id)[0]["notifications"][0]["state"] == "delivered"
        first = owed[0]["occurrence"]
        # delivered: the next records appended (the minutes missed meanwhile) let it go with the cap
        setup.step(T0 + timedelta(hours=3, seconds=1))
        assert first not in [r["occurrence"] for r in _records(setup.store, made.id)]
        assert not any("given up before it was delivered" in line for line in setup.lines)
    finally:
        hook.close()


def _owed(minute: int) -> dict:
    return {"occurrence": f"2026-12-01T12:{minute:02d}:00Z", "outcome": "refused", "job-id": None,
            "at": f"2026-12-01T12:{minute:02d}:01Z", "detail": f"reason {minute}", "notifications": []}


def test_only_the_newest_owing_records_keep_their_deliveries_older_unfinished_ones_are_given_up(tmp_path):
    """More owing records than MAX_DETAILED: the older ones are given up (reported) and then go with
    the cap; the newest MAX_DETAILED, unfinished, are kept past the cap; a delivered old one just goes."""
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", notify=["https://hooks.example.com/x"])
    schedule = setup.store.get_schedule(made.id)
    detailed = schedule_events.MAX_DETAILED
    owed = [_owed(m) for m in range(detailed + 3)]
    done = [{**_owed(59), "occurrence": f"2026-12-02T00:{m:02d}:00Z", "outcome": "skipped",
             "notifications": None} for m in range(MAX_RECORDS)]
    delivered = {**_owed(58), "notifications": [{"target-index": 0, "event": "schedule.refused",
                                                 "state": "delivered", "attempts": 1}]}
    kept, lost = schedule_events.trim(schedule, (delivered, *owed, *done), MAX_RECORDS, ("https://h/x",))
    assert list(kept) == [*owed[3:], *done]
    assert lost == owed[:3]  # the oldest owing ones; the delivered one just went with the cap


def test_the_materializer_logs_each_event_it_gives_up(tmp_path):
    """A schedule holding more owing records than MAX_DETAILED: the materializer's next write gives
    the oldest up (their deliveries 'failed', nothing more sent) and says so once each."""
    import dataclasses

    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", notify=["https://hooks.example.com/x"])
    owed = [{**_owed(0), "occurrence": f"2026-11-30T00:{m:02d}:00Z"} for m in range(schedule_events.MAX_DETAILED + 2)]
    setup.store.update_schedule(made.id, lambda s: dataclasses.replace(s, records=tuple(owed)))
    setup.step(T0 + timedelta(minutes=1, seconds=1))  # the 12:01 run: a write of the schedule, no new record
    records = _records(setup.store, made.id)
    assert [r["notifications"] for r in records[2:]] == [[]] * schedule_events.MAX_DETAILED
    assert [[n["state"] for n in r["notifications"]] for r in records[:2]] == [["failed"], ["failed"]]
    given_up = [line for line in setup.lines if "given up before it was delivered" in line]
    assert len(given_up) == 2 and owed[0]["occurrence"] in given_up[0] and owed[1]["occurrence"] in given_up[1]
    owing = schedule_events.pending(setup.store.get_schedule(made.id), ("https://hooks.example.com/x",))
    assert len(owing) == schedule_events.MAX_DETAILED  # the given-up ones are never sent
