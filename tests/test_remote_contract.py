"""The CLI contract in both modes: local (the store file) and remote (``--server``, the REST API).

One real ``jobman daemon`` process (moto_server for EC2 and CloudWatch Logs) serves the API; the
real ``jobman`` script runs in subprocesses, once with the daemon's store and once with
``JOBMAN_SERVER`` and the API token (and no AWS credentials, and a store path that does not exist,
so nothing can come from anywhere but the API). Each check runs the same command in both modes and
compares stdout, stderr and the exit code. Then the errors only remote use has: an unreachable
server, a wrong token, a token file others can read, and TLS without ``--cacert`` against a second
daemon serving HTTPS with a self-signed certificate.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from moto_server import aws_env, free_port, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import WAIT, DaemonProcess, poll

pytestmark = pytest.mark.slow

TOKEN = "contract-test-token-" + "0123456789abcdef" * 2
SCRIPT = str(Path(sys.executable).with_name("jobman"))
MODES = ("local", "remote")


class Daemon:
    """A daemon with a known API token and port; ``env(mode)`` is a CLI environment for either mode."""

    port: int
    home: Path
    db: Path
    url: str
    base: dict[str, str]
    proc: DaemonProcess

    def env(self, mode: str, **extra: str) -> dict[str, str]:
        if mode == "local":
            env = dict(self.base)
        else:  # no AWS credentials and no usable store: everything must come over the API
            env = {k: v for k, v in self.base.items() if not k.startswith("AWS_")}
            env.update(JOBMAN_SERVER=self.url, JOBMAN_DB=str(self.home / "absent" / "nothing.json"),
                       JOBMAN_HOME=str(self.home / "absent"))
        env.update(extra)
        return env


def _start(moto: str, home: Path, *args: str, scheme: str = "http") -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    daemon = Daemon()
    daemon.port, daemon.home, daemon.db = port, home, home / "jobs.json"
    daemon.url = f"{scheme}://127.0.0.1:{port}"
    daemon.base = aws_env(moto, JOBMAN_HOME=str(home), JOBMAN_DB=str(daemon.db), JOBMAN_API_TOKEN=TOKEN)
    command_args = [a if a != "{listen}" else f"127.0.0.1:{port}" for a in args]
    daemon.proc = DaemonProcess(daemon.base, *command_args)
    daemon.proc.wait_for(lambda line: "ready" in line)
    return daemon


def _stop(daemon: Daemon) -> None:
    if daemon.proc.proc.poll() is None:
        daemon.proc.proc.terminate()
        try:
            daemon.proc.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            daemon.proc.proc.kill()
            daemon.proc.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def daemon(moto_server_process: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:  # noqa: F811
    # DaemonProcess passes --listen 127.0.0.1:0 first; a later --listen wins in click.
    started = _start(moto_server_process, tmp_path_factory.mktemp("contract"), "--listen", "{listen}")
    yield started
    _stop(started)


def jobman(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def both(daemon: Daemon, *args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The same command locally and remotely; asserts they agree on exit code, stdout and stderr."""
    local = jobman(daemon.env("local"), *args)
    remote = jobman(daemon.env("remote"), *args)
    assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr), \
        f"{args}: local {local!r} vs remote {remote!r}"
    return local, remote


def schedule(daemon: Daemon, mode: str, *args: str) -> int:
    done = jobman(daemon.env(mode), "schedule", "--image", "alpine:3.20", "-q", *args)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def job_json(daemon: Daemon, job_id: int) -> dict:
    done = jobman(daemon.env("local"), "status", str(job_id), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _relative_free(text: str) -> str:
    """Text output with "in 59m"/"3s ago" made neutral: it is computed at print time."""
    return re.sub(r"\b\d+(s|m|h|d)\b", "N", text)


# --------------------------------------------------------------------------- same output, both modes
@pytest.mark.parametrize("mode", MODES)
def test_schedule_output_and_json_shape(daemon: Daemon, mode: str) -> None:
    env = daemon.env(mode)
    done = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+2h", "--title", f"shape {mode}",
                  "-e", "A=1", "--timeout", "10m", "--disk-gb", "30", "--secret", "DB=ssm:/prod/db",
                  "--entrypoint", "", "--container-imds", "--json", "--", "echo", "hi there")
    assert done.returncode == 0, done.stderr
    api = json.loads(done.stdout)
    assert api == job_json(daemon, api["id"])  # what was printed is what was stored
    assert (api["title"], api["env-variables"], api["timeout"], api["command"]) == (
        f"shape {mode}", {"A": "1"}, 600, ["echo", "hi there"])
    assert (api["disk-gb"], api["secrets"], api["entrypoint"], api["container-imds"]) == (
        30, {"DB": "ssm:/prod/db"}, "", True)
    text = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+2h")
    assert text.returncode == 0 and re.fullmatch(r"Scheduled job \d+ .*\n", text.stdout), text.stdout


