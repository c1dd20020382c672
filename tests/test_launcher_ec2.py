"""The EC2 launcher against moto's in-process AWS double (plus loopback sockets for failures).

moto is imported before any boto3 client exists, or later clients would not be mocked.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import moto  # noqa: F401  (must precede boto3 client creation)

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from jobman_cli.errors import ConfigError, LaunchError
from jobman_cli.launchers.base import (DEFAULT_AMI_PARAMETER, EC2Settings, InstanceInfo, Launcher,
                                       LaunchOutcomeUnknown, LaunchThrottled, LaunchTokenInUse)
from jobman_cli.launchers.ec2 import NO_CREDENTIALS, NO_REGION, EC2Launcher, decode_console_output
from jobman_cli.model import Job, JobStatus

UTC = timezone.utc
STORE = "store-aaaa"


def make_job(job_id: int = 7, attempts: int = 1, token: str | None = "tok", **kw) -> Job:
    return Job(id=job_id, title="t", date_time=datetime(2030, 1, 1, tzinfo=UTC), docker_image="alpine:3",
               env_variables={}, status=JobStatus.LAUNCHING, created_at=datetime(2029, 1, 1, tzinfo=UTC),
               attempts=attempts,
               launch_token=None if token is None else f"{token}-{job_id}-{attempts}", **kw)


@pytest.fixture
def bare_env(isolated_aws):
    return isolated_aws


@pytest.fixture
def aws(mock_ec2):
    return mock_ec2


@pytest.fixture
def launcher(aws):
    return EC2Launcher(EC2Settings())


def instance(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def tags_of(inst):
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


# ---------------------------------------------------------------------------------------- launch
def test_launch_creates_one_tagged_self_terminating_instance(aws, launcher):
    user_data = "#!/bin/bash\necho 'héllo $HOME `x`; \"q\"'\n"
    instance_id = launcher.launch(make_job(job_id=7, attempts=2), user_data=user_data, store_id=STORE)

    reservations = aws.describe_instances()["Reservations"]
    assert [i["InstanceId"] for r in reservations for i in r["Instances"]] == [instance_id]
    inst = instance(aws, instance_id)
    assert tags_of(inst) == {"jobman:job-id": "7", "jobman:attempt": "2", "jobman:store": STORE,
                             "Name": "jobman-7"}
    assert inst["InstanceType"] == "t3.micro"
    ami = boto3.client("ssm").get_parameter(Name=DEFAULT_AMI_PARAMETER)["Parameter"]["Value"]
    assert inst["ImageId"] == ami
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    behaviour = aws.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    encoded = aws.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(encoded).decode("utf-8") == user_data
    volumes = aws.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["Volumes"]
    assert volumes and all(tags_of(v)["jobman:job-id"] == "7" for v in volumes)


def test_launch_uses_the_jobs_instance_type(aws, launcher):
    instance_id = launcher.launch(make_job(instance_type="m5.large"), user_data="x", store_id=STORE)
    assert instance(aws, instance_id)["InstanceType"] == "m5.large"


def test_disk_gb_sizes_the_root_volume_of_the_amis_root_device(aws, launcher):
    sized = launcher.launch(make_job(job_id=8, disk_gb=42), user_data="#!/bin/bash\n", store_id=STORE)
    plain = launcher.launch(make_job(job_id=9), user_data="#!/bin/bash\n", store_id=STORE)
    inst = instance(aws, sized)
    ami = aws.describe_images(ImageIds=[inst["ImageId"]])["Images"][0]
    (mapping,) = [m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == ami["RootDeviceName"]]
    volume = aws.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["Size"] == 42
    plain_volumes = [m["Ebs"]["VolumeId"] for m in instance(aws, plain)["BlockDeviceMappings"]]
    assert 42 not in [v["Size"] for v in aws.describe_volumes(VolumeIds=plain_volumes)["Volumes"]]


@pytest.mark.parametrize("by_arn", [False, True])
def test_launch_passes_optional_settings_through(aws, by_arn):
    vpc = aws.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = aws.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    group = aws.create_security_group(GroupName="jm", Description="jm", VpcId=vpc)["GroupId"]
    aws.create_key_pair(KeyName="ops")
    profile = boto3.client("iam").create_instance_profile(InstanceProfileName="jobman-runner")["InstanceProfile"]
    settings = EC2Settings(instance_type="t3.small", subnet_id=subnet, security_group_ids=(group,),
                           iam_instance_profile=profile["Arn"] if by_arn else "jobman-runner", key_name="ops",
                           extra_tags=(("team", "data"), ("Name", "nightly")), store_tag_key="acme:jobman")
    instance_id = EC2Launcher(settings).launch(make_job(), user_data="x", store_id=STORE)

    inst = instance(aws, instance_id)
    assert inst["SubnetId"] == subnet
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [group]
    assert inst["KeyName"] == "ops"
    assert inst["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert inst["InstanceType"] == "t3.small"
    assert tags_of(inst) == {"jobman:job-id": "7", "jobman:attempt": "1", "acme:jobman": STORE,
                             "team": "data", "Name": "nightly"}


@pytest.mark.parametrize("prefix", ["resolve:ssm:", "ssm:", None])
def test_ami_from_a_named_ssm_parameter_or_literal(aws, prefix):
    image = aws.describe_images(Owners=["amazon"])["Images"][3]["ImageId"]
    boto3.client("ssm").put_parameter(Name="/team/ami", Value=image, Type="String")
    settings = EC2Settings(ami=f"{prefix}/team/ami" if prefix else image)
    instance_id = EC2Launcher(settings).launch(make_job(), user_data="x", store_id=STORE)
    assert instance(aws, instance_id)["ImageId"] == image


def test_ami_is_resolved_once_for_many_launches(aws, launcher, monkeypatch):
    ssm = launcher._client("ssm")
    calls = []
    real = ssm.get_parameter
    monkeypatch.setattr(ssm, "get_parameter", lambda **kw: calls.append(kw) or real(**kw))
    for job_id in (1, 2, 3):
        launcher.launch(make_job(job_id), user_data="x", store_id=STORE)
    assert calls == [{"Name": DEFAULT_AMI_PARAMETER}]


def test_unknown_ssm_parameter_is_a_permanent_launch_error(aws):
    with pytest.raises(LaunchError) as caught:
        EC2Launcher(EC2Settings(ami="ssm:/no/such/parameter")).launch(make_job(), user_data="x", store_id=STORE)
    assert not caught.value.retryable and caught.value.code == "ParameterNotFound"
    assert "/no/such/parameter" in str(caught.value) and "\n" not in str(caught.value)
    assert aws.describe_instances()["Reservations"] == []


def test_launch_refuses_a_job_without_token_and_oversized_user_data(aws, launcher):
    with pytest.raises(ValueError):
        launcher.launch(make_job(token=None), user_data="x", store_id=STORE)
    with pytest.raises(LaunchError) as caught:
        launcher.launch(make_job(), user_data="x" * (16 * 1024 + 1), store_id=STORE)
    assert caught.value.code == "UserDataTooLarge" and not caught.value.retryable
    launcher.launch(make_job(), user_data="x" * (16 * 1024), store_id=STORE)  # the limit itself is fine
    assert len(aws.describe_instances()["Reservations"]) == 1


def test_concurrent_launches_from_a_pool(aws, launcher):
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda n: launcher.launch(make_job(n), user_data="x", store_id=STORE), range(1, 17)))
    assert len(set(ids)) == 16
    assert sorted(i.job_id for i in launcher.find_instances(STORE)) == list(range(1, 17))


# ---------------------------------------------------------------------- lookup and lifecycle
def test_find_instances_by_store_job_and_attempt(aws, launcher):
    a1 = launcher.launch(make_job(1, attempts=1), user_data="x", store_id=STORE)
    a2 = launcher.launch(make_job(1, attempts=2), user_data="x", store_id=STORE)
    b1 = launcher.launch(make_job(2, attempts=1), user_data="x", store_id=STORE)
    launcher.launch(make_job(1, attempts=1), user_data="x", store_id="another-store")
    aws.run_instances(ImageId=instance(aws, a1)["ImageId"], MinCount=1, MaxCount=1)  # untagged, not ours

    assert [i.instance_id for i in launcher.find_instances(STORE)] == [a1, a2, b1]
    assert [i.instance_id for i in launcher.find_instances(STORE, job_id=1)] == [a1, a2]
    (found,) = launcher.find_instances(STORE, job_id=1, attempt=2)
    assert (found.instance_id, found.state, found.job_id, found.attempt, found.store_id) == (a2, "running", 1, 2, STORE)
    assert found.launch_time is not None and found.launch_time.tzinfo is not None
    assert launcher.find_instances(STORE, job_id=3) == []

    launcher.terminate([a1])
    assert [i.instance_id for i in launcher.find_instances(STORE, job_id=1)] == [a2]
    everything = launcher.find_instances(STORE, job_id=1, include_terminated=True)
    assert [(i.instance_id, i.state) for i in everything] == [(a1, "terminated"), (a2, "running")]
    assert everything[0].gone and not everything[1].gone


def test_lookups_follow_every_page(aws):
    launcher = EC2Launcher(EC2Settings(), page_size=5)
    ids = [launcher.launch(make_job(n), user_data="x", store_id=STORE) for n in range(1, 13)]
    assert len(launcher.find_instances(STORE)) == 12
    assert set(launcher.describe(ids)) == set(ids)


def test_describe_skips_unknown_ids(aws, launcher):
    known = launcher.launch(make_job(), user_data="x", store_id=STORE)
    found = launcher.describe([known, "i-0123456789abcdef0", "not-an-id", known])
    assert list(found) == [known]
    assert isinstance(found[known], InstanceInfo) and found[known].job_id == 7
    assert launcher.describe([]) == {}


def test_terminate_is_idempotent(aws, launcher):
    first = launcher.launch(make_job(1), user_data="x", store_id=STORE)
    second = launcher.launch(make_job(2), user_data="x", store_id=STORE)
    launcher.terminate([first, "i-0123456789abcdef0", "bogus"])  # unknown ids do not stop the known one
    assert launcher.describe([first])[first].state == "terminated"
    assert launcher.describe([second])[second].state == "running"
    launcher.terminate([first])
    launcher.terminate(["i-0123456789abcdef0"])
    launcher.terminate([])
    assert launcher.describe([first])[first].state == "terminated"


def test_console_output(aws, launcher, monkeypatch):
    instance_id = launcher.launch(make_job(), user_data="x", store_id=STORE)
    assert "Linux version" in launcher.console_output(instance_id)  # moto answers decoded text

    ec2 = launcher._client("ec2")
    calls = []

    def nitro_only(**kw):
        calls.append(kw)
        if kw.get("Latest"):
            raise ClientError({"Error": {"Code": "UnsupportedOperation", "Message": "Nitro only"}}, "GetConsoleOutput")
        return {"InstanceId": kw["InstanceId"], "Output": base64.b64encode("boot ok ✓\n".encode()).decode()}

    monkeypatch.setattr(ec2, "get_console_output", nitro_only)
    assert launcher.console_output(instance_id) == "boot ok ✓\n"
    assert [c.get("Latest") for c in calls] == [True, None]
    monkeypatch.setattr(ec2, "get_console_output", lambda **kw: {"InstanceId": kw["InstanceId"]})
    assert launcher.console_output(instance_id) == ""


def test_console_output_of_an_unknown_instance(aws, launcher):
    with pytest.raises(LaunchError) as caught:
        launcher.console_output("i-0123456789abcdef0")
    assert caught.value.code == "InvalidInstanceID.NotFound" and "i-0123456789abcdef0" in str(caught.value)


def test_decode_console_output():
    text = "Linux version 6.1\r\ncloud-init: done\n"
    assert decode_console_output(base64.b64encode(text.encode()).decode()) == text
    assert decode_console_output(text) == text
    assert decode_console_output(base64.b64encode(b"\xff\xfebad").decode()) == "\ufffd\ufffdbad"
    assert decode_console_output(None) == decode_console_output("") == ""


def test_ec2_launcher_satisfies_the_port(launcher):
    assert isinstance(launcher, Launcher)


# ---------------------------------------------------------------------------- error mapping
@pytest.mark.parametrize("code,status,kind,retryable", [
    # nothing started: a failed attempt (retryable or not)
    ("InsufficientInstanceCapacity", 500, LaunchError, True),  # a 5xx, but a definite refusal
    ("VcpuLimitExceeded", 400, LaunchError, True),
    ("InvalidParameterValue", 400, LaunchError, False),
    ("UnauthorizedOperation", 403, LaunchError, False),
    ("InvalidAMIID.NotFound", 400, LaunchError, False),
    # refused as too fast: nothing started, not a failed attempt
    ("RequestLimitExceeded", 503, LaunchThrottled, True),
    # may have started: the same attempt again, after a lookup
    ("InternalError", 500, LaunchOutcomeUnknown, True),
    ("ServiceUnavailable", 503, LaunchOutcomeUnknown, True),
    ("SomethingNew", 502, LaunchOutcomeUnknown, True),  # any other 5xx
    # this token's instance exists (a take-over's other user-data)
    ("IdempotentParameterMismatch", 400, LaunchTokenInUse, False),
])
def test_run_instances_errors_map_to_what_they_mean_for_the_attempt(aws, code, status, kind, retryable):
    launcher = EC2Launcher(EC2Settings(ami="ami-12345678"))
    with Stubber(launcher._ec2_run) as stub:
        stub.add_client_error("run_instances", service_error_code=code, http_status_code=status,
                              service_message=f"AWS says\nno to {code}")
        with pytest.raises(LaunchError) as caught:
            launcher.launch(make_job(), user_data="x", store_id=STORE)
    assert type(caught.value) is kind
    assert caught.value.retryable is retryable and caught.value.code == code
    assert str(caught.value) == f"{code}: AWS says no to {code}"


def test_idempotent_instance_terminated_says_the_attempt_already_ran(aws):
    launcher = EC2Launcher(EC2Settings(ami="ami-12345678"))
    with Stubber(launcher._ec2_run) as stub:
        stub.add_client_error("run_instances", service_error_code="IdempotentInstanceTerminated",
                              service_message="The client token has been used for a terminated instance.")
        with pytest.raises(LaunchError) as caught:
            launcher.launch(make_job(9, attempts=3), user_data="x", store_id=STORE)
    assert caught.value.code == "IdempotentInstanceTerminated" and not caught.value.retryable
    assert "attempt 3 of job 9" in str(caught.value) and "\n" not in str(caught.value)


def test_find_instances_by_client_token_where_the_filter_exists(aws, launcher):
    """Real EC2 has a ``client-token`` filter (moto does not): asked only when the tags find nothing,
    and an endpoint that does not know it gives nothing instead of an error, and is not asked again."""
    found = {"Reservations": [{"Instances": [{"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"},
                                              "Tags": [{"Key": "jobman:store", "Value": STORE}]}]}]}
    with Stubber(launcher._client("ec2")) as stub:
        stub.add_response("describe_instances", {"Reservations": []})  # the tag lookup
        stub.add_response("describe_instances", found,
                          {"Filters": [{"Name": "client-token", "Values": ["tok-7-1"]}]})
        (info,) = launcher.find_instances(STORE, job_id=7, attempt=1, client_token="tok-7-1")
    assert info.instance_id == "i-0123456789abcdef0"
    moto_launcher = EC2Launcher(EC2Settings())  # under mock_aws: moto raises NotImplementedError for the filter
    moto_launcher.launch(make_job(7), user_data="x", store_id=STORE)  # (moto checks filters only against instances)
    assert moto_launcher.find_instances(STORE, job_id=8, attempt=1, client_token="tok-8-1") == []
    assert moto_launcher._token_filter is False


def test_other_calls_map_errors_too(aws, launcher):
    with Stubber(launcher._client("ec2")) as stub:
        stub.add_client_error("describe_instances", service_error_code="UnauthorizedOperation",
                              service_message="You are not authorized", http_status_code=403)
        stub.add_client_error("terminate_instances", service_error_code="RequestLimitExceeded",
                              service_message="Request limit exceeded.", http_status_code=503)
        with pytest.raises(LaunchError) as described:
            launcher.find_instances(STORE)
        with pytest.raises(LaunchError) as terminated:
            launcher.terminate(["i-0123456789abcdef0"])
    assert (described.value.code, described.value.retryable) == ("UnauthorizedOperation", False)
    assert (terminated.value.code, terminated.value.retryable) == ("RequestLimitExceeded", True)


def test_endpoint_connection_error_is_retryable(aws, monkeypatch):
    launcher = EC2Launcher(EC2Settings(ami="ami-12345678"))

    def unreachable(**kw):
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    monkeypatch.setattr(launcher._ec2_run, "run_instances", unreachable)
    with pytest.raises(LaunchError) as caught:
        launcher.launch(make_job(), user_data="x", store_id=STORE)
    assert caught.value.retryable and caught.value.code == "EndpointConnectionError"
    assert type(caught.value) is LaunchError  # never connected: nothing was sent, nothing started
    assert "ec2.us-east-1.amazonaws.com" in str(caught.value)


@pytest.fixture
def silent_server():
    """A loopback socket that accepts connections and never answers (a hung endpoint)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for conn in accepted:
        conn.close()


