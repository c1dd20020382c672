"""What notifications say about where a job ran and which series it belongs to (review finding F7),
the Slack paragraph of a schedule event, and ``schedules show``'s grouping of records (F10c)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from notify_receiver import Receiver
from test_daemon import World, aws_env, ec2  # noqa: F401  (fixtures)

from jobman_cli.cli import cli
from jobman_cli.model import JobStatus
from jobman_cli.notify import schedule_events
from jobman_cli.notify.message import slack_text
from jobman_cli.notify.send import Sender
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
SECRET = b"schedule-notify-secret-0123456789"


@pytest.fixture()
def hook():
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_a_schedule_run_body_names_its_placement_schedule_and_occurrence(tmp_path, ec2, hook):  # noqa: F811
    """A run launched by the daemon (moto EC2) and then cancelled, ``--notify-on end``: the body's
    ``placement`` is the rung that launched (type, zone, market), ``schedule-id`` and ``occurrence``
    say which series and occurrence. A one-off job cancelled before launch: all three null."""
    world = World(tmp_path, ec2)
    world.daemon.close()
    world.daemon = world.make_daemon(notify_sender=Sender(SECRET))
    try:
        made = ScheduleService(world.service).create({
            "docker-image": "alpine:3.20", "every": "1h", "notify": [f"{hook.url}/run"], "notify-on": "end"})
        world.tick(made.next_at, reconcile=False)
        run = next(j for j in world.store.list() if j.schedule_id == made.id)
        assert world.get(run.id).status in (JobStatus.LAUNCHING, JobStatus.RUNNING)
        world.service.cancel(run.id, terminate=lambda iid: None, reason="test")
        lonely = world.schedule(made.next_at + timedelta(days=1), notify=[f"{hook.url}/one"], notify_on="end")
        world.service.cancel(lonely.id, terminate=lambda iid: None, reason="test")
        world.daemon.notifier.run_once()
        got = {r.path: json.loads(r.body) for r in hook.wait_for(2)}
        ran = world.get(run.id)
    finally:
        world.close()
    body = got["/run"]
    assert body["placement"] == {"instance-type": ran.placement["instance-type"],
                                 "availability-zone": ran.placement["availability-zone"],
                                 "market": ran.placement["market"]}
    assert body["placement"]["instance-type"] and body["placement"]["market"] == "on-demand"
    assert body["schedule-id"] == made.id and body["occurrence"] == schedule_events_format(made.next_at)
    one = got["/one"]
    assert one["placement"] is None and one["schedule-id"] is None and one["occurrence"] is None


def schedule_events_format(at: datetime) -> str:
    from jobman_cli.model import format_time

    return format_time(at)


def test_slack_paragraph_of_a_schedule_event_is_readable_and_escaped(tmp_path):
    store = TinyDBStore(tmp_path / "jobs.json")
    from jobman_cli.service import JobService

    made = ScheduleService(JobService(store)).create({"docker-image": "alpine:3.20", "every": "1m",
                                                      "title": "<!channel> backup"})
    record = {"occurrence": "2026-12-01T12:01:00Z", "until": "2026-12-01T12:09:00Z", "count": 9, "outcome": "missed",
              "job-id": None, "at": "2026-12-01T12:10:00Z", "detail": "9 older than the start deadline (1h)",
              "notifications": []}
    text = slack_text(schedule_events.body(made, record, "eid"))
    assert text.startswith(f"jobman: schedule {made.id} \u201c&lt;!channel&gt; backup\u201d: 9 occurrences "
                           "2026-12-01T12:01:00Z .. 2026-12-01T12:09:00Z missed")
    assert "missed-start-deadline" in text and f"jobman schedules show {made.id}" in text
    store.close()


def test_show_lists_a_replaced_previous_occurrence_apart_from_those_without_a_run(tmp_path):
    """F10c: the occurrence of a replaced-previous record HAS a run; it is not listed under
    "Occurrences without a run of their own" (a missed one is)."""
    db = tmp_path / "jobs.json"
    made = CliRunner().invoke(cli, ["--db", str(db), "schedule", "--image", "alpine:3.20", "--every", "1m",
                                    "--overlap", "replace", "-q"])
    assert made.exit_code == 0, made.output
    t0 = datetime(2027, 1, 1, tzinfo=UTC)
    store = TinyDBStore(db)

    def change(s):
        s = s.with_record(t0, t0, "missed", detail="older than the start deadline (1h)")
        return s.with_record(t0, t0 + timedelta(minutes=1), "replaced-previous", job_id=24,
                             detail="job 24 was running; cancelled (overlap replace)")

    store.update_schedule(1, change)
    store.close()
    shown = CliRunner().invoke(cli, ["--db", str(db), "schedules", "show", "1"])
    assert shown.exit_code == 0, shown.output
    without = shown.output.split("Occurrences without a run of their own", 1)[1].split("\n\n", 1)[0]
    assert "missed" in without and "replaced" not in without and "2027-01-01T00:01:00Z" not in without
    replaced = shown.output.split("Occurrences whose run replaced the previous one", 1)[1]
    assert "2027-01-01T00:01:00Z" in replaced and "24" in replaced and "CANCELLED JOB" in replaced
