"""(F15, F4) A real ``jobman daemon`` process on ``moto_server``, used over ``--server`` as the review did.

A job launched, then the instance's ``running`` callback twice (the daemon had already marked it
running) and ``jobman --server URL cancel`` three times (the repeats are idempotent no-ops): the
daemon's stderr has exactly one line per state change of the job (DESIGN.md section 5), the cancel
worded "cancelled via the API", nothing "(reported)" but what an instance reported. A key in the
schedules' namespace is refused remotely exactly as locally (exit 2, one line), nothing sent.

No sleeps: each step waits for the line or the answer it needs; the log is read whole after the
daemon exited (its reader reaches EOF), so a line written late cannot be missed.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from moto_server import aws_env, free_port, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import daemons, jobman  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

TOKEN = "semantics-test-api-token-0123456789abcdef"
TRANSITION = re.compile(r"job (\d+) (?:(\w+) )?-> (\w+)")


def remote_env(env: dict[str, str], url: str) -> dict[str, str]:
    """A CLI environment that can only use the API: no AWS credentials, a store that does not exist."""
    out = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    out.update(JOBMAN_SERVER=url, JOBMAN_DB=env["JOBMAN_DB"] + ".absent", JOBMAN_API_TOKEN=TOKEN)
    return out


def put_callback(port: int, job_id: int, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/jobMan/v1.1/jobs/{job_id}/callback", method="PUT",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def test_no_ops_over_the_api_log_nothing_and_a_cancel_says_who(moto_server, daemons, tmp_path):  # noqa: F811
    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"),
                  JOBMAN_API_TOKEN=TOKEN)
    port = free_port()
    daemon = daemons(env, "--listen", f"127.0.0.1:{port}", "--public-url", f"http://127.0.0.1:{port}")
    daemon.wait_for(lambda line: " ready;" in line)
    remote = remote_env(env, f"http://127.0.0.1:{port}")

    scheduled = jobman(remote, "schedule", "--image", "alpine:3.20", "--at", "now", "-q")
    assert scheduled.returncode == 0, scheduled.stderr
    job_id = int(scheduled.stdout)
    daemon.wait_for(lambda line: f"job {job_id} launching -> running" in line)
    for _ in range(2):  # the instance's first report, then its retried curl
        assert put_callback(port, job_id, {"status": "running"})["status"] == "running"
    for _ in range(3):
        cancelled = jobman(remote, "cancel", str(job_id))
        assert (cancelled.returncode, cancelled.stderr) == (0, ""), cancelled
        assert cancelled.stdout.startswith(f"Job {job_id} is cancelled"), cancelled.stdout

    key = "schedule-10-2026-12-03T19:51:00Z"
    refused = jobman(remote, "schedule", "--image", "busybox", "--at", "+1h", "--idempotency-key", key)
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr == (f"Error: --idempotency-key: {key!r} is reserved: keys that begin 'schedule-<number>-' "
                              "name the runs of recurring schedules\n")
    listed = jobman(remote, "list", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]  # nothing else stored

    assert daemon.stop() == 0
    text = daemon.text()
    transitions = [f"{m.group(2) or ''}->{m.group(3)}" for line in text.splitlines()
                   for m in TRANSITION.finditer(line) if int(m.group(1)) == job_id]
    assert transitions == ["scheduled->launching", "launching->running", "->cancelled"], text
    lines = [line for line in text.splitlines() if f"job {job_id} " in line]
    assert [line.split(" ", 1)[1] for line in lines if "cancelled" in line] == [
        f"job {job_id} -> cancelled (cancelled via the API)"], text
    assert not any("reported" in line for line in lines), text


def test_a_max_cost_moto_cannot_price_is_unchecked_and_waits_for_the_start_deadline(moto_server, daemons,  # noqa: F811
                                                                                      tmp_path):
    """(F10a) moto has no Price List (its answer is a 5xx: transient). The review saw the job fail
    "launch error after 5 attempts: MaxCostExceeded: cannot check ..." with no RunInstances sent.
    Now each pass gives the claim back without counting it against max_attempts (2 here), until the
    job's start deadline; then missed-start-deadline naming the check. Never an instance."""
    from test_e2e_daemon import instances_by_job, poll

    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"),
                  JOBMAN_COST_RECEIPTS="off", JOBMAN_BACKOFF_BASE="1", JOBMAN_MAX_ATTEMPTS="2")
    daemon = daemons(env)
    daemon.wait_for(lambda line: " ready;" in line)
    scheduled = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "now", "--instance-type", "t3.micro",
                       "--max-cost", "5", "--start-deadline", "30s", "-q")
    assert scheduled.returncode == 0, scheduled.stderr
    job_id = int(scheduled.stdout)

    def status() -> dict:
        done = jobman(env, "status", str(job_id), "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # Failed by the launch path (launching -> failed) or by the claim (scheduled -> failed), as the deadline falls.
    daemon.wait_for(lambda line: f"job {job_id} " in line and "-> failed" in line, timeout=180)
    assert poll(lambda: status()["status"] == "failed", timeout=60)
    ended = status()
    assert ended["reason-code"] == "missed-start-deadline", ended
    assert "MaxCostUnchecked: cannot check --max-cost $5.00: " in ended["reason"], ended
    assert "MaxCostExceeded" not in daemon.text() and "launch error after" not in ended["reason"], daemon.text()
    assert ended["attempts"] > 2, ended  # more passes than max_attempts: none was a failed launch
    assert daemon.stop() == 0
    assert instances_by_job(moto_server, _store_id(tmp_path)) == {}  # no RunInstances, ever


def _store_id(tmp_path) -> str:
    from jobman_cli.stores.tinydb import TinyDBStore

    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        return store.store_id
    finally:
        store.close()
