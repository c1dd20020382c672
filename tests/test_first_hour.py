"""Issue 14, "the operator's first hour": each rough edge a new user hit, black-box through the real
``jobman`` program (a subprocess of ``python -m jobman_cli``), so what is tested is what they see.

Silent failures first: a store that does not exist, a mistyped store URL, no daemon running,
config typos, Ctrl-C; then the smaller stumbles.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

JOBMAN = [sys.executable, "-m", "jobman_cli"]

#: A real separate process holding a TinyDB store's daemon lock, as a running daemon does.
HOLDER = r"""
import sys, time
from jobman_cli.daemon.main import DaemonLock
DaemonLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBMAN_", "AWS_"))}
    env.update(JOBMAN_HOME=str(home), AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


def jobman(home: Path, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*JOBMAN, *args], env=clean_env(home, **env), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def hold_daemon_lock(holders: list[subprocess.Popen], store: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    holders.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"


def schedule(home: Path, *extra: str) -> subprocess.CompletedProcess:
    result = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", *extra)
    assert result.returncode == 0, result.stderr
    return result


# --------------------------------------------------------------------------- the store does not exist
@pytest.mark.parametrize("args", [("list",), ("list", "--json"), ("status", "1"), ("status", "1", "--wait"),
                                  ("logs", "1"), ("cancel", "1"), ("callback", "1", "--status", "running")])
def test_readers_say_the_store_file_does_not_exist(home: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    typo = tmp_path / "jbos.json"
    result = jobman(home, *args, JOBMAN_DB=str(typo))
    error = one_line_error(result, 1)
    assert f"store file {typo} does not exist" in error and "JOBMAN_HOME" in error
    assert result.stdout == ""
    assert not typo.exists() and not home.exists() and sorted(os.listdir(tmp_path)) == []


def test_a_wrong_jobman_home_is_named_and_schedule_still_creates_the_store(home: Path) -> None:
    error = one_line_error(jobman(home, "list"), 1)
    assert f"store file {home / 'jobs.json'} does not exist" in error
    schedule(home)
    listed = jobman(home, "list")
    assert listed.returncode == 0 and "alpine:3.20" in listed.stdout


# --------------------------------------------------------------------------- --db after the subcommand
def test_db_and_store_work_after_the_subcommand(home: Path, tmp_path: Path) -> None:
    db = tmp_path / "x.json"
    created = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", "--db", str(db), "-q")
    assert created.returncode == 0 and created.stdout == "1\n", created.stderr
    assert db.exists() and not (home / "jobs.json").exists()
    for flag in ("--db", "--store"):
        listed = jobman(home, "list", flag, str(db), "--json")
        assert listed.returncode == 0 and '"id": 1' in listed.stdout, listed.stderr
        shown = jobman(home, "status", "1", flag, str(db))
        assert shown.returncode == 0 and "alpine:3.20" in shown.stdout
    # after the subcommand beats before it, as a later flag does
    later = jobman(home, "--db", str(tmp_path / "other.json"), "list", "--db", str(db))
    assert later.returncode == 0 and "alpine:3.20" in later.stdout


# --------------------------------------------------------------------------- mistyped store URLs
@pytest.mark.parametrize("location, hint", [
    ("dynamodb:/t", "did you mean dynamodb://t?"),
    ("dynamodb:t", "did you mean dynamodb://t?"),
    ("dynamo://t", "did you mean dynamodb://t?"),
    ("s3://bucket/jobs.json", "the only URL store is dynamodb://TABLE"),
    ("dynamodb://", "names no table"),
])
@pytest.mark.parametrize("command", [("schedule", "--image", "alpine", "--at", "+1h"), ("list",), ("store", "init"),
                                     ("daemon", "--once", "--public-url", "http://10.0.0.5:8321")])
def test_a_store_location_that_looks_like_a_mistyped_url_is_refused(home: Path, tmp_path: Path, location: str,
                                                                     hint: str, command: tuple[str, ...]) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    result = jobman(home, "--store", location, *command, cwd=work)
    error = one_line_error(result, 2)
    assert error.startswith("Error: --store: ") and hint in error
    assert os.listdir(work) == [] and not home.exists()  # no file named like the URL, no lock file


def test_a_mistyped_url_in_the_environment_is_refused_and_a_dot_slash_path_is_a_file(home: Path,
                                                                                     tmp_path: Path) -> None:
    one_line_error(jobman(home, "list", JOBMAN_STORE="dynamodb:jobs"), 2)
    result = jobman(home, "schedule", "--image", "alpine", "--at", "+1h", "-q", "--store", "./dynamodb:jobs",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dynamodb:jobs").is_file()


# --------------------------------------------------------------------------- no daemon running
NO_DAEMON = "Note: no jobman daemon is running on"


def test_schedule_without_a_daemon_says_so_on_stderr_and_succeeds(home: Path, holders) -> None:
    result = schedule(home, "-q")
    assert result.stdout == "1\n"
    assert result.stderr == (f"{NO_DAEMON} {home / 'jobs.json'}; jobs start only while one runs "
                             "('jobman daemon')\n")
    hold_daemon_lock(holders, home / "jobs.json")
    again = schedule(home, "-q")
    assert again.stdout == "2\n" and again.stderr == ""


def test_status_wait_says_no_daemon_runs_and_ctrl_c_exits_130(home: Path) -> None:
    schedule(home)
    proc = subprocess.Popen([*JOBMAN, "status", "1", "--wait"], env=clean_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(NO_DAEMON)  # said while waiting, before any Ctrl-C
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err == "Interrupted: stopped waiting; job 1 is still scheduled (waiting does not affect the job)\n"
    assert "Aborted" not in err and out == ""


def test_status_wait_next_to_a_daemon_says_nothing_about_it(home: Path, holders) -> None:
    schedule(home)
    hold_daemon_lock(holders, home / "jobs.json")
    result = jobman(home, "status", "1", "--wait", "--wait-timeout", "1s")
    assert result.returncode == 124
    assert NO_DAEMON not in result.stderr and result.stderr.startswith("Error: job 1 is still scheduled after 1s")


def _read_until(fd: int, text: str, limit: float = 60.0) -> str:
    seen, deadline = "", time.monotonic() + limit
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{text!r} never appeared; got {seen!r}")
        seen += os.read(fd, 4096).decode()
    return seen


def test_status_wait_on_a_terminal_shows_what_it_waits_for_and_each_change(home: Path) -> None:
    from jobman_cli.stores.tinydb import TinyDBStore

    schedule(home)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*JOBMAN, "status", "1", "--wait"], env=clean_env(home), stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    try:
        seen = _read_until(master, "Ctrl-C stops waiting")
        assert "Waiting for job 1 (scheduled, due in 1h)" in seen
        now = datetime.now(timezone.utc)
        with TinyDBStore(home / "jobs.json") as store:
            store.update(1, lambda j: j.claimed(now, "tok-1-1"))
            _read_until(master, "job 1: launching")
            store.update(1, lambda j: j.launched("i-0123456789abcdef0", now))
            store.update(1, lambda j: j.reported("finished", 0, now))
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0 and "finished" in out


# --------------------------------------------------------------------------- config.toml typos
@pytest.mark.parametrize("text, expected", [
    ("[deamon]\nreconcile_interval = 30\n", "unknown table [deamon]; did you mean 'daemon'?"),
    ("[daemon]\nreconcile_intreval = 30\n", "unknown key 'reconcile_intreval' in [daemon]; did you mean "
                                            "'reconcile_interval'?"),
    ("[ec2]\ninstance_typ = \"t3.small\"\n", "unknown key 'instance_typ' in [ec2]; did you mean 'instance_type'?"),
    ("[daemon]\ninstance_type = \"t3.small\"\n", "unknown key 'instance_type' in [daemon]; did you mean "
                                                 "'instance_type' in [ec2]?"),
    ("[daemon]\nreconcile_interval = \"30\"\n", "[daemon] reconcile_interval must be a number (got '30')"),
    ("[daemon]\nlaunch_workers = 2.5\n", "[daemon] launch_workers must be a whole number (got 2.5)"),
    ("[logs]\nretention_days = \"30\"\n", "[logs] retention_days must be a whole number"),
    ("region = \"us-east-1\"\n", "unknown table [region]"),
])
def test_config_typos_and_wrong_types_are_errors_naming_the_file(home: Path, text: str, expected: str) -> None:
    home.mkdir()
    (home / "config.toml").write_text(text)
    result = jobman(home, "daemon", "--once", "--public-url", "http://10.0.0.5:8321")
    error = one_line_error(result, 1)
    assert error.startswith(f"Error: config file {home / 'config.toml'}: ") and expected in error, error
    assert sorted(os.listdir(home)) == ["config.toml"]  # refused before anything was created


def test_a_valid_config_file_is_accepted(home: Path) -> None:
    from jobman_cli.config import load_config_file

    home.mkdir()
    (home / "config.toml").write_text(
        "[daemon]\nreconcile_interval = 30\nlaunch_workers = 4\npublic_url = \"http://10.0.0.5:8321\"\n"
        "[ec2]\ninstance_type = \"t3.small\"\nsecurity_group_ids = [\"sg-1\"]\ntags = { team = \"data\" }\n"
        "[logs]\ngroup = \"jobman\"\nretention_days = 30\n[notify]\ntimeout = \"10s\"\nworkers = 4\n")
    assert load_config_file(home)["ec2"]["instance_type"] == "t3.small"
