"""The IAM policy documents jobman asks for, built as plain data (no AWS calls, no boto3).

Why a module of their own: the documents are jobman's security contract, read and reviewed apart
from the calls that install them. ``jobman setup aws`` (:mod:`jobman_cli.setup_aws`) writes the
instance role's trust policy (:data:`EC2_TRUST`), its inline policy (:func:`instance_policy`) and,
for ``--allow-secret``, its ``jobman-secrets`` policy (:func:`secrets_policy`, DESIGN.md section 12);
the README prints the daemon's own policy (:func:`daemon_policy`), and the cost tests check it
allows every call a cost receipt makes. Each is least privilege: the instance may only write its
job's log stream, and read exactly the secrets named.
"""

from __future__ import annotations

from typing import Any

#: The default ``--name`` of the instance role, its instance profile and its security group.
DEFAULT_NAME = "jobman-instance"
#: The instance role's inline policies: the log writes, and the ``--allow-secret`` reads.
POLICY_NAME = "jobman-instance"
SECRETS_POLICY_NAME = "jobman-secrets"

#: The trust policy of the instance role: only EC2 may assume it.
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def log_group_arn(partition: str, region: str, account: str, group: str) -> str:
    return f"arn:{partition}:logs:{region}:{account}:log-group:{group}"


def instance_policy(partition: str, region: str, account: str, group: str) -> dict[str, Any]:
    """What an instance does, and nothing else: Docker's ``awslogs`` driver and the script's own
    lines create the attempt's stream and put events in it (no CreateLogGroup: jobman creates the
    group; no reads)."""
    group_arn = log_group_arn(partition, region, account, group)
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "WriteJobLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [group_arn, f"{group_arn}:log-stream:jobs/*"],
        }],
    }


def allowed_secret(text: str, field: str = "--allow-secret") -> tuple[str, str]:
    """``ssm:/path``, ``secretsmanager:ID[#key]`` or either with a trailing ``*`` (a prefix):
    ``(kind, name-or-prefix-with-*)``; InvalidInput (exit 2) for anything else."""
    from .errors import InvalidInput
    from .secretrefs import parse_secret_ref

    if not isinstance(text, str) or not text:
        raise InvalidInput(field, "must be a reference such as ssm:/prod/db/password or ssm:/prod/*")
    prefix = text.endswith("*")
    body = text[:-1] if prefix else text
    if prefix and "#" in body:
        raise InvalidInput(field, f"{text!r}: a prefix ('*') cannot name a JSON key")
    # A prefix is checked as if one more character followed it ("ssm:/prod/" -> "ssm:/prod/x").
    ref = parse_secret_ref(body + "x" if prefix else body, field=field)
    name = ref.name[:-1] + "*" if prefix else ref.name
    if name in ("*", "/*"):
        raise InvalidInput(field, f"{text!r} would let every job read every {'parameter' if ref.kind == 'ssm' else 'secret'} "
                                  "of the account; name a path, e.g. ssm:/prod/* or secretsmanager:prod/etl/*")
    return ref.kind, name


def secrets_policy(allowed: list[str], partition: str, region: str, account: str) -> dict[str, Any] | None:
    """Read access to exactly the ``allowed`` references (see :func:`allowed_secret`), in this
    account and region unless a reference is an ARN: ``ssm:GetParameter`` on the parameters,
    ``secretsmanager:GetSecretValue`` on the secrets (a ``#key`` needs the whole secret). None when
    nothing is named. Resources come from :attr:`SecretRef.iam_resource`, made exact where it is
    loose: this account and region instead of ``*:*``, and a secret name followed by exactly the
    6-character suffix AWS appends (``-??????``), so ``app/db`` does not also grant ``app/db-old``."""
    from .secretrefs import SECRETS_MANAGER, SSM, SecretRef

    resources: dict[str, list[str]] = {SSM: [], SECRETS_MANAGER: []}
    for text in allowed:
        kind, name = allowed_secret(text)
        if name.endswith("*"):  # a prefix: everything under it
            if name.startswith("arn:"):
                resource = name
            elif kind == SSM:
                resource = f"arn:aws:ssm:*:*:parameter{name if name.startswith('/') else '/' + name}"
            else:
                resource = f"arn:aws:secretsmanager:*:*:secret:{name}"
        else:
            resource = SecretRef(kind, name).iam_resource
            if kind == SECRETS_MANAGER and not name.startswith("arn:") and resource.endswith("-*"):
                resource = resource[:-1] + "??????"
        for service in ("ssm", "secretsmanager"):
            loose = f"arn:aws:{service}:*:*:"
            if resource.startswith(loose):
                resource = f"arn:{partition}:{service}:{region}:{account}:" + resource[len(loose):]
        if resource not in resources[kind]:
            resources[kind].append(resource)
    statements = []
    if resources[SSM]:
        statements.append({"Sid": "ReadJobParameters", "Effect": "Allow", "Action": "ssm:GetParameter",
                           "Resource": sorted(resources[SSM])})
    if resources[SECRETS_MANAGER]:
        statements.append({"Sid": "ReadJobSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": sorted(resources[SECRETS_MANAGER])})
    return {"Version": "2012-10-17", "Statement": statements} if statements else None


def daemon_policy(partition: str, region: str, account: str, group: str, role_name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The operator's side (daemon and CLI): launch, watch and end instances, pass the instance
    role, keep the log group, read job logs, and price ended jobs (cost receipts)."""
    group_arn = log_group_arn(partition, region, account, group)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Instances", "Effect": "Allow", "Resource": "*",
             "Action": ["ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:TerminateInstances",
                        "ec2:GetConsoleOutput", "ec2:DescribeImages"]},
            # Cost receipts (jobman_cli/cost): the spot price over a run, on-demand prices from the Price
            # List. Neither action supports resource-level permissions; DescribeImages (above) also
            # reads the AMI's root volume for the receipt.
            {"Sid": "CostReceipts", "Effect": "Allow", "Resource": "*",
             "Action": ["ec2:DescribeSpotPriceHistory", "pricing:GetProducts"]},
            {"Sid": "LatestAmazonLinux", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"],
             "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/ami-amazon-linux-latest/*"},
            {"Sid": "PassInstanceRole", "Effect": "Allow", "Action": "iam:PassRole",
             "Resource": f"arn:{partition}:iam::{account}:role/{role_name}",
             "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
            {"Sid": "JobLogGroup", "Effect": "Allow", "Action": ["logs:DescribeLogGroups"], "Resource": "*"},
            {"Sid": "KeepAndReadJobLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:GetLogEvents"],
             "Resource": [group_arn, f"{group_arn}:log-stream:*"]},
        ],
    }