def test_real_network_failures_are_retryable(bare_env, silent_server):
    bare_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    bare_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port, accepted = silent_server
    # botocore may retry other calls 3 times, but RunInstances is sent exactly once: a resend is
    # the daemon's decision, after a lookup (moto, like any emulator, ignores ClientToken).
    hung = EC2Launcher(EC2Settings(region="us-east-1", ami="ami-12345678", endpoint_url=f"http://127.0.0.1:{port}"),
                       read_timeout=0.3, max_attempts=3)
    with pytest.raises(LaunchError) as caught:
        hung.launch(make_job(), user_data="x", store_id=STORE)
    assert caught.value.retryable and caught.value.code == "ReadTimeoutError"
    assert type(caught.value) is LaunchOutcomeUnknown  # the request was sent: it may have been applied
    assert len(accepted) == 1  # one connection, one request: no resend by botocore

    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    refused = EC2Launcher(EC2Settings(region="us-east-1", endpoint_url=f"http://127.0.0.1:{closed_port}"),
                          max_attempts=1)
    with pytest.raises(LaunchError) as caught:
        refused.describe(["i-0123456789abcdef0"])
    assert caught.value.retryable and caught.value.code == "EndpointConnectionError"


# ---------------------------------------------------------------------------- credentials
def test_check_credentials_without_credentials(bare_env):
    bare_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with pytest.raises(ConfigError) as caught:
        EC2Launcher(EC2Settings()).check_credentials()
    assert str(caught.value) == NO_CREDENTIALS


