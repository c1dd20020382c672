"""Review findings on input handling (findings-contract.md): F9 a log page token CloudWatch
refuses, F5 malformed --server URLs, F14 host-dependent --tz names, F6 --db with --server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterator

import pytest

from conftest import claim_with_token, make_draft
from jobman_cli.joblogs import StreamReader, TokenRejected
from test_api import Api, api, service, store_path  # noqa: F401  (fixtures)
from test_logs import GROUP, aws, now, put_lines  # noqa: F401  (fixtures)


# --------------------------------------------------------------------------- F9: page tokens
def _launched_job(service: Any) -> int:  # noqa: F811
    store = service.store
    job, _ = store.add(make_draft(date_time=now() - timedelta(seconds=5), created_at=now() - timedelta(minutes=1)))
    claim_with_token(store, job.id, now())
    store.update(job.id, lambda j: j.launched("i-00000000000000001", now()))
    return job.id


def test_api_logs_after_a_token_cloudwatch_refuses_is_a_one_line_400_naming_after(aws, api: Api) -> None:  # noqa: F811
    job_id = _launched_job(api.service)
    put_lines(aws, job_id, 1, ["one", "two"])
    status, _, page = api.call("GET", f"/jobs/{job_id}/logs")
    assert status == 200 and [e["message"] for e in page["events"]] == ["one", "two"] and page["next"]
    status, _, again = api.call("GET", f"/jobs/{job_id}/logs?after={page['next']}")
    assert status == 200 and again["events"] == []  # a real token still works
    status, _, answer = api.call("GET", f"/jobs/{job_id}/logs?after=garbage")
    assert status == 400
    assert answer["error"].startswith("after: not a token from a previous answer's 'next'")
    assert "\n" not in answer["error"]


class _Stubbed:
    """A logs client answering get_log_events from a script, checking the arguments it is sent."""

    def __init__(self, script: list[tuple[dict[str, Any], Any]]) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    def get_log_events(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        self.calls.append(kwargs)
        expected, answer = self.script.pop(0)
        assert {k: v for k, v in kwargs.items() if k in ("nextToken", "startTime")} == expected
        if answer == "expired":
            raise ClientError({"Error": {"Code": "InvalidParameterException",
                                         "Message": "The specified nextToken is invalid."}}, "GetLogEvents")
        return answer


def _page(token: str, *events: tuple[int, str]) -> dict[str, Any]:
    return {"events": [{"timestamp": t, "message": m} for t, m in events], "nextForwardToken": token}


def test_a_followers_own_token_expiring_resumes_from_the_last_lines_instant_without_repeats() -> None:
    client = _Stubbed([
        ({}, _page("t1", (1000, "a"), (1000, "b"))),
        ({"nextToken": "t1"}, _page("t1")),
        ({"nextToken": "t1"}, "expired"),  # a day of silence later: CloudWatch forgot t1
        ({"startTime": 1000}, _page("t2", (1000, "a"), (1000, "b"), (1000, "c"), (1001, "d"))),
        ({"startTime": 1000, "nextToken": "t2"}, _page("t2")),
    ])
    reader = StreamReader(client, GROUP, "jobs/1/attempt-1")
    first = [e.message for page in reader.pages() for e in page]
    later = [e.message for page in reader.pages() for e in page]
    assert (first, later) == (["a", "b"], ["c", "d"]) and client.script == []


def test_a_token_from_outside_that_cloudwatch_refuses_is_invalid_input_not_a_server_fault() -> None:
    client = _Stubbed([({"nextToken": "forged"}, "expired")])
    reader = StreamReader(client, GROUP, "jobs/1/attempt-1")
    reader.token = "forged"
    with pytest.raises(TokenRejected) as refused:
        list(reader.pages())
    assert refused.value.http_status == 400 and refused.value.exit_code == 2


# --------------------------------------------------------------------------- F5: malformed --server
BAD_SERVERS = ["http://[::1", "http://[zz]:80", "http://a b/", "http://host\x07/"]


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("url", BAD_SERVERS, ids=["open-bracket", "bad-ipv6", "space", "control"])
def test_a_malformed_server_url_is_a_one_line_usage_error_naming_server(url: str, how: str, tmp_path,
                                                                        monkeypatch) -> None:
    from click.testing import CliRunner

    from jobman_cli.cli import cli

    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBMAN_API_TOKEN", "t0ken")
    for name in ("JOBMAN_SERVER", "JOBMAN_STORE", "JOBMAN_DB"):
        monkeypatch.delenv(name, raising=False)
    if how == "env":
        monkeypatch.setenv("JOBMAN_SERVER", url)
    args = ([] if how == "env" else ["--server", url]) + ["list"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --server: ") and "internal error" not in lines[0]
    assert "is not an http:// or https:// URL" in lines[0]


# --------------------------------------------------------------------------- F14: host-dependent zones
NOT_ZONES = ["localtime", "posixrules", "Factory", "posix/Europe/Berlin", "right/UTC"]


@pytest.fixture()
def sched_api(tmp_path) -> Iterator[Any]:
    from jobman_cli.clock import FixedClock
    from jobman_cli.service import JobService
    from jobman_cli.stores import open_store
    from test_schedules_api import NOW
    from test_schedules_api import Api as SchedulesApi

    store = open_store(tmp_path / "jobs.json")
    harness = SchedulesApi(JobService(store, FixedClock(NOW)), tmp_path / "jobs.json")
    yield harness
    harness.server.stop()
    store.close()
    assert harness.log == []  # never a 5xx


@pytest.mark.parametrize("name", NOT_ZONES)
def test_the_api_refuses_a_host_dependent_zone_name_with_400_naming_tz(sched_api: Any, name: str) -> None:
    from test_schedules_api import BODY

    before = sched_api.store_path.read_bytes() if sched_api.store_path.exists() else b""
    status, _, answer = sched_api.call("POST", "/schedules", {**BODY, "tz": name})
    assert status == 400, answer
    assert answer["error"].startswith(f"tz: {name!r} is not a time zone of its own")
    assert (sched_api.store_path.read_bytes() if sched_api.store_path.exists() else b"") == before


@pytest.mark.parametrize("how", ["flag", "JOBMAN_TZ"])
@pytest.mark.parametrize("name", NOT_ZONES)
@pytest.mark.parametrize("when", ["cron", "at"])
def test_the_cli_refuses_a_host_dependent_zone_name_with_exit_2(name: str, how: str, when: str, tmp_path,
                                                                 monkeypatch) -> None:
    from click.testing import CliRunner

    from jobman_cli.cli import cli

    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    for var in ("JOBMAN_SERVER", "JOBMAN_STORE", "JOBMAN_TZ"):
        monkeypatch.delenv(var, raising=False)
    db = tmp_path / "jobs.json"
    monkeypatch.setenv("JOBMAN_DB", str(db))
    args = ["schedule", "--image", "alpine"] + (["--cron", "0 6 * * *"] if when == "cron" else
                                                 ["--at", "2030-01-01 06:00:00"])
    if how == "flag":
        args += ["--tz", name]
    else:
        monkeypatch.setenv("JOBMAN_TZ", name)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    field = "--tz" if how == "flag" else "JOBMAN_TZ"
    assert result.output.strip().splitlines() == [f"Error: {field}: {name!r} is not a time zone of its own (it "
                                                  "depends on the host, or is a tz database alias); use an IANA "
                                                  "name such as 'Europe/Berlin' or 'UTC'"]
    assert not any("alpine" in p.read_text() for p in tmp_path.iterdir() if p.name.startswith("jobs.json"))


def test_a_schedule_stored_with_localtime_before_the_refusal_still_computes_its_next_run() -> None:
    from datetime import datetime, timezone

    from jobman_cli.schedules.occurrences import next_occurrence

    after = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert next_occurrence("0 6 * * *", None, "localtime", after) > after  # read, not refused


# --------------------------------------------------------------------------- F6: --db with a server
@pytest.mark.parametrize("args, where", [
    (["list", "--db", "{db}"], "JOBMAN_SERVER is set"),
    (["--db", "{db}", "list"], "JOBMAN_SERVER is set"),
    (["schedules", "list", "--db", "{db}"], "JOBMAN_SERVER is set"),
    (["cost", "--db", "{db}"], "JOBMAN_SERVER is set"),
    (["schedule", "--db", "{db}", "--image", "alpine", "--at", "+300d", "-q"], "JOBMAN_SERVER is set"),
    (["--server", "http://127.0.0.1:9", "--db", "{db}", "list"], "--server is given"),
    (["--server", "http://127.0.0.1:9", "cancel", "1", "--db", "{db}"], "--server is given"),
], ids=["list", "global-db", "schedules-list", "cost", "schedule", "server-flag", "cancel"])
def test_an_explicit_db_with_a_server_is_refused_naming_both(args: list[str], where: str, tmp_path,
                                                             monkeypatch) -> None:
    from click.testing import CliRunner

    from jobman_cli.cli import cli

    db = tmp_path / "jobs.json"
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBMAN_API_TOKEN", "t0ken")
    for var in ("JOBMAN_SERVER", "JOBMAN_STORE", "JOBMAN_DB"):
        monkeypatch.delenv(var, raising=False)
    assert CliRunner().invoke(cli, ["--db", str(db), "schedule", "--image", "busybox", "--at", "+300d", "-q"]).exit_code == 0
    before = db.read_bytes()
    if where.startswith("JOBMAN_SERVER"):
        monkeypatch.setenv("JOBMAN_SERVER", "http://127.0.0.1:9")  # nothing listens: it must not be asked
    result = CliRunner().invoke(cli, [a.format(db=db) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --db/--store: names a local store but {where}, which sends the command to a daemon; use one "
        "(unset JOBMAN_SERVER to use the local store)"]
    assert db.read_bytes() == before


def test_jobman_db_and_jobman_server_both_from_the_environment_still_mean_the_server(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from jobman_cli.cli import cli

    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBMAN_API_TOKEN", "t0ken")
    monkeypatch.setenv("JOBMAN_DB", str(tmp_path / "absent.json"))
    monkeypatch.setenv("JOBMAN_SERVER", "http://127.0.0.1:9")
    result = CliRunner().invoke(cli, ["list"])
    assert "--db/--store" not in result.output and "127.0.0.1:9" in result.output  # it tried the server


def test_a_remote_follower_whose_token_expired_on_the_daemon_resumes_without_repeats(api: Api, monkeypatch) -> None:  # noqa: F811
    from jobman_cli.api_routes import ExtraRoutes
    from jobman_cli.joblogs import LogRequest
    from jobman_cli.remote import RemoteService
    from test_api import TOKEN

    job_id = _launched_job(api.service)

    def finished_then(page: dict[str, Any]) -> dict[str, Any]:
        api.service.store.update(job_id, lambda j: j.reported("finished", 0, now()))
        return page

    class Client(_Stubbed):
        def get_log_events(self, **kwargs: Any) -> dict[str, Any]:
            answer = super().get_log_events(**kwargs)
            return answer() if callable(answer) else answer

    client = Client([
        ({}, _page("t1", (1000, "a"), (1000, "b"))),
        ({"nextToken": "t1"}, _page("t1")),
        ({"nextToken": "t1"}, "expired"),  # the follower's next poll, a day of silence later
        ({"startTime": 1000}, lambda: finished_then(_page("t2", (1000, "a"), (1000, "b"), (1000, "c"),
                                                         (1001, "d")))),
        ({"startTime": 1000, "nextToken": "t2"}, _page("t2")),
        ({"startTime": 1000, "nextToken": "t2"}, _page("t2")),
    ])
    monkeypatch.setattr(ExtraRoutes, "_logs_client", lambda self: (client, GROUP))
    shown: list[str] = []
    remote = RemoteService(f"http://127.0.0.1:{api.server.port}", TOKEN)
    code = remote.show_log(LogRequest(job_id, follow=True), write=lambda events: shown.extend(e.message for e in events),
                           note=lambda text: None, poll=0, settle=0)
    assert (code, shown) == (0, ["a", "b", "c", "d"])
