"""`jobman setup aws` and the log group's set-up, against moto's ``mock_aws`` (IAM enforced where a
test says so). Changing calls are watched with a botocore ``before-call`` hook on every client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobman_cli.cli import cli

CHANGING = ("Create", "Put", "Add", "Attach", "Delete", "Update", "Authorize", "Revoke", "Tag", "Modify", "Remove")


@pytest.fixture
def aws(mock_ec2, monkeypatch, tmp_path):
    """moto, an empty JOBMAN_HOME, and a record of every AWS call the code under test makes."""
    import jobman_cli.joblogs as joblogs

    home = tmp_path / "home"
    monkeypatch.setenv("JOBMAN_HOME", str(home))
    for name in ("JOBMAN_LOG_GROUP", "JOBMAN_LOG_RETENTION_DAYS", "JOBMAN_LOG_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    calls: list[str] = []
    made = joblogs.make_session

    def recorded_session(*args, **kwargs):
        session = made(*args, **kwargs)

        def hook(model, **_):
            calls.append(f"{model.service_model.service_name}:{model.name}")

        session.events.register("before-call.*.*", hook)
        return session

    monkeypatch.setattr(joblogs, "make_session", recorded_session)
    return calls


def setup(*args: str):
    return CliRunner().invoke(cli, ["setup", "aws", *args])


def changing(calls: list[str]) -> list[str]:
    return [c for c in calls if c.split(":")[1].startswith(CHANGING)]


def test_first_run_creates_everything_and_prints_the_daemon_flags(aws) -> None:
    import boto3

    result = setup()
    assert result.exit_code == 0, result.output
    sorted_changes = sorted(changing(aws))
    assert sorted_changes == sorted(["logs:CreateLogGroup", "logs:PutRetentionPolicy", "iam:CreateRole",
                                     "iam:PutRolePolicy", "iam:CreateInstanceProfile",
                                     "iam:AddRoleToInstanceProfile", "ec2:CreateSecurityGroup"])
    (group,) = boto3.client("logs").describe_log_groups(logGroupNamePrefix="jobman")["logGroups"]
    assert group["logGroupName"] == "jobman" and group["retentionInDays"] == 30
    iam = boto3.client("iam")
    role = iam.get_role(RoleName="jobman-instance")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    policy = iam.get_role_policy(RoleName="jobman-instance", PolicyName="jobman-instance")["PolicyDocument"]
    (statement,) = policy["Statement"]
    assert statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == ["arn:aws:logs:us-east-1:123456789012:log-group:jobman",
                                     "arn:aws:logs:us-east-1:123456789012:log-group:jobman:log-stream:jobs/*"]
    assert iam.list_attached_role_policies(RoleName="jobman-instance")["AttachedPolicies"] == []
    profile = iam.get_instance_profile(InstanceProfileName="jobman-instance")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["jobman-instance"]
    ec2 = boto3.client("ec2")
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    (sg,) = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["jobman-instance"]}])["SecurityGroups"]
    assert sg["VpcId"] == default_vpc and sg["IpPermissions"] == []
    assert f"jobman daemon --iam-instance-profile jobman-instance --security-group-id {sg['GroupId']}" in result.stdout
    for step in ("log group jobman: creating", "IAM role jobman-instance: creating",
                 "instance profile jobman-instance: creating", "security group jobman-instance in default VPC"):
        assert step in result.stdout


def test_second_run_changes_nothing_and_says_exists_for_each_step(aws) -> None:
    assert setup().exit_code == 0
    aws.clear()
    again = setup()
    assert again.exit_code == 0, again.output
    assert aws, "the hook saw the reads"
    assert changing(aws) == []
    steps = [line for line in again.stdout.splitlines() if ": " in line and not line.startswith(("AWS", "Use", "Done"))]
    assert len(steps) == 5 and all(": exists" in line for line in steps), again.stdout
    assert "nothing to change" in again.stdout


def test_dry_run_prints_the_calls_and_changes_nothing(aws) -> None:
    import boto3

    result = setup("--dry-run")
    assert result.exit_code == 0, result.output
    assert changing(aws) == []
    for call in ("would call logs:CreateLogGroup(logGroupName=jobman)", "would call logs:PutRetentionPolicy(",
                 "would call iam:CreateRole(RoleName=jobman-instance", "would call iam:PutRolePolicy(",
                 "would call iam:CreateInstanceProfile(", "would call iam:AddRoleToInstanceProfile(",
                 "would call ec2:CreateSecurityGroup("):
        assert call in result.stdout
    assert "Dry run: 7 change(s) would be made; nothing was changed." in result.stdout
    assert boto3.client("logs").describe_log_groups()["logGroups"] == []
    assert boto3.client("iam").list_roles()["Roles"] == []
    # After a real run, a dry run has nothing to propose.
    assert setup().exit_code == 0
    aws.clear()
    quiet = setup("--dry-run")
    assert changing(aws) == [] and "would call" not in quiet.stdout and "0 change(s)" in quiet.stdout


def test_save_writes_the_daemon_settings_into_the_config_file(aws, tmp_path) -> None:
    from jobman_cli.config import log_settings
    from jobman_cli.launchers.factory import ec2_settings

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('# my settings\n[ec2]\ninstance_type = "t3.small"  # keep\n\n[daemon]\nlisten = "127.0.0.1:9000"\n')
    result = setup("--save", "--retention-days", "90", "--log-group", "team/jobs")
    assert result.exit_code == 0, result.output
    text = (home / "config.toml").read_text()
    assert text.startswith("# my settings\n") and 'instance_type = "t3.small"  # keep' in text
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
    settings = ec2_settings({})
    assert settings.iam_instance_profile == "jobman-instance" and settings.instance_type == "t3.small"
    assert len(settings.security_group_ids) == 1 and settings.security_group_ids[0].startswith("sg-")
    assert log_settings() .group == "team/jobs" and log_settings().retention_days == 90
    assert setup("--save", "--retention-days", "90", "--log-group", "team/jobs").exit_code == 0
    assert (home / "config.toml").read_text() == text, "saving the same values again changes nothing"
    assert setup("--save", "--dry-run").exit_code == 2


def test_retention_that_differs_is_set_once(aws) -> None:
    import boto3

    boto3.client("logs").create_log_group(logGroupName="jobman")
    result = setup()
    assert "log group jobman: exists; setting retention to 30 days (was never expire)" in result.stdout
    assert boto3.client("logs").describe_log_groups()["logGroups"][0]["retentionInDays"] == 30
    assert "log group jobman: exists (retention 30 days)" in setup().stdout


def test_vpc_id_puts_the_group_in_that_vpc(aws) -> None:
    import boto3

    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    result = setup("--vpc-id", vpc)
    assert result.exit_code == 0, result.output
    (sg,) = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                  {"Name": "group-name", "Values": ["jobman-instance"]}])["SecurityGroups"]
    assert sg["GroupId"] in result.stdout
    missing = setup("--vpc-id", "vpc-0000000000000000f")
    assert missing.exit_code == 1 and "vpc-0000000000000000f" in missing.stderr


def test_a_role_that_is_not_an_ec2_role_is_refused(aws) -> None:
    import boto3

    boto3.client("iam").create_role(RoleName="jobman-instance", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    result = setup()
    assert result.exit_code == 1 and "EC2 may not assume it" in result.stderr
    assert "iam:PutRolePolicy" not in changing(aws)


def _as_user_allowed(actions: list[str], monkeypatch, policy: dict | None = None) -> None:
    """Switch to a moto IAM user allowed only ``actions`` (or given ``policy``), and make moto
    enforce IAM from now on."""
    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = boto3.client("iam")
    iam.create_user(UserName="newcomer")
    policy = policy or {"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName="newcomer", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="newcomer")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)


READS = ["sts:GetCallerIdentity", "logs:DescribeLogGroups", "iam:GetRole", "iam:GetRolePolicy",
         "iam:GetInstanceProfile", "ec2:DescribeVpcs", "ec2:DescribeSecurityGroups"]


@pytest.mark.parametrize("missing", ["logs:CreateLogGroup", "iam:CreateRole", "iam:PutRolePolicy",
                                     "iam:AddRoleToInstanceProfile", "ec2:CreateSecurityGroup"])
def test_too_few_permissions_names_the_missing_action(aws, monkeypatch, missing) -> None:
    everything = READS + ["logs:CreateLogGroup", "logs:PutRetentionPolicy", "iam:CreateRole", "iam:PutRolePolicy",
                          "iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile", "ec2:CreateSecurityGroup"]
    _as_user_allowed([a for a in everything if a != missing], monkeypatch)
    result = setup()
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: no permission: your AWS identity may not call {missing}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_the_setup_permissions_in_the_readme_are_enough(aws, monkeypatch) -> None:
    everything = READS + ["logs:CreateLogGroup", "logs:PutRetentionPolicy", "iam:CreateRole", "iam:PutRolePolicy",
                          "iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile", "ec2:CreateSecurityGroup"]
    _as_user_allowed(everything, monkeypatch)
    assert setup().exit_code == 0
    assert setup().exit_code == 0


def test_the_instance_policy_allows_writing_its_log_and_nothing_else(aws, monkeypatch) -> None:
    """An identity with the instance policy's actions (moto enforcing IAM) can do what the instance
    does — create its stream, put lines — and cannot read logs or create groups. moto authorises
    every non-S3 request against the resource "*", so the policy's resource ARNs are widened to
    "*" here: this proves the actions, the ARNs are checked in the first test."""
    import boto3

    from jobman_cli.setup_aws import instance_policy

    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="jobman")
    policy = instance_policy("aws", "us-east-1", "123456789012", "jobman")
    for statement in policy["Statement"]:
        statement["Resource"] = "*"
    _as_user_allowed([], monkeypatch, policy)
    instance = boto3.session.Session().client("logs")  # a new session: the default one keeps old keys
    instance.create_log_stream(logGroupName="jobman", logStreamName="jobs/1/attempt-1")
    instance.put_log_events(logGroupName="jobman", logStreamName="jobs/1/attempt-1",
                            logEvents=[{"timestamp": 1, "message": "x"}])
    for refused in (lambda: instance.get_log_events(logGroupName="jobman", logStreamName="jobs/1/attempt-1"),
                    lambda: instance.create_log_group(logGroupName="other")):
        with pytest.raises(Exception) as caught:
            refused()
        assert "not authorized" in str(caught.value)


# --------------------------------------------------------------------------- the daemon's hook
def test_ensure_log_group_creates_sets_retention_and_is_idempotent(aws) -> None:
    import boto3

    from jobman_cli.joblogs import ensure_log_group

    logs = boto3.client("logs")
    assert ensure_log_group(logs, "jobman", 30) == "created"
    assert ensure_log_group(logs, "jobman", 30) == "exists"
    assert ensure_log_group(logs, "jobman", 7) == "retention-set"
    assert logs.describe_log_groups()["logGroups"][0]["retentionInDays"] == 7


def test_ensure_log_group_without_permission_names_the_action(aws, monkeypatch) -> None:
    import boto3

    from jobman_cli.joblogs import PermissionDenied, ensure_log_group

    _as_user_allowed(["logs:DescribeLogGroups"], monkeypatch)
    with pytest.raises(PermissionDenied) as caught:
        ensure_log_group(boto3.session.Session().client("logs"), "jobman", 30)
    assert caught.value.action == "logs:CreateLogGroup"


def test_prepare_log_group_is_the_daemons_one_line_and_never_fails_the_start(aws, monkeypatch) -> None:
    import boto3

    from jobman_cli.joblogs import prepare_log_group
    from jobman_cli.launchers.base import EC2Settings

    line = prepare_log_group(EC2Settings(region="us-east-1"))
    assert line.startswith("job logs: CloudWatch Logs group jobman (created; retention 30 days)")
    assert boto3.client("logs").describe_log_groups()["logGroups"][0]["retentionInDays"] == 30
    monkeypatch.setenv("JOBMAN_LOG_GROUP", "other")
    _as_user_allowed(["logs:DescribeLogGroups"], monkeypatch)
    refused = prepare_log_group(EC2Settings(region="us-east-1"))
    assert refused.startswith("job logs: WARNING: no permission: your AWS identity may not call logs:CreateLogGroup")


def test_job_log_target_is_what_the_daemon_renders_into_user_data(aws, monkeypatch) -> None:
    from jobman_cli.joblogs import LogTarget, job_log_target
    from jobman_cli.launchers.base import EC2Settings

    assert job_log_target(EC2Settings()) == LogTarget("jobman", "us-east-1", None)
    assert job_log_target(EC2Settings(region="eu-west-1")).region == "eu-west-1"
    # an EC2-only endpoint (a VPC or FIPS endpoint of EC2) is never where instances send their logs
    assert job_log_target(EC2Settings(endpoint_url="https://vpce-ec2.example")).endpoint_url is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")
    assert job_log_target(EC2Settings()).endpoint_url == "http://127.0.0.1:5000"
    monkeypatch.setenv("JOBMAN_LOG_ENDPOINT", "https://logs.vpce.example")
    monkeypatch.setenv("JOBMAN_LOG_GROUP", "team/jobs")
    assert job_log_target(EC2Settings()) == LogTarget("team/jobs", "us-east-1", "https://logs.vpce.example")


# --------------------------------------------------------------------------- secrets (issue 12)
ALLOWED = ["ssm:/prod/db/password", "ssm:/team/*", "secretsmanager:app/creds#password",
           "secretsmanager:app/creds#user"]
WANTED = {"Version": "2012-10-17", "Statement": [
    {"Sid": "ReadJobParameters", "Effect": "Allow", "Action": "ssm:GetParameter",
     "Resource": ["arn:aws:ssm:us-east-1:123456789012:parameter/prod/db/password",
                  "arn:aws:ssm:us-east-1:123456789012:parameter/team/*"]},
    {"Sid": "ReadJobSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
     "Resource": ["arn:aws:secretsmanager:us-east-1:123456789012:secret:app/creds-??????"]}]}


def _allow(*refs: str) -> list[str]:
    return [f"--allow-secret={r}" for r in refs]


def test_allow_secret_grants_exactly_the_named_references_and_is_idempotent(aws) -> None:
    import boto3

    first = setup(*_allow(*ALLOWED))
    assert first.exit_code == 0, first.output
    policy = boto3.client("iam").get_role_policy(RoleName="jobman-instance", PolicyName="jobman-secrets")
    assert policy["PolicyDocument"] == WANTED
    assert ("IAM role jobman-instance inline policy jobman-secrets: creating (ssm:GetParameter on 2 resource(s), "
            "secretsmanager:GetSecretValue on 1 resource(s))") in first.stdout
    aws.clear()
    again = setup(*_allow(*reversed(ALLOWED)))  # the same set in another order: nothing to do
    assert again.exit_code == 0 and changing(aws) == [], again.output
    assert "inline policy jobman-secrets: exists" in again.stdout
    aws.clear()
    fewer = setup(*_allow("ssm:/prod/db/password"))  # the list is complete: the others are revoked
    assert fewer.exit_code == 0 and changing(aws) == ["iam:PutRolePolicy"], fewer.output
    policy = boto3.client("iam").get_role_policy(RoleName="jobman-instance", PolicyName="jobman-secrets")
    assert policy["PolicyDocument"]["Statement"] == [WANTED["Statement"][0] | {
        "Resource": ["arn:aws:ssm:us-east-1:123456789012:parameter/prod/db/password"]}]
    # The log policy is untouched by all this.
    log_policy = boto3.client("iam").get_role_policy(RoleName="jobman-instance", PolicyName="jobman-instance")
    assert [s["Sid"] for s in log_policy["PolicyDocument"]["Statement"]] == ["WriteJobLogs"]


def test_without_allow_secret_nothing_is_granted_and_an_existing_grant_is_kept(aws) -> None:
    import boto3

    plain = setup()
    assert plain.exit_code == 0
    assert "No --allow-secret given, so no read access to any secret is granted" in plain.stdout
    iam = boto3.client("iam")
    assert iam.list_role_policies(RoleName="jobman-instance")["PolicyNames"] == ["jobman-instance"]
    assert setup(*_allow("ssm:/prod/db/password")).exit_code == 0
    aws.clear()
    assert setup().exit_code == 0 and changing(aws) == []
    assert sorted(iam.list_role_policies(RoleName="jobman-instance")["PolicyNames"]) == ["jobman-instance",
                                                                                        "jobman-secrets"]


def test_allow_secret_dry_run_prints_the_policy_and_changes_nothing(aws) -> None:
    result = setup("--dry-run", *_allow(*ALLOWED))
    assert result.exit_code == 0, result.output
    assert changing(aws) == []
    line = next(line for line in result.stdout.splitlines() if line.startswith("  policy document: "))
    assert json.loads(line.removeprefix("  policy document: ")) == WANTED
    assert "would call iam:PutRolePolicy(RoleName=jobman-instance, PolicyName=jobman-secrets" in result.stdout


@pytest.mark.parametrize("ref", ["ssm:", "vault:/x", "ssm:/a b", "secretsmanager:app/*#key", "ssm:/x#k", "",
                                 "ssm:*", "ssm:/*", "secretsmanager:*", "ssm:--debug"])
def test_a_bad_allow_secret_is_a_usage_error_before_any_aws_call(aws, ref) -> None:
    result = setup(f"--allow-secret={ref}")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--allow-secret" in result.stderr, result.stderr
    assert aws == []


def test_the_secrets_policy_lets_the_role_read_those_secrets_and_no_others(aws, monkeypatch) -> None:
    """moto enforcing IAM: the instance policy's actions read the named parameter and secret; an
    identity without the secrets policy reads neither (the ARNs themselves are checked above:
    moto authorises non-S3 requests against the resource "*")."""
    import boto3

    from jobman_cli.setup_aws import secrets_policy

    boto3.client("ssm").put_parameter(Name="/prod/db/password", Value="v", Type="SecureString")
    boto3.client("secretsmanager").create_secret(Name="app/creds", SecretString='{"password": "p"}')
    policy = secrets_policy(ALLOWED, "aws", "us-east-1", "123456789012")
    for statement in policy["Statement"]:
        statement["Resource"] = "*"
    _as_user_allowed([], monkeypatch, policy)
    session = boto3.session.Session()
    assert session.client("ssm").get_parameter(Name="/prod/db/password", WithDecryption=True)["Parameter"]["Value"] == "v"
    assert session.client("secretsmanager").get_secret_value(SecretId="app/creds")["SecretString"]
    with pytest.raises(Exception) as caught:
        session.client("ssm").put_parameter(Name="/prod/db/password", Value="w", Type="SecureString", Overwrite=True)
    assert "not authorized" in str(caught.value)
