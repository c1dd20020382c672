"""Review finding F12 reproduced with real processes: a schedule stored while no daemon ran, then
``jobman daemon --once --no-api`` (TinyDB, moto_server for EC2): the missed occurrences reach a real
receiver as ONE signed ``schedule.missed`` POST; a second ``--once`` sends nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from moto_server import moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_notify_e2e import SECRET, env, receiver  # noqa: F401  (fixtures)

from jobman_cli.clock import FixedClock
from jobman_cli.notify.message import verify
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow


def once(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobman_cli", "daemon", "--once", "--no-api"], env=env,
                          capture_output=True, text=True, timeout=180)


def test_daemon_once_notifies_the_missed_occurrences_once(env, receiver, tmp_path):  # noqa: F811
    hook = receiver()
    store = TinyDBStore(tmp_path / "jobs.json")
    try:
        made_at = datetime.now(timezone.utc) - timedelta(minutes=5)
        schedule = ScheduleService(JobService(store, FixedClock(made_at))).create({
            "docker-image": "alpine:3.20", "every": "1m", "title": "nightly-backup",
            "notify": [f"{hook.url}/missed"], "notify-on": "failure"})
    finally:
        store.close()
    first = once(env)
    assert first.returncode == 0, first.stderr
    assert "occurrence(s) missed" in first.stderr and "notification (schedule.missed" in first.stderr
    second = once(env)
    assert second.returncode == 0, second.stderr
    # each --once records its attempts before it exits: every request has arrived by now (the run
    # of the latest occurrence may notify too, if its launch failed: not counted here)
    missed = [r for r in hook.wait_for(1) if r.headers.get("X-Jobman-Event") == "schedule.missed"]
    assert len(missed) == 1
    (request,) = missed
    assert verify(request.body, request.headers["X-Jobman-Signature"], SECRET.encode())
    body = json.loads(request.body)
    assert body["event"] == "schedule.missed" and body["schedule-id"] == schedule.id
    assert body["count"] >= 3 and body["reason-code"] == "missed-start-deadline"
    assert request.headers["X-Jobman-Event-Id"] == body["event-id"]
