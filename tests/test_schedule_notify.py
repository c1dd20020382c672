"""A schedule's missed and refused occurrences notify (review finding F12), through the persisted,
signed, retried, at-most-once deliveries of job notifications, kept on the schedule's record.

Driven with a fixed clock: the daemon's pass (``tick(now)``, or the materializer's ``step(now)``)
records the event, the notifier's schedule part sends it to a real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from notify_receiver import Receiver
from test_daemon import World, aws_env, ec2  # noqa: F401  (fixtures)
from test_store_dynamodb import aws, make_handle, table  # noqa: F401  (fixtures)

from jobman_cli.clock import FixedClock
from jobman_cli.daemon.schedule_notifier import ScheduleEvents
from jobman_cli.daemon.schedules import Materializer
from jobman_cli.notify.deliveries import Policy
from jobman_cli.notify.message import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from jobman_cli.notify.send import Sender
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = b"schedule-notify-secret-0123456789"


@pytest.fixture()
def hook():
    receiver = Receiver()
    yield receiver
    receiver.close()


class Setup:
    """A store, a fixed clock, a materializer and the notifier's schedule part over it."""

    def __init__(self, store: Any, clock: FixedClock | None = None, owner: str = "d1") -> None:
        self.store = store
        self.clock = clock or FixedClock(T0)
        self.service = JobService(store, self.clock)
        self.lines: list[str] = []
        self.materializer = Materializer(store, self.service, terminate=lambda iid: None, log=self.lines.append)
        self.events = ScheduleEvents(store, self.clock, Policy(), Sender(SECRET), owner=owner, log=self.lines.append)
        self.materializer.on_event = self.events.poke

    def create(self, **body: Any) -> Any:
        return ScheduleService(self.service).create({"docker-image": "alpine:3.20", **body})

    def step(self, at: datetime) -> None:
        self.clock.set(at)
        self.materializer.step(at)


def _records(store: Any, schedule_id: int) -> list[dict]:
    return [dict(r) for r in store.get_schedule(schedule_id).records]


def _notified(store: Any, schedule_id: int) -> list[dict]:
    return [r for r in _records(store, schedule_id) if "notifications" in r]


# ---------------------------------------------------------------------- the daemon's pass
def test_a_week_down_on_every_1m_is_one_signed_post_and_show_says_delivered(tmp_path, ec2, hook):  # noqa: F811
    """The daemon (its tick, its notifier) after a week without a daemon over a minutely schedule:
    ONE signed POST for the whole range; its body names the schedule, the span and the reason, never
    the env values; a second pass sends nothing; ``schedules show`` (and --json) shows it delivered."""
    world = World(tmp_path, ec2)
    world.daemon.close()
    world.daemon = world.make_daemon(notify_sender=Sender(SECRET))
    try:
        made = ScheduleService(world.service).create({
            "docker-image": "alpine:3.20", "every": "1m", "title": "nightly-backup",
            "env-variables": {"API_KEY": "s3cr3t-value"}, "notify": [f"{hook.url}/missed"], "notify-on": "failure"})
        later = world.clock.now() + timedelta(days=7)
        world.tick(later, reconcile=False)
        world.daemon.notifier.run_once()
        world.daemon.notifier.run_once()  # a second pass: already delivered, nothing sent
        assert hook.count() == 1
        request = hook.requests[0]
        assert request.path == "/missed"
        assert verify(request.body, request.headers[SIGNATURE_HEADER], SECRET)
        body = json.loads(request.body)
        assert request.headers[EVENT_ID_HEADER] == body["event-id"]
        assert body["event"] == "schedule.missed" and body["schedule-id"] == made.id
        assert body["title"] == "nightly-backup" and body["reason-code"] == "missed-start-deadline"
        assert body["occurrence"] < body["until"]
        assert body["count"] >= 1000 and "older than the start deadline" in body["reason"]
        assert b"s3cr3t-value" not in request.body and b"API_KEY" not in request.body
        assert b"/missed" not in request.body  # never the targets
        owed = _notified(world.store, made.id)
        assert len(owed) == 1 and owed[0]["notifications"][0]["state"] == "delivered"
        assert owed[0]["notifications"][0]["event-id"] == body["event-id"]
        assert any("notification (schedule.missed" in line and "-> delivered" in line for line in world.lines)
    finally:
        world.close()
    from click.testing import CliRunner

    from jobman_cli.cli import cli

    shown = CliRunner().invoke(cli, ["--db", str(tmp_path / "jobs.json"), "schedules", "show", str(made.id)])
    assert shown.exit_code == 0, shown.output
    assert "NOTIFIED" in shown.output and "delivered (1 attempt)" in shown.output
    as_json = json.loads(CliRunner().invoke(cli, ["--db", str(tmp_path / "jobs.json"), "schedules", "show",
                                                  str(made.id), "--json"]).output)
    states = [n["state"] for r in as_json["records"] for n in r.get("notifications", [])]
    assert states == ["delivered"]
    assert "s3cr3t" not in json.dumps(as_json["records"])


