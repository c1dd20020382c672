"""Where job logs live in CloudWatch Logs, and setting that up (DESIGN.md section 10).

Layout: one log group (``jobman`` unless configured, see :class:`jobman_cli.config.LogSettings`),
created by jobman with a retention, and one stream per job attempt, named by :func:`stream_name`
— the one definition, which the user-data renderer and the reader (:mod:`jobman_cli.joblogs`) use.

Why a module apart from the reader: this is the writing side's contract and the daemon's start-up
(the group and its retention, :func:`prepare_log_group`; what every instance is told,
:func:`job_log_target`; the user-data size probe, :func:`size_probe_target`) and ``jobman setup
aws``'s log-group step, none of which reads a log. It imports no boto3 at the top (the renderer
runs on the ``schedule`` path); the functions that talk to AWS import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .awserrors import aws_failure, error_code
from .errors import ConfigError, JobmanError

if TYPE_CHECKING:
    from .config import LogSettings


def stream_name(job_id: int, attempt: int) -> str:
    """The CloudWatch Logs stream of one attempt of a job: ``jobs/<job-id>/attempt-<n>``.

    (Job id and attempt 0 only occur in the renderer's size probes of unsaved drafts.)"""
    job_id, attempt = int(job_id), int(attempt)
    if job_id < 0 or attempt < 0:
        raise ValueError(f"stream_name needs a job id and an attempt >= 0 (got {job_id}, {attempt})")
    return f"jobs/{job_id}/attempt-{attempt}"


@dataclass(frozen=True)
class LogTarget:
    """Where an instance sends its job's log; rendered into the user-data by the launcher.

    ``region`` is the instance's (the daemon's) region; ``endpoint_url`` replaces the regional
    CloudWatch Logs endpoint (Docker's ``awslogs-endpoint`` and the AWS CLI's ``--endpoint-url``),
    for a VPC endpoint or an emulator in tests; ``None``: AWS's own.
    """

    group: str
    region: str
    endpoint_url: str | None = None


# --------------------------------------------------------------------------- clients and the group
def make_session(region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 session the way the launcher makes one (``AWS_REGION`` honoured; botocore alone only
    reads ``AWS_DEFAULT_REGION``)."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session(profile_name=profile, region_name=region or os.environ.get("AWS_REGION") or None)
    except BotoCoreError as exc:
        raise aws_failure(exc, "sts", "cannot load the AWS configuration") from exc


def client_config() -> Any:
    from botocore.config import Config

    return Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 3},
                  user_agent_extra="jobman")


def logs_client(settings: "LogSettings | None" = None, *, region: str | None = None, profile: str | None = None,
                endpoint_url: str | None = None, session: Any = None) -> Any:
    """A CloudWatch Logs client for the operator's side (``jobman logs``, the daemon's start).

    Endpoint: ``AWS_ENDPOINT_URL_LOGS``/``AWS_ENDPOINT_URL`` when set (botocore reads them), else
    ``endpoint_url``, else the configured Logs endpoint (``[logs] endpoint_url``), else AWS's.
    """
    from botocore.exceptions import BotoCoreError

    if os.environ.get("AWS_ENDPOINT_URL_LOGS") or os.environ.get("AWS_ENDPOINT_URL"):
        endpoint_url = None
    elif endpoint_url is None and settings is not None:
        endpoint_url = settings.endpoint_url
    session = session or make_session(region, profile)
    try:
        return session.client("logs", endpoint_url=endpoint_url, config=client_config())
    except BotoCoreError as exc:
        raise aws_failure(exc, "logs", "cannot configure the CloudWatch Logs client") from exc


def find_log_group(client: Any, group: str) -> dict[str, Any] | None:
    """The group's description (``retentionInDays`` absent: never expires), or ``None``."""
    kwargs: dict[str, Any] = {"logGroupNamePrefix": group}
    while True:
        page = client.describe_log_groups(**kwargs)
        for found in page.get("logGroups") or ():
            if found.get("logGroupName") == group:
                return found
        token = page.get("nextToken")
        if not token or token == kwargs.get("nextToken"):
            return None
        kwargs["nextToken"] = token


