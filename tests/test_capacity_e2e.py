"""The launch ladder in a real ``jobman daemon`` process, launching through the fault-injecting proxy
(tests/faultproxy.py, a separate process) in front of ``moto_server``. The proxy refuses chosen
rungs the way EC2 does (``InsufficientInstanceCapacity``, HTTP 500, without reaching moto) by
matching ``RunInstances`` query parameters (instance type, subnet, market); instances are counted in
moto directly.

* type A in zone 1 refused -> the job runs on the next rung (type A in zone 2), in the same pass:
  one attempt, no retry, two RunInstances;
* every rung refused -> retried (beyond ``max_attempts``) until the start deadline, then
  ``missed-start-deadline`` with the last AWS error in its reason; no instance;
* spot refused with ``spot-then-on-demand`` -> on-demand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faultproxy import FaultProxy, fault_proxy  # noqa: F401  (fixture)
from moto_server import aws_env, ec2_client, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import daemons, instances_by_job  # noqa: F401  (fixture)

from jobman_cli.model import JobStatus, ReasonCode
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow

MESSAGE = "We currently do not have sufficient capacity in the Availability Zone you requested."


def refuse(**params: str) -> dict:
    """A proxy rule: RunInstances with these parameters answered as EC2 answers a capacity shortage."""
    return {"action": "RunInstances", "fault": "error", "status": 500, "code": "InsufficientInstanceCapacity",
            "message": MESSAGE, "params": params}


def default_subnets(moto: str) -> dict[str, str]:
    subnets = ec2_client(moto).describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}


def schedule(path: Path, **fields) -> int:
    store = TinyDBStore(path)
    try:
        return JobService(store).schedule(ScheduleRequest(image="alpine:3.20", when="now", **fields))[0].id
    finally:
        store.close()


def read(path: Path, job_id: int):
    store = TinyDBStore(path, create=False)
    try:
        return store.get(job_id), store.store_id
    finally:
        store.close()


def run_instances(proxy: FaultProxy) -> list[dict]:
    return [c for c in proxy.calls() if c["action"] == "RunInstances"]


def test_type_a_refused_in_zone_1_runs_on_the_next_rung_in_one_pass(fault_proxy, moto_server, daemons,
                                                                     tmp_path):  # noqa: F811
    zones = default_subnets(moto_server)
    one, two = zones["us-east-1a"], zones["us-east-1b"]
    db = tmp_path / "jobs.json"
    job_id = schedule(db, instance_type="m5.large,m4.large", subnet_ids=[one, two])
    fault_proxy.set_rules([refuse(InstanceType="m5.large", SubnetId=one)])
    env = aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(db))
    daemon = daemons(env)
    daemon.wait_for(lambda line: "launching -> running" in line, timeout=60)

    job, store_id = read(db, job_id)
    assert job.status is JobStatus.RUNNING and job.attempts == 1
    assert job.placement == {"instance-type": "m5.large", "availability-zone": "us-east-1b", "subnet-id": two,
                             "market": "on-demand"}
    (instance,) = instances_by_job(moto_server, store_id)[job_id]
    assert (instance["InstanceType"], instance["SubnetId"], instance["InstanceId"]) == ("m5.large", two,
                                                                                        job.instance_id)
    calls = run_instances(fault_proxy)
    assert [c["outcome"] for c in calls] == ["errored", "forwarded"]  # one refusal, then the next rung
    text = daemon.text()
    assert "-> scheduled" not in text and "retry in" not in text  # the same pass, the same attempt
    assert "InsufficientInstanceCapacity" in text
    assert daemon.stop() == 0


def test_every_rung_refused_keeps_trying_until_the_start_deadline_then_missed(fault_proxy, moto_server, daemons,
                                                                              tmp_path):  # noqa: F811
    zones = default_subnets(moto_server)
    db = tmp_path / "jobs.json"
    fault_proxy.set_rules([refuse()])  # every RunInstances
    env = aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(db),
                  JOBMAN_BACKOFF_BASE="1", JOBMAN_MAX_ATTEMPTS="2")
    daemon = daemons(env)
    # The job is stored once the daemon is ready: the 12 s start deadline runs from its due time,
    # and a slow daemon start-up (a loaded CI box) must not eat the retries it is about.
    daemon.wait_for(lambda line: " ready;" in line, timeout=60)
    job_id = schedule(db, instance_type="m5.large,m4.large", subnet_ids=[zones["us-east-1a"], zones["us-east-1b"]],
                      start_deadline="12s")
    daemon.wait_for(lambda line: f"job {job_id}" in line and "-> failed" in line, timeout=90)

    job, store_id = read(db, job_id)
    assert job.status is JobStatus.FAILED and job.reason_code is ReasonCode.MISSED_START_DEADLINE
    assert "InsufficientInstanceCapacity" in job.reason and MESSAGE in job.reason, job.reason
    assert job.attempts > 2  # capacity is retried past max_attempts (2), up to the deadline
    assert instances_by_job(moto_server, store_id).get(job_id, []) == []
    calls = run_instances(fault_proxy)
    assert len(calls) == 4 * job.attempts and {c["outcome"] for c in calls} == {"errored"}  # 4 rungs each
    print(f"\nevery rung refused: {job.attempts} attempts of 4 rungs before the 12 s start deadline")
    assert daemon.stop() == 0


def test_spot_refused_with_spot_then_on_demand_runs_on_demand(fault_proxy, moto_server, daemons,
                                                              tmp_path):  # noqa: F811
    db = tmp_path / "jobs.json"
    job_id = schedule(db, capacity="spot-then-on-demand")
    fault_proxy.set_rules([refuse(**{"InstanceMarketOptions.MarketType": "spot"})])
    env = aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(db))
    daemon = daemons(env)
    daemon.wait_for(lambda line: "launching -> running" in line, timeout=60)

    job, store_id = read(db, job_id)
    assert job.status is JobStatus.RUNNING and job.attempts == 1 and job.placement["market"] == "on-demand"
    (instance,) = instances_by_job(moto_server, store_id)[job_id]
    assert instance.get("InstanceLifecycle") is None  # not spot
    assert [c["outcome"] for c in run_instances(fault_proxy)] == ["errored", "forwarded"]
    assert daemon.stop() == 0