def test_check_credentials_without_region(bare_env):
    bare_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    bare_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    launcher = EC2Launcher(EC2Settings())
    with pytest.raises(ConfigError) as caught:
        launcher.check_credentials()
    assert str(caught.value) == NO_REGION
    with pytest.raises(ConfigError):  # using the launcher anyway is a ConfigError too, not a botocore error
        launcher.describe(["i-0123456789abcdef0"])


def test_check_credentials_partial_or_unknown_profile(bare_env):
    bare_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    bare_env.setenv("AWS_ACCESS_KEY_ID", "only-half")
    with pytest.raises(ConfigError, match="incomplete AWS credentials"):
        EC2Launcher(EC2Settings()).check_credentials()
    bare_env.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="AWS profile not found"):
        EC2Launcher(EC2Settings(profile="nope")).check_credentials()


def test_check_credentials_accepts_a_profile_and_aws_region(bare_env, tmp_path):
    (tmp_path / "config").write_text("[profile ops]\nregion = ap-south-1\n")
    (tmp_path / "credentials").write_text("[ops]\naws_access_key_id = AK\naws_secret_access_key = SK\n")
    bare_env.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    bare_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    bare_env.setenv("AWS_PROFILE", "ops")
    launcher = EC2Launcher(EC2Settings())
    launcher.check_credentials()
    assert launcher._client("ec2").meta.region_name == "ap-south-1"
    bare_env.setenv("AWS_REGION", "sa-east-1")  # botocore alone ignores AWS_REGION; jobman does not
    assert EC2Launcher(EC2Settings())._client("ec2").meta.region_name == "sa-east-1"
    assert EC2Launcher(EC2Settings(region="eu-north-1"))._client("ec2").meta.region_name == "eu-north-1"


