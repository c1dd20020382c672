"""``jobman --server URL schedules ...`` and ``schedule --cron`` over the REST API: the real ``jobman``
script in subprocesses, once against the store file (local) and once against an API server on
127.0.0.1 serving that same file (remote, with no usable store of its own). The same commands give
the same JSON and exit codes; bad input is refused before anything is sent, with the CLI's flag.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

TOKEN = "schedules-remote-token-0123456789"
SCRIPT = str(Path(sys.executable).with_name("jobman"))


class Both:
    def __init__(self, tmp_path: Path, server: ApiServer) -> None:
        self.db = tmp_path / "jobs.json"
        base = {"PATH": "/usr/bin:/bin", "JOBMAN_TZ": "UTC", "TZ": "UTC"}
        self.local = {**base, "JOBMAN_DB": str(self.db), "JOBMAN_HOME": str(tmp_path / "home")}
        self.remote = {**base, "JOBMAN_SERVER": server.url, "JOBMAN_API_TOKEN": TOKEN,
                       "JOBMAN_DB": str(tmp_path / "absent" / "none.json"), "JOBMAN_HOME": str(tmp_path / "absent")}

    def run(self, mode: str, *args: str) -> subprocess.CompletedProcess:
        env = self.local if mode == "local" else self.remote
        return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def both(tmp_path: Path) -> Iterator[Both]:
    store = open_store(tmp_path / "jobs.json", create=True)
    log: list[str] = []
    server = ApiServer(JobService(store), api_token=TOKEN, log=log.append).start()
    yield Both(tmp_path, server)
    server.stop()
    store.close()
    assert log == []


def test_the_schedule_verbs_answer_alike_in_both_modes(both):
    made = {}
    for mode in ("local", "remote"):
        result = both.run(mode, "schedule", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--image", "alpine:3.20",
                          "--title", f"nightly {mode}", "--overlap", "replace", "--json")
        assert result.returncode == 0, result.stderr
        made[mode] = json.loads(result.stdout)
    assert made["remote"]["id"] == made["local"]["id"] + 1
    for key in ("cron", "tz", "overlap", "next-at", "paused"):
        assert made["remote"][key] == made["local"][key]
    for args in (("schedules", "list", "--json"), ("schedules", "show", "1", "--json"), ("schedules", "show", "1"),
                 ("schedules", "show", "99"), ("schedules", "pause", "99")):
        local, remote = both.run("local", *args), both.run("remote", *args)
        assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), args
    assert both.run("remote", "schedules", "show", "99").returncode == 1
    for verb in ("pause", "resume"):
        result = both.run("remote", "schedules", verb, "2")
        assert result.returncode == 0, result.stderr
        assert json.loads(both.run("local", "schedules", "show", "2", "--json").stdout)["paused"] is (verb == "pause")
    result = both.run("remote", "schedules", "delete", "2")
    assert result.returncode == 0, result.stderr
    assert [s["id"] for s in json.loads(both.run("local", "schedules", "list", "--json").stdout)] == [1]


@pytest.mark.parametrize("args, flag", [
    (("--cron", "61 * * * *"), "--cron"),
    (("--cron", "0 * * * *", "--tz", "Mars/Base"), "--tz"),
    (("--every", "10s"), "--every"),
    (("--cron", "0 * * * *", "--overlap", "sometimes"), "--overlap"),
    (("--cron", "0 * * * *", "--timeout", "forever"), "--timeout"),
])
def test_bad_input_is_the_local_usage_error_and_nothing_is_sent(both, args, flag):
    local = both.run("local", "schedule", "--image", "alpine:3.20", *args)
    remote = both.run("remote", "schedule", "--image", "alpine:3.20", *args)
    assert local.returncode == remote.returncode == 2
    assert flag in remote.stderr and remote.stderr == local.stderr
    assert json.loads(both.run("local", "schedules", "list", "--json").stdout) == []
