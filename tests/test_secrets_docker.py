"""Secrets by reference end to end (issue 12): a real ``jobman daemon``, ``moto_server``, the REAL
AWS CLI and a REAL Docker engine.

The operator schedules with ``jobman schedule --secret`` (and over the API); the daemon launches
into moto_server's EC2; the test reads each instance's user-data back from moto
(``DescribeInstanceAttribute``) and runs it as the instance would: bash, the real AWS CLI reading
SSM SecureStrings and Secrets Manager secrets from moto with the (fake) instance credentials, the
real docker CLI against a private ``dockerd`` whose ``awslogs`` driver ships the container's
output to moto's CloudWatch Logs, real curl calling back to the daemon's listener. Only
``shutdown``/``poweroff``/``dnf``/``systemctl`` are stubs.

The container prints the SHA-256 of each secret variable (printing a value would put it in the
job's log, which must not hold one); the test compares them with the hashes of the expected bytes,
so byte-exactness is proven without the value travelling. Then every place jobman writes is
searched for every value (raw and JSON-escaped, and a marker unique to each): the user-data, the
store (the TinyDB file, or every DynamoDB item scanned raw), every API answer, ``list --json``,
``status --json``, the daemon's log, the instances' consoles, the CloudWatch Logs events and the
bodies of the webhook notifications both jobs send when they end: 0 hits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from moto_server import aws_env, ec2_client, free_port, moto_server, moto_server_process  # noqa: F401  (fixtures)
from notify_receiver import Receiver
from registry import Registry
from stubtools import REAL, StubTools
from test_e2e_daemon import DaemonProcess
from test_logs_docker import FAKE_KEYS, FAST, engine  # noqa: F401  (engine: the private dockerd fixture)
from test_secrets_userdata import EXPECTED, SECRETS, aws_cli, leaks, seed  # noqa: F401  (aws_cli: fixture)

pytestmark = pytest.mark.slow

API_TOKEN = "s" * 40
WAIT = 60.0


@pytest.fixture(scope="module")
def image(engine):
    with Registry(engine.rootfs(), repository="jobman/secrets", cmd=["true"]) as reg:
        yield reg.image


def hashes_command(names: list[str]) -> list[str]:
    """``sh -c`` printing ``H NAME <sha256 of the variable's bytes>`` per name (no value printed)."""
    lines = [f'echo "H {n} $(printf %s "${n}" | sha256sum)"' for n in names]
    return ["sh", "-c", "; ".join(lines)]