class FakeIMDS(BaseHTTPRequestHandler):
    """Just enough of the instance metadata service (IMDSv2) to hand out role credentials."""

    def do_PUT(self):
        self._answer("imds-token" if self.path == "/latest/api/token" else None)

    def do_GET(self):
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            self._answer("jobman-role")
        elif self.path == base + "jobman-role":
            self._answer(json.dumps({"Code": "Success", "AccessKeyId": "ASIAROLE", "SecretAccessKey": "s",
                                     "Token": "t", "Expiration": "2099-01-01T00:00:00Z"}))
        else:
            self._answer(None)

    def _answer(self, body):
        data = (body or "").encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_check_credentials_leaves_instance_roles_working(bare_env):
    bare_env.delenv("AWS_EC2_METADATA_DISABLED")
    bare_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeIMDS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bare_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{server.server_port}/")
        EC2Launcher(EC2Settings()).check_credentials()
    finally:
        server.shutdown()
        server.server_close()
    assert "AWS_EC2_METADATA_DISABLED" not in os.environ


def test_check_credentials_gives_up_on_a_hung_metadata_service(bare_env, silent_server):
    bare_env.delenv("AWS_EC2_METADATA_DISABLED")
    bare_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port, accepted = silent_server
    bare_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{port}/")
    with pytest.raises(ConfigError) as caught:
        EC2Launcher(EC2Settings()).check_credentials()
    assert str(caught.value) == NO_CREDENTIALS
    assert 1 <= len(accepted) <= 2  # one bounded attempt (token request + fallback), not a retry loop


