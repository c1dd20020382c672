"""``jobman schedule --cron/--every`` and ``jobman schedules ...``: what a user sees, and bad input
(one line naming the field, exit 2, the store byte-identical), through CliRunner and one real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from conftest import make_draft
from jobman_cli.cli import cli
from jobman_cli.stores.tinydb import TinyDBStore

ROOT = Path(__file__).resolve().parent.parent


BERLIN = ZoneInfo("Europe/Berlin")


def next_berlin_0230(after: datetime) -> datetime:
    """The first 02:30 Berlin wall-clock time after ``after`` (UTC), the first of two in the autumn
    repeat; in the spring gap, where 02:30 does not exist, the gap's end (03:00 CEST)."""
    day = after.astimezone(BERLIN).date()
    for offset in range(3):
        date = day + timedelta(days=offset)
        wall = datetime.combine(date, time(2, 30), BERLIN)
        if wall.astimezone(timezone.utc).astimezone(BERLIN).replace(tzinfo=None) != wall.replace(tzinfo=None):
            wall = datetime.combine(date, time(3, 0), BERLIN)  # 02:30 is in the gap
        if wall > after:
            return wall.astimezone(timezone.utc)
    raise AssertionError("unreachable")


def run(db: Path, *argv: str):
    return CliRunner().invoke(cli, ["--db", str(db), *argv])


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    """A store with one job and one schedule (so "byte-identical" covers both tables)."""
    path = tmp_path / "jobs.json"
    assert run(path, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q").exit_code == 0
    made = run(path, "schedule", "--image", "alpine:3.20", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
               "--title", "nightly", "-e", "A=1", "--timeout", "10m", "--", "echo", "hi")
    assert made.exit_code == 0, made.output
    return path


def test_schedule_cron_creates_a_schedule_with_the_job_options_as_template(db):
    shown = run(db, "schedules", "show", "1", "--json")
    assert shown.exit_code == 0, shown.output
    s = json.loads(shown.output)
    assert (s["cron"], s["tz"], s["overlap"], s["paused"], s["title"]) == ("30 2 * * *", "Europe/Berlin", "forbid",
                                                                         False, "nightly")
    assert s["template"] == {"docker-image": "alpine:3.20", "title": "nightly", "env-variables": {"A": "1"},
                             "timeout": 600, "start-deadline": 3600, "command": ["echo", "hi"]}
    # 02:30 Berlin (CET or CEST) after the schedule was made; computed here, so the day of the run
    # does not matter (the night of the spring gap has no 02:30: 03:00 CEST, as previewed below).
    expected = next_berlin_0230(datetime.fromisoformat(s["created-at"].replace("Z", "+00:00")))
    assert s["next-at"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert expected.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S %Z") in s["next-at-local"]
    assert [j.id for j in TinyDBStore(db).list()] == [1]  # no job was created, the schedule is apart


def test_every_schedule_quiet_prints_the_id_and_list_shows_both(db):
    made = run(db, "schedule", "--image", "alpine:3.20", "--every", "15m", "--overlap", "replace", "--tz", "UTC", "-q")
    assert made.output.strip() == "2"
    listed = run(db, "schedules", "list")
    assert "30 2 * * *" in listed.output and "every 15m" in listed.output and "replace" in listed.output
    assert [s["id"] for s in json.loads(run(db, "schedules", "list", "--json").output)] == [1, 2]


def test_pause_resume_delete(db):
    assert "Paused schedule 1" in run(db, "schedules", "pause", "1").output
    assert json.loads(run(db, "schedules", "show", "1", "--json").output)["paused"] is True
    assert "paused" in run(db, "schedules", "list").output
    resumed = run(db, "schedules", "resume", "1")
    assert "Resumed schedule 1" in resumed.output and "next run 20" in resumed.output
    assert json.loads(run(db, "schedules", "show", "1", "--json").output)["paused"] is False
    assert run(db, "schedules", "delete", "1").exit_code == 0
    gone = run(db, "schedules", "show", "1")
    assert gone.exit_code == 1 and gone.output.strip() == "Error: schedule 1 not found"


def test_list_schedule_filters_the_runs_of_one_schedule(db):
    store = TinyDBStore(db)
    for n in range(3):
        store.add(make_draft(schedule_id=1))
    store.add(make_draft(schedule_id=7))
    store.close()
    ids = [j["id"] for j in json.loads(run(db, "list", "--schedule", "1", "--json").output)]
    assert ids == [4, 3, 2]
    assert [j["id"] for j in json.loads(run(db, "list", "--schedule", "1", "--limit", "2", "--json").output)] == [4, 3]
    table = run(db, "list", "--schedule", "7").output
    assert " 5 " in f" {table} " and "\n 4 " not in table
    bad = run(db, "list", "--schedule", "x")
    assert bad.exit_code == 2 and bad.output.startswith("Error: --schedule: ")  # names the flag (review finding 8)


def test_preview_across_the_berlin_gap_and_repeat_stores_nothing(tmp_path):
    db = tmp_path / "none.json"
    spring = run(db, "schedules", "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--from", "2027-03-27",
                 "-n", "3", "--json")
    assert spring.exit_code == 0, spring.output
    got = json.loads(spring.output)
    assert [o["utc"] for o in got["occurrences"]] == ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z",
                                                      "2027-03-29T00:30:00Z"]
    assert got["occurrences"][1]["local"] == "2027-03-28 03:00:00 CEST (+02:00)" and got["occurrences"][1]["note"]
    autumn = run(db, "schedules", "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
                 "--from", "2027-10-30 12:00", "-n", "2")
    assert autumn.exit_code == 0
    lines = autumn.output.splitlines()
    assert "2027-10-31T00:30:00Z  2027-10-31 02:30:00 CEST (+02:00)" in lines[1]
    assert "2027-11-01T01:30:00Z" in lines[2] and len(lines) == 3
    assert not db.exists() and not any(tmp_path.iterdir())  # no store, no lock file


BAD: list[tuple[list[str], str]] = [
    (["schedule", "--image", "alpine", "--cron", "not cron"], "--cron"),
    (["schedule", "--image", "alpine", "--cron", "0 0 * * * *"], "--cron"),
    (["schedule", "--image", "alpine", "--cron", "61 * * * *"], "--cron"),
    (["schedule", "--image", "alpine", "--cron", "@reboot"], "--cron"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--tz", "Mars/Olympus"], "--tz"),
    (["schedule", "--image", "alpine", "--every", "30s"], "--every"),
    (["schedule", "--image", "alpine", "--every", "soon"], "--every"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--every", "1h"], "--every"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--at", "+1h"], "--at"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--idempotency-key", "k"], "--idempotency-key"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--dry-run"], "--dry-run"),
    (["schedule", "--image", "alpine", "--at", "+1h", "--overlap", "allow"], "--overlap"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--overlap", "sometimes"], "--overlap"),
    (["schedule", "--image", "Bad Image", "--cron", "@daily"], "--image"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "--timeout", "forever"], "--timeout"),
    (["schedule", "--image", "alpine", "--cron", "@daily", "-e", "1BAD=x"], "-e"),
    (["schedule", "--image", "alpine"], "--at"),
    (["schedules", "preview", "--cron", "0 25 * * *"], "--cron"),
    (["schedules", "preview", "--cron", "@daily", "--tz", "Nowhere/City"], "--tz"),
    (["schedules", "preview", "--every", "59s"], "--every"),
    (["schedules", "preview", "--cron", "@daily", "-n", "0"], "-n"),
    (["schedules", "preview", "--cron", "@daily", "--from", "someday"], "--from"),
    (["schedules", "preview"], "--cron/--every"),
    (["schedules", "show", "abc"], "ID"),
    (["schedules", "pause", "0"], "ID: must be a positive integer schedule id"),
]


