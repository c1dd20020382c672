"""End to end through the real programs: ``jobman schedule``, ``jobman daemon --once``, ``jobman
callback``, ``status`` and ``cost`` against a real ``moto_server`` process (EC2: the launch time,
type, zone and AMI are real answers) and, since moto has no Price List API, a stand-in for it on
127.0.0.1 (``tests/pricing_stub.py``, reached through ``AWS_ENDPOINT_URL_PRICING``)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from moto_server import aws_env, ec2_client, moto_server, moto_server_process  # noqa: F401  (fixtures)
from pricing_stub import PricingStub

pytestmark = pytest.mark.slow


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobman_cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def ended_job(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Schedule, one pass (launch), the instance's report, one pass (the receipt): that pass's result."""
    assert run(env, "schedule", "--image", "alpine:3.20", "--at", "now", "-q").stdout.strip() == "1"
    once = run(env, "daemon", "--once", "--public-url", "http://127.0.0.1:9")
    assert once.returncode == 0 and "1 launched" in once.stderr, once.stderr
    assert "cost" not in run(env, "status", "1").stdout  # running: nothing to say yet
    assert run(env, "callback", "1", "--status", "finished").returncode == 0
    assert "pending (the daemon works it out after the end)" in run(env, "status", "1").stdout
    again = run(env, "daemon", "--once", "--public-url", "http://127.0.0.1:9")
    assert again.returncode == 0, again.stderr
    return again


def test_the_receipt_of_a_job_through_the_real_programs(moto_server, tmp_path):  # noqa: F811
    with PricingStub({"t3.micro": "0.0104000000"}, {"standard": "0.0500000000"}) as pricing:
        env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"),
                      AWS_ENDPOINT_URL_PRICING=pricing.url)
        again = ended_job(env)
    shown = json.loads(run(env, "status", "1", "--json").stdout)
    instance = ec2_client(moto_server).describe_instances(InstanceIds=[shown["instance-id"]])
    launch_time = instance["Reservations"][0]["Instances"][0]["LaunchTime"]
    seconds = (datetime.fromisoformat(shown["finished-at"].replace("Z", "+00:00")) - launch_time).total_seconds()
    billed = max(60.0, seconds)  # the job ran a few seconds: billed a minute
    # t3.micro $0.0104/h and moto's AL2023 AMI root volume, 15 GiB 'standard' at $0.05/GB-month
    assert shown["cost"] == pytest.approx(billed * 0.0104 / 3600 + 15 * 0.05 * billed / (730 * 3600), abs=1e-12)
    assert shown["cost-basis"].startswith("on-demand t3.micro us-east-1 $0.0104/h (Price List, fetched ")
    assert " + 15 GiB standard $0.05/GB-month (" in shown["cost-basis"]
    assert shown["cost-basis"].endswith(" s billed as 60 s from EC2 launch time")
    assert "job 1 cost $0.0002 (on-demand t3.micro" in again.stderr
    assert [r["target"] for r in pricing.requests] == ["AWSPriceListService.GetProducts"] * 2
    totals = json.loads(run(env, "cost", "--json").stdout)
    assert (totals["jobs"], totals["priced"], totals["cost"]) == (1, 1, shown["cost"])
    cache = json.loads((tmp_path / "home" / "prices.json").read_text())["prices"]
    assert sorted(cache) == ["ebs/us-east-1/standard", "on-demand/us-east-1/t3.micro"]


def test_a_price_that_cannot_be_fetched_is_unknown_with_why(moto_server, tmp_path):  # noqa: F811
    with PricingStub({}, {}, deny=True) as pricing:
        env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"),
                      AWS_ENDPOINT_URL_PRICING=pricing.url)
        again = ended_job(env)
    shown = json.loads(run(env, "status", "1", "--json").stdout)
    assert shown["cost"] is None
    assert shown["cost-basis"] == ("unknown: Price List price of on-demand t3.micro in us-east-1: "
                                   "AccessDeniedException: User is not authorized to perform: pricing:GetProducts")
    assert f"job 1 cost unknown ({shown['cost-basis']})" in again.stderr
    line = next(li for li in run(env, "status", "1").stdout.splitlines() if li.startswith("cost"))
    assert line.split(None, 1)[1] == shown["cost-basis"]
    totals = json.loads(run(env, "cost", "--json").stdout)
    assert (totals["jobs"], totals["priced"], totals["cost"], totals["unpriced"]) == (
        1, 0, 0.0, {"count": 1, "ids": [1]})
    assert not (tmp_path / "home" / "prices.json").exists()  # nothing cached from a failure
