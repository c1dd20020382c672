"""A spot interruption with real processes only: a ``jobman daemon`` process (its REST listener on
127.0.0.1 takes the callbacks) against a ``moto_server`` process, and for each attempt the REAL
user-data the daemon launched (read back from moto) run with bash, stub tools and a stub IMDSv2
(tests/imdsstub.py) that starts serving ``spot/instance-action`` while the container runs.

Attempt 1 is interrupted -> reported ``interrupted``, container stopped -> the daemon relaunches it
at once as attempt 2 -> attempt 2 finishes.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

# free_port: below the ephemeral range, which the other worker's outgoing connections draw from
from moto_server import aws_env, ec2_client, free_port, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import daemons  # noqa: F401  (fixture)
from test_spot_userdata import run_spot_instance

from jobman_cli.model import JobStatus
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow


def user_data(moto: str, job_id: int, attempt: int) -> str:
    ec2 = ec2_client(moto)
    (reservation,) = ec2.describe_instances(Filters=[{"Name": "tag:jobman:job-id", "Values": [str(job_id)]},
                                                     {"Name": "tag:jobman:attempt", "Values": [str(attempt)]}])[
        "Reservations"]
    (instance,) = reservation["Instances"]
    raw = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    return base64.b64decode(raw["UserData"]["Value"]).decode()


def test_a_real_daemon_relaunches_an_interrupted_spot_job_and_the_second_attempt_finishes(
        moto_server, daemons, tmp_path):  # noqa: F811
    db = tmp_path / "jobs.json"
    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(db))
    port = free_port()
    daemon = daemons(env, "--listen", f"127.0.0.1:{port}", "--public-url", f"http://127.0.0.1:{port}")
    scheduled = subprocess.run([sys.executable, "-m", "jobman_cli", "schedule", "--image", "alpine:3.20", "--at",
                                "now", "--capacity", "spot", "--max-interruptions", "2", "-q"],
                               env=env, capture_output=True, text=True, timeout=60)
    assert scheduled.returncode == 0, scheduled.stderr
    job_id = int(scheduled.stdout)
    daemon.wait_for(lambda line: f"job {job_id} launching -> running" in line, timeout=60)

    first = run_spot_instance(user_data(moto_server, job_id, 1), tmp_path / "attempt-1", interrupt=True)
    assert any(c.args[:1] == ["stop"] for c in first.calls("docker")) and first.powered_off
    daemon.wait_for(lambda line: f"job {job_id} -> scheduled (reported: the spot instance was interrupted" in line,
                    timeout=30)
    daemon.wait_for(lambda line: f"job {job_id} launching -> running" in line, count=2, timeout=60)

    second = run_spot_instance(user_data(moto_server, job_id, 2), tmp_path / "attempt-2", interrupt=False)
    assert not any(c.args[:1] == ["stop"] for c in second.calls("docker"))
    daemon.wait_for(lambda line: f"job {job_id} -> finished" in line, timeout=30)

    store = TinyDBStore(db, create=False)
    try:
        job = store.get(job_id)
    finally:
        store.close()
    assert job.status is JobStatus.FINISHED and (job.attempts, job.interruptions) == (2, 1)
    assert job.placement["market"] == "spot"
    assert daemon.stop() == 0