@pytest.mark.parametrize("argv,field", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_the_store_is_untouched(db, argv, field):
    before = db.read_bytes()
    result = CliRunner().invoke(cli, ["--db", str(db), *argv])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and field in lines[0], result.output
    assert "Traceback" not in result.output
    assert db.read_bytes() == before


def test_unknown_schedule_is_exit_1_and_store_untouched(db):
    before = db.read_bytes()
    for verb in ("show", "pause", "resume", "delete"):
        result = run(db, "schedules", verb, "42")
        assert result.exit_code == 1 and result.output.strip() == "Error: schedule 42 not found"
    assert db.read_bytes() == before


def test_a_real_process_refuses_a_bad_expression_in_one_line(db):
    before = db.read_bytes()
    env = {**os.environ, "JOBMAN_DB": str(db)}
    env.pop("JOBMAN_SERVER", None)
    done = subprocess.run([sys.executable, "-m", "jobman_cli", "schedule", "--image", "alpine:3.20", "--cron",
                           "0 0 * * * *", "--tz", "Europe/Berlin"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: --cron: ") and "seconds" in done.stderr
    assert db.read_bytes() == before


def test_show_lists_runs_from_the_jobs_and_a_range_record_on_one_line_list_json_omits_records(db):
    """``show``: the latest runs come from the jobs (no record per created run); an outage summed up
    as ONE range record reads as a range with its count; an old "created" record stays readable;
    ``list --json`` carries no records (review findings 2 and 8)."""
    from datetime import datetime, timezone

    store = TinyDBStore(db)
    for _ in range(2):
        store.add(make_draft(schedule_id=1))
    t0 = datetime(2027, 1, 1, tzinfo=timezone.utc)

    def change(s):
        s = s.with_record(t0, t0, "created", job_id=1)  # stored by an earlier jobman
        rec = {"occurrence": "2027-01-02T00:00:00Z", "until": "2027-01-09T00:00:00Z", "count": 8, "outcome": "missed",
               "job-id": None, "at": "2027-01-09T00:00:05Z", "detail": "older than the start deadline (1h)"}
        return s.changed(t0, records=(*s.records, rec))

    store.update_schedule(1, change)
    store.close()
    shown = run(db, "schedules", "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "Latest runs" in shown.output and "list --schedule 1" in shown.output
    runs_part = shown.output.split("Latest runs", 1)[1].split("Occurrences", 1)[0]
    assert [line.split()[0] for line in runs_part.splitlines()[2:] if line.strip()] == ["3", "2"]
    assert "2027-01-02T00:00:00Z .. 2027-01-09T00:00:00Z (8)" in shown.output
    assert "created" in shown.output  # the old record
    as_json = json.loads(run(db, "schedules", "show", "1", "--json").output)
    assert [r["id"] for r in as_json["runs"]] == [3, 2] and len(as_json["records"]) == 2
    assert all("records" not in s for s in json.loads(run(db, "schedules", "list", "--json").output))