def test_the_running_notifier_sends_at_once_when_the_materializer_records_an_event(tmp_path, hook):
    """The loop's path: the materializer pokes the notifier's thread (no scan needed)."""
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    setup.events.scan_interval = 3600.0  # only the poke can make it send
    made = setup.create(every="1m", notify=[hook.url])
    setup.events.start()
    try:
        setup.events.scan()  # nothing owed yet
        setup.step(T0 + timedelta(minutes=5, seconds=1))
        hook.wait_for(1, timeout=60)
    finally:
        assert setup.events.close(30)
    body = json.loads(hook.requests[0].body)
    assert body["count"] == 4 and body["schedule-id"] == made.id


def test_a_short_outage_recorded_per_occurrence_is_still_one_notification(tmp_path, hook):
    """Down 5 minutes over --every 1m: 4 records (one per missed occurrence) but ONE notification,
    with the span (first, until, count) of the outage."""
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", notify=[hook.url], **{"notify-on": "end"})  # end includes missed
    setup.step(T0 + timedelta(minutes=5, seconds=1))
    missed = [r for r in _records(setup.store, made.id) if r["outcome"] == "missed"]
    assert len(missed) == 4
    assert setup.events.run_once() == 1
    assert setup.events.run_once() == 0
    body = json.loads(hook.wait_for(1)[0].body)
    assert (body["occurrence"], body["until"], body["count"]) == ("2026-12-01T12:01:00Z", "2026-12-01T12:04:00Z", 4)
    assert hook.count() == 1


def test_no_target_no_notification_and_no_delivery_state(tmp_path, hook):
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m")
    setup.step(T0 + timedelta(days=1))
    assert _notified(setup.store, made.id) == []
    assert setup.events.run_once() == 0


def test_a_refused_occurrence_notifies(tmp_path, hook):
    """A template that no longer validates (here: made invalid in the store) refuses the occurrence:
    recorded as refused, and notified with the job rules' reason."""
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", title="t", notify=[hook.url])
    setup.store.update_schedule(made.id, lambda s: s.changed(T0, template={**s.template, "timeout": -5}))
    setup.step(T0 + timedelta(minutes=1))
    assert [r["outcome"] for r in _records(setup.store, made.id)] == ["refused"]
    assert setup.events.run_once() == 1
    body = json.loads(hook.wait_for(1)[0].body)
    assert body["event"] == "schedule.refused" and body["reason-code"] == "refused"
    assert body["occurrence"] == "2026-12-01T12:01:00Z" and body["count"] == 1 and "timeout" in body["reason"]
    assert _notified(setup.store, made.id)[0]["notifications"][0]["state"] == "delivered"


def test_a_500_then_200_is_delivered_on_the_second_attempt_with_the_same_bytes(tmp_path):
    hook = Receiver(answers=[500])
    try:
        setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
        made = setup.create(every="1m", notify=[hook.url])
        setup.step(T0 + timedelta(days=1))
        assert setup.events.run_once() == 1
        record = _notified(setup.store, made.id)[0]["notifications"][0]
        assert (record["state"], record["attempts"]) == ("pending", 1)
        assert record["history"][0]["outcome"] == "HTTP 500"
        assert setup.events.run_once() == 0  # not due before its backoff
        setup.clock.set(T0 + timedelta(days=1, seconds=Policy().backoff_base + 1))
        assert setup.events.run_once() == 1
        record = _notified(setup.store, made.id)[0]["notifications"][0]
        assert (record["state"], record["attempts"]) == ("delivered", 2)
        assert [h["outcome"] for h in record["history"]] == ["HTTP 500", "HTTP 200"]
        first, second = hook.wait_for(2)
        assert first.body == second.body and first.headers[EVENT_ID_HEADER] == second.headers[EVENT_ID_HEADER]
        assert hook.count() == 2
    finally:
        hook.close()


