"""Secrets by reference on the "instance": the REAL user-data, the REAL AWS CLI, a real moto_server.

The script is rendered and run with bash (tests/stubtools.py): ``docker`` is the stub that records
the environment the real Docker CLI would give the container (``-e NAME`` looked up in its own
environment, as exact bytes), ``aws`` and ``python3`` are the real programs behind a thin wrapper
that records every argv, curl is real and reports to a recording listener, and the script's own
log lines go to moto's CloudWatch Logs. The AWS CLI reaches moto through ``AWS_ENDPOINT_URL`` in
the instance's environment (on EC2: AWS's endpoints and the instance role).

Needs an AWS CLI (``JOBMAN_TEST_AWS_CLI``; ``JOBMAN_REQUIRE_AWS_CLI=1`` turns its absence into a
failure). The same flow with a real Docker engine and a real daemon is tests/test_secrets_docker.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from moto_server import free_port, moto_server, moto_server_process  # noqa: F401  (fixtures)
from stubtools import REAL, CallbackRecorder, StubTools
from test_logs_docker import REQUIRE_AWS_CLI, _unavailable, real_aws_cli

from jobman_cli.joblogs import LogTarget, ensure_log_group, stream_name
from jobman_cli.launchers.userdata import callback_url_for, render_user_data
from jobman_cli.model import Job, JobStatus

pytestmark = pytest.mark.slow

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = "cb-secret-test-0123456789abcdef0123456789"
FAST = {"JOBMAN_CALLBACK_ATTEMPTS": "2", "JOBMAN_CALLBACK_BACKOFF": "0", "JOBMAN_CURL_RETRIES": "0",
        "JOBMAN_DOCKER_WAIT": "1", "JOBMAN_PULL_ATTEMPTS": "1", "JOBMAN_PULL_BACKOFF": "0"}
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

#: Hostile values; each holds a marker that appears nowhere else, so a leak of any part is found.
SSM_VALUES = {
    "/prod/db/password": "mk1-p@ss w0rd 'single' \"double\" $HOME ${HOME} `id` $(id) ;|&<> \\ end\\",
    "/prod/multi": "mk2-line1\nline2\n\n",  # trailing newlines: command substitution would strip them
    "/prod/unicode": "mk3-✓ naïve 日本語 😀 \t tab \r cr",
    "/prod/flags": "mk4 --privileged -e X=1 %s %n 100%",
}
JSON_SECRET = {"password": "mk5-k€y\n\"quoted\" \\back\\\n", "port": 5432, "the key: x=y/z": "mk6-odd key\n",
               "nested": {"a": [1, "mk7"]}}
RAW_SECRET = "mk8-not json at all\n"
SECRETS = {
    "DB_PASSWORD": "ssm:/prod/db/password",
    "MULTI": "ssm:/prod/multi",
    "UNI": "ssm:/prod/unicode",
    "FLAGS": "ssm:/prod/flags",
    "JSON_PASSWORD": "secretsmanager:app/creds#password",
    "JSON_PORT": "secretsmanager:app/creds#port",
    "JSON_ODD": "secretsmanager:app/creds#the key: x=y/z",
    "JSON_NESTED": "secretsmanager:app/creds#nested",
    "RAW": "secretsmanager:app/raw",
}
EXPECTED = {
    "DB_PASSWORD": SSM_VALUES["/prod/db/password"], "MULTI": "mk2-line1\nline2\n\n", "UNI": SSM_VALUES["/prod/unicode"],
    "FLAGS": SSM_VALUES["/prod/flags"], "JSON_PASSWORD": JSON_SECRET["password"], "JSON_PORT": "5432",
    "JSON_ODD": JSON_SECRET["the key: x=y/z"], "JSON_NESTED": '{"a":[1,"mk7"]}', "RAW": RAW_SECRET,
}
MARKERS = [f"mk{i}" for i in range(1, 9)]

RECORDER = r'''#!__PYTHON__
import json, os, sys
with open(__LOG__, "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
os.execv(__REAL__, [__REAL__] + sys.argv[1:])
'''


def leaks(text: str | bytes, values=None) -> list[str]:
    """Markers or whole values (raw, or as JSON escapes them) found in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = [m for m in MARKERS if m in text]
    for value in (values or EXPECTED).values():
        if len(value) >= 6 and (value in text or json.dumps(value)[1:-1] in text):
            found.append(value)
    return found


@pytest.fixture(scope="module")
def aws_cli() -> str:
    found = real_aws_cli()
    if found is None:
        _unavailable("no AWS CLI here (the user-data reads secrets with it; pip install awscli into any venv and "
                     "set JOBMAN_TEST_AWS_CLI)", REQUIRE_AWS_CLI)
    return found


