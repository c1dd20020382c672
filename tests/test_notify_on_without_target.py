"""``--notify-on`` / API ``notify-on`` with no target anywhere (no ``--notify``, no ``[notify]
targets`` in config.toml) asks for a notification that can never be sent (finding F3): a one-line
usage error (exit 2 / HTTP 400), nothing stored. With a config default target it is accepted; a
schedule's template is refused the same way, and an existing schedule's run is not."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobman_cli.cli import cli
from jobman_cli.errors import InvalidInput
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

HOOK = "https://example.com/hook"
WORDS = "there is no target to notify"


@pytest.mark.parametrize("extra", [["--at", "+1h", "--notify-on", "end"], ["--at", "+1h", "--notify-on", "failure"],
                                   ["--every", "1h", "--notify-on", "end"]],
                         ids=["job-end", "job-failure", "schedule-template"])
def test_cli_notify_on_without_a_target_is_exit_2_and_writes_nothing(tmp_path: Path, monkeypatch, extra) -> None:
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))      # no config.toml: no default target
    db = tmp_path / "jobs.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", str(db), "schedule", "--image", "alpine", "--at", "+1h", "-q"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("jobs.json*")}
    result = runner.invoke(cli, ["--db", str(db), "schedule", "--image", "alpine", *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--notify-on" in lines[0] and WORDS in lines[0] and "--notify TARGET" in lines[0]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("jobs.json*")} == before
    given = runner.invoke(cli, ["--db", str(db), "schedule", "--image", "alpine", *extra, "--notify", HOOK, "-q"])
    assert given.exit_code == 0, given.output


def test_a_config_default_target_is_a_target(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text(f'[notify]\ntargets = ["{HOOK}"]\n')
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "jobs.json"), "schedule", "--image", "alpine",
                                      "--at", "+1h", "--notify-on", "end", "-q"])
    assert result.exit_code == 0, result.output


def test_api_notify_on_with_no_target_is_400_and_writes_nothing(tmp_path: Path) -> None:
    from test_api import Api

    db = tmp_path / "jobs.json"
    store = TinyDBStore(db)
    api = Api(JobService(store), db)
    try:
        api.schedule()
        before = db.read_bytes()
        for fields in ({"notify-on": "end"}, {"notify": [], "notify-on": "end"}):
            status, _, answer = api.call("POST", "/jobs/schedule", {"date-time": "+10m", "docker-image": "alpine:3.20",
                                                                    **fields})
            assert status == 400 and answer["error"].startswith(f"notify-on: {WORDS}: give notify TARGET"), answer
            assert db.read_bytes() == before
        status, _, job = api.call("POST", "/jobs/schedule", {"date-time": "+10m", "docker-image": "alpine:3.20"})
        assert status == 201 and job["notify"] == []       # no notify-on asked: nothing to refuse
    finally:
        api.server.stop()
        store.close()


def test_the_run_of_an_existing_schedule_is_not_refused(tmp_path: Path) -> None:
    """A schedule stored before this rule keeps running (its template was checked when created)."""
    store = TinyDBStore(tmp_path / "jobs.json")
    try:
        service = JobService(store)
        when = datetime(2031, 1, 1, tzinfo=timezone.utc)
        draft = service.validate(ScheduleRequest(image="alpine", when="now", notify_on="end", schedule_id=3,
                                                 occurrence=when))
        assert draft.notify == () and draft.notify_on == "end"
        with pytest.raises(InvalidInput, match=WORDS):
            service.validate(ScheduleRequest(image="alpine", when="now", notify_on="end"))
    finally:
        store.close()
