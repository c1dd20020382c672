"""Job logs end to end with a REAL Docker engine and a real ``moto_server`` (issue 11, DESIGN.md s. 10).

The daemon's part is played here with jobman's own pieces: the job is stored and claimed in a
TinyDB store, launched into moto_server's EC2 by the real :class:`EC2Launcher` with the rendered
user-data (log group, region and ``awslogs-endpoint`` = moto_server), and the callbacks go to a
real :class:`ApiServer` on the same store. The user-data is then read back from moto
(``DescribeInstanceAttribute``) and run with bash: the real docker CLI against a private
``dockerd`` whose environment holds the (fake) AWS credentials Docker's ``awslogs`` driver uses
(on EC2: the instance role), the real AWS CLI for the script's own lines, real curl. Only
``shutdown``/``poweroff``/``dnf``/``systemctl`` are stubs. Afterwards the instance is terminated in
moto, and ``jobman logs`` runs as the operator's process.

Needs: a Docker engine (see tests/dockerengine.py; ``JOBMAN_REQUIRE_DOCKER=1`` turns a skip into a
failure) and an AWS CLI (``aws``; Amazon Linux 2023 ships v2, these tests use whatever is on this
machine; ``JOBMAN_TEST_AWS_CLI`` may name it; ``JOBMAN_REQUIRE_AWS_CLI=1`` turns its absence from a
skip into a failure).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import claim_with_token, make_draft
from dockerengine import REQUIRE_ENV, DockerEngine, EngineUnavailable
from moto_server import aws_env, ec2_client, moto_server, moto_server_process  # noqa: F401  (fixtures)
from registry import Registry
from stubtools import REAL, StubTools

pytestmark = pytest.mark.slow

JOBMAN = [sys.executable, "-m", "jobman_cli"]
API_TOKEN = "t" * 40
FAST = {"JOBMAN_CALLBACK_ATTEMPTS": "2", "JOBMAN_CALLBACK_BACKOFF": "0", "JOBMAN_CURL_RETRIES": "0",
        "JOBMAN_DOCKER_WAIT": "1", "JOBMAN_PULL_ATTEMPTS": "2", "JOBMAN_PULL_BACKOFF": "0", "JOBMAN_STOP_GRACE": "2"}
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}


#: Set to 1 to turn "no AWS CLI here" into a failure (as JOBMAN_REQUIRE_DOCKER does for the engine).
REQUIRE_AWS_CLI = "JOBMAN_REQUIRE_AWS_CLI"


def _unavailable(reason: str, require: str = REQUIRE_ENV) -> None:
    if os.environ.get(require) == "1":
        pytest.fail(f"{require}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def real_aws_cli() -> str | None:
    """The AWS CLI's real program (a pyenv shim would need the user's PATH and HOME)."""
    named = os.environ.get("JOBMAN_TEST_AWS_CLI") or shutil.which("aws")
    if named and "/shims/" in named:
        found = subprocess.run(["pyenv", "which", "aws"], capture_output=True, text=True, timeout=30)
        named = found.stdout.strip() if found.returncode == 0 else None
    return named if named and os.access(named, os.X_OK) else None


@pytest.fixture(scope="module")
def engine():
    """A private dockerd with fake AWS credentials in its environment (awslogs reads dockerd's)."""
    engine = DockerEngine(extra_env=FAKE_KEYS)
    try:
        engine.start()
    except EngineUnavailable as exc:
        _unavailable(f"no private Docker engine here: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def images(engine):
    rootfs = engine.rootfs()
    with Registry(repository="jobman/logs") as reg:
        # stdout and stderr, a second apart, so their order in the stream is fixed by time
        reg.add("talk0", rootfs, cmd=["sh", "-c", "echo out-1; sleep 1; echo err-1 >&2; sleep 1; echo out-2"])
        reg.add("slow0", rootfs, cmd=["sh", "-c", "echo first-line; sleep 4; echo second-line >&2; sleep 1"])
        reg.add("slow3", rootfs, cmd=["sh", "-c", "echo first-line; sleep 4; echo second-line >&2; sleep 1; exit 3"])
        yield reg


@pytest.fixture
def fake_aws(isolated_aws):
    """This process (the daemon's stand-in) talks to moto_server with fake credentials."""
    for name, value in {**FAKE_KEYS, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        isolated_aws.setenv(name, value)


@pytest.fixture(scope="module")
def aws_cli() -> str:
    found = real_aws_cli()
    if found is None:
        _unavailable("no AWS CLI here (the user-data sends its own lines with `aws logs put-log-events`; "
                     "pip install awscli into any venv and set JOBMAN_TEST_AWS_CLI)", REQUIRE_AWS_CLI)
    return found


class Run:
    """One job, played from launch to power-off."""

    def __init__(self, tmp_path: Path, moto_url: str, engine: DockerEngine, aws_cli: str | None,
                 image: str, *, log_endpoint: str | None = None) -> None:
        from jobman_cli.api import ApiServer
        from jobman_cli.joblogs import LogTarget, ensure_log_group
        from jobman_cli.launchers.base import EC2Settings
        from jobman_cli.launchers.ec2 import EC2Launcher
        from jobman_cli.launchers.userdata import callback_url_for, render_user_data
        from jobman_cli.service import JobService
        from jobman_cli.stores.tinydb import TinyDBStore

        import boto3

        self.tmp, self.moto, self.engine = tmp_path, moto_url, engine
        self.db = tmp_path / "jobs.json"
        self.env = aws_env(moto_url, JOBMAN_DB=str(self.db), JOBMAN_HOME=str(tmp_path / "home"))
        logs = boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")
        ensure_log_group(logs, "jobman", 30)  # what `jobman setup aws` (or the daemon's start) does
        self.logs = logs
        self.store = TinyDBStore(self.db)
        now = datetime.now(timezone.utc)
        job, _ = self.store.add(make_draft(docker_image=image, timeout=60, date_time=now - timedelta(seconds=1),
                                           created_at=now - timedelta(seconds=5)))
        token = claim_with_token(self.store, job.id, now, launch_token=f"logs-{job.id}-{time.time_ns()}")
        job = self.store.get(job.id)
        self.job_id = job.id
        self.api = ApiServer(JobService(self.store), api_token=API_TOKEN)
        self.api.start()
        user_data = render_user_data(job, callback_url=callback_url_for(self.api.url, job.id), callback_token=token,
                                     logs=LogTarget("jobman", "us-east-1", log_endpoint or moto_url))
        launcher = EC2Launcher(EC2Settings(region="us-east-1", endpoint_url=moto_url))
        self.instance = launcher.launch(job, user_data=user_data, store_id=self.store.store_id)
        self.store.update(job.id, lambda j: j.launched(self.instance, datetime.now(timezone.utc)))
        # The instance's view: its user-data as EC2 serves it.
        answer = ec2_client(moto_url).describe_instance_attribute(InstanceId=self.instance, Attribute="userData")
        self.script = base64.b64decode(answer["UserData"]["Value"]).decode("utf-8")
        assert self.script == user_data
        self.tools = StubTools(tmp_path / "instance", real_docker=engine.cli, real_tools=REAL)
        if aws_cli is not None:
            (self.tools.system / "aws").symlink_to(aws_cli)
        self.instance_env = {**FAST, **engine.env(), **FAKE_KEYS, "AWS_CONFIG_FILE": os.devnull,
                             "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def start(self) -> subprocess.Popen:
        return self.tools.popen_script(self.script, env=self.instance_env)

    def terminate_instance(self) -> None:
        ec2_client(self.moto).terminate_instances(InstanceIds=[self.instance])

    def jobman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*JOBMAN, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def job(self):
        return self.store.get(self.job_id)

    def close(self) -> None:
        self.api.stop()
        self.store.close()


class Follower:
    """``jobman logs ID --follow`` as a process; each stdout line with the time it arrived, and its
    stderr (read as it comes, so a test can wait for its "waiting for log stream" note)."""

    def __init__(self, run: Run) -> None:
        self.proc = subprocess.Popen([*JOBMAN, "logs", str(run.job_id), "--follow"], env=run.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.error_reader = threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True)
        self.error_reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def seen(self, text: str) -> float | None:
        return next((t for t, line in self.lines if line == text), None)

    def wait_for_error(self, text: str, timeout: float = 60.0) -> None:
        """Until ``text`` is in a stderr line (liveness limit only; the follower must be running)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.errors)):
            assert self.proc.poll() is None, f"the follower ended first: {''.join(self.errors)}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:g}s: {''.join(self.errors)}"
            time.sleep(0.05)

    def wait(self, timeout: float) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(10)
        self.error_reader.join(10)
        return code, "".join(self.errors)


def in_order(lines: list[str], expected: list[str]) -> bool:
    """``expected`` lines appear in ``lines`` in this order (other lines may come between)."""
    position = 0
    for line in lines:
        if position < len(expected) and expected[position] in line:
            position += 1
    return position == len(expected)


BOOTSTRAP_START = ["jobman: starting job", "jobman: pulling", "jobman: running the container"]


def test_logs_show_bootstrap_and_container_lines_in_order_after_the_instance_is_gone(
        tmp_path, moto_server, engine, images, aws_cli, fake_aws):  # noqa: F811
    run = Run(tmp_path, moto_server, engine, aws_cli, images.ref("talk0"))
    try:
        result = run.start()
        out, err = result.communicate(timeout=120)
        assert result.returncode == 0, (out[-2000:], err[-2000:])
        assert run.tools.powered_off
        job = run.job()
        assert job.status.value == "finished" and job.reason in (None, ""), job
        run.terminate_instance()
        shown = run.jobman("logs", str(run.job_id))
        assert shown.returncode == 0, shown.stderr
        assert shown.stderr == "", "no fallback: the stream exists"
        lines = shown.stdout.splitlines()
        print("\n`jobman logs` after the instance was terminated:\n" + shown.stdout)
        assert in_order(lines, BOOTSTRAP_START + ["out-1", "err-1", "out-2", "jobman: the container exited with code 0",
                                                  "jobman: reported finished", "jobman: powering off"]), lines
        assert lines.count("out-1") == 1 and lines.count("out-2") == 1, "each line once"
        as_json = run.jobman("logs", str(run.job_id), "--json")
        assert '"stream":"jobs/%d/attempt-1"' % run.job_id in as_json.stdout.replace(" ", "")
    finally:
        run.close()


@pytest.mark.parametrize("image,status,code", [("slow0", "finished", 0), ("slow3", "failed", 1)])
def test_follow_started_before_the_container_prints_streams_lines_and_exits_with_the_job(
        tmp_path, moto_server, engine, images, aws_cli, fake_aws, image, status, code):  # noqa: F811
    run = Run(tmp_path, moto_server, engine, aws_cli, images.ref(image))
    try:
        follower = Follower(run)  # before the instance has printed anything: the stream does not exist yet
        # It has looked (and is waiting) before the instance starts: a fixed pause raced a slow start-up.
        follower.wait_for_error("waiting for log stream")
        script = run.start()
        script.communicate(timeout=120)
        exit_code, stderr = follower.wait(timeout=60)
        assert exit_code == code, stderr
        assert "waiting for log stream" in stderr
        assert run.job().status.value == status
        first, second = follower.seen("first-line"), follower.seen("second-line")
        assert first is not None and second is not None, follower.lines
        # The container printed them 4 s apart: the follower showed the first while the job ran.
        assert second - first > 1.0, (first, second)  # typically ~4 s; shipping delays may eat up to ~2 s of it
        lines = [line for _, line in follower.lines]
        assert in_order(lines, BOOTSTRAP_START + ["first-line", "second-line", "jobman: the container exited",
                                                  f"jobman: reported {status}"]), lines
        run.terminate_instance()
        again = run.jobman("logs", str(run.job_id))
        assert again.stdout.splitlines()[:len(lines)] == lines, "the follower saw what the log holds"
    finally:
        run.close()


def test_a_log_that_cannot_be_delivered_changes_nothing_but_the_reason(tmp_path, moto_server, engine, images,  # noqa: F811
                                                                        aws_cli, fake_aws):
    from moto_server import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: CloudWatch Logs is "down"
    run = Run(tmp_path, moto_server, engine, aws_cli, images.ref("talk0"), log_endpoint=closed)
    try:
        started = time.monotonic()
        out, _ = run.start().communicate(timeout=180)
        assert run.tools.powered_off
        job = run.job()
        assert job.status.value == "finished" and job.exit_code == 0, job
        assert "log incomplete" in (job.reason or ""), job.reason
        print(f"\nreason of a finished job whose log endpoint was down: {job.reason}")
        assert b"out-1" in out and b"out-2" in out, "the container ran (its output reached the console)"
        assert time.monotonic() - started < 90
    finally:
        run.close()


def test_without_an_aws_cli_the_container_log_still_arrives_and_the_reason_says_so(tmp_path, moto_server, engine,  # noqa: F811
                                                                                    images, fake_aws):
    run = Run(tmp_path, moto_server, engine, None, images.ref("talk0"))
    try:
        run.start().communicate(timeout=120)
        job = run.job()
        assert job.status.value == "finished" and "log incomplete (no aws CLI" in (job.reason or ""), job
        shown = run.jobman("logs", str(run.job_id))
        assert shown.returncode == 0 and in_order(shown.stdout.splitlines(), ["out-1", "err-1", "out-2"]), shown
    finally:
        run.close()