# ---------------------------------------------------------------------------- settings
def test_settings_refuse_reserved_or_duplicate_tags():
    with pytest.raises(ConfigError, match="reserved"):
        EC2Settings(extra_tags=(("jobman:job-id", "1"),))
    with pytest.raises(ConfigError, match="reserved"):
        EC2Settings(store_tag_key="x:store", extra_tags=(("x:store", "1"),))
    with pytest.raises(ConfigError, match="twice"):
        EC2Settings(extra_tags=(("team", "a"), ("team", "b")))
    assert EC2Settings(security_group_ids=["sg-1"]).security_group_ids == ("sg-1",)  # type: ignore[arg-type]
    assert EC2Settings().ami_parameter == DEFAULT_AMI_PARAMETER
    assert EC2Settings(ami="ami-0abc").ami_parameter is None


def test_sdk_errors_outside_aws_answers():
    from botocore.exceptions import NoCredentialsError, ParamValidationError
    from jobman_cli.launchers.ec2 import to_launch_error

    lost = to_launch_error(NoCredentialsError())  # e.g. an instance role's credentials mid-rotation
    assert lost.retryable and lost.code == "NoCredentialsError" and NO_CREDENTIALS in str(lost)
    bad = to_launch_error(ParamValidationError(report="Invalid type for parameter MinCount"))
    assert not bad.retryable and bad.code == "ParamValidationError" and "\n" not in str(bad)


# ------------------------------------------------------------------------------ IMDS hop limit
@pytest.mark.parametrize("container_imds, hop_limit", [(False, 1), (True, 2)])
def test_imds_hop_limit_is_1_unless_the_job_opts_in(aws, launcher, container_imds, hop_limit):
    """Hop limit 1: a container (one network hop further) cannot get an IMDSv2 token, so it cannot
    read the instance role's credentials (DESIGN.md section 12); ``--container-imds`` allows 2."""
    sent: list[dict] = []
    launcher._ec2_run.meta.events.register(  # what was really sent, whatever moto echoes back
        "provide-client-params.ec2.RunInstances", lambda params, **_: sent.append(dict(params)))
    instance_id = launcher.launch(make_job(container_imds=container_imds), user_data="x", store_id=STORE)
    assert sent[-1]["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                           "HttpPutResponseHopLimit": hop_limit}
    options = instance(aws, instance_id)["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpPutResponseHopLimit"] == hop_limit  # moto keeps what RunInstances asked for