def test_status_and_list_print_the_same_in_both_modes(daemon: Daemon) -> None:
    scheduled = schedule(daemon, "remote", "--at", "+3h", "--title", "listed", "-e", "X=y")
    local_made = schedule(daemon, "local", "--at", "2030-01-02 03:04:05", "--tz", "Europe/Berlin")
    cancelled = schedule(daemon, "local", "--at", "+3h")
    assert jobman(daemon.env("remote"), "cancel", str(cancelled)).returncode == 0
    for job_id in (scheduled, local_made, cancelled):
        both(daemon, "status", str(job_id), "--json")
        local = jobman(daemon.env("local"), "status", str(job_id))
        remote = jobman(daemon.env("remote"), "status", str(job_id))
        assert remote.returncode == local.returncode == 0
        assert _relative_free(remote.stdout) == _relative_free(local.stdout)
    assert job_json(daemon, local_made)["date-time"] == "2030-01-02T02:04:05Z"
    # Only jobs that cannot change meanwhile (scheduled hours ahead, cancelled) are listed.
    local, _ = both(daemon, "list", "--json", "--status", "scheduled", "--status", "cancelled")
    assert {scheduled, local_made, cancelled} <= {job["id"] for job in json.loads(local.stdout)}
    local = jobman(daemon.env("local"), "list", "--status", "cancelled")
    remote = jobman(daemon.env("remote"), "list", "--status", "cancelled")
    assert remote.returncode == local.returncode == 0 and _relative_free(remote.stdout) == _relative_free(local.stdout)


def test_remote_schedule_of_a_local_wall_clock_time_means_the_clients_zone(daemon: Daemon) -> None:
    """An absolute time without offset is the operator's local time, wherever the daemon runs."""
    env = daemon.env("remote", JOBMAN_TZ="Asia/Tokyo")
    done = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "2031-06-01 09:00", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["date-time"] == "2031-06-01T00:00:00Z"


# --------------------------------------------------------------------------- exit codes and errors
def test_not_found_and_bad_input_are_the_same_errors(daemon: Daemon) -> None:
    for args in (("status", "999999"), ("cancel", "999999"), ("logs", "999999"),
                 ("callback", "999999", "--status", "running")):
        local, _ = both(daemon, *args)
        assert local.returncode == 1 and local.stderr == "Error: job 999999 not found\n", local.stderr
    before = daemon.db.read_bytes()
    for args in (("status", "abc"), ("schedule", "--image", "alpine:3.20", "--at", "yesterday"),
                 ("schedule", "--image", "Bad Image!", "--at", "now"),
                 ("schedule", "--image", "alpine:3.20", "--at", "now", "--timeout", "forever"),
                 ("schedule", "--image", "alpine:3.20", "--at", "now", "-e", "1BAD=x"),
                 ("callback", "1", "--status", "finished", "--exit-code", "300")):
        local, _ = both(daemon, *args)
        assert local.returncode == 2 and local.stderr.startswith("Error: ") and local.stderr.count("\n") == 1
    assert daemon.db.read_bytes() == before  # bad input wrote nothing in either mode


