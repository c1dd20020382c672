"""``jobman status ID`` (human) of a schedule's run names its schedule and occurrence (review F10c),
locally and with ``--server`` (the API's ``schedule-id``/``occurrence``); a one-off job has no such row."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from click.testing import CliRunner

from conftest import make_draft
from jobman_cli.api import ApiServer
from jobman_cli.cli import cli
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

TOKEN = "test-api-token-0123456789"
OCCURRENCE = datetime(2030, 1, 1, 13, 0, tzinfo=timezone.utc)
ROW = re.compile(r"^schedule\s+3, occurrence 2030-01-01T13:00:00Z \('jobman schedules show 3'\)$", re.M)


def run(*args: str):
    return CliRunner().invoke(cli, list(args), env={"JOBMAN_API_TOKEN": TOKEN, "JOBMAN_SERVER": None})


def test_status_names_the_schedule_and_occurrence_of_a_run(tmp_path: Path) -> None:
    db = tmp_path / "jobs.json"
    store = open_store(db)
    run_job, _ = store.add(make_draft(schedule_id=3, occurrence=OCCURRENCE, date_time=OCCURRENCE))
    one_off, _ = store.add(make_draft(title="one-off"))
    store.close()
    shown = run("--db", str(db), "status", str(run_job.id))
    assert shown.exit_code == 0, shown.output
    assert ROW.search(shown.output), shown.output
    plain = run("--db", str(db), "status", str(one_off.id))
    assert plain.exit_code == 0 and not re.search(r"^schedule\s", plain.output, re.M), plain.output

    store = open_store(db)
    log: list[str] = []
    server = ApiServer(JobService(store), api_token=TOKEN, log=log.append).start()
    try:
        remote = run("--server", f"http://127.0.0.1:{server.port}", "status", str(run_job.id))
        assert remote.exit_code == 0, remote.output
        assert ROW.search(remote.output), remote.output
    finally:
        server.stop()
        store.close()
    assert log == []
