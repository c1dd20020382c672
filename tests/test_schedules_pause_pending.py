"""``schedules pause`` / ``delete`` name a run already created for an upcoming occurrence, which
will still launch (review finding F16): on the command line (local store, and --server through
the REST answer's ``runs-still-to-launch``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from test_schedules_api import Api

from jobman_cli.cli import cli
from jobman_cli.clock import FixedClock
from jobman_cli.daemon.schedules import Materializer
from jobman_cli.model import format_time
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import JobService
from jobman_cli.stores import open_store
from jobman_cli.stores.tinydb import TinyDBStore


def run(db: Path, *argv: str):
    return CliRunner().invoke(cli, ["--db", str(db), *argv])


def created_run(db: Path) -> tuple[int, int, str]:
    """A schedule whose next occurrence's run was created (LEAD early, as the daemon does):
    (schedule id, job id, occurrence)."""
    store = TinyDBStore(db)
    try:
        schedule = ScheduleService(JobService(store)).create({"docker-image": "alpine:3.20", "every": "1h",
                                                              "overlap": "allow"})
        at = schedule.next_at - timedelta(seconds=3)
        service = JobService(store, FixedClock(at))
        assert Materializer(store, service, terminate=lambda iid: None, log=lambda line: None).step(at) == 1
        job = next(j for j in store.list() if j.schedule_id == schedule.id)
        return schedule.id, job.id, format_time(schedule.next_at)
    finally:
        store.close()


@pytest.mark.parametrize("verb", ["pause", "delete"])
def test_pause_and_delete_name_the_run_that_will_still_launch(tmp_path: Path, verb: str) -> None:
    db = tmp_path / "jobs.json"
    schedule_id, job_id, occurrence = created_run(db)
    answer = run(db, "schedules", verb, str(schedule_id))
    assert answer.exit_code == 0, answer.output
    assert (f"Job {job_id} (for {occurrence}) was already created and will still run; "
            f"cancel it with 'jobman cancel {job_id}'.") in answer.output


def test_no_run_pending_says_nothing_more(tmp_path: Path) -> None:
    db = tmp_path / "jobs.json"
    schedule_id, job_id, _ = created_run(db)
    assert run(db, "cancel", str(job_id)).exit_code == 0
    answer = run(db, "schedules", "pause", str(schedule_id))
    assert answer.exit_code == 0 and "already created" not in answer.output


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    store_path = tmp_path / "jobs.json"
    store = open_store(store_path)
    server = Api(JobService(store), store_path)
    yield server
    server.server.stop()
    store.close()
    assert server.log == []  # never a 5xx


def test_the_api_answers_name_the_run_and_the_cli_under_server_prints_it(tmp_path: Path, api: Api,
                                                                         monkeypatch) -> None:
    db = tmp_path / "jobs.json"
    schedule_id, job_id, occurrence = created_run(db)
    status, _, paused = api.call("POST", f"/schedules/{schedule_id}/pause")
    assert status == 200 and paused["paused"] is True
    assert paused["runs-still-to-launch"] == [{"id": job_id, "occurrence": occurrence, "status": "scheduled"}]
    monkeypatch.setenv("JOBMAN_API_TOKEN", "test-api-token-0123456789")
    url = f"http://127.0.0.1:{api.server.port}"
    answer = CliRunner().invoke(cli, ["--server", url, "schedules", "delete", str(schedule_id)])
    assert answer.exit_code == 0, answer.output
    assert f"Job {job_id} (for {occurrence}) was already created and will still run" in answer.output
    status, _, gone = api.call("POST", f"/schedules/{schedule_id}/delete")
    assert status == 404
