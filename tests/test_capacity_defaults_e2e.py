"""Issue 15 in a real ``jobman daemon`` process against ``moto_server`` (EC2), some through the
fault-injecting proxy (tests/faultproxy.py) that answers chosen ``RunInstances`` rungs the way EC2
refuses them:

* the daemon reads ``[ec2] capacity`` at start: a job posted to its API without ``capacity`` is
  stored as spot and launched as a spot instance; a bad value stops the daemon at start with one
  line naming the key;
* ``InsufficientFreeAddressesInSubnet`` on subnet 1 and no capacity for type A in subnet 2: the
  next rung sent is type B in subnet 2 (type B in subnet 1 is skipped), in the same pass;
* ``VcpuLimitExceeded`` on spot with ``spot-then-on-demand``: the other spot type is skipped, the
  first type runs on-demand.
"""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any

import pytest

from faultproxy import fault_proxy  # noqa: F401  (fixture)
from moto_server import aws_env, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_capacity_e2e import default_subnets, read, run_instances, schedule
from test_e2e_daemon import daemons, instances_by_job  # noqa: F401  (fixture)

from jobman_cli.model import JobStatus

pytestmark = pytest.mark.slow

TOKEN = "capacity-defaults-token-" + "0123456789abcdef" * 2


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/jobMan/v1.1" + path, body=json.dumps(body),
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def home_with(tmp_path: Path, config: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(config)
    return home


def test_a_job_posted_without_capacity_runs_on_spot_when_the_daemon_s_config_says_spot(
        moto_server, daemons, tmp_path):  # noqa: F811
    home = home_with(tmp_path, '[ec2]\ncapacity = "spot"\nmax_interruptions = 5\n')
    db = tmp_path / "jobs.json"
    daemon = daemons(aws_env(moto_server, JOBMAN_HOME=str(home), JOBMAN_DB=str(db), JOBMAN_API_TOKEN=TOKEN))
    daemon.wait_for(lambda line: "ready" in line)
    port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", daemon.text()).group(1))

    status, job = post(port, "/jobs/schedule", {"docker-image": "alpine:3.20", "date-time": "now"})
    assert status == 201, job
    assert (job["capacity"], job["max-interruptions"]) == ("spot", 5)  # stored: shown before it launches
    daemon.wait_for(lambda line: f"job {job['id']} launching -> running" in line, timeout=60)

    stored, store_id = read(db, job["id"])
    assert stored.status is JobStatus.RUNNING and stored.placement["market"] == "spot"
    (instance,) = instances_by_job(moto_server, store_id)[job["id"]]
    assert instance["InstanceLifecycle"] == "spot"
    status, explicit = post(port, "/jobs/schedule", {"docker-image": "alpine:3.20", "date-time": "+1h",
                                                     "capacity": "on-demand"})
    assert status == 201 and explicit["capacity"] == "on-demand"  # the job's own value wins
    assert daemon.stop() == 0


def test_a_bad_default_stops_the_daemon_at_start_with_one_line(moto_server, daemons, tmp_path):  # noqa: F811
    home = home_with(tmp_path, '[ec2]\ncapacity = "cheap"\n')
    daemon = daemons(aws_env(moto_server, JOBMAN_HOME=str(home), JOBMAN_DB=str(tmp_path / "jobs.json"),
                             JOBMAN_API_TOKEN=TOKEN))
    assert daemon.proc.wait(timeout=60) == 1
    daemon.stop()
    errors = [line for line in daemon.text().splitlines() if line.startswith("Error:")]
    assert errors == ["Error: config file [ec2] capacity: must be one of on-demand, spot, spot-then-on-demand "
                      "(got 'cheap')"], daemon.text()
    assert "Traceback" not in daemon.text()


def refusal(code: str, status: int, **params: str) -> dict:
    return {"action": "RunInstances", "fault": "error", "status": status, "code": code,
            "message": f"{code} (from the fault proxy)", "params": params}


def test_a_subnet_without_addresses_is_skipped_for_every_type(fault_proxy, moto_server, daemons,
                                                              tmp_path):  # noqa: F811
    zones = default_subnets(moto_server)
    one, two = zones["us-east-1a"], zones["us-east-1b"]
    db = tmp_path / "jobs.json"
    job_id = schedule(db, instance_type="m5.large,m4.large", subnet_ids=[one, two])
    fault_proxy.set_rules([refusal("InsufficientFreeAddressesInSubnet", 400, SubnetId=one),
                           refusal("InsufficientInstanceCapacity", 500, InstanceType="m5.large", SubnetId=two)])
    daemon = daemons(aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(db)))
    daemon.wait_for(lambda line: "launching -> running" in line, timeout=60)

    job, store_id = read(db, job_id)
    assert job.status is JobStatus.RUNNING and job.attempts == 1
    assert (job.placement["instance-type"], job.placement["subnet-id"]) == ("m4.large", two)
    (instance,) = instances_by_job(moto_server, store_id)[job_id]
    assert (instance["InstanceType"], instance["SubnetId"]) == ("m4.large", two)
    # Three sends: m5.large in 1 and 2 refused, m4.large in 2 forwarded; m4.large in 1 never sent.
    assert [c["outcome"] for c in run_instances(fault_proxy)] == ["errored", "errored", "forwarded"]
    assert f"skipping 1 rung (no free address in {one})" in daemon.text()
    assert daemon.stop() == 0


def test_a_spot_quota_skips_the_other_spot_type_and_runs_on_demand(fault_proxy, moto_server, daemons,
                                                                  tmp_path):  # noqa: F811
    db = tmp_path / "jobs.json"
    job_id = schedule(db, instance_type="c5.large,c4.large", capacity="spot-then-on-demand")
    fault_proxy.set_rules([refusal("VcpuLimitExceeded", 400, **{"InstanceMarketOptions.MarketType": "spot"})])
    daemon = daemons(aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(db)))
    daemon.wait_for(lambda line: "launching -> running" in line, timeout=60)

    job, store_id = read(db, job_id)
    assert job.placement["market"] == "on-demand" and job.placement["instance-type"] == "c5.large"
    (instance,) = instances_by_job(moto_server, store_id)[job_id]
    assert instance.get("InstanceLifecycle") is None and instance["InstanceType"] == "c5.large"
    assert [c["outcome"] for c in run_instances(fault_proxy)] == ["errored", "forwarded"]
    assert "skipping 1 rung (an account quota of the spot market)" in daemon.text()
    assert daemon.stop() == 0
