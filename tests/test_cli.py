"""The command line, in-process with CliRunner and as the installed program in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobman_cli.cli import cli

JOBMAN = [sys.executable, "-m", "jobman_cli"]


def run(db: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--db", str(db), *args], input=input)


def jobman(db: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, JOBMAN_DB=str(db), **(env or {}))
    return subprocess.run([*JOBMAN, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "home" / "jobs.json"


def test_schedule_prints_id_and_stores_the_job(db: Path) -> None:
    result = run(db, "schedule", "--image", "alpine:3.20", "--at", "+10m", "--title", "nightly",
                 "-e", "GREETING=hello world", "-e", "EMPTY=")
    assert result.exit_code == 0, result.stderr
    assert "Scheduled job 1" in result.stdout
    shown = json.loads(run(db, "status", "1", "--json").stdout)
    assert shown["id"] == 1
    assert shown["status"] == "scheduled"
    assert shown["docker-image"] == "alpine:3.20"
    assert shown["title"] == "nightly"
    assert shown["env-variables"] == {"GREETING": "hello world", "EMPTY": ""}
    assert shown["date-time"].endswith("Z")
    assert "callback-token" not in shown


def test_quiet_prints_the_id_alone_and_json_prints_the_job(db: Path) -> None:
    first = run(db, "schedule", "--image", "alpine", "--at", "now", "-q")
    assert first.exit_code == 0 and first.stdout == "1\n"
    second = run(db, "schedule", "--image", "alpine", "--at", "now", "--json")
    assert json.loads(second.stdout)["id"] == 2


def test_env_file_then_e_overrides(db: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "job.env"
    env_file.write_text("# comment\nA=from file\nB=keep me\n\n")
    result = run(db, "schedule", "--image", "alpine", "--at", "now", "--env-file", str(env_file), "-e", "A=override", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["env-variables"] == {"A": "override", "B": "keep me"}


def test_list_is_newest_first_and_filters_by_status(db: Path) -> None:
    for _ in range(3):
        assert run(db, "schedule", "--image", "alpine", "--at", "+1h", "-q").exit_code == 0
    assert run(db, "cancel", "2").exit_code == 0
    listed = json.loads(run(db, "list", "--json").stdout)
    assert [j["id"] for j in listed] == [3, 2, 1]
    cancelled = json.loads(run(db, "list", "--json", "--status", "cancelled").stdout)
    assert [j["id"] for j in cancelled] == [2]
    both = json.loads(run(db, "list", "--json", "--status", "cancelled", "--status", "scheduled").stdout)
    assert [j["id"] for j in both] == [3, 2, 1]
    table = run(db, "list")
    assert table.exit_code == 0
    assert "cancelled" in table.stdout and "scheduled" in table.stdout


def test_list_on_a_new_home_says_the_store_does_not_exist_and_creates_nothing(db: Path) -> None:
    """Issue 14: a typo in --db or JOBMAN_HOME must not look like an empty store ("No jobs.")."""
    result = run(db, "list", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"Error: store file {db} does not exist (schedule a job to create it, or check "
                             "--db/--store, JOBMAN_STORE/JOBMAN_DB and JOBMAN_HOME)\n")
    assert not db.exists() and not db.parent.exists()


def test_idempotency_key_returns_the_same_job(db: Path) -> None:
    args = ["schedule", "--image", "alpine", "--at", "now", "--idempotency-key", "cron-2026-11-28", "-q"]
    first, second = run(db, *args), run(db, *args)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout == "1\n"
    assert len(json.loads(run(db, "list", "--json").stdout)) == 1


def test_callback_flow_and_wait_exit_codes(db: Path) -> None:
    from datetime import datetime, timezone

    from jobman_cli.stores.tinydb import TinyDBStore

    for _ in range(2):
        run(db, "schedule", "--image", "alpine", "--at", "now", "-q")
    store = TinyDBStore(db)
    now = datetime.now(timezone.utc)
    for job_id in (1, 2):
        store.update(job_id, lambda j: j.claimed(now, f"t{j.id}"))
    store.close()
    assert run(db, "callback", "1", "--status", "running").exit_code == 0
    assert run(db, "callback", "1", "--status", "running").exit_code == 0  # no-op
    assert run(db, "callback", "1", "--status", "finished").exit_code == 0
    assert run(db, "callback", "1", "--status", "finished").exit_code == 0  # repeated: no-op
    failed = run(db, "callback", "2", "--status", "failed", "--exit-code", "3", "--json")
    assert json.loads(failed.stdout)["exit-code"] == 3
    assert json.loads(failed.stdout)["reason"] == "exit code 3"
    assert json.loads(failed.stdout)["reason-code"] == "exited"
    assert run(db, "status", "1", "--wait").exit_code == 0
    assert run(db, "status", "2", "--wait").exit_code == 1


def test_callback_reason_codes_show_in_status_and_list(db: Path) -> None:
    from datetime import datetime, timezone

    from jobman_cli.stores.tinydb import TinyDBStore

    run(db, "schedule", "--image", "alpine", "--at", "now", "-q")
    store = TinyDBStore(db)
    store.update(1, lambda j: j.claimed(datetime.now(timezone.utc), "t"))
    store.close()
    bad = run(db, "callback", "1", "--status", "failed", "--reason-code", "launch-failed")
    assert bad.exit_code == 2 and "--reason-code" in bad.output
    done = run(db, "callback", "1", "--status", "failed", "--reason-code", "image-pull-failed",
               "--reason", "manifest unknown", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["reason-code"] == "image-pull-failed"
    shown = run(db, "status", "1")
    assert "image-pull-failed" in shown.stdout and "manifest unknown" in shown.stdout
    assert json.loads(run(db, "list", "--json").stdout)[0]["reason-code"] == "image-pull-failed"
    assert run(db, "status", "1", "--wait").exit_code == 1


def test_wait_times_out_with_124_and_wakes_on_a_change_from_another_process(db: Path) -> None:
    run(db, "schedule", "--image", "alpine", "--at", "+1h", "-q")
    timed_out = run(db, "status", "1", "--wait", "--wait-timeout", "1s")
    assert timed_out.exit_code == 124
    assert "still scheduled" in timed_out.stderr

    def cancel_soon() -> None:
        time.sleep(0.5)
        jobman(db, "cancel", "1")

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    waited = jobman(db, "status", "1", "--wait", "--wait-timeout", "30s", "--json")
    thread.join()
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["status"] == "cancelled"


def test_subprocess_schedule_list_status(db: Path) -> None:
    scheduled = jobman(db, "schedule", "--image", "ghcr.io/acme/tool:1.2", "--at", "in 10 minutes", "-q")
    assert scheduled.returncode == 0, scheduled.stderr
    assert scheduled.stdout.strip() == "1"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    listed = jobman(db, "list", "--json")
    assert json.loads(listed.stdout)[0]["docker-image"] == "ghcr.io/acme/tool:1.2"
    status = jobman(db, "status", "1")
    assert status.returncode == 0 and "ghcr.io/acme/tool:1.2" in status.stdout


def test_subprocess_errors_are_one_line_without_traceback(db: Path) -> None:
    bad = jobman(db, "schedule", "--image", "UPPER", "--at", "now")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("Error: --image")
    missing = jobman(db, "status", "42")
    assert missing.returncode == 1 and missing.stderr == "Error: job 42 not found\n"


def test_version_and_help(db: Path) -> None:
    from jobman_cli import __version__

    assert jobman(db, "--version").stdout.strip() == f"jobman {__version__}"
    helped = jobman(db, "--help")
    assert helped.returncode == 0
    for command in ("schedule", "list", "status", "callback", "cancel", "logs", "daemon"):
        assert command in helped.stdout


@pytest.mark.parametrize("argv", [["schedule", "--image", "alpine", "--at", "+1h", "-q"], ["list"], ["status", "1"]])
def test_schedule_list_status_do_not_import_boto3(db: Path, argv: list[str]) -> None:
    jobman(db, "schedule", "--image", "alpine", "--at", "+1h", "-q")
    code = (
        "import sys; from jobman_cli.cli import cli\n"
        f"rc = cli.main({argv!r}, standalone_mode=False)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore'))\n"
        "print('IMPORTED', bad, file=sys.stderr) if bad else None\n"
        "sys.exit(3 if bad else rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JOBMAN_DB=str(db)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_broken_pipe_is_quiet(db: Path) -> None:
    for _ in range(3):
        jobman(db, "schedule", "--image", "alpine", "--at", "+1h", "-q")
    shell = f"{sys.executable} -m jobman_cli --db {db} list --json | head -c 1"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr


def test_a_bad_jobman_tz_does_not_block_times_that_need_no_zone(db: Path) -> None:
    ok = jobman(db, "schedule", "--image", "alpine", "--at", "2099-01-01T00:00:00Z", "-q", env={"JOBMAN_TZ": "Nope/Zone"})
    assert ok.returncode == 0, ok.stderr
    local = jobman(db, "schedule", "--image", "alpine", "--at", "2099-01-01 00:00:00", env={"JOBMAN_TZ": "Nope/Zone"})
    assert local.returncode == 2 and "JOBMAN_TZ" in local.stderr


def test_a_symlinked_store_file_stays_one_store(tmp_path: Path) -> None:
    real = tmp_path / "real" / "jobs.json"
    real.parent.mkdir()
    assert run(real, "schedule", "--image", "alpine", "--at", "+1h", "-q").exit_code == 0
    link_dir = tmp_path / "link"
    link_dir.mkdir()
    link = link_dir / "jobs.json"
    link.symlink_to(real)
    assert run(link, "schedule", "--image", "alpine", "--at", "+1h", "-q").stdout == "2\n"
    assert link.is_symlink()
    assert len(json.loads(run(real, "list", "--json").stdout)) == 2


def test_a_malformed_record_is_a_store_error_not_a_crash(db: Path) -> None:
    for _ in range(2):
        run(db, "schedule", "--image", "alpine", "--at", "+1h", "-q")
    doc = json.loads(db.read_text())
    del doc["jobs"]["2"]["id"]
    db.write_text(json.dumps(doc))
    for args in (["list", "--json"], ["list"]):
        result = run(db, *args)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("Error: ") and str(db) in result.stderr and "malformed" in result.stderr
        assert result.stderr.count("\n") == 1


def test_cancel_says_when_the_instance_could_not_be_terminated(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from jobman_cli.errors import JobmanError, LaunchError
    from jobman_cli.service import JobService, ScheduleRequest
    from jobman_cli.stores.tinydb import TinyDBStore

    store = TinyDBStore(tmp_path / "jobs.json")
    service = JobService(store)
    job, _ = service.schedule(ScheduleRequest(image="alpine", when="now"))
    now = datetime.now(timezone.utc)
    store.update(job.id, lambda j: j.claimed(now, "t"))
    store.update(job.id, lambda j: j.launched("i-0123456789abcdef0", now))

    def refuse(instance_id: str) -> None:
        raise LaunchError("UnauthorizedOperation: not allowed", retryable=False)

    with pytest.raises(JobmanError) as caught:
        service.cancel(job.id, terminate=refuse)
    assert "is cancelled, but its instance i-0123456789abcdef0 was not terminated" in str(caught.value)
    assert "reaper" in str(caught.value)
    assert store.get(job.id).status.value == "cancelled"
