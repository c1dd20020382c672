"""``jobman setup aws``: what a first real run needs in an AWS account, created idempotently.

Four steps, each printed as one line saying what it found and did:

1. the job-log group, with its retention (DESIGN.md section 10);
2. the instances' IAM role, trusted by EC2 only, with one inline policy that allows exactly what
   the instance does: create its log stream and put its lines in the job-log group
   (:func:`~.iam_policies.instance_policy`); and, only for the references named with
   ``--allow-secret``, a second inline policy ``jobman-secrets`` that lets it read exactly those
   (:func:`~.iam_policies.secrets_policy`, DESIGN.md section 12). It is declarative: each run
   with ``--allow-secret`` makes it grant exactly the references given; a run without leaves it
   as it is (and grants nothing new);
3. the instance profile holding that role (what ``--iam-instance-profile`` names);
4. a security group without ingress in the default VPC (or ``--vpc-id``): the instance only
   calls out (registry, CloudWatch Logs, the daemon's callback URL).

Every step first reads (Describe*/Get*), then makes only the changing calls that are needed, so a
second run changes nothing and says "exists" for each step. With ``dry_run`` the changing calls are
printed, never made. A call refused for lack of permission is a one-line error naming the IAM
action (:class:`~jobman_cli.awserrors.PermissionDenied`).

The policy documents themselves are data, in :mod:`.iam_policies` (their names are importable
from here too). The daemon's own policy (:func:`~.iam_policies.daemon_policy`) is printed in the
README; it includes ``iam:PassRole`` on the instance role, which launching with the instance
profile requires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from .awserrors import aws_failure, error_code
from .errors import ConfigError, JobmanError
from .iam_policies import (DEFAULT_NAME, EC2_TRUST, POLICY_NAME, SECRETS_POLICY_NAME, allowed_secret, daemon_policy,
                           instance_policy, log_group_arn, secrets_policy)
from .loggroup import find_log_group

# The policy names are re-exported: the CLI and the tests import them from here.
__all__ = ["SetupOptions", "SetupResult", "setup_aws", "DEFAULT_NAME", "EC2_TRUST", "POLICY_NAME",
           "SECRETS_POLICY_NAME", "allowed_secret", "daemon_policy", "instance_policy", "log_group_arn",
           "secrets_policy"]


@dataclass(frozen=True)
class SetupOptions:
    log_group: str
    retention_days: int
    name: str = DEFAULT_NAME
    vpc_id: str | None = None
    dry_run: bool = False
    #: ``--allow-secret`` references (validated with :func:`allowed_secret`); empty: no change.
    allow_secrets: tuple[str, ...] = ()


@dataclass
class SetupResult:
    instance_profile: str
    security_group_id: str | None  # None: a dry run that would create it
    role_arn: str | None = None
    changed: list[str] = field(default_factory=list)

    def daemon_flags(self) -> str:
        group = self.security_group_id or "<the new group's id>"
        return f"--iam-instance-profile {self.instance_profile} --security-group-id {group}"


def _render(service: str, operation: str, params: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v}"
                      for k, v in params.items())
    return f"{service}:{operation}({shown})"


class _Steps:
    """Makes (or, in a dry run, prints) the changing calls, and maps every AWS error to one line."""

    def __init__(self, clients: dict[str, Any], dry_run: bool, echo: Callable[[str], None]) -> None:
        self.clients = clients
        self.dry_run = dry_run
        self.echo = echo
        self.changed: list[str] = []
        self.new_role = False  # the role is being created in this run (nothing of it to read yet)

    def read(self, service: str, operation: str, context: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.clients[service], operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise aws_failure(exc, service, context) from exc

    def change(self, service: str, operation: str, api_name: str, context: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        self.changed.append(f"{service}:{api_name}")
        if self.dry_run:
            self.echo(f"  would call {_render(service, api_name, params)}")
            return None
        try:
            return getattr(self.clients[service], operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise aws_failure(exc, service, context) from exc

    def missing(self, service: str, operation: str, not_found: str, context: str, **params: Any) -> Any:
        """A read where "not found" is an answer (None), not an error."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.clients[service], operation)(**params)
        except ClientError as exc:
            if error_code(exc) == not_found:
                return None
            raise aws_failure(exc, service, context) from exc
        except BotoCoreError as exc:
            raise aws_failure(exc, service, context) from exc


