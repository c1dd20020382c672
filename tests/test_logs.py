"""`jobman logs`: CloudWatch Logs per job attempt, in-process against moto's ``mock_aws``.

The store is a real TinyDB file; jobs are driven through the model's own transitions (claim,
launch, report) as the daemon would. The CloudWatch Logs and EC2 of the test are moto's.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import claim_with_token, make_draft
from jobman_cli.cli import cli
from jobman_cli.joblogs import LogRequest, show_job_log, stream_name
from jobman_cli.model import JobStatus
from jobman_cli.stores.tinydb import TinyDBStore

GROUP = "jobman"


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def aws(mock_ec2, monkeypatch, tmp_path):
    """moto with the job-log group, and an empty JOBMAN_HOME (no config file)."""
    import boto3

    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    for name in ("JOBMAN_LOG_GROUP", "JOBMAN_LOG_RETENTION_DAYS", "JOBMAN_LOG_ENDPOINT", "JOBMAN_STORE", "JOBMAN_DB"):
        monkeypatch.delenv(name, raising=False)
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    return logs


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "jobs.json"


def add_job(db: Path, *, launched: bool = True, attempts: int = 1, instance_id: str | None = None) -> int:
    """A job for now; ``launched``: claimed ``attempts`` times, the last attempt on ``instance_id``."""
    with TinyDBStore(db) as store:
        job, _ = store.add(make_draft(date_time=now() - timedelta(seconds=5), created_at=now() - timedelta(minutes=1)))
        for n in range(attempts if launched else 0):
            claim_with_token(store, job.id, now(), launch_token=f"launch-{n}")
            if n < attempts - 1:
                store.update(job.id, lambda j: j.retry_later("capacity", now(), now()))
        if launched:
            store.update(job.id, lambda j: j.launched(instance_id or "i-00000000000000001", now()))
        return job.id


def report(db: Path, job_id: int, status: str, exit_code: int | None = None) -> None:
    with TinyDBStore(db) as store:
        store.update(job_id, lambda j: j.reported(status, exit_code, now()))


def put_lines(logs, job_id: int, attempt: int, lines: list[str], *, start_ms: int | None = None) -> None:
    stream = stream_name(job_id, attempt)
    try:
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    base = start_ms if start_ms is not None else int(time.time() * 1000)
    events = [{"timestamp": base + i, "message": line} for i, line in enumerate(lines)]
    for chunk in range(0, len(events), 5000):
        logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events[chunk:chunk + 5000])


def run(db: Path, *args: str):
    return CliRunner().invoke(cli, ["--db", str(db), "logs", *args])


# --------------------------------------------------------------------------- layout
def test_stream_name_is_per_job_and_attempt_and_needs_no_boto3() -> None:
    import subprocess

    assert stream_name(7, 2) == "jobs/7/attempt-2"
    with pytest.raises(ValueError):
        stream_name(7, -1)
    code = ("import sys; from jobman_cli.joblogs import stream_name; stream_name(1, 1);"
            "sys.exit(3 if any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --------------------------------------------------------------------------- reading
def test_prints_the_attempts_lines_in_order_after_the_instance_is_gone(aws, db) -> None:
    job_id = add_job(db, instance_id="i-0123456789abcdef0")  # no such instance in EC2: long gone
    put_lines(aws, job_id, 1, ["jobman: pulling alpine:3.20", "hello from the container", "jobman: powering off"])
    report(db, job_id, "finished", 0)
    result = run(db, str(job_id))
    assert result.exit_code == 0, result.output
    assert result.stdout == "jobman: pulling alpine:3.20\nhello from the container\njobman: powering off\n"
    assert result.stderr == ""


def test_pages_through_a_long_log_until_the_token_repeats(aws, db) -> None:
    job_id = add_job(db)
    lines = [f"line {n}" for n in range(12_345)]  # more than one 10,000-event page
    put_lines(aws, job_id, 1, lines)
    result = run(db, str(job_id))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == lines


def test_json_is_one_object_per_line(aws, db) -> None:
    job_id = add_job(db)
    hour_ago = (int(time.time()) - 3600) * 1000
    put_lines(aws, job_id, 1, ["a", 'quote " and unicode é'], start_ms=hour_ago)
    result = run(db, str(job_id), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    second = datetime.fromtimestamp(hour_ago / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    assert rows == [
        {"timestamp": f"{second}.000Z", "message": "a", "stream": "jobs/1/attempt-1"},
        {"timestamp": f"{second}.001Z", "message": 'quote " and unicode é', "stream": "jobs/1/attempt-1"},
    ]


def test_attempt_picks_an_older_attempt_and_defaults_to_the_current_one(aws, db) -> None:
    job_id = add_job(db, attempts=2)
    put_lines(aws, job_id, 1, ["first attempt"])
    put_lines(aws, job_id, 2, ["second attempt"])
    assert run(db, str(job_id)).stdout == "second attempt\n"
    assert run(db, str(job_id), "--attempt", "1").stdout == "first attempt\n"
    too_far = run(db, str(job_id), "--attempt", "3")
    assert too_far.exit_code == 2 and "--attempt" in too_far.stderr and "1 to 2" in too_far.stderr


def test_since_skips_older_lines(aws, db) -> None:
    job_id = add_job(db)
    now_ms = int(time.time() * 1000)
    put_lines(aws, job_id, 1, ["two hours ago"], start_ms=now_ms - 2 * 3600 * 1000)
    put_lines(aws, job_id, 1, ["a minute ago"], start_ms=now_ms - 60 * 1000)
    assert run(db, str(job_id), "--since", "10m").stdout == "a minute ago\n"
    assert run(db, str(job_id), "--since", "3h").stdout == "two hours ago\na minute ago\n"
    bad = run(db, str(job_id), "--since", "soon")
    assert bad.exit_code == 2 and "--since" in bad.stderr


# --------------------------------------------------------------------------- one-line errors
def test_no_such_job(aws, db) -> None:
    add_job(db)
    result = run(db, "42")
    assert result.exit_code == 1 and result.stderr == "Error: job 42 not found\n"


def test_not_launched_yet(aws, db) -> None:
    job_id = add_job(db, launched=False)
    result = run(db, str(job_id))
    assert result.exit_code == 1
    assert result.stderr == f"Error: job {job_id} has not launched yet (it is scheduled): no instance, no log yet\n"


def test_log_not_found_when_neither_stream_nor_instance_exists(aws, db) -> None:
    job_id = add_job(db, instance_id="i-0123456789abcdef0")
    report(db, job_id, "failed", 1)
    result = run(db, str(job_id))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: log not found: no stream jobs/{job_id}/attempt-1 in log group jobman")
    assert result.stderr.count("\n") == 1


def test_a_running_job_without_its_stream_yet_suggests_follow(aws, db) -> None:
    with TinyDBStore(db) as store:
        job, _ = store.add(make_draft(date_time=now(), created_at=now()))
        claim_with_token(store, job.id, now())  # launching: no instance recorded yet
    result = run(db, str(job.id))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: log not found yet: job {job.id} is launching") and "--follow" in result.stderr


def test_log_not_found_when_the_group_is_missing(aws, db, monkeypatch) -> None:
    monkeypatch.setenv("JOBMAN_LOG_GROUP", "elsewhere")
    job_id = add_job(db)
    result = run(db, str(job_id))
    assert result.exit_code == 1 and "log group elsewhere" in result.stderr and result.stderr.count("\n") == 1


def test_falls_back_to_console_output_only_while_the_instance_exists(aws, db, mock_ec2) -> None:
    image = mock_ec2.describe_images()["Images"][0]["ImageId"]
    instance = mock_ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    job_id = add_job(db, instance_id=instance)
    result = run(db, str(job_id))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip(), "moto's console output is printed"
    assert "showing the EC2 console output of " + instance in result.stderr
    # Once the stream exists, it is the log, and console output is never mixed in.
    put_lines(aws, job_id, 1, ["from cloudwatch"])
    again = run(db, str(job_id))
    assert again.stdout == "from cloudwatch\n" and again.stderr == ""


def _deny_everything_but(iam_actions: list[str], monkeypatch) -> None:
    """Switch to a moto IAM user allowed only ``iam_actions``, and make moto enforce IAM."""
    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = boto3.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": iam_actions, "Resource": "*"}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from the next request on
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)


def test_no_permission_names_the_missing_action(aws, db, monkeypatch) -> None:
    job_id = add_job(db)
    put_lines(aws, job_id, 1, ["secret line"])
    _deny_everything_but(["ec2:DescribeInstances"], monkeypatch)
    result = run(db, str(job_id))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no permission: your AWS identity may not call logs:GetLogEvents")
    assert result.stderr.count("\n") == 1 and "secret line" not in result.stdout


# --------------------------------------------------------------------------- following
class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.notes: list[str] = []

    def write(self, events) -> None:
        self.lines += [(time.monotonic(), e.message) for e in events]

    def messages(self) -> list[str]:
        return [m for _, m in self.lines]


def _follow(db: Path, logs, job_id: int, recorder: Recorder, result: dict, settle: float = 0.3,
            **kwargs) -> threading.Thread:
    def body() -> None:
        store = TinyDBStore(db, create=False)
        try:
            from jobman_cli.service import JobService

            result["code"] = show_job_log(JobService(store), LogRequest(job_id, follow=True, **kwargs), client=lambda: logs,
                                          group=GROUP, write=recorder.write, note=recorder.notes.append,
                                          poll=0.05, settle=settle)
        except BaseException as exc:  # surfaced by the test
            result["error"] = exc
        finally:
            store.close()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("status,exit_code,expected", [("finished", 0, 0), ("failed", 3, 1)])
def test_follow_shows_lines_as_they_arrive_and_exits_with_the_job(aws, db, status, exit_code, expected) -> None:
    job_id = add_job(db)
    recorder, result = Recorder(), {}
    # settle 3 s: the line written 0.15 s after the report must arrive before the follower stops,
    # however slowly a loaded machine runs the writer thread
    thread = _follow(db, aws, job_id, recorder, result, settle=3.0)
    deadline = time.monotonic() + 10  # a busy CI machine may take a while to start the follower
    while not recorder.notes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.notes and "waiting for log stream" in recorder.notes[0], "the stream did not exist yet"
    put_lines(aws, job_id, 1, ["first"])
    written = time.monotonic()
    deadline = time.monotonic() + 5
    while not recorder.lines and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.messages() == ["first"], "a line reaches the follower while the job runs"
    assert recorder.lines[0][0] - written < 3.0  # polled every 50 ms: typically well under 0.2 s
    put_lines(aws, job_id, 1, ["second"])
    report(db, job_id, status, exit_code)
    time.sleep(0.15)  # the instance's last words come after its report (within the settling time)
    put_lines(aws, job_id, 1, ["after the report: powering off"])
    thread.join(10)
    assert not thread.is_alive() and "error" not in result, result
    assert result["code"] == expected
    assert recorder.messages() == ["first", "second", "after the report: powering off"]


def test_follow_of_a_cancelled_job_exits_1_and_of_an_ended_job_at_once(aws, db) -> None:
    job_id = add_job(db)
    put_lines(aws, job_id, 1, ["only line"])
    with TinyDBStore(db) as store:
        store.update(job_id, lambda j: j.cancelled(now()))
    recorder, result = Recorder(), {}
    started = time.monotonic()
    _follow(db, aws, job_id, recorder, result).join(10)
    assert result.get("code") == 1 and recorder.messages() == ["only line"]
    assert time.monotonic() - started < 3


def test_follow_through_the_cli_exits_with_the_status_wait_code(aws, db) -> None:
    job_id = add_job(db)
    put_lines(aws, job_id, 1, ["done"])
    report(db, job_id, "finished", 0)
    result = run(db, str(job_id), "--follow")
    assert result.exit_code == 0 and result.stdout == "done\n"
    other = add_job(db)
    put_lines(aws, other, 1, ["broken"])
    report(db, other, "failed", 2)
    failed = run(db, str(other), "-f", "--json")
    assert failed.exit_code == 1 and json.loads(failed.stdout)["message"] == "broken"


# --------------------------------------------------------------------------- the instance's log note
def test_a_finished_report_may_say_the_log_is_incomplete_and_the_job_still_finished(db) -> None:
    """The user-data reports `finished` with a reason when its log could not be delivered (issue
    11): the job is finished all the same, exit code 0, reason kept; `running` takes no reason."""
    from jobman_cli.errors import InvalidInput
    from jobman_cli.service import JobService

    job_id = add_job(db)
    with TinyDBStore(db) as store:
        service = JobService(store)
        with pytest.raises(InvalidInput):
            service.report(job_id, "running", None, None, "log incomplete (x)")
        job = service.report(job_id, "finished", 0, None, "log incomplete (CloudWatch Logs: connection refused)")
        assert job.status is JobStatus.FINISHED and job.exit_code == 0 and job.reason_code.value == "exited"
        assert job.reason == "log incomplete (CloudWatch Logs: connection refused)"
        assert service.report(job_id, "finished", 0, None, "log incomplete (CloudWatch Logs: connection refused)") == job


def test_a_job_that_never_launched_is_refused_without_importing_boto3(db) -> None:
    import subprocess

    job_id = add_job(db, launched=False)
    code = ("import sys; from jobman_cli.cli import cli\n"
            f"rc = cli.main(['--db', {str(db)!r}, 'logs', '{job_id}'], standalone_mode=False)\n"
            "sys.exit(3 if any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules) else rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")})
    assert result.returncode == 1, result.stderr
    assert "has not launched yet" in result.stderr
