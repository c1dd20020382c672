"""``--max-interruptions`` N > 0 with an explicit ``--capacity on-demand`` is a usage error naming both
options (an on-demand instance is never interrupted: the budget would be silently ignored), on the
command line (exit 2, nothing stored) and over REST (400, nothing stored). ``0``, a spot capacity, or
a budget beside the default capacity are accepted.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from click.testing import CliRunner

from jobman_cli.api import ApiServer
from jobman_cli.cli import cli
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

TOKEN = "test-api-token-0123456789"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_cli_refuses_a_budget_on_explicit_on_demand(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.json")
    base = ["--db", db, "schedule", "--image", "alpine", "-q"]
    assert run(*base, "--at", "+1h").exit_code == 0
    before = Path(db).read_bytes()
    for extra in (["--at", "+1h", "--capacity", "on-demand", "--max-interruptions", "2"],
                  ["--cron", "@daily", "--tz", "UTC", "--capacity", "on-demand", "--max-interruptions", "5"]):
        result = run(*base, *extra)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: --capacity: ") and "--max-interruptions" in result.output
        assert result.output.count("\n") == 1
    assert Path(db).read_bytes() == before
    for ok in (["--capacity", "on-demand", "--max-interruptions", "0"], ["--capacity", "spot", "--max-interruptions", "2"],
               ["--max-interruptions", "2"], ["--capacity", "spot-then-on-demand", "--max-interruptions", "1"]):
        result = run(*base, "--at", "+1h", *ok)
        assert result.exit_code == 0, (ok, result.output)


def test_api_refuses_a_budget_on_explicit_on_demand(tmp_path: Path) -> None:
    store = open_store(tmp_path / "jobs.json")
    log: list[str] = []
    server = ApiServer(JobService(store), api_token=TOKEN, log=log.append).start()
    try:
        def post(body: dict) -> tuple[int, dict]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                conn.request("POST", "/jobMan/v1.1/jobs/schedule", body=json.dumps(body).encode(),
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
                response = conn.getresponse()
                return response.status, json.loads(response.read())
            finally:
                conn.close()

        job = {"docker-image": "alpine", "date-time": "+1h"}
        status, answer = post({**job, "capacity": "on-demand", "max-interruptions": 4})
        assert status == 400 and answer["error"].startswith("capacity: ") and "max-interruptions" in answer["error"]
        assert store.list() == []
        status, answer = post({**job, "capacity": "spot", "max-interruptions": 4})
        assert status == 201 and answer["max-interruptions"] == 4, answer
    finally:
        server.stop()
        store.close()
    assert log == []


def test_remote_cli_gets_the_same_usage_error(tmp_path: Path) -> None:
    store = open_store(tmp_path / "jobs.json")
    log: list[str] = []
    server = ApiServer(JobService(store), api_token=TOKEN, log=log.append).start()
    try:
        result = CliRunner().invoke(cli, ["--server", f"http://127.0.0.1:{server.port}", "schedule", "--image", "alpine",
                                          "--at", "+1h", "--capacity", "on-demand", "--max-interruptions", "2"],
                                    env={"JOBMAN_API_TOKEN": TOKEN, "JOBMAN_SERVER": None})
        assert result.exit_code == 2, result.output
        assert "--max-interruptions" in result.output and result.output.count("\n") == 1, result.output
        assert store.list() == []
    finally:
        server.stop()
        store.close()
    assert log == []