def setup_aws(session: Any, options: SetupOptions, echo: Callable[[str], None]) -> SetupResult:
    """Run the four steps with clients of ``session`` (a boto3 Session). ``echo`` prints a line."""
    from botocore.exceptions import BotoCoreError

    from .loggroup import client_config

    region = session.region_name
    if not region:
        raise ConfigError("no AWS region configured (set AWS_REGION or AWS_DEFAULT_REGION, pass --region, or set a "
                          "region in your AWS profile)")
    try:
        clients = {name: session.client(name, config=client_config()) for name in ("sts", "logs", "iam", "ec2")}
    except BotoCoreError as exc:
        raise aws_failure(exc, "sts", "cannot configure the AWS clients") from exc
    steps = _Steps(clients, options.dry_run, echo)
    who = steps.read("sts", "get_caller_identity", "cannot tell which AWS account this is")
    account, caller = who["Account"], who["Arn"]
    partition = caller.split(":")[1] if caller.startswith("arn:") else "aws"
    echo(f"AWS account {account}, region {region}, as {caller}" + (" (dry run: nothing is changed)" if options.dry_run else ""))

    _log_group(steps, options, echo)
    role_arn = _role(steps, options, partition, region, account, echo)
    _secrets(steps, options, partition, region, account, echo)
    _instance_profile(steps, options, echo)
    group_id = _security_group(steps, options, echo)
    return SetupResult(instance_profile=options.name, security_group_id=group_id, role_arn=role_arn,
                       changed=steps.changed)


def _log_group(steps: _Steps, options: SetupOptions, echo: Callable[[str], None]) -> None:
    group, days = options.log_group, options.retention_days
    what = f"log group {group}"
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = find_log_group(steps.clients["logs"], group)
    except (ClientError, BotoCoreError) as exc:
        raise aws_failure(exc, "logs", f"cannot look up {what}") from exc
    if found is None:
        echo(f"{what}: creating, retention {days} days")
        steps.change("logs", "create_log_group", "CreateLogGroup", f"cannot create {what}", logGroupName=group)
        steps.change("logs", "put_retention_policy", "PutRetentionPolicy", f"cannot set the retention of {what}",
                     logGroupName=group, retentionInDays=days)
    elif found.get("retentionInDays") != days:
        was = found.get("retentionInDays")
        echo(f"{what}: exists; setting retention to {days} days (was {f'{was} days' if was else 'never expire'})")
        steps.change("logs", "put_retention_policy", "PutRetentionPolicy", f"cannot set the retention of {what}",
                     logGroupName=group, retentionInDays=days)
    else:
        echo(f"{what}: exists (retention {days} days)")