def ensure_log_group(client: Any, group: str, retention_days: int) -> str:
    """Create the job-log group with its retention if it is missing; set the retention if it differs.

    Returns what was done: ``"created"``, ``"retention-set"`` or ``"exists"``. Safe to call from
    several daemons at once (a concurrent creation counts as existing). AWS errors are raised as
    one-line :class:`JobmanError` (:class:`PermissionDenied` naming the action).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = find_log_group(client, group)
        outcome = "exists"
        if found is None:
            try:
                client.create_log_group(logGroupName=group)
                outcome = "created"
            except ClientError as exc:
                if error_code(exc) != "ResourceAlreadyExistsException":
                    raise
                found = find_log_group(client, group) or {}
        if found is None or found.get("retentionInDays") != retention_days:
            client.put_retention_policy(logGroupName=group, retentionInDays=retention_days)
            outcome = "created" if outcome == "created" else "retention-set"
        return outcome
    except (ClientError, BotoCoreError) as exc:
        raise aws_failure(exc, "logs", f"cannot set up log group {group}") from exc


def prepare_log_group(ec2: Any, settings: "LogSettings | None" = None, *, client: Any = None) -> str:
    """The daemon's start-up hook: make sure the job-log group exists with its retention, and
    return the one line to log. Never raises for AWS trouble: log delivery must not decide whether
    jobs run, so a refusal (say, no ``logs:CreateLogGroup``) becomes a warning line naming it.

    ``ec2`` is the daemon's :class:`~jobman_cli.launchers.base.EC2Settings` (region, profile and
    endpoint are shared with the launcher).
    """
    from .config import log_settings

    try:
        settings = settings or log_settings()
        logs = client or logs_client(region=ec2.region, profile=ec2.profile,
                                     endpoint_url=settings.endpoint_url)
        outcome = ensure_log_group(logs, settings.group, settings.retention_days)
    except JobmanError as exc:
        return (f"job logs: WARNING: {exc}; jobs still run, but their logs may be lost "
                "(create the group with `jobman setup aws`)")
    done = {"created": "created", "retention-set": "retention set", "exists": "exists"}[outcome]
    return (f"job logs: CloudWatch Logs group {settings.group} ({done}; retention "
            f"{settings.retention_days} days), one stream per job attempt: jobs/<job-id>/attempt-<n>")


def job_log_target(ec2: Any, settings: "LogSettings | None" = None) -> LogTarget:
    """What the daemon renders into every user-data (resolved once, at its start).

    Region: the launcher's (``ec2.region``, else ``AWS_REGION``/the AWS profile). Endpoint the
    instance uses: ``[logs] endpoint_url``/``JOBMAN_LOG_ENDPOINT``, else ``AWS_ENDPOINT_URL_LOGS``,
    else ``AWS_ENDPOINT_URL`` (an emulator serves all services on one URL), else AWS's regional
    endpoint. Never ``[ec2] endpoint_url``: that may be a VPC or FIPS endpoint of EC2 alone, and the
    instances' log lines would all be refused there.
    """
    from .config import log_settings

    settings = settings or log_settings()
    region = make_session(ec2.region, ec2.profile).region_name
    if not region:
        raise ConfigError("no AWS region configured (set AWS_REGION or AWS_DEFAULT_REGION, or a region in your "
                          "AWS profile)")
    endpoint = (settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_LOGS") or os.environ.get("AWS_ENDPOINT_URL")
                or None)
    return LogTarget(group=settings.group, region=region, endpoint_url=endpoint.rstrip("/") if endpoint else None)


def size_probe_target() -> LogTarget:
    """A :class:`LogTarget` at least as long as the one the daemon renders, for the user-data size
    checks at schedule time and at daemon start: the configured group, the longest region name,
    and the configured endpoint or a 100-character one (an emulator's, a VPC endpoint's)."""
    from .config import log_settings

    settings = log_settings()
    endpoint = settings.endpoint_url or ""
    if len(endpoint) < 100:
        endpoint = "https://" + "x" * 92
    return LogTarget(group=settings.group, region="xx-xxxxxxxxx-1", endpoint_url=endpoint)
