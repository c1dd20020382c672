"""One log line per state change (DESIGN.md section 5; issue 9 item 6).

The daemon logs its own changes where it makes them; ``observe()`` logs the changes other
processes made. The race this guards: a write of the daemon's lands, ``observe()`` reads the store
before the daemon has noted the write, and the daemon's own change is logged a second time "(by
another process)".

* In process: a store wrapper runs ``observe()`` right after every write has landed and before it
  returns to the daemon (the worst interleaving, every time), through claim, launch, a callback
  through the daemon's service, and a cancel by another process (logged once, as another's).
* A real ``jobman daemon`` process (moto_server, TinyDB file), the quick start: a job scheduled by
  the CLI, launched, reported finished through the HTTP API, another job cancelled by the CLI;
  its stderr has exactly one line per transition.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from datetime import timedelta

import moto  # noqa: F401  (must precede boto3 client creation)
import pytest
from moto_server import aws_env, free_port, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import daemons, jobman, poll  # noqa: F401  (fixture)

from jobman_cli.clock import FixedClock
from jobman_cli.daemon import Daemon
from jobman_cli.daemon.common import LAUNCHED
from jobman_cli.daemon.observer import Observer, RecordingStore
from jobman_cli.launchers.base import EC2Settings
from jobman_cli.launchers.ec2 import EC2Launcher
from jobman_cli.model import format_time
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.settings import DaemonSettings
from jobman_cli.stores import WriteOutcomeUnknown
from jobman_cli.stores.tinydb import TinyDBStore
from conftest import make_draft
from test_daemon import T0

PUBLIC = "http://10.1.2.3:8321"


class ObservedBetween:
    """The store, with the daemon's ``observe()`` run after each write lands, before it returns."""

    def __init__(self, store: TinyDBStore) -> None:
        self.store = store
        self.daemon: Daemon | None = None
        self.interleaved = 0

    def update(self, job_id, change):
        job = self.store.update(job_id, change)
        if self.daemon is not None:
            self.daemon.observe()
            self.interleaved += 1
        return job

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_own_writes_are_never_logged_as_another_process_s_even_when_observe_runs_between(tmp_path, mock_ec2,
                                                                                         monkeypatch):
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    store = TinyDBStore(tmp_path / "jobs.json")
    between = ObservedBetween(store)
    clock = FixedClock(T0 + timedelta(microseconds=123456))  # stores keep milliseconds: marks must agree
    lines: list[str] = []
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, launch_workers=4,
                              reconcile_interval=3600.0)
    service = JobService(between, clock)  # the daemon's own service (its API)
    daemon = Daemon(between, EC2Launcher(EC2Settings()), settings, clock=clock, service=service,
                    log=lambda line: lines.append(line.split(" ", 1)[1]))
    service.store = daemon.store  # as ``jobman daemon`` wires it (daemon/main.py)
    between.daemon = daemon
    other = JobService(TinyDBStore(tmp_path / "jobs.json"), clock)  # another process
    try:
        jobs = [service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(T0)))[0] for _ in range(3)]
        daemon.observe()  # the first look only remembers
        clock.advance(1)
        report = daemon.tick(clock.now(), reconcile=False)
        assert report.job_ids(LAUNCHED) == [j.id for j in jobs]
        service.report(jobs[0].id, "finished", 0)  # an instance reported to this daemon's API
        other.cancel(jobs[1].id)  # a CLI cancel: another process
        daemon.observe()
        daemon.observe()
        assert between.interleaved >= 7  # observe() really ran between the writes and their return
        a, b, c = (j.id for j in jobs)
        expected = sorted([
            f"job {a} scheduled for {format_time(T0)}", f"job {b} scheduled for {format_time(T0)}",
            f"job {c} scheduled for {format_time(T0)}",
            f"job {a} scheduled -> launching (attempt 1)", f"job {b} scheduled -> launching (attempt 1)",
            f"job {c} scheduled -> launching (attempt 1)",
            f"job {b} running -> cancelled (by another process)",
            f"job {a} -> finished (reported, exit code 0)",
        ])
        launched = sorted(line for line in lines if "launching -> running (instance" in line)
        assert [line.split(" ")[1] for line in launched] == [str(a), str(b), str(c)]
        assert sorted(line for line in lines if line not in launched) == expected, lines
    finally:
        daemon.close()
        other.store.close()
        store.close()