def _same_policy(current: Any, wanted: dict[str, Any]) -> bool:
    if isinstance(current, str):
        from urllib.parse import unquote

        try:
            current = json.loads(unquote(current))
        except ValueError:
            return False
    return json.dumps(current, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def _role(steps: _Steps, options: SetupOptions, partition: str, region: str, account: str,
          echo: Callable[[str], None]) -> str | None:
    name = options.name
    what = f"IAM role {name}"
    found = steps.missing("iam", "get_role", "NoSuchEntity", f"cannot look up {what}", RoleName=name)
    arn = None
    if found is None:
        steps.new_role = True
        echo(f"{what}: creating (trusted by EC2 only)")
        created = steps.change("iam", "create_role", "CreateRole", f"cannot create {what}", RoleName=name,
                               AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                               Description="jobman: the role of the EC2 instances that run jobman's jobs")
        arn = created["Role"]["Arn"] if created else None
        if created:
            echo(f"{what}: created; EC2 accepts a new role's instance profile after about 10 seconds")
    else:
        role = found["Role"]
        arn = role["Arn"]
        if "ec2.amazonaws.com" not in json.dumps(role.get("AssumeRolePolicyDocument") or {}):
            raise JobmanError(f"{what} exists but EC2 may not assume it (it is not jobman's); "
                              "choose another name with --name")
        echo(f"{what}: exists")
    wanted = instance_policy(partition, region, account, options.log_group)
    policy_what = f"{what} inline policy {POLICY_NAME}"
    current = None
    if found is not None:
        current = steps.missing("iam", "get_role_policy", "NoSuchEntity", f"cannot read {policy_what}",
                                RoleName=name, PolicyName=POLICY_NAME)
    if current is None:
        echo(f"{policy_what}: creating (logs:CreateLogStream, logs:PutLogEvents on log group {options.log_group})")
    elif not _same_policy(current.get("PolicyDocument"), wanted):
        echo(f"{policy_what}: exists but differs; replacing it")
    else:
        echo(f"{policy_what}: exists")
        return arn
    steps.change("iam", "put_role_policy", "PutRolePolicy", f"cannot write {policy_what}", RoleName=name,
                 PolicyName=POLICY_NAME, PolicyDocument=json.dumps(wanted))
    return arn


def _secrets(steps: _Steps, options: SetupOptions, partition: str, region: str, account: str,
             echo: Callable[[str], None]) -> None:
    """The role's ``jobman-secrets`` inline policy: exactly the ``--allow-secret`` references."""
    what = f"IAM role {options.name} inline policy {SECRETS_POLICY_NAME}"
    wanted = secrets_policy(list(options.allow_secrets), partition, region, account)
    if wanted is None:
        echo(f"No --allow-secret given, so no read access to any secret is granted "
             f"(an existing {SECRETS_POLICY_NAME} policy is kept as it is)")
        return
    counts = {s["Action"]: len(s["Resource"]) for s in wanted["Statement"]}
    grants = ", ".join(f"{action} on {n} resource(s)" for action, n in counts.items())
    current = steps.missing("iam", "get_role_policy", "NoSuchEntity", f"cannot read {what}",
                            RoleName=options.name, PolicyName=SECRETS_POLICY_NAME) if not steps.new_role else None
    if current is None:
        echo(f"{what}: creating ({grants})")
    elif not _same_policy(current.get("PolicyDocument"), wanted):
        echo(f"{what}: exists but differs; replacing it ({grants})")
    else:
        echo(f"{what}: exists ({grants})")
        return
    if steps.dry_run:
        echo("  policy document: " + json.dumps(wanted, sort_keys=True))
    steps.change("iam", "put_role_policy", "PutRolePolicy", f"cannot write {what}", RoleName=options.name,
                 PolicyName=SECRETS_POLICY_NAME, PolicyDocument=json.dumps(wanted))


def _instance_profile(steps: _Steps, options: SetupOptions, echo: Callable[[str], None]) -> None:
    name = options.name
    what = f"instance profile {name}"
    found = steps.missing("iam", "get_instance_profile", "NoSuchEntity", f"cannot look up {what}",
                          InstanceProfileName=name)
    roles: list[str] = []
    if found is None:
        echo(f"{what}: creating, with role {name}")
        steps.change("iam", "create_instance_profile", "CreateInstanceProfile", f"cannot create {what}",
                     InstanceProfileName=name)
    else:
        roles = [r.get("RoleName") for r in found["InstanceProfile"].get("Roles") or ()]
        others = [r for r in roles if r != name]
        if others:
            raise JobmanError(f"{what} exists and holds role {others[0]}, not {name}; choose another name with --name")
        if name in roles:
            echo(f"{what}: exists (role {name})")
            return
        echo(f"{what}: exists; adding role {name}")
    steps.change("iam", "add_role_to_instance_profile", "AddRoleToInstanceProfile",
                 f"cannot add role {name} to {what}", InstanceProfileName=name, RoleName=name)


def _security_group(steps: _Steps, options: SetupOptions, echo: Callable[[str], None]) -> str | None:
    name = options.name
    if options.vpc_id:
        vpcs = steps.missing("ec2", "describe_vpcs", "InvalidVpcID.NotFound", f"cannot look up VPC {options.vpc_id}",
                             VpcIds=[options.vpc_id])
        if not vpcs or not vpcs.get("Vpcs"):
            raise JobmanError(f"VPC {options.vpc_id} not found in this region")
        vpc_id, kind = options.vpc_id, "VPC"
    else:
        vpcs = steps.read("ec2", "describe_vpcs", "cannot find the default VPC",
                          Filters=[{"Name": "isDefault", "Values": ["true"]}])
        if not vpcs.get("Vpcs"):
            raise JobmanError("this region has no default VPC; pass --vpc-id VPC (and give the daemon --subnet-id)")
        vpc_id, kind = vpcs["Vpcs"][0]["VpcId"], "default VPC"
    what = f"security group {name} in {kind} {vpc_id}"
    groups = steps.read("ec2", "describe_security_groups", f"cannot look up {what}",
                        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])
    existing = [g for g in groups.get("SecurityGroups") or () if g.get("GroupName") == name]
    if existing:
        group = existing[0]
        ingress = group.get("IpPermissions") or []
        if ingress:
            echo(f"{what}: exists ({group['GroupId']}), but has {len(ingress)} ingress rule(s): jobman's instances "
                 "need none; review them")
        else:
            echo(f"{what}: exists ({group['GroupId']}, no ingress)")
        return str(group["GroupId"])
    echo(f"{what}: creating (no ingress; outbound to the registry, CloudWatch Logs and the callback URL)")
    created = steps.change("ec2", "create_security_group", "CreateSecurityGroup", f"cannot create {what}",
                           GroupName=name, VpcId=vpc_id,
                           Description="jobman instances: no ingress, outbound only")
    return str(created["GroupId"]) if created else None
