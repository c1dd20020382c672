"""Notifications end to end (issue 13): a real ``jobman daemon`` process, a real ``moto_server``,
real callbacks over HTTP, and a real webhook receiver on 127.0.0.1 (:mod:`notify_receiver`).

Jobs are made ``running`` through the store the way the daemon leaves them (claimed with a known
callback token, launched with an instance id), except in the first test, where the daemon launches
the job into moto itself and the callback token is read back from the instance's user-data. The
daemon's reconciler keeps a just-launched instance alive for 120 s, so it never interferes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from moto_server import aws_env, ec2_client, moto_server, moto_server_process  # noqa: F401  (fixtures)
from notify_receiver import Receiver
from test_e2e_daemon import DaemonProcess, poll

from jobman_cli.model import JobStatus, hash_callback_token
from jobman_cli.notify.message import verify
from jobman_cli.service import JobService, ScheduleRequest, launch_token_for
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow

SECRET = "notify-secret-for-tests-0123456789"
API_TOKEN = "api-token-for-notify-tests-0123456789abcdef"
UTC = timezone.utc


@pytest.fixture
def env(moto_server, tmp_path) -> dict[str, str]:  # noqa: F811
    return aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"),
                   JOBMAN_NOTIFY_SECRET=SECRET, JOBMAN_API_TOKEN=API_TOKEN,
                   # moto_server has no Price List API: a receipt would be retried (a 500) and the first
                   # notification held for it up to 60 s (tests/test_notify_receipt.py covers that wait)
                   JOBMAN_COST_RECEIPTS="off")


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def start_daemon(env: dict[str, str], *args: str) -> tuple[DaemonProcess, int]:
    daemon = DaemonProcess(env, *args)
    daemon.wait_for(lambda line: " ready;" in line, timeout=60)
    port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", daemon.text()).group(1))  # type: ignore[union-attr]
    return daemon, port


def jobman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobman_cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def running_job(db: Path, token: str, **request) -> int:
    """A job as the daemon leaves it after a launch: ``running``, with ``token`` as its callback token."""
    now = datetime.now(UTC)
    with TinyDBStore(db) as store:
        job, _ = JobService(store).schedule(ScheduleRequest(image="alpine:3.20", when="now", **request))
        store.update(job.id, lambda j: j.claimed(now, launch_token_for(store.store_id, j.id, 1),
                                                 hash_callback_token(token)).launched(f"i-{j.id:017x}", now))
        return job.id


def callback(port: int, job_id: int, token: str, body: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", f"/jobMan/v1.1/jobs/{job_id}/callback", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def stored(db: Path, job_id: int):
    with TinyDBStore(db, create=False) as store:
        return store.get(job_id)


def delivery(db: Path, job_id: int) -> dict:
    records = stored(db, job_id).deliveries
    return dict(records[0]) if records else {}


def test_a_failed_callback_sends_one_signed_post_within_a_second(env, receiver, moto_server, tmp_path):  # noqa: F811
    hook = receiver()
    daemon, port = start_daemon(env)
    scheduled = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "now", "--title", "nightly report",
                       "-e", "DB_PASSWORD=hunter2-env-value", "--secret", "TOKEN=ssm:/prod/token",
                       "--notify", f"{hook.url}/hooks/jobman", "-q")
    assert scheduled.returncode == 0, scheduled.stderr
    job_id = int(scheduled.stdout)
    db = tmp_path / "jobs.json"
    assert poll(lambda: stored(db, job_id).status is JobStatus.RUNNING, timeout=60), daemon.text()
    instance = stored(db, job_id).instance_id
    user_data = ec2_client(moto_server).describe_instance_attribute(InstanceId=instance, Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    token = re.search(r"^callback_token=(\S+)$", script, re.M).group(1)  # type: ignore[union-attr]

    assert callback(port, job_id, token, {"status": "failed", "exit-code": 3, "reason": "disk full"}) == 200
    answered = time.monotonic()
    first, = hook.wait_for(1, timeout=30)
    latency = first.at - answered
    print(f"\ncallback answered -> webhook received: {latency * 1000:.0f} ms")
    assert latency < 1.0  # the bound

    assert first.path == "/hooks/jobman"
    # Verified as a receiver would, with nothing but the secret and hashlib (not jobman's own code).
    expected = "sha256=" + hmac.new(SECRET.encode(), first.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(first.headers["X-Jobman-Signature"], expected)
    assert verify(first.body, first.headers["X-Jobman-Signature"], SECRET.encode())  # the README's snippet
    assert not verify(first.body + b" ", first.headers["X-Jobman-Signature"], SECRET.encode())
    body = json.loads(first.body)
    assert first.headers["X-Jobman-Event-Id"] == body["event-id"]
    assert first.headers["X-Jobman-Event"] == "job.failed"
    assert first.headers["Content-Type"] == "application/json"
    assert body["event"] == "job.failed"
    assert (body["id"], body["title"], body["status"], body["reason-code"], body["exit-code"]) == (
        job_id, "nightly report", "failed", "exited", 3)
    assert body["reason"] == "exit code 3: disk full"
    assert body["docker-image"] == "alpine:3.20" and body["instance-id"] == instance
    assert body["finished-at"] and body["created-at"] and body["launched-at"] and body["date-time"]
    assert body["log"]["command"] == f"jobman logs {job_id}"
    assert "env-variables" not in body and "secrets" not in body and "notify" not in body
    assert b"hunter2-env-value" not in first.body and b"DB_PASSWORD" not in first.body
    assert b"ssm:/prod/token" not in first.body

    assert poll(lambda: delivery(db, job_id).get("state") == "delivered", timeout=30)
    assert daemon.stop() == 0
    assert hook.count() == 1  # exactly one POST, also after the daemon finished everything

    shown = jobman(env, "status", str(job_id), "--json")
    record, = json.loads(shown.stdout)["notifications"]
    assert (record["state"], record["attempts"], record["event"]) == ("delivered", 1, "failed")
    assert record["history"][0]["outcome"] == "HTTP 200" and record["event-id"] == body["event-id"]
    text = jobman(env, "status", str(job_id)).stdout
    # shown as redacted: of the path only its first segment (many services keep their secret there)
    assert re.search(r"notification\s+delivered to http://127\.0\.0\.1:\d+/hooks/… \(failed; attempt 1: "
                     r"HTTP 200 at ", text), text
    assert f"job {job_id} notification (failed) to {hook.url}/hooks/…: attempt 1: HTTP 200 -> delivered" \
        in daemon.text()
    assert "/hooks/jobman" not in text and "/hooks/jobman" not in daemon.text() and "/hooks/jobman" not in shown.stdout


def test_notify_on_end_also_tells_finished_and_failure_does_not(env, receiver, tmp_path):
    hook = receiver()
    db = tmp_path / "jobs.json"
    on_end = running_job(db, "tok-end-0123456789", notify=[hook.url], notify_on="end")
    on_failure = running_job(db, "tok-fail-0123456789", notify=[hook.url])  # the default: failure
    daemon, port = start_daemon(env)
    assert callback(port, on_failure, "tok-fail-0123456789", {"status": "finished"}) == 200
    assert callback(port, on_end, "tok-end-0123456789", {"status": "finished"}) == 200
    got, = hook.wait_for(1)
    body = json.loads(got.body)
    assert (body["id"], body["event"], body["status"], body["reason-code"]) == (on_end, "job.finished",
                                                                                 "finished", "exited")
    assert poll(lambda: delivery(db, on_end).get("state") == "delivered")
    assert daemon.stop() == 0
    assert hook.count() == 1
    assert stored(db, on_failure).deliveries == ()


def test_500_three_times_then_200_survives_a_sigkill_between_attempts(env, receiver, tmp_path):
    hook = receiver(answers=[500, 500, 500], then=200)
    db = tmp_path / "jobs.json"
    env = {**env, "JOBMAN_NOTIFY_BACKOFF_BASE": "1.5"}  # attempts at +0, +1.5, +3, +6 s
    job_id = running_job(db, "tok-retry-0123456789", notify=[f"{hook.url}/retry"])
    daemon, port = start_daemon(env)
    assert callback(port, job_id, "tok-retry-0123456789", {"status": "failed", "exit-code": 1}) == 200
    # Kill once the second attempt's outcome is stored (the third is due 3 s later).
    assert poll(lambda: delivery(db, job_id).get("attempts") == 2 and delivery(db, job_id).get("state") == "pending")
    daemon.proc.send_signal(signal.SIGKILL)
    assert daemon.stop() == -signal.SIGKILL
    assert hook.count() == 2

    restarted, _ = start_daemon(env)
    assert poll(lambda: delivery(db, job_id).get("state") == "delivered", timeout=60), restarted.text()
    assert restarted.stop() == 0
    requests = hook.wait_for(4)
    assert len(requests) == 4  # delivered once, on the 4th attempt; nothing re-sent after the restart
    assert len({r.headers["X-Jobman-Event-Id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1  # the same body (and signature) every time
    record = delivery(db, job_id)
    assert record["attempts"] == 4
    assert [h["outcome"] for h in record["history"]] == ["HTTP 500", "HTTP 500", "HTTP 500", "HTTP 200"]
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:])]
    assert gaps[0] >= 1.4 and gaps[1] >= 2.9 and gaps[2] >= 5.9, gaps  # exponential backoff, across the restart


def test_a_4xx_is_final_and_a_408_is_retried(env, receiver, tmp_path):
    gone = receiver(then=404)
    busy = receiver(answers=[408], then=200)
    db = tmp_path / "jobs.json"
    env = {**env, "JOBMAN_NOTIFY_BACKOFF_BASE": "0.2"}
    job_id = running_job(db, "tok-4xx-0123456789", notify=[f"{gone.url}/gone", f"{busy.url}/busy"])
    daemon, port = start_daemon(env)
    assert callback(port, job_id, "tok-4xx-0123456789", {"status": "failed", "exit-code": 2}) == 200
    assert poll(lambda: [r.get("state") for r in stored(db, job_id).deliveries] == ["failed", "delivered"])
    time.sleep(1.0)  # five backoff periods: a retry of the 404 would have come by now
    assert daemon.stop() == 0
    assert gone.count() == 1 and busy.count() == 2
    final, done = stored(db, job_id).deliveries
    assert final["history"][-1]["outcome"].startswith("HTTP 404 (refused: not retried)")
    assert [h["outcome"] for h in done["history"]] == ["HTTP 408", "HTTP 200"]


def test_sns_target_reaches_a_subscribed_sqs_queue(env, receiver, moto_server, tmp_path):  # noqa: F811
    import boto3

    kwargs = dict(endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="testing",
                  aws_secret_access_key="testing")
    sns, sqs = boto3.client("sns", **kwargs), boto3.client("sqs", **kwargs)
    topic = sns.create_topic(Name="jobman-failures")["TopicArn"]
    queue = sqs.create_queue(QueueName="ops-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    db = tmp_path / "jobs.json"
    job_id = running_job(db, "tok-sns-0123456789", notify=[f"sns:{topic}"], env={"API_KEY": "sns-env-value"})
    daemon, port = start_daemon(env)
    assert callback(port, job_id, "tok-sns-0123456789", {"status": "failed", "exit-code": 9}) == 200
    assert poll(lambda: delivery(db, job_id).get("state") == "delivered", timeout=30), daemon.text()
    assert daemon.stop() == 0
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", [])
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    body = json.loads(envelope["Message"])
    assert (body["event"], body["id"], body["exit-code"]) == ("job.failed", job_id, 9)
    assert "sns-env-value" not in messages[0]["Body"]
    assert delivery(db, job_id)["history"][0]["outcome"].startswith("SNS message ")


def test_a_cancel_from_another_process_is_notified_with_notify_on_end(env, receiver, tmp_path):
    hook = receiver()
    db = tmp_path / "jobs.json"
    daemon, _ = start_daemon(env)
    scheduled = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "now", "--notify", hook.url,
                       "--notify-on", "end", "-q")
    job_id = int(scheduled.stdout)
    assert poll(lambda: stored(db, job_id).status is JobStatus.RUNNING, timeout=60), daemon.text()
    cancelled = jobman(env, "cancel", str(job_id))  # a separate process ends it; the daemon only sees the store
    assert cancelled.returncode == 0, cancelled.stderr
    got, = hook.wait_for(1)
    assert json.loads(got.body)["event"] == "job.cancelled"
    assert poll(lambda: delivery(db, job_id).get("state") == "delivered")
    assert daemon.stop() == 0
    assert hook.count() == 1


def test_daemon_once_delivers_what_is_due(env, receiver, tmp_path):
    hook = receiver()
    db = tmp_path / "jobs.json"
    job_id = running_job(db, "tok-once-0123456789", notify=[hook.url])
    with TinyDBStore(db) as store:  # ended while no daemon ran (as jobman callback would)
        store.update(job_id, lambda j: j.reported("failed", 5, datetime.now(UTC)))
    once = subprocess.run([sys.executable, "-m", "jobman_cli", "daemon", "--once", "--public-url",
                           "http://127.0.0.1:9"], env=env, capture_output=True, text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    assert hook.count() == 1 and json.loads(hook.requests[0].body)["exit-code"] == 5
    assert delivery(db, job_id)["state"] == "delivered"