def poll(check, timeout: float = WAIT, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")


class Operator:
    """The CLI, the API and AWS as the operator sees them."""

    def __init__(self, env: dict[str, str], api: str, moto: str) -> None:
        self.env, self.api, self.moto = env, api, moto
        self.answers: list[str] = []  # every API answer body, for the leak search

    def jobman(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "jobman_cli", *args], env=self.env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(self.api + "/jobMan/v1.1" + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {API_TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        self.answers.append(text)
        return json.loads(text)

    def instance_of(self, job_id: int) -> str:
        def find():
            for reservation in ec2_client(self.moto).describe_instances(
                    Filters=[{"Name": "tag:jobman:job-id", "Values": [str(job_id)]}])["Reservations"]:
                for instance in reservation["Instances"]:
                    return instance["InstanceId"]
            return None
        return poll(find)

    def user_data(self, instance_id: str) -> str:
        answer = ec2_client(self.moto).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        return base64.b64decode(answer["UserData"]["Value"]).decode("utf-8")

    def log_events(self) -> dict[str, list[str]]:
        import boto3

        logs = boto3.client("logs", endpoint_url=self.moto, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")
        streams = logs.describe_log_streams(logGroupName="jobman")["logStreams"]
        return {s["logStreamName"]: [e["message"] for e in logs.get_log_events(
            logGroupName="jobman", logStreamName=s["logStreamName"], startFromHead=True)["events"]] for s in streams}


def run_instance(tmp_path, engine, aws_cli, moto: str, script: str, name: str) -> bytes:  # noqa: F811
    """The instance: the user-data with the real AWS CLI, docker CLI, engine and curl."""
    tools = StubTools(tmp_path / name, real_docker=engine.cli, real_tools=REAL)
    (tools.system / "aws").symlink_to(aws_cli)
    (tools.system / "python3").symlink_to(os.path.realpath(sys.executable))  # not a pyenv shim (needs bash)
    env = {**FAST, **engine.env(), **FAKE_KEYS, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "TMPDIR": str(tools.root),
           "AWS_ENDPOINT_URL": moto}  # the instance's AWS is moto (on EC2: AWS's endpoints)
    result = tools.run_script(script, env=env, timeout=240)
    assert tools.powered_off
    return result.stdout + result.stderr


@pytest.mark.parametrize("store", ["tinydb", "dynamodb"])
def test_secrets_reach_the_container_byte_exact_and_nowhere_else(tmp_path, moto_server, engine, image,  # noqa: F811
                                                                 aws_cli, store):
    seed(moto_server)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    db = str(tmp_path / "jobs.json") if store == "tinydb" else "dynamodb://jobman-secrets"
    env = aws_env(moto_server, JOBMAN_DB=db, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_API_TOKEN=API_TOKEN,
                  JOBMAN_NOTIFY_SECRET="notify-secret-for-secrets-test-0123456789",
                  JOBMAN_COST_RECEIPTS="off")  # no Price List in moto: notifications would wait 60 s for it
    hook = Receiver()  # a webhook: both jobs notify it when they end
    op = Operator(env, api, moto_server)
    if store == "dynamodb":
        op.jobman("store", "init")
    names = sorted(SECRETS)
    scheduled = op.jobman("schedule", "--image", image, "--at", "now", "--timeout", "2m", "-e", "PLAIN=visible",
                          *[f"--secret={n}={SECRETS[n]}" for n in names], "--notify", f"{hook.url}/good",
                          "--notify-on", "end", "--json", "--", *hashes_command(names))
    good = json.loads(scheduled.stdout)["id"]
    daemon = DaemonProcess(env, "--listen", f"127.0.0.1:{port}", "--public-url", api)
    try:
        daemon.wait_for(lambda line: " listening on " in line)
        bad = op.call("POST", "/jobs/schedule", {
            "docker-image": image, "date-time": "now", "timeout": 120, "notify": [f"{hook.url}/bad"],
            "secrets": {"DB_PASSWORD": "ssm:/prod/db/password", "GONE": "ssm:/prod/not-there"}})["id"]
        scripts = {job_id: op.user_data(op.instance_of(job_id)) for job_id in (good, bad)}
        consoles = [run_instance(tmp_path, engine, aws_cli, moto_server, scripts[job_id], f"instance-{job_id}")
                    for job_id in (good, bad)]

        def ended():
            jobs = {j["id"]: j for j in op.call("GET", "/jobs")["jobs"]}
            return jobs if all(jobs[i]["status"] in ("finished", "failed") for i in (good, bad)) else None
        jobs = poll(ended)
        assert jobs[good]["status"] == "finished" and jobs[good]["exit-code"] == 0, (jobs[good], consoles[0][-3000:])
        assert jobs[good]["secrets"] == SECRETS  # the references, shown
        assert jobs[bad]["status"] == "failed" and jobs[bad]["reason-code"] == "secret-unavailable", jobs[bad]
        assert jobs[bad]["reason"] == ("a secret could not be read on the instance: "
                                       "secret GONE: cannot read ssm:/prod/not-there (ParameterNotFound)")
        events = op.log_events()
        # The container got every value byte-exact: the hashes it printed are those of the expected bytes.
        printed = dict(re.findall(r"^H (\w+) ([0-9a-f]{64})", "\n".join(events[f"jobs/{good}/attempt-1"]), re.M))
        assert printed == {n: hashlib.sha256(EXPECTED[n].encode()).hexdigest() for n in names}
        # The failed job's container never ran: its stream has the script's lines only.
        assert not any(m.startswith("H ") or "running the container" in m for m in events[f"jobs/{bad}/attempt-1"])
        assert [n for n in engine.containers() if n.startswith((f"jobman-{good}-", f"jobman-{bad}-"))] == []
        # Nowhere else.
        listed, shown = op.jobman("list", "--json").stdout, op.jobman("status", str(good), "--json").stdout
        op.call("GET", f"/jobs/{good}/status")
        op.call("GET", f"/jobs/{bad}/status")
        assert json.loads(shown)["secrets"] == SECRETS
        notified = hook.wait_for(2, timeout=WAIT)
        assert sorted(r.path for r in notified) == ["/bad", "/good"]
        assert b"secret-unavailable" in next(r.body for r in notified if r.path == "/bad")
    finally:
        daemon.stop()
        hook.close()
    places = {"user-data": "\n".join(scripts.values()), "list --json": listed, "status --json": shown,
              "API answers": "\n".join(op.answers), "daemon log": daemon.text(),
              "consoles": b"\n".join(consoles).decode("utf-8", "replace"),
              "CloudWatch events": json.dumps(events, ensure_ascii=False), "store": stored(db, moto_server),
              "notification bodies": b"\n".join(r.body for r in notified).decode("utf-8", "replace")}
    assert {place: leaks(text) for place, text in places.items()} == {place: [] for place in places}
    assert "ssm:/prod/db/password" in places["store"] and "secretsmanager:app/creds#password" in places["store"]


def stored(db: str, moto: str) -> str:
    """Everything the store holds, as raw as it gets: the file's bytes, or every item of the table."""
    if not db.startswith("dynamodb://"):
        with open(db, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    import boto3

    client = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    items = [item for page in client.get_paginator("scan").paginate(TableName=db.removeprefix("dynamodb://"))
             for item in page["Items"]]
    return json.dumps(items, ensure_ascii=False, default=str)