def test_own_writes_under_concurrent_observes_are_logged_once(tmp_path, mock_ec2, monkeypatch):
    """The same with the real thread layout: observe() in a tight loop on another thread while
    20 launches and their records land from the launch pool."""
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(T0 + timedelta(microseconds=654321))
    lines: list[str] = []
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, launch_workers=8,
                              reconcile_interval=3600.0)
    daemon = Daemon(store, EC2Launcher(EC2Settings()), settings, clock=clock, log=lines.append)
    other = JobService(store, clock)
    stop = threading.Event()
    looks = [0]

    def observe_hard() -> None:
        while not stop.is_set():
            daemon.observe()
            looks[0] += 1

    try:
        jobs = [other.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(T0)))[0] for _ in range(20)]
        daemon.observe()
        watcher = threading.Thread(target=observe_hard)
        watcher.start()
        clock.set(T0 + timedelta(seconds=1, microseconds=654321))
        report = daemon.tick(clock.now(), reconcile=False)
        stop.set()
        watcher.join(30)
        daemon.observe()
        assert sorted(report.job_ids(LAUNCHED)) == [j.id for j in jobs]
        assert looks[0] > 20
        assert [line for line in lines if "by another process" in line] == []
    finally:
        stop.set()
        daemon.close()
        store.close()


class AppliedButUnanswered:
    """The store whose update applies the change and then answers WriteOutcomeUnknown (the write
    landed, its answer was lost and reading it back could not tell)."""

    def __init__(self, store: TinyDBStore) -> None:
        self.store = store

    def update(self, job_id, change):
        self.store.update(job_id, change)
        raise WriteOutcomeUnknown("no answer; the change may or may not have been applied")

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_an_own_write_with_an_unknown_outcome_that_landed_is_not_logged_as_another_process_s(tmp_path):
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(T0 + timedelta(microseconds=123456))
    lines: list[str] = []
    observer = Observer(store, lines.append)
    recording = RecordingStore(AppliedButUnanswered(store), observer)
    other = TinyDBStore(tmp_path / "jobs.json")  # another process
    try:
        mine, theirs = (store.add(make_draft(date_time=T0))[0] for _ in range(2))
        for job in (mine, theirs):
            store.update(job.id, lambda j: j.claimed(clock.now(), "token"))
        observer.step()  # the first look only remembers
        clock.advance(1)
        with pytest.raises(WriteOutcomeUnknown):  # launching -> running: stays active
            recording.update(mine.id, lambda j: j.launched("i-0123", clock.now()))
        assert store.get(mine.id).status.value == "running"
        observer.step()
        clock.advance(1)
        with pytest.raises(WriteOutcomeUnknown):  # running -> finished: leaves the active set
            recording.update(mine.id, lambda j: j.reported("finished", 0, clock.now()))
        assert store.get(mine.id).status.value == "finished"
        observer.step()
        other.update(theirs.id, lambda j: j.cancelled(clock.now()))  # really another process's
        observer.step()
        assert lines == [f"job {theirs.id} launching -> cancelled (by another process)"]
    finally:
        other.close()
        store.close()


# ---------------------------------------------------------------------- a real daemon process
TRANSITION = re.compile(r"job (\d+) (?:(\w+) )?-> (\w+)")


@pytest.mark.slow
def test_a_quick_start_daemon_logs_each_transition_exactly_once(moto_server, daemons, tmp_path):  # noqa: F811
    token = "observer-test-api-token-0123456789"
    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"),
                  JOBMAN_API_TOKEN=token)
    port = free_port()
    daemon = daemons(env, "--listen", f"127.0.0.1:{port}", "--public-url", f"http://127.0.0.1:{port}")
    daemon.wait_for(lambda line: " ready;" in line)
    ids = [int(jobman(env, "schedule", "--image", "alpine:3.20", "--at", "now", "-q").stdout) for _ in range(3)]
    for job_id in ids:
        daemon.wait_for(lambda line, j=job_id: f"job {j} launching -> running" in line)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/jobMan/v1.1/jobs/{ids[0]}/callback", method="PUT",
                                     data=json.dumps({"status": "finished", "exit-code": 0}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
    assert jobman(env, "cancel", str(ids[1])).returncode == 0
    daemon.wait_for(lambda line: f"job {ids[1]} running -> cancelled (by another process)" in line)
    daemon.wait_for(lambda line: f"job {ids[0]} -> finished (reported" in line)
    assert poll(lambda: json.loads(jobman(env, "status", str(ids[0]), "--json").stdout)["status"] == "finished")
    assert daemon.stop() == 0
    per_job: dict[int, list[str]] = {i: [] for i in ids}
    for line in daemon.text().splitlines():
        for m in TRANSITION.finditer(line):
            if int(m.group(1)) in per_job:
                per_job[int(m.group(1))].append(f"{m.group(2) or ''}->{m.group(3)}")
    a, b, c = ids
    assert per_job == {a: ["scheduled->launching", "launching->running", "->finished"],
                       b: ["scheduled->launching", "launching->running", "running->cancelled"],
                       c: ["scheduled->launching", "launching->running"]}, daemon.text()
    assert [line for line in daemon.text().splitlines()
            if "by another process" in line and f"job {b} " not in line] == [], daemon.text()
