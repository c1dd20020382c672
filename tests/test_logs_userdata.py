"""The user-data's log parts, rendered (no engine needed): the awslogs arguments, the refusals, the
size checks, and the script's own lines reaching a real moto_server through a real AWS CLI with
stub docker (tests/stubtools.py)."""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timezone

import pytest

from jobman_cli.errors import ConfigError, InvalidInput
from jobman_cli.joblogs import LogTarget, size_probe_target, stream_name
from jobman_cli.launchers.userdata import USER_DATA_LIMIT, callback_url_for, render_user_data
from jobman_cli.model import Job, JobStatus

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
URL = callback_url_for("https://jobman.example.com", 7)


def job(**changes) -> Job:
    fields = dict(id=7, title="t", date_time=NOW, docker_image="alpine:3.20", env_variables={"A": "b"},
                  status=JobStatus.LAUNCHING, created_at=NOW, attempts=2)
    fields.update(changes)
    return Job(**fields)


def run_args(script: str) -> list[str]:
    block = script[script.index("run_args=(") + len("run_args=("):]
    return shlex.split(block[:block.index("\n)")])


def test_the_container_logs_to_the_attempts_stream_through_awslogs_non_blocking() -> None:
    script = render_user_data(job(), callback_url=URL, callback_token="tok",
                              logs=LogTarget("team/jobs", "eu-west-1", "https://logs.vpce.example"))
    assert run_args(script) == [
        "-e", "A=b", "--log-driver=awslogs", "--log-opt=awslogs-region=eu-west-1", "--log-opt=awslogs-group=team/jobs",
        f"--log-opt=awslogs-stream={stream_name(7, 2)}", "--log-opt=mode=non-blocking", "--log-opt=max-buffer-size=4m",
        "--log-opt=awslogs-force-flush-interval-seconds=1", "--log-opt=awslogs-endpoint=https://logs.vpce.example"]
    assert "log_group=team/jobs log_stream=jobs/7/attempt-2 log_region=eu-west-1" in script
    without = render_user_data(job(), callback_url=URL, callback_token="tok")
    assert "awslogs" not in without and "aws logs" not in without and run_args(without) == ["-e", "A=b"]


@pytest.mark.parametrize("target", [
    LogTarget("bad group", "us-east-1"), LogTarget("g'; touch /x", "us-east-1"), LogTarget("", "us-east-1"),
    LogTarget("jobman", "us-east-1; id"), LogTarget("jobman", "US-EAST-1"),
    LogTarget("jobman", "us-east-1", "ftp://x"), LogTarget("jobman", "us-east-1", "http://a b"),
    LogTarget("jobman", "us-east-1", "http://x/'$(id)'"),
])
def test_log_settings_that_could_inject_are_refused(target) -> None:
    with pytest.raises(ConfigError):
        render_user_data(job(), callback_url=URL, callback_token="tok", logs=target)


def test_schedule_time_size_check_counts_the_log_settings(monkeypatch, tmp_path) -> None:
    """A job that fits without the log block but not with it is refused when it is scheduled,
    not when the daemon launches it hours later."""
    from jobman_cli.service import API_FIELDS, JobService, ScheduleRequest

    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))
    monkeypatch.setenv("JOBMAN_LOG_GROUP", "g" * 300)
    probe = size_probe_target()
    assert probe.group == "g" * 300 and len(probe.endpoint_url) >= 100
    value = "x" * (8 * 1024 - 2)  # within the environment's own 8 KiB limit
    big = job(id=2**53, attempts=0, title="", env_variables={"K": value})
    url = callback_url_for("https://" + "x" * 200 + ".example:65535", 2**53)
    assert len(render_user_data(big, callback_url=url, callback_token="x" * 43).encode()) < USER_DATA_LIMIT
    with pytest.raises(InvalidInput):
        render_user_data(big, callback_url=url, callback_token="x" * 43, logs=probe)
    service = JobService(store=None)  # validate() does not touch the store
    with pytest.raises(InvalidInput) as err:
        service.validate(ScheduleRequest(image="alpine:3.20", when="now", env={"K": value}), API_FIELDS)
    assert "user-data would be" in str(err.value)
    monkeypatch.delenv("JOBMAN_LOG_GROUP")
    small = service.validate(ScheduleRequest(image="alpine:3.20", when="now", env={"K": "x" * 4000}), API_FIELDS)
    assert small.env_variables["K"] == "x" * 4000


def test_the_scripts_own_lines_reach_the_stream_with_stub_docker(tmp_path, isolated_aws) -> None:
    """Stub docker, real bash, real curl, a real AWS CLI and a real moto_server: the bootstrap
    lines are in the stream, in order, and the finished report carries no log note."""
    pytest.importorskip("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    from stubtools import CallbackRecorder, REAL, StubTools
    from test_logs_docker import real_aws_cli

    aws = real_aws_cli()
    if aws is None:
        pytest.skip("no AWS CLI here")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server._server.server_port}"
        logs = boto3.client("logs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                            aws_secret_access_key="s")
        logs.create_log_group(logGroupName="jobman")
        tools = StubTools(tmp_path, real_tools=REAL)
        (tools.system / "aws").symlink_to(aws)
        with CallbackRecorder() as recorder:
            script = render_user_data(job(id=9, attempts=1), callback_url=callback_url_for(recorder.url, 9),
                                      callback_token="tok", logs=LogTarget("jobman", "us-east-1", url))
            tools.run_script(script, timeout=120, env={
                "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                "JOBMAN_CALLBACK_BACKOFF": "0"})
            bodies = [r.json() for r in recorder.requests]
        assert bodies[-1] == {"status": "finished", "exit-code": 0}
        events = logs.get_log_events(logGroupName="jobman", logStreamName="jobs/9/attempt-1",
                                     startFromHead=True)["events"]
        messages = [e["message"] for e in events]
        assert [m.split(" ")[1] for m in messages] == ["starting", "reported", "pulling", "running", "the",
                                                     "reported", "powering"], messages
        assert all(m.startswith("jobman: ") for m in messages)
        assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    finally:
        server.stop()
