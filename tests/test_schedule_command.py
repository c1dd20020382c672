"""The container's command, entrypoint and root volume size (DESIGN.md section 13), through the
CLI (``jobman schedule ... --entrypoint EXE --disk-gb N -- CMD ARG...``) and the API
(``"command"``, ``"entrypoint"``, ``"disk-gb"``), with the same rules on both sides."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from jobman_cli.api import ApiServer
from jobman_cli.cli import cli
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

TOKEN = "test-api-token-0123456789-abcdefghij"
HOSTILE = ["sh", "-c", 'echo "$HOME" `id` $(id); exit 3', "--rm", "-", "--", "", " two  words ", "it's",
           "line1\nline2\n", "✓ naïve 日本語 😀", "C:\\path\\n", "* ?", "@@IMAGE@@"]


# --------------------------------------------------------------------------- CLI
def run(db: Path, *args: str):
    return CliRunner().invoke(cli, ["--db", str(db), *args])


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "home" / "jobs.json"


def test_cli_words_after_double_dash_are_the_command_byte_exact(db: Path) -> None:
    result = run(db, "schedule", "--image", "alpine", "--at", "now", "--entrypoint=-odd $(x)", "--disk-gb", "20",
                 "--json", "--", *HOSTILE)
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["command"], job["entrypoint"], job["disk-gb"]) == (HOSTILE, "-odd $(x)", 20)
    stored = json.loads(run(db, "status", str(job["id"]), "--json").stdout)  # read back from the file
    assert (stored["command"], stored["entrypoint"], stored["disk-gb"]) == (HOSTILE, "-odd $(x)", 20)


def test_cli_without_a_command_keeps_the_images(db: Path) -> None:
    job = json.loads(run(db, "schedule", "--image", "alpine", "--at", "now", "--json").stdout)
    assert (job["command"], job["entrypoint"], job["disk-gb"]) == (None, None, None)
    job = json.loads(run(db, "schedule", "--image", "alpine", "--at", "now", "--json", "--").stdout)
    assert job["command"] is None  # "--" and nothing after it: the image's CMD
    job = json.loads(run(db, "schedule", "--image", "alpine", "--at", "now", "--entrypoint", "", "--json").stdout)
    assert job["entrypoint"] == ""  # clears the image's entrypoint (docker's --entrypoint "")


def test_cli_options_after_the_first_command_word_belong_to_the_command(db: Path) -> None:
    """As with ``docker run``: once the command starts, ``-q`` is the command's, not jobman's."""
    result = run(db, "schedule", "--image", "alpine", "--at", "now", "--json", "echo", "-q", "--at")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["command"] == ["echo", "-q", "--at"]


@pytest.mark.parametrize("args, message", [
    (["--disk-gb", "0"], "Error: --disk-gb: must be a whole number of GiB from 1 to 16384 (got '0')"),
    (["--disk-gb", "16385"], "Error: --disk-gb: must be a whole number of GiB from 1 to 16384 (got '16385')"),
    (["--disk-gb", "8.5"], "Error: --disk-gb: must be a whole number of GiB from 1 to 16384 (got '8.5')"),
    (["--disk-gb", "-1"], "Error: --disk-gb: must be a whole number of GiB from 1 to 16384 (got '-1')"),
    (["--", "echo", "bad \udcff byte"], "Error: CMD: argument 1 is not valid UTF-8"),
    (["--entrypoint", "bad \udcff"], "Error: --entrypoint: the entrypoint is not valid UTF-8"),
    (["--", "x" * 20000], "Error: CMD: the job's user-data would be"),
])
def test_cli_refuses_bad_values_with_one_line_and_writes_nothing(db: Path, args: list[str], message: str) -> None:
    result = run(db, "schedule", "--image", "alpine", "--at", "now", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not db.exists() or json.loads(run(db, "list", "--json").stdout) == []


def test_cli_idempotency_key_compares_the_command(db: Path) -> None:
    base = ["schedule", "--image", "alpine", "--at", "2031-01-01T00:00:00Z", "--idempotency-key", "k1", "-q"]
    assert run(db, *base, "--", "echo", "a").stdout == "1\n"
    assert run(db, *base, "--", "echo", "a").stdout == "1\n"
    other = run(db, *base, "--", "echo", "b")
    assert other.exit_code == 2 and "already names job 1" in other.stderr
    assert run(db, *base, "--disk-gb", "9", "--", "echo", "a").exit_code == 2


# --------------------------------------------------------------------------- API
class Api:
    def __init__(self, store_path: Path) -> None:
        self.store = open_store(store_path)
        self.log: list[str] = []
        self.server = ApiServer(JobService(self.store), api_token=TOKEN, log=self.log.append).start()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, "/jobMan/v1.1" + path, body=data,
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def schedule(self, **fields: Any) -> tuple[int, Any]:
        return self.call("POST", "/jobs/schedule", {"docker-image": "alpine:3.20", "date-time": "+10m", **fields})


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    harness = Api(tmp_path / "jobs.json")
    yield harness
    harness.server.stop()
    harness.store.close()
    assert harness.log == []


def test_api_accepts_command_entrypoint_and_disk_gb(api: Api) -> None:
    status, job = api.schedule(command=HOSTILE, entrypoint="/bin/sh", **{"disk-gb": 30})
    assert status == 201, job
    assert (job["command"], job["entrypoint"], job["disk-gb"]) == (HOSTILE, "/bin/sh", 30)
    status, shown = api.call("GET", f"/jobs/{job['id']}/status")
    assert (shown["command"], shown["entrypoint"], shown["disk-gb"]) == (HOSTILE, "/bin/sh", 30)
    status, job = api.schedule(command=[])
    assert status == 201 and job["command"] is None
    status, job = api.schedule()  # the original body: all three absent
    assert status == 201 and (job["command"], job["entrypoint"], job["disk-gb"]) == (None, None, None)


@pytest.mark.parametrize("fields, error", [
    ({"command": "rm -rf /"}, "command: must be an array of strings (got str)"),
    ({"command": ["echo", 1]}, "command: argument 1 must be a string (got number)"),
    ({"command": ["a\u0000b"]}, "command: argument 0 contains a NUL byte, which no argument can carry"),
    ({"command": {"0": "echo"}}, "command: must be an array of strings (got object)"),
    ({"command": ["x"] * 1001}, "command: has 1001 arguments; at most 1000 are allowed"),
    ({"entrypoint": ["/bin/sh"]}, "entrypoint: must be a string (got array)"),
    ({"entrypoint": "a\u0000"}, "entrypoint: contains a NUL byte, which no argument can carry"),
    ({"disk-gb": 0}, "disk-gb: must be a whole number of GiB from 1 to 16384 (got 0)"),
    ({"disk-gb": True}, "disk-gb: must be a whole number of GiB from 1 to 16384 (got True)"),
    ({"disk-gb": 8.0}, "disk-gb: must be a whole number of GiB from 1 to 16384 (got 8.0)"),
    ({"disk-gb": 16385}, "disk-gb: must be a whole number of GiB from 1 to 16384 (got 16385)"),
])
def test_api_refuses_bad_values_with_400_naming_the_field(api: Api, fields: dict, error: str) -> None:
    status, answer = api.schedule(**fields)
    assert (status, answer) == (400, {"error": error})
    assert api.call("GET", "/jobs")[1]["jobs"] == []


def test_api_refuses_a_command_too_large_for_user_data(api: Api) -> None:
    status, answer = api.schedule(command=["'" * 5000])  # quoting makes it 25 KB in the script
    assert status == 400 and answer["error"].startswith("command: the job's user-data would be")
