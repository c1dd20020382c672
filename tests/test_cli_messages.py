"""Messages that must say what is really wrong (the contract review's F8, F10f/g): a cron expression
that names no real date, ``--every`` previews without DST notes, schedule ids called schedule ids,
``--wait-timeout`` with a unit, too many query parameters said as such, ISO-8601 basic format,
a malformed ``dynamodb://`` store URL as a usage error. CLI through click's runner on a real
TinyDB file (byte-identical afterwards); REST over a real socket on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from jobman_cli.api import ApiServer
from jobman_cli.cli import cli
from jobman_cli.clock import FixedClock
from jobman_cli.service import JobService
from jobman_cli.stores import open_store
from jobman_cli.timeparse import parse_when

TOKEN = "test-api-token-0123456789"
API = "/jobMan/v1.1"
NOW = datetime(2027, 3, 27, 12, 0, tzinfo=timezone.utc)


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.json"
    result = run("--db", str(path), "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q")
    assert result.exit_code == 0, result.output
    return path


class Api:
    def __init__(self, tmp_path: Path) -> None:
        self.store = open_store(tmp_path / "jobs.json")
        self.log: list[str] = []
        self.server = ApiServer(JobService(self.store, FixedClock(NOW)), api_token=TOKEN, log=self.log.append).start()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, API + path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    harness = Api(tmp_path)
    yield harness
    harness.server.stop()
    harness.store.close()
    assert harness.log == []  # never a 5xx


# --------------------------------------------------------------------------- F8a: cron that never fires
NEVER = [("0 0 31 2 *", "February has no day 31"), ("0 0 30 2 *", "February has no day 30"),
         ("0 0 31 4 *", "April has no day 31"), ("0 0 31 2,4 *", "February and April have no day 31"),
         ("0 0 30,31 FEB *", "February has no day 30 or 31")]


@pytest.mark.parametrize(("expr", "why"), NEVER, ids=[e for e, _ in NEVER])
def test_cron_naming_no_real_date_says_it_never_fires(db: Path, expr: str, why: str) -> None:
    before = db.read_bytes()
    result = run("--db", str(db), "schedule", "--image", "alpine", "--cron", expr, "--tz", "UTC")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Bad day-of-month" not in result.output
    assert f"never fires: {why}" in result.output and "--cron" in result.output
    assert db.read_bytes() == before


def test_a_real_bad_day_keeps_cronsims_words_and_dow_or_dom_fires(db: Path) -> None:
    result = run("--db", str(db), "schedule", "--image", "alpine", "--cron", "0 0 32 2 *", "--tz", "UTC")
    assert result.exit_code == 2 and "Bad day-of-month" in result.output and "never fires" not in result.output
    # day 31 OR Monday (cron ORs two restricted day fields): Mondays of February fire
    result = run("schedules", "preview", "--cron", "0 0 31 2 1", "--tz", "UTC", "-n", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["occurrences"][0]["utc"].startswith("20")


def test_api_cron_naming_no_real_date_is_400_never_fires(api: Api) -> None:
    status, answer = api.call("POST", "/schedules", {"cron": "0 0 31 2 *", "tz": "UTC", "docker-image": "alpine"})
    assert status == 400 and "never fires: February has no day 31" in answer["error"], answer
    status, answer = api.call("GET", "/schedules")
    assert status == 200 and answer.get("schedules") == []


# --------------------------------------------------------------------------- F8b: --every has no DST notes
def test_every_preview_has_no_dst_notes_cron_keeps_them() -> None:
    result = run("schedules", "preview", "--every", "1h", "--tz", "Europe/Berlin", "--from", "2027-10-31", "-n", "6",
                 "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["occurrences"]
    assert [r["local"][11:19] for r in rows][1:3] == ["02:00:00", "02:00:00"]  # both passes are real runs
    assert all(r["note"] is None for r in rows), rows
    text = run("schedules", "preview", "--every", "1h", "--tz", "Europe/Berlin", "--from", "2027-10-31", "-n", "6")
    assert "repeated hour" not in text.output and "DST" not in text.output
    cron = run("schedules", "preview", "--cron", "0 2 * * *", "--tz", "Europe/Berlin", "--from", "2027-10-30", "-n", "2")
    assert "repeated hour: runs at the first pass only" in cron.output, cron.output
    gap = run("schedules", "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--from", "2027-03-27", "-n", "2")
    assert "DST gap" in gap.output, gap.output


def test_api_every_preview_has_no_dst_notes(api: Api) -> None:
    status, answer = api.call("GET", "/schedules/preview?every=1h&tz=Europe/Berlin&from=2027-10-31&n=6")
    assert status == 200, answer
    assert all(r["note"] is None for r in answer["occurrences"]), answer
    status, answer = api.call("GET", "/schedules/preview?cron=0+2+*+*+*&tz=Europe/Berlin&from=2027-10-30&n=2")
    assert status == 200 and answer["occurrences"][1]["note"] == "repeated hour: runs at the first pass only"


# --------------------------------------------------------------------------- F8c: words and units
def test_list_schedule_bad_id_says_schedule_id(db: Path, api: Api) -> None:
    result = run("--db", str(db), "list", "--schedule", "abc")
    assert result.exit_code == 2 and "schedule id" in result.output and "job id" not in result.output
    status, answer = api.call("GET", "/jobs?schedule=abc")
    assert status == 400 and "schedule id" in answer["error"] and "job id" not in answer["error"], answer
    result = run("--db", str(db), "status", "abc")
    assert result.exit_code == 2 and "job id" in result.output  # a job id is still a job id


def test_wait_timeout_message_carries_a_unit(db: Path) -> None:
    result = run("--db", str(db), "status", "1", "--wait", "--wait-timeout", "1")
    assert result.exit_code == 124, result.output
    assert "Error: job 1 is still scheduled after 1s" in result.output, result.output
    result = run("--db", str(db), "status", "1", "--wait", "--wait-timeout", "1s")
    assert "still scheduled after 1s\n" in result.output


def test_too_many_query_parameters_is_said_as_such(api: Api) -> None:
    status, answer = api.call("GET", "/jobs?" + "&".join(["status=running"] * 60))
    assert status == 400 and answer["error"] == "too many query parameters (60; at most 50)", answer
    status, answer = api.call("GET", "/jobs?" + "&".join(["status=running"] * 50))
    assert status == 200, answer
    status, answer = api.call("GET", "/schedules/preview?" + "&".join(["n=1"] * 11))
    assert status == 400 and "too many query parameters (11; at most 10)" in answer["error"], answer
    status, answer = api.call("GET", "/jobs?status=running&&")
    assert status == 400 and answer["error"].startswith("malformed query string"), answer


# --------------------------------------------------------------------------- F10f: ISO-8601 basic format
BASIC = [("20261224T090000Z", "2026-12-24T09:00:00+00:00"), ("20261224T0900Z", "2026-12-24T09:00:00+00:00"),
         ("20261224T090000+0100", "2026-12-24T08:00:00+00:00"), ("20261224T090000-02", "2026-12-24T11:00:00+00:00"),
         ("20261224T090000.250Z", "2026-12-24T09:00:00.250000+00:00")]


@pytest.mark.parametrize(("text", "utc"), BASIC, ids=[t for t, _ in BASIC])
def test_iso_basic_format_is_accepted(text: str, utc: str) -> None:
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert parse_when(text, now=now).isoformat() == utc
    assert parse_when(text.replace("T", "t").replace("Z", "z"), now=now).isoformat() == utc


@pytest.mark.parametrize("text", ["20261224T09000Z", "20261224090000", "20261324T090000Z", "20261224T090000+25"])
def test_iso_basic_format_malformed_is_refused(text: str) -> None:
    from jobman_cli.errors import InvalidInput

    with pytest.raises(InvalidInput):
        parse_when(text, now=datetime(2026, 12, 1, tzinfo=timezone.utc))


def test_iso_basic_at_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    result = run("--db", str(path), "schedule", "--image", "alpine", "--at", "20991224T090000Z", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["date-time"].startswith("2099-12-24T09:00:00")


# --------------------------------------------------------------------------- F10g: bad dynamodb:// URL
@pytest.mark.parametrize("args", [["--store", "dynamodb://bad name!", "list"], ["list", "--store", "dynamodb://ab"],
                                  ["--db", "dynamodb://table?color=red", "status", "1"],
                                  ["--store", "dynamodb://bad name!", "schedule", "--image", "alpine", "--at", "now"]],
                         ids=["global-bad-name", "sub-short", "unknown-option", "schedule"])
def test_malformed_dynamodb_store_is_a_usage_error_naming_the_flag(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --store: dynamodb://") and result.output.count("\n") == 1


def test_malformed_dynamodb_store_from_the_environment_is_exit_2() -> None:
    result = run("list", env={"JOBMAN_STORE": "dynamodb://bad name!"})
    assert result.exit_code == 2 and "table name" in result.output, result.output