def test_a_pending_retry_survives_a_restart(tmp_path):
    """The delivery state is in the store: a new process (new handle, new notifier) retries it."""
    hook = Receiver(answers=[503])
    try:
        first = Setup(TinyDBStore(tmp_path / "jobs.json"))
        made = first.create(every="1m", notify=[hook.url])
        first.step(T0 + timedelta(days=1))
        assert first.events.run_once() == 1
        first.store.close()
        again = Setup(TinyDBStore(tmp_path / "jobs.json"), FixedClock(T0 + timedelta(days=1, hours=1)), owner="d2")
        assert again.events.run_once() == 1
        assert _notified(again.store, made.id)[0]["notifications"][0]["state"] == "delivered"
        assert hook.count() == 2
    finally:
        hook.close()


class _Gated:
    """A sender whose first attempt waits (after its claim is written) until the test lets it go."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.entered = threading.Event()
        self.gate = threading.Event()

    def send(self, target: str, data: dict) -> Any:
        self.entered.set()
        assert self.gate.wait(60)
        return self.sender.send(target, data)


def two_owners_send_once(one: Setup, other: Setup, hook: Receiver, schedule_id: int) -> None:
    """``one`` claims and is held mid-attempt; ``other`` makes a full pass meanwhile (sends nothing:
    the claim is stored), then again after ``one`` recorded its outcome (delivered: nothing)."""
    gated = _Gated(one.events.sender)
    one.events.sender = gated
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(one.events.run_once()))
    thread.start()
    try:
        assert gated.entered.wait(60)
        assert other.events.run_once() == 0
    finally:
        gated.gate.set()
        thread.join(60)
    assert result == [1]
    assert other.events.run_once() == 0
    assert hook.count() == 1
    state = _notified(other.store, schedule_id)[0]["notifications"][0]
    assert (state["state"], state["attempts"]) == ("delivered", 1)


def test_two_notifiers_on_one_tinydb_file_send_one_event_once(tmp_path, hook):
    one = Setup(TinyDBStore(tmp_path / "jobs.json"), owner="d1")
    made = one.create(every="1m", notify=[hook.url])
    one.step(T0 + timedelta(days=1))
    other = Setup(TinyDBStore(tmp_path / "jobs.json"), one.clock, owner="d2")
    two_owners_send_once(one, other, hook, made.id)


def test_two_owners_on_one_dynamodb_table_send_one_event_once(make_handle, hook):  # noqa: F811
    clock = FixedClock(T0)
    one = Setup(make_handle(), clock, owner="d1")
    other = Setup(make_handle(), clock, owner="d2")
    made = one.create(every="1m", notify=[hook.url])
    # both daemons run the pass: one records the event, the other finds next-at moved
    clock.set(T0 + timedelta(days=1))
    one.materializer.step(clock.now())
    other.materializer.step(clock.now())
    assert len(_notified(other.store, made.id)) == 1
    two_owners_send_once(one, other, hook, made.id)



def test_an_event_older_than_max_age_is_given_up_unsent(tmp_path, hook):
    """A daemon that comes back more than max_age after the event was recorded sends nothing and
    records why (the job deliveries' rule)."""
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", notify=[hook.url])
    setup.step(T0 + timedelta(days=1))
    setup.clock.set(T0 + timedelta(days=1) + timedelta(seconds=Policy().max_age + 60))
    assert setup.events.run_once() == 0
    record = _notified(setup.store, made.id)[0]["notifications"][0]
    assert record["state"] == "failed" and record["attempts"] == 0
    assert record["history"][-1]["outcome"].startswith("gave up")
    assert hook.count() == 0


def test_the_daemon_notifier_starts_and_closes_its_schedule_part(tmp_path, hook):
    """The Notifier (as the daemon runs it): its schedule part's thread delivers a poked event and
    ends with close()."""
    from jobman_cli.daemon.notifier import Notifier
    from jobman_cli.notify.settings import NotifySettings

    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    notifier = Notifier(setup.store, setup.clock, NotifySettings(), Sender(SECRET), owner="d1", exclusive=True,
                        log=setup.lines.append)
    assert notifier.schedule_events is not None
    setup.materializer.on_event = notifier.schedule_events.poke
    made = setup.create(every="1m", notify=[hook.url])
    notifier.start()
    try:
        setup.step(T0 + timedelta(hours=3))
        body = json.loads(hook.wait_for(1, timeout=60)[0].body)
        deadline = time.monotonic() + 60  # the outcome is recorded after the answer: wait for it
        while _notified(setup.store, made.id)[0]["notifications"][0]["state"] != "delivered":
            assert time.monotonic() < deadline, "the delivered outcome was not recorded within 60 s"
            time.sleep(0.05)
    finally:
        notifier.close()
    assert body["schedule-id"] == made.id and body["event"] == "schedule.missed"
    assert not any("abandoned" in line for line in setup.lines)