def seed(url: str, region: str = "us-east-1") -> dict[str, str]:
    """The parameters (SecureString) and secrets of :data:`SECRETS` in moto; the secrets' ARNs."""
    import boto3

    kw = dict(endpoint_url=url, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
    ssm = boto3.client("ssm", **kw)
    for name, value in SSM_VALUES.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    sm = boto3.client("secretsmanager", **kw)
    arns = {"app/creds": sm.create_secret(Name="app/creds", SecretString=json.dumps(JSON_SECRET))["ARN"],
            "app/raw": sm.create_secret(Name="app/raw", SecretString=RAW_SECRET)["ARN"]}
    return arns


class Instance:
    """Stub tools plus recording wrappers around the real ``aws`` and ``python3``."""

    def __init__(self, root: Path, aws_cli: str | None, *, python: bool = True) -> None:
        self.tools = StubTools(root, real_tools=REAL)
        self.argv_log = root / "argv.jsonl"
        reals = {"aws": aws_cli, "python3": os.path.realpath(sys.executable) if python else None}
        for name, real in reals.items():
            if real is None:
                continue
            wrapper = self.tools.system / name
            wrapper.write_text(RECORDER.replace("__PYTHON__", sys.executable).replace("__LOG__", repr(str(self.argv_log)))
                               .replace("__REAL__", repr(real)))
            wrapper.chmod(0o755)

    def argv(self) -> list[list[str]]:
        """Every recorded argv: the wrappers' and the stubs' (docker, shutdown ...)."""
        wrapped = [json.loads(line) for line in self.argv_log.read_text().splitlines()] if self.argv_log.exists() else []
        return wrapped + [[c.tool, *c.args] for c in self.tools.calls()]


def make_job(secrets: dict[str, str], job_id: int = 41, **changes) -> Job:
    fields = dict(id=job_id, title="secrets", date_time=NOW, docker_image="registry.example/app:1",
                  env_variables={"PLAIN": "visible"}, status=JobStatus.LAUNCHING, created_at=NOW, timeout=120,
                  attempts=1, secrets=secrets)
    fields.update(changes)
    return Job(**fields)


def run(instance: Instance, job: Job, url: str, *, region: str = "us-east-1", env: dict | None = None):
    """Render (logs to moto) and run the script; (result, callback bodies, CloudWatch messages, script)."""
    import boto3

    logs = boto3.client("logs", endpoint_url=url, region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing")
    ensure_log_group(logs, "jobman", 30)
    with CallbackRecorder() as server:
        script = render_user_data(job, callback_url=callback_url_for(server.url, job.id), callback_token=TOKEN,
                                  logs=LogTarget("jobman", region, url))
        result = instance.tools.run_script(script, env={**FAST, **KEYS, "AWS_ENDPOINT_URL": url,
                                                        "TMPDIR": str(instance.tools.root), **(env or {})},
                                           timeout=240)
    events = logs.get_log_events(logGroupName="jobman", logStreamName=stream_name(job.id, job.attempts),
                                 startFromHead=True)["events"]
    return result, [r.json() for r in server.requests], [e["message"] for e in events], script


def test_values_reach_the_container_byte_exact_and_appear_nowhere_else(tmp_path, moto_server, aws_cli):  # noqa: F811
    arns = seed(moto_server)
    secrets = dict(SECRETS, BY_ARN=f"secretsmanager:{arns['app/creds']}#password")
    instance = Instance(tmp_path, aws_cli)
    result, bodies, messages, script = run(instance, make_job(secrets), moto_server)
    console = result.stdout + result.stderr
    assert bodies == [{"status": "running"}, {"status": "finished", "exit-code": 0}], console[-3000:]
    (docker_run,) = instance.tools.docker_runs()
    expected = dict(EXPECTED, BY_ARN=JSON_SECRET["password"])
    assert {name: docker_run.env.get(name) for name in expected} == {k: v.encode() for k, v in expected.items()}
    assert docker_run.env["PLAIN"] == b"visible"
    # On docker's command line only `-e NAME`, never a value.
    assert {docker_run.argv[i + 1] for i, a in enumerate(docker_run.argv) if a == b"-e"} == \
        {b"PLAIN=visible", *(n.encode() for n in expected)}
    # Nowhere else: the user-data, the console, the callbacks, any process's argv, the log stream.
    assert leaks(script) == [] and leaks(console) == [] and leaks(json.dumps(bodies)) == []
    assert leaks(json.dumps(instance.argv(), ensure_ascii=False)) == []
    assert leaks("\n".join(messages)) == []
    assert any(m == "jobman: read 10 secret(s)" for m in messages), messages
    assert any(m == "jobman: reading secret DB_PASSWORD from ssm:/prod/db/password" for m in messages)
    for path in tmp_path.rglob("*"):  # the error file, the log batch, the stubs' records
        if path.is_file():
            assert leaks(path.read_bytes()) == [], path
    aws_calls = [a for a in instance.argv() if a[0] == "aws" and a[1] in ("ssm", "secretsmanager")]
    assert len(aws_calls) == 10, "one read per reference"
    assert instance.tools.powered_off


def test_a_missing_parameter_fails_the_job_as_secret_unavailable_and_the_container_never_runs(
        tmp_path, moto_server, aws_cli):  # noqa: F811
    seed(moto_server)
    instance = Instance(tmp_path, aws_cli)
    secrets = {"DB_PASSWORD": "ssm:/prod/db/password", "GONE": "ssm:/prod/does-not-exist"}
    result, bodies, messages, script = run(instance, make_job(secrets), moto_server)
    assert bodies == [{"status": "running"}, {
        "status": "failed", "reason-code": "secret-unavailable",
        "reason": "secret GONE: cannot read ssm:/prod/does-not-exist (ParameterNotFound)"}], result.stdout[-2000:]
    assert instance.tools.docker_runs() == []
    assert [c.args[0] for c in instance.tools.calls("docker")] == ["info", "pull"]  # pulled, never run
    assert instance.tools.powered_off
    assert leaks(result.stdout + result.stderr) == [] and leaks("\n".join(messages)) == []
    assert "jobman: failed (secret-unavailable): secret GONE: cannot read ssm:/prod/does-not-exist " \
           "(ParameterNotFound)" in messages


@pytest.mark.parametrize("reference, why", [
    ("secretsmanager:app/creds#no-such-key", "no such key in its JSON"),
    ("secretsmanager:app/raw#password", "its SecretString is not JSON"),
    ("secretsmanager:app/missing", "ResourceNotFoundException"),
])
def test_an_unreadable_secret_names_the_reference_and_never_the_value(tmp_path, moto_server, aws_cli,  # noqa: F811
                                                                       reference, why):
    seed(moto_server)
    instance = Instance(tmp_path, aws_cli)
    result, bodies, messages, _ = run(instance, make_job({"S": reference}), moto_server)
    assert bodies[-1] == {"status": "failed", "reason-code": "secret-unavailable",
                          "reason": f"secret S: cannot read {reference} ({why})"}
    assert instance.tools.docker_runs() == []
    assert leaks(result.stdout + result.stderr) == [] and leaks("\n".join(messages)) == []


def test_an_unreachable_endpoint_and_a_missing_python3_are_secret_unavailable(tmp_path, moto_server, aws_cli):  # noqa: F811
    seed(moto_server)
    closed = f"http://127.0.0.1:{free_port()}"
    instance = Instance(tmp_path / "a", aws_cli)
    _, bodies, _, _ = run(instance, make_job({"S": "ssm:/prod/multi"}), moto_server,
                          env={"AWS_ENDPOINT_URL_SSM": closed})
    assert bodies[-1]["reason"] == "secret S: cannot read ssm:/prod/multi (could not connect to the endpoint)"
    instance = Instance(tmp_path / "b", aws_cli, python=False)
    _, bodies, _, _ = run(instance, make_job({"S": "ssm:/prod/multi"}), moto_server)
    assert bodies[-1]["reason"] == "secret S: cannot read ssm:/prod/multi (no python3 on the instance)"
    assert instance.tools.docker_runs() == []


def test_the_region_is_the_daemons_unless_the_reference_is_an_arn(tmp_path, moto_server, aws_cli):  # noqa: F811
    """Secrets live in us-east-1; the instance (its log target) is in eu-west-1: a name is looked up
    in eu-west-1 (not found), an ARN in its own region."""
    arns = seed(moto_server)
    instance = Instance(tmp_path / "arn", aws_cli)
    arn_ref = f"secretsmanager:{arns['app/raw']}"
    _, bodies, _, _ = run(instance, make_job({"S": arn_ref}), moto_server, region="eu-west-1")
    assert bodies[-1] == {"status": "finished", "exit-code": 0}
    assert instance.tools.docker_runs()[0].env["S"] == RAW_SECRET.encode()
    instance = Instance(tmp_path / "name", aws_cli)
    _, bodies, _, _ = run(instance, make_job({"S": "secretsmanager:app/raw"}), moto_server, region="eu-west-1")
    assert bodies[-1]["reason"] == "secret S: cannot read secretsmanager:app/raw (ResourceNotFoundException)"


def test_a_script_run_under_bash_x_does_not_trace_a_value(tmp_path, moto_server, aws_cli):  # noqa: F811
    seed(moto_server)
    instance = Instance(tmp_path, aws_cli)
    job = make_job({"DB_PASSWORD": "ssm:/prod/db/password", "MULTI": "ssm:/prod/multi"})
    tools = instance.tools
    with CallbackRecorder() as server:
        script = render_user_data(job, callback_url=callback_url_for(server.url, job.id), callback_token=TOKEN)
        path = tools.start_script(script)
        result = subprocess.run([shutil.which("bash"), "-x", str(path)], env=tools.env({**FAST, **KEYS, "AWS_ENDPOINT_URL": moto_server,
                                                                          "AWS_DEFAULT_REGION": "us-east-1"}),
                                cwd=tools.root, capture_output=True, timeout=240)
    assert b"+ job_id=41" in result.stderr, "bash -x traced the script up to the secrets block"
    assert tools.docker_runs()[0].env["MULTI"] == b"mk2-line1\nline2\n\n"
    assert leaks(result.stdout + result.stderr) == []
    assert [r.json() for r in server.requests][-1] == {"status": "finished", "exit-code": 0}


def test_secrets_named_like_script_variables_or_bash_specials_change_nothing_in_the_script(
        tmp_path, moto_server, aws_cli):  # noqa: F811
    """The values never become shell variables of those names (a helper sets the docker process's
    environment), so ``image``, ``secret_env``, ``IFS``, ``UID`` (read-only in bash) or ``BASH_ENV``
    reach the container and the script still runs the job's image."""
    seed(moto_server)
    names = ["image", "container", "secret_env", "IFS", "UID", "SECONDS", "BASH_ENV", "PYTHONSTARTUP"]
    secrets = {name: "ssm:/prod/flags" for name in names}
    instance = Instance(tmp_path, aws_cli)
    result, bodies, _, _ = run(instance, make_job(secrets), moto_server)
    assert bodies[-1] == {"status": "finished", "exit-code": 0}, result.stdout[-2000:]
    (docker_run,) = instance.tools.docker_runs()
    assert docker_run.image == b"registry.example/app:1" and docker_run.name == b"jobman-41-1"
    assert {n: docker_run.env[n] for n in names} == {n: SSM_VALUES["/prod/flags"].encode() for n in names}


def test_secrets_too_big_for_the_docker_process_are_secret_unavailable_and_leave_no_error_file(
        tmp_path, moto_server, aws_cli):  # noqa: F811
    """5 secrets of 60,000 characters (Secrets Manager allows 64 KiB each) exceed the 262,144
    characters the script hands to the docker process: secret-unavailable, naming the secret
    that crossed the line, instead of a docker CLI that cannot start ("exited 1")."""
    import boto3

    sm = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for n in range(5):
        sm.create_secret(Name=f"big/{n}", SecretString=chr(ord("a") + n) * 60000)
    instance = Instance(tmp_path, aws_cli)
    result, bodies, _, _ = run(instance, make_job({f"BIG{n}": f"secretsmanager:big/{n}" for n in range(5)}), moto_server)
    assert bodies[-1] == {"status": "failed", "reason-code": "secret-unavailable",
                          "reason": "secret BIG4: the job's secrets together exceed 262144 characters"}, \
        result.stdout[-2000:]
    assert instance.tools.docker_runs() == []
    _assert_error_file_emptied(tmp_path)


def _assert_error_file_emptied(root: Path) -> None:
    """The reads' error file (AWS error text) is private to root and emptied once the reads end."""
    (err,) = root.rglob("jobman-secret-*.err")
    assert err.stat().st_size == 0 and err.stat().st_mode & 0o077 == 0, oct(err.stat().st_mode)


def test_the_error_file_of_the_reads_is_private_and_emptied(tmp_path, moto_server, aws_cli):  # noqa: F811
    seed(moto_server)
    instance = Instance(tmp_path, aws_cli)
    secrets = {"A": "ssm:/prod/db/password", "GONE": "ssm:/prod/does-not-exist"}
    result, bodies, _, _ = run(instance, make_job(secrets), moto_server)
    assert bodies[-1]["reason-code"] == "secret-unavailable", result.stdout[-2000:]
    _assert_error_file_emptied(tmp_path)
