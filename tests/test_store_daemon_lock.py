"""A TinyDB store file deleted (or moved) under a running daemon is not silently re-created.

The daemon holds ``<db>.daemon.lock`` (``flock``) for as long as it lives. If the store file is then
missing, a fresh one would hand out job ids from 1 again beside the daemon's jobs (issue 9, item
7), so ``jobman schedule`` refuses with one line and writes nothing. The lock holder here is a
real separate process using the daemon's own :class:`~jobman_cli.daemon.main.DaemonLock`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import orjson
import pytest

HOLDER = r"""
import sys, time
from pathlib import Path
from jobman_cli.daemon.main import DaemonLock
DaemonLock(sys.argv[1])
if len(sys.argv) > 2:  # a daemon starting on a fresh host: it creates the store a moment later
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    from jobman_cli.stores import open_store
    print(open_store(sys.argv[1]).store_id, flush=True)
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def hold(holders: list[subprocess.Popen], path: Path, *create_after: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), *create_after], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    holders.append(proc)
    return proc


def jobman(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMAN_")}
    env["JOBMAN_HOME"] = str(path.parent / "home")
    return subprocess.run([sys.executable, "-m", "jobman_cli", "--store", str(path), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def schedule(path: Path) -> subprocess.CompletedProcess:
    return jobman(path, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q")


def test_schedule_refuses_to_recreate_a_store_deleted_under_a_running_daemon(tmp_path: Path,
                                                                            holders: list) -> None:
    path = tmp_path / "jobs.json"
    assert schedule(path).stdout.strip() == "1"
    holder = hold(holders, path)
    assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
    path.unlink()
    before = sorted(os.listdir(tmp_path))

    started = time.monotonic()
    refused = schedule(path)
    waited = time.monotonic() - started
    assert refused.returncode == 1 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert "deleted or moved" in line and f"pid {holder.pid}" in line and str(path) in line
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a lock file
    assert waited < 10  # it waited for a starting daemon to create its file (2 s), not forever

    holder.send_signal(signal.SIGKILL)  # the daemon is gone: now a fresh store is the user's call
    holder.wait(timeout=10)
    created = schedule(path)
    assert created.returncode == 0 and created.stdout.strip() == "1"


def test_schedule_waits_for_a_starting_daemon_to_create_the_store_and_uses_it(tmp_path: Path,
                                                                             holders: list) -> None:
    path = tmp_path / "jobs.json"
    holder = hold(holders, path, "1.2")  # takes the lock, then creates the store 1.2 s later
    # Once it holds the lock (its start-up can take longer than any fixed pause on a loaded box;
    # before it holds it, `schedule` would simply create the store itself and prove nothing):
    assert holder.stdout.readline().strip() == "holding"  # type: ignore[union-attr]
    assert not path.exists()
    scheduled = schedule(path)
    assert scheduled.returncode == 0, scheduled.stderr
    store_id = holder.stdout.readline().strip()  # type: ignore[union-attr]
    document = orjson.loads(path.read_bytes())
    assert document["meta"]["1"]["store-id"] == store_id  # the daemon's store, not a second one
    assert [record["id"] for record in document["jobs"].values()] == [1]


def test_a_daemon_creates_its_own_store_while_holding_its_lock(tmp_path: Path) -> None:
    from jobman_cli.daemon.main import DaemonLock
    from jobman_cli.stores import open_store

    path = tmp_path / "fresh" / "jobs.json"
    lock = DaemonLock(str(path))
    try:
        store = open_store(path)  # our own lock does not count
        assert path.exists() and store.store_id
        store.close()
    finally:
        lock.release()


def test_no_daemon_lock_file_or_a_released_one_lets_a_store_be_created(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    (tmp_path / "jobs.json.daemon.lock").write_text("12345\n")  # a daemon that exited long ago
    assert schedule(path).returncode == 0 and path.exists()
