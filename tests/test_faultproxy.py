"""The fault proxy itself (tests/faultproxy.py) does what its rules say, seen by real botocore clients.

Other tests trust its counters to prove "exactly once"; these tests make sure the faults it claims
to inject are the faults botocore actually sees (a lost answer is resent by botocore, a throttling
error is parsed as that AWS error code, a token bucket refuses a burst).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultproxy import FaultProxy, fault_proxy  # noqa: F401  (fixture)
from moto_server import moto_server, moto_server_process  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

def TAGS(job_id: int) -> list[dict]:  # noqa: N802 - reads like the constant it stands for
    return [{"ResourceType": "instance", "Tags": [{"Key": "jobman:job-id", "Value": str(job_id)}]}]


def _client(service: str, url: str, attempts: int = 3):
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=10))


def _image(url: str) -> str:
    return _client("ec2", url).describe_images()["Images"][0]["ImageId"]


def _instances(url: str) -> int:
    reservations = _client("ec2", url).describe_instances()["Reservations"]
    return sum(len(r["Instances"]) for r in reservations)


def test_first_runinstances_answer_per_job_is_dropped_and_botocore_resends(fault_proxy: FaultProxy,
                                                                            moto_server: str) -> None:
    fault_proxy.set_rules([{"action": "RunInstances", "fault": "drop_response", "per": "job_id"}])
    ec2, image = _client("ec2", fault_proxy.url), _image(moto_server)
    for job_id in (1, 2):
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=TAGS(job_id))
    stats = fault_proxy.action("RunInstances")
    assert (stats["requests"], stats["forwarded"], stats["dropped"]) == (4, 4, 2)
    assert _instances(moto_server) == 4  # each dropped call reached moto (which ignores ClientToken)
    outcomes = [(c["key"], c["outcome"]) for c in fault_proxy.calls() if c["action"] == "RunInstances"]
    assert outcomes == [("1", "dropped_response"), ("1", "forwarded"), ("2", "dropped_response"), ("2", "forwarded")]


def test_reset_drop_gives_up_after_botocore_attempts(fault_proxy: FaultProxy, moto_server: str) -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    fault_proxy.set_rules([{"action": "RunInstances", "fault": "drop_response", "reset": True}])
    with pytest.raises((ConnectionClosedError, EndpointConnectionError, Exception)) as info:
        _client("ec2", fault_proxy.url, attempts=2).run_instances(ImageId=_image(moto_server), MinCount=1,
                                                                  MaxCount=1, TagSpecifications=TAGS(7))
    assert "ClientError" not in type(info.value).__name__
    # total_max_attempts=2: two sends, each applied by moto. (Config's plain "max_attempts" counts
    # *retries*: max_attempts=2 would be three sends.)
    assert fault_proxy.action("RunInstances")["dropped"] == 2
    assert _instances(moto_server) == 2


def test_error_rule_answers_without_forwarding_in_each_protocol(fault_proxy: FaultProxy, moto_server: str) -> None:
    from botocore.exceptions import ClientError

    fault_proxy.set_rules([{"action": "RunInstances", "fault": "error", "first": 1},
                           {"action": "ListTables", "fault": "error", "status": 400, "code": "ThrottlingException",
                            "first": 1}])
    with pytest.raises(ClientError) as info:
        _client("ec2", fault_proxy.url, attempts=1).run_instances(ImageId=_image(moto_server), MinCount=1,
                                                                  MaxCount=1)
    assert info.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    with pytest.raises(ClientError) as info:
        _client("dynamodb", fault_proxy.url, attempts=1).list_tables()
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert _instances(moto_server) == 0
    _client("dynamodb", fault_proxy.url, attempts=1).list_tables()  # "first": 1 -> the second goes through
    assert fault_proxy.stats()["errored"] == 2


def test_token_bucket_refuses_a_burst_and_refills(fault_proxy: FaultProxy, moto_server: str) -> None:
    from botocore.exceptions import ClientError

    fault_proxy.set_rules([{"action": "RunInstances", "fault": "token_bucket", "capacity": 3, "refill": 0.2}])
    ec2, image = _client("ec2", fault_proxy.url, attempts=1), _image(moto_server)
    ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    with pytest.raises(ClientError) as info:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    assert info.value.response["Error"]["Code"] == "RequestLimitExceeded"
    # refill 0.2/s: the burst above is refused unless it took over 5 s (whatever the machine's
    # speed), and 5.5 s later one token is back
    time.sleep(5.5)
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    stats = fault_proxy.action("RunInstances")
    assert (stats["forwarded"], stats["throttled"]) == (3, 1)
    assert _instances(moto_server) == 4


def test_dynamodb_item_key_rule_drops_the_first_write_per_item(fault_proxy: FaultProxy, moto_server: str) -> None:
    direct = _client("dynamodb", moto_server)
    direct.create_table(TableName="fp", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    fault_proxy.set_rules([{"action": "PutItem", "fault": "drop_response", "per": "item_key"},
                           {"action": "GetItem", "fault": "delay", "seconds": 0.3}])
    ddb = _client("dynamodb", fault_proxy.url)
    for pk, n in (("a", "1"), ("b", "1"), ("a", "2")):
        ddb.put_item(TableName="fp", Item={"pk": {"S": pk}, "n": {"N": n}})
    started = time.monotonic()
    assert ddb.get_item(TableName="fp", Key={"pk": {"S": "a"}})["Item"]["n"]["N"] == "2"
    assert time.monotonic() - started >= 0.3
    stats = fault_proxy.stats()
    assert stats["by_action"]["PutItem"]["dropped"] == 2  # a's first and b's first, not a's second write
    assert stats["by_action"]["PutItem"]["forwarded"] == 5
    assert stats["by_action"]["GetItem"]["delayed"] == 1


def test_command_line_prints_its_port_and_reads_a_rules_file(moto_server: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('[{"action": "*", "fault": "error", "status": 500}]')
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("faultproxy.py")), "--upstream",
                             moto_server, "--port", "0", "--rules", str(rules), "--log", str(tmp_path / "log")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"Action=X"), timeout=5)
        assert info.value.code == 500
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/__faultproxy/stats", timeout=5) as answer:
            assert b'"errored": 1' in answer.read()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "errored" in (tmp_path / "log").read_text()


def test_bad_rules_are_refused_at_run_time(fault_proxy: FaultProxy) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        fault_proxy.set_rules([{"action": "PutItem", "fault": "explode"}])
    assert info.value.code == 400


def test_client_token_rule_gives_moto_ec2s_idempotency(fault_proxy: FaultProxy, moto_server: str) -> None:
    """moto ignores ``ClientToken``; behind a ``client_token`` rule a resend after a lost answer,
    or a retry with the same token, gets the first answer (one instance), and the same token with
    other parameters is ``IdempotentParameterMismatch``."""
    from botocore.exceptions import ClientError

    fault_proxy.set_rules([{"action": "RunInstances", "fault": "client_token"},
                           {"action": "RunInstances", "fault": "drop_response", "per": "job_id"}])
    ec2, image = _client("ec2", fault_proxy.url), _image(moto_server)
    first = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, ClientToken="job-1-attempt-1",
                              TagSpecifications=TAGS(1))  # answer lost, botocore resends: replayed
    again = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, ClientToken="job-1-attempt-1",
                              TagSpecifications=TAGS(1))  # the caller's own retry: replayed
    assert first["Instances"][0]["InstanceId"] == again["Instances"][0]["InstanceId"]
    assert _instances(moto_server) == 1
    with pytest.raises(ClientError) as info:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, ClientToken="job-1-attempt-1",
                          TagSpecifications=TAGS(1), UserData="different")
    assert info.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    stats = fault_proxy.action("RunInstances")
    assert (stats["forwarded"], stats["dropped"], stats["replayed"], stats["mismatched"]) == (1, 1, 2, 1)
    assert _instances(moto_server) == 1