def test_conflicts_have_the_local_exit_codes(daemon: Daemon) -> None:
    job_id = schedule(daemon, "local", "--at", "+3h", "--idempotency-key", "contract-key")
    # A repeated key with other fields: a usage error (exit 2), the flag named as locally.
    local, _ = both(daemon, "schedule", "--image", "alpine:3.21", "--at", "+3h", "--idempotency-key", "contract-key")
    assert local.returncode == 2 and "--idempotency-key" in local.stderr, local.stderr
    # The same request again returns the same job in both modes.
    again = [jobman(daemon.env(m), "schedule", "--image", "alpine:3.20", "--at", "+3h", "-q",
                    "--idempotency-key", "contract-key") for m in MODES]
    assert [a.stdout for a in again] == [f"{job_id}\n"] * 2
    # A callback the state does not allow (HTTP 409): exit 1 with the same message.
    local, _ = both(daemon, "callback", str(job_id), "--status", "finished", "--exit-code", "0")
    assert local.returncode == 1 and "Error: " in local.stderr
    # Cancelling a cancelled job again is fine (idempotent) in both modes.
    assert jobman(daemon.env("local"), "cancel", str(job_id)).returncode == 0
    local, _ = both(daemon, "cancel", str(job_id), "--json")
    assert local.returncode == 0 and json.loads(local.stdout)["status"] == "cancelled"
    # status --wait of a cancelled job: exit 1 and the same JSON.
    local, _ = both(daemon, "status", str(job_id), "--wait", "--json")
    assert local.returncode == 1
    # status --wait that times out: 124.
    waiting = schedule(daemon, "local", "--at", "+3h")
    for mode in MODES:
        done = jobman(daemon.env(mode), "status", str(waiting), "--wait", "--wait-timeout", "1s")
        assert done.returncode == 124, (mode, done.stderr)
        assert done.stderr.endswith(f"Error: job {waiting} is still scheduled after 1s\n"), done.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_running_job_fails_and_wait_says_so(daemon: Daemon, mode: str) -> None:
    job_id = schedule(daemon, mode, "--at", "now")
    assert poll(lambda: job_json(daemon, job_id)["status"] == "running", timeout=WAIT)
    waiter = subprocess.Popen([SCRIPT, "status", str(job_id), "--wait", "--json"], env=daemon.env(mode),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported = jobman(daemon.env(mode), "callback", str(job_id), "--status", "failed", "--exit-code", "3")
    assert reported.returncode == 0 and reported.stdout == f"Job {job_id} is failed (exit code 3)\n", reported
    out, err = waiter.communicate(timeout=WAIT)
    assert waiter.returncode == 1, err
    assert json.loads(out) == job_json(daemon, job_id) and json.loads(out)["exit-code"] == 3
    local, _ = both(daemon, "status", str(job_id), "--wait", "--json")
    assert local.returncode == 1
    # Cancel of a job that has ended otherwise (HTTP 409 remotely): exit 1, the same message.
    local, _ = both(daemon, "cancel", str(job_id))
    assert local.returncode == 1 and local.stderr.startswith("Error: ") and local.stderr.count("\n") == 1
    assert job_json(daemon, job_id)["status"] == "failed"


@pytest.mark.parametrize("mode", MODES)
def test_cancel_of_a_running_job_terminates_its_instance(daemon: Daemon, mode: str) -> None:
    job_id = schedule(daemon, mode, "--at", "now")
    assert poll(lambda: job_json(daemon, job_id)["status"] == "running", timeout=WAIT)
    instance = job_json(daemon, job_id)["instance-id"]
    done = jobman(daemon.env(mode), "cancel", str(job_id))
    assert (done.returncode, done.stdout) == (0, f"Job {job_id} is cancelled; instance {instance} terminated\n"), done
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=daemon.base["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"


def test_logs_are_the_same_lines_in_both_modes(daemon: Daemon) -> None:
    never = schedule(daemon, "local", "--at", "+3h")
    local, _ = both(daemon, "logs", str(never))
    assert local.returncode == 1 and "has not launched yet" in local.stderr
    job_id = schedule(daemon, "local", "--at", "now")
    assert poll(lambda: job_json(daemon, job_id)["status"] == "running", timeout=WAIT)
    import boto3

    logs = boto3.client("logs", endpoint_url=daemon.base["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    stream = f"jobs/{job_id}/attempt-1"
    logs.create_log_stream(logGroupName="jobman", logStreamName=stream)
    now = int(time.time() * 1000)
    lines = ["jobman: pulling alpine:3.20", "hello from the container", "ünïcode ✓", "done"]
    logs.put_log_events(logGroupName="jobman", logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)])
    local, _ = both(daemon, "logs", str(job_id))
    assert local.returncode == 0 and local.stdout == "".join(line + "\n" for line in lines)
    local, _ = both(daemon, "logs", str(job_id), "--json", "--since", "1h")
    assert [json.loads(line)["message"] for line in local.stdout.splitlines()] == lines
    local, _ = both(daemon, "logs", str(job_id), "--attempt", "2")
    assert local.returncode == 2
    # --follow: ends once the job has ended, with status --wait's exit code, in both modes.
    followers = {m: subprocess.Popen([SCRIPT, "logs", str(job_id), "--follow"], env=daemon.env(m),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in MODES}
    assert jobman(daemon.env("local"), "callback", str(job_id), "--status", "finished", "--exit-code", "0").returncode == 0
    for mode, follower in followers.items():
        out, err = follower.communicate(timeout=WAIT)
        assert (follower.returncode, out) == (0, "".join(line + "\n" for line in lines)), (mode, err)


# --------------------------------------------------------------------------- remote-only errors
def test_unreachable_server_is_one_line(daemon: Daemon) -> None:
    env = daemon.env("remote", JOBMAN_SERVER=f"http://127.0.0.1:{free_port()}")
    for args in (("status", "1"), ("list",), ("schedule", "--image", "alpine:3.20", "--at", "+1h")):
        done = jobman(env, *args)
        assert done.returncode == 1 and done.stdout == ""
        assert re.fullmatch(r"Error: cannot reach the jobman server at http://127\.0\.0\.1:\d+: connection refused.*\n",
                            done.stderr), done.stderr


def test_bad_or_missing_token(daemon: Daemon, tmp_path: Path) -> None:
    wrong = "wrong-token-" + "x" * 40
    done = jobman(daemon.env("remote", JOBMAN_API_TOKEN=wrong), "list")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "refused the API token" in done.stderr and wrong not in done.stderr + done.stdout
    env = daemon.env("remote")
    del env["JOBMAN_API_TOKEN"]
    done = jobman(env, "status", "1")
    assert done.returncode == 1 and "JOBMAN_API_TOKEN or pass --token-file" in done.stderr
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    done = jobman(env, "--token-file", str(token_file), "list", "--json")
    assert done.returncode == 1 and "accessible by group or others" in done.stderr and TOKEN not in done.stderr
    token_file.chmod(0o600)
    done = jobman(env, "--token-file", str(token_file), "list", "--json")
    assert done.returncode == 0, done.stderr
    done = jobman(daemon.env("remote", JOBMAN_SERVER="ftp://example"), "list")
    assert done.returncode == 2 and done.stderr.startswith("Error: --server: ")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is not installed")
def test_tls_without_cacert_hints_at_it(moto_server_process: str, tmp_path: Path) -> None:  # noqa: F811
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=120)
    tls = _start(moto_server_process, tmp_path / "home", "--listen", "{listen}", "--tls-cert", str(cert),
                 "--tls-key", str(key), scheme="https")
    try:
        job_id = schedule(tls, "local", "--at", "+1h")
        done = jobman(tls.env("remote"), "status", str(job_id))
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "TLS failure" in done.stderr and "--cacert" in done.stderr and "certificate" in done.stderr.split("--cacert")[0]
        for env in (tls.env("remote", JOBMAN_CACERT=str(cert)), tls.env("remote")):
            args = ("status", str(job_id), "--json") if "JOBMAN_CACERT" in env else (
                "--cacert", str(cert), "status", str(job_id), "--json")
            done = jobman(env, *args)
            assert done.returncode == 0 and done.stdout == jobman(tls.env("local"), "status", str(job_id), "--json").stdout
        plain = jobman(tls.env("remote", JOBMAN_SERVER=tls.url.replace("https", "http")), "status", str(job_id))
        assert plain.returncode == 1 and plain.stderr.startswith("Error: ") and plain.stderr.count("\n") == 1
    finally:
        _stop(tls)
