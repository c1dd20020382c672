"""Housekeeping through the ``jobman`` program (a subprocess, as an operator runs it): ``prune``,
``list --limit/--since`` locally and with ``--server``, and ``GET jobs?limit=&since=`` over HTTP."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import make_draft
from jobman_cli.model import JobStatus
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore
from test_api import TOKEN, Api

JOBMAN = [sys.executable, "-m", "jobman_cli"]
NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)


def jobman(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JOBMAN_", "AWS_"))}
    clean.update(JOBMAN_HOME=str(home), AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, **env)
    return subprocess.run([*JOBMAN, *args], env=clean, capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    return result.stderr


def ended(at: datetime, status: JobStatus = JobStatus.FINISHED, **fields):
    values = dict(status=status, date_time=at - timedelta(hours=1), created_at=at - timedelta(hours=2),
                  finished_at=at, updated_at=at, exit_code=0 if status is JobStatus.FINISHED else None)
    return make_draft(**{**values, **fields})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def history(home: Path) -> dict[str, int]:
    """A store with old and recent jobs of every kind; name -> id."""
    home.mkdir()
    with TinyDBStore(home / "jobs.json") as store:
        ids = {
            "old-finished": store.add(ended(NOW - 40 * DAY))[0].id,
            "old-failed": store.add(ended(NOW - 35 * DAY, JobStatus.FAILED))[0].id,
            "old-cancelled": store.add(ended(NOW - 31 * DAY, JobStatus.CANCELLED))[0].id,
            "old-owing": store.add(ended(NOW - 40 * DAY, JobStatus.FAILED, notify=("https://hooks.example.com/x",),
                                         deliveries=({"target-index": 0, "event": "failed", "state": "pending",
                                                      "attempts": 3},)))[0].id,
            "recent": store.add(ended(NOW - 2 * DAY))[0].id,
            "waiting": store.add(make_draft(date_time=NOW + DAY, created_at=NOW - 60 * DAY))[0].id,
        }
        running = store.add(make_draft(date_time=NOW - 50 * DAY, created_at=NOW - 50 * DAY))[0].id
        store.update(running, lambda j: j.claimed(NOW - 50 * DAY, "t"))
        store.update(running, lambda j: j.launched("i-0abc", NOW - 50 * DAY))
        ids["running"] = running
    return ids


def stored_ids(home: Path) -> list[int]:
    with TinyDBStore(home / "jobs.json") as store:
        return sorted(job.id for job in store.list())


def test_prune_dry_run_then_prune(home, history):
    before = (home / "jobs.json").read_bytes()
    old = [history["old-finished"], history["old-failed"], history["old-cancelled"]]
    dry = jobman(home, "prune", "--ended-before", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Would remove 3 jobs that ended before ") and dry.stdout.rstrip().endswith(
        f": {old[0]}-{old[-1]} (nothing written)"), dry.stdout
    assert (home / "jobs.json").read_bytes() == before
    started = datetime.now(timezone.utc)
    done = jobman(home, "prune", "--ended-before", "30d", "--json")
    ended = datetime.now(timezone.utc)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ids"] == old and answer["count"] == 3 and answer["dry-run"] is False
    cutoff = datetime.fromisoformat(answer["ended-before"])
    # 30 days before the command ran (NOW is the module's import time: a whole suite can run first)
    tick = timedelta(milliseconds=1)  # stored times keep milliseconds
    assert started - 30 * DAY - tick <= cutoff <= ended - 30 * DAY + tick, (started, cutoff, ended)
    kept = sorted(set(history.values()) - set(old))
    assert stored_ids(home) == kept  # the active, the waiting, the recent and the one owing a notification
    again = jobman(home, "prune", "--ended-before", "30d")
    assert again.returncode == 0 and again.stdout.startswith("Removed 0 jobs that ended before "), again.stdout
    nxt = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q")
    assert nxt.returncode == 0 and int(nxt.stdout) == max(history.values()) + 1


def test_pruning_the_newest_job_does_not_free_its_id(home):
    first = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q")
    job_id = int(first.stdout)
    assert jobman(home, "cancel", str(job_id)).returncode == 0
    # just cancelled: it ended well within the hour (1 s was too close on a loaded box)
    assert jobman(home, "prune", "--ended-before", "1h", "--dry-run").stdout.startswith("Would remove 0 jobs")
    with TinyDBStore(home / "jobs.json") as store:  # make it old (a cancel is stamped "now")
        store.update(job_id, lambda j: dataclasses.replace(j, finished_at=NOW - 9 * DAY, version=j.version + 1))
    assert json.loads(jobman(home, "prune", "--ended-before", "1d", "--json").stdout)["ids"] == [job_id]
    assert stored_ids(home) == []
    again = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q")
    assert int(again.stdout) == job_id + 1


@pytest.mark.parametrize("args", [("--ended-before", "30q"), ("--ended-before", "0"), ("--ended-before", "-3d"),
                                  ("--ended-before", "99999d"), ()])
def test_prune_bad_input_is_one_line_exit_2_and_writes_nothing(home, history, args):
    before = (home / "jobs.json").read_bytes()
    text = one_line_error(jobman(home, "prune", *args), 2)
    assert "--ended-before" in text
    assert (home / "jobs.json").read_bytes() == before


def test_prune_of_a_missing_store_says_so(home):
    text = one_line_error(jobman(home, "prune", "--ended-before", "30d"), 1)
    assert "does not exist" in text and not (home / "jobs.json").exists()


def test_list_limit_and_since(home, history):
    newest = sorted(history.values(), reverse=True)
    listed = json.loads(jobman(home, "list", "--limit", "2", "--json").stdout)
    assert [job["id"] for job in listed] == newest[:2]
    table = jobman(home, "list", "--limit", "1").stdout.splitlines()
    assert len(table) == 2 and table[1].split()[0] == str(newest[0])
    recent = json.loads(jobman(home, "list", "--since", "3d", "--json").stdout)  # created in the last 3 days
    assert [job["id"] for job in recent] == [history["recent"]]
    both = json.loads(jobman(home, "list", "--since", "45d", "--limit", "2", "--status", "finished",
                             "--status", "failed", "--json").stdout)
    assert [job["id"] for job in both] == [history["recent"], history["old-owing"]]


@pytest.mark.parametrize("args", [("--limit", "0"), ("--limit", "x"), ("--limit", "-1"), ("--limit", "1.5"),
                                  ("--since", "soon"), ("--since", "0"), ("--since", "99999d")])
def test_list_bad_window_is_one_line_exit_2(home, history, args):
    text = one_line_error(jobman(home, "list", *args), 2)
    assert args[0] in text


# ---------------------------------------------------------------------- over HTTP
@pytest.fixture
def server(home, history):
    store = TinyDBStore(home / "jobs.json")
    api = Api(JobService(store), home / "jobs.json")
    yield api
    api.server.stop()
    store.close()


def test_api_list_takes_limit_and_since(server, history):
    status, _, answer = server.call("GET", "/jobs?limit=2")
    assert status == 200 and [j["id"] for j in answer["jobs"]] == sorted(history.values(), reverse=True)[:2]
    status, _, answer = server.call("GET", "/jobs?since=3d&status=finished")
    assert status == 200 and [j["id"] for j in answer["jobs"]] == [history["recent"]]
    status, _, answer = server.call("GET", f"/jobs?since={5 * 86400}&limit=5")  # bare seconds
    assert status == 200 and [j["id"] for j in answer["jobs"]] == [history["recent"]]


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=", "since=soon", "since=0", "limit=1&limit=2",
                                   "since=1d&since=2d", "order=asc"])
def test_api_list_bad_window_is_400(server, home, query):
    before = (home / "jobs.json").read_bytes()
    status, _, answer = server.call("GET", f"/jobs?{query}")
    assert status == 400, answer
    assert (home / "jobs.json").read_bytes() == before


def test_remote_list_forwards_limit_and_since(server, home, history, tmp_path):
    url = f"http://127.0.0.1:{server.server.port}"
    other = tmp_path / "elsewhere"  # no store here: everything comes from the server
    remote = jobman(other, "--server", url, "list", "--limit", "2", "--since", "45d", "--json", JOBMAN_API_TOKEN=TOKEN)
    assert remote.returncode == 0, remote.stderr
    local = jobman(home, "list", "--limit", "2", "--since", "45d", "--json")
    assert [j["id"] for j in json.loads(remote.stdout)] == [j["id"] for j in json.loads(local.stdout)]
    assert len(json.loads(remote.stdout)) == 2
    one_line_error(jobman(other, "--server", url, "list", "--limit", "0", JOBMAN_API_TOKEN=TOKEN), 2)
    text = one_line_error(jobman(other, "--server", url, "prune", "--ended-before", "30d", JOBMAN_API_TOKEN=TOKEN), 2)
    assert "without --server" in text
    assert not other.exists()
