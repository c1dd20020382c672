"""Job logs in CloudWatch Logs: where they live, and reading or following them (DESIGN.md section 10).

Layout: one log group (``jobman`` unless configured, see :class:`jobman_cli.config.LogSettings`),
created by jobman with a retention, and one stream per job attempt, named by :func:`stream_name`
— the one definition, which the user-data renderer uses too. This module imports no boto3 at the
top (the renderer runs on the ``schedule`` path); the functions that talk to AWS import it.

Reading (:func:`show_job_log`): ``GetLogEvents`` with ``startFromHead``, paging by
``nextForwardToken`` until the token comes back unchanged (CloudWatch's "end of stream" signal; a
page may be empty before the end). Following polls the same way from the last token, checks the
job in the store between polls, and once the job is terminal keeps reading until a poll brings
nothing new after a short settling time (the instance's last lines — the report, the power-off —
are written after its callback). EC2 console output is only a fallback for an attempt whose stream
does not exist while its instance still does, and the fallback says so on stderr.

Errors are one line each: no such job (the store's own error), not launched yet, log not found, and
no permission, which names the IAM action AWS refused (``logs:GetLogEvents`` ...).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .awserrors import PermissionDenied, aws_failure, denied_action, error_code  # noqa: F401  (re-exported)
from .errors import ConfigError, InvalidInput, JobmanError

if TYPE_CHECKING:
    from .config import LogSettings
    from .launchers.base import Launcher
    from .model import Job
    from .service import JobService

#: Seconds between polls while following, and how long to keep reading after the job ended.
FOLLOW_POLL = 1.0
FOLLOW_SETTLE = 3.0


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


@dataclass(frozen=True)
class LogEvent:
    """One line of a job's log. ``timestamp`` is milliseconds since the epoch (``None`` for a line
    of EC2 console output, which has no per-line time)."""

    timestamp: int | None
    message: str
    stream: str

    def to_json(self) -> dict[str, Any]:
        when = None
        if self.timestamp is not None:
            moment = datetime.fromtimestamp(self.timestamp / 1000, tz=timezone.utc)
            when = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        return {"timestamp": when, "message": self.message, "stream": self.stream}


class TokenRejected(InvalidInput):
    """CloudWatch refused a page token given from outside (the API's ``after``): forged, from another
    stream, or expired (CloudWatch keeps them about a day). A 400, not a server fault."""

    def __init__(self) -> None:
        super().__init__("after", "not a token from a previous answer's 'next' (or it expired); start again "
                                  "without after")


class LogNotFound(JobmanError):
    """The stream (or the whole group) does not exist."""


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


# --------------------------------------------------------------------------- reading a stream
class StreamReader:
    """Reads one stream forward from its head (or ``start_time``), remembering where it stopped."""

    def __init__(self, client: Any, group: str, stream: str, *, start_time: int | None = None) -> None:
        self.client = client
        self.group = group
        self.stream = stream
        self.start_time = start_time
        self.token: str | None = None
        self._issued: str | None = None  # the last token CloudWatch gave this reader
        self._last: tuple[int, int] | None = None  # (timestamp, lines seen with it): where to resume
        self._skip = 0

    def pages(self) -> Iterator[list[LogEvent]]:
        """Each page of new events up to the current end of the stream (possibly none).

        Raises :class:`LogNotFound` when the stream or group does not exist.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        while True:
            kwargs: dict[str, Any] = {"logGroupName": self.group, "logStreamName": self.stream, "startFromHead": True}
            if self.token is not None:
                kwargs["nextToken"] = self.token
            if self.start_time is not None:  # with the token too: moto counts positions after the filter
                kwargs["startTime"] = self.start_time
            try:
                page = self.client.get_log_events(**kwargs)
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    raise LogNotFound(f"log not found: no stream {self.stream} in log group {self.group}") from exc
                if error_code(exc) == "InvalidParameterException" and self.token is not None:
                    if self.token != self._issued:
                        raise TokenRejected() from exc
                    self._resume()  # our own token expired (a quiet follow of over a day): go on by time
                    continue
                raise aws_failure(exc, "logs", f"cannot read log stream {self.group}/{self.stream}") from exc
            except BotoCoreError as exc:
                raise aws_failure(exc, "logs", f"cannot read log stream {self.group}/{self.stream}") from exc
            events = self._unseen([LogEvent(int(e["timestamp"]), _line(e.get("message")), self.stream)
                                   for e in page.get("events") or ()])
            token = page.get("nextForwardToken")
            self._issued = token
            if events:
                yield events
            if not token or token == self.token:
                if token:
                    self.token = token
                return
            self.token = token

    def _resume(self) -> None:
        """Restart without a token from the last line's instant, skipping the lines of that
        millisecond already given (lines are in time order within a stream)."""
        self.token = self._issued = None
        if self._last is not None:
            self.start_time, self._skip = self._last

    def _unseen(self, events: list[LogEvent]) -> list[LogEvent]:
        """``events`` minus those already given before a resume; remembers where the last one was."""
        while self._skip and events and events[0].timestamp == self.start_time:
            events.pop(0)
            self._skip -= 1
        self._skip = 0 if events else self._skip
        for event in events:
            stamp = int(event.timestamp or 0)
            seen = self._last[1] + 1 if self._last is not None and self._last[0] == stamp else 1
            self._last = (stamp, seen)
        return events


def _line(message: Any) -> str:
    text = "" if message is None else str(message)
    return text[:-1] if text.endswith("\n") else text


# --------------------------------------------------------------------------- the logs use case
@dataclass(frozen=True)
class LogRequest:
    job_id: int
    attempt: int | None = None
    since_seconds: int | None = None
    follow: bool = False


def choose_attempt(job: "Job", attempt: int | None) -> int:
    """The attempt to show: the one asked for, else the job's current one. One-line errors for a
    job that never launched and for an attempt that does not exist."""
    if job.attempts < 1:
        if job.terminal:
            raise JobmanError(f"job {job.id} never launched (it is {job.status.value}"
                              f"{': ' + job.reason if job.reason else ''}): no instance, no log")
        raise JobmanError(f"job {job.id} has not launched yet (it is {job.status.value}): no instance, no log yet")
    if attempt is None:
        return job.attempts
    if not 1 <= attempt <= job.attempts:
        raise InvalidInput("--attempt", f"job {job.id} has attempt{'s 1 to' if job.attempts > 1 else ''} "
                                        f"{job.attempts} (got {attempt})")
    return attempt


def show_job_log(service: "JobService", request: LogRequest, *, client: Callable[[], Any], group: str,
                 write: Callable[[Sequence[LogEvent]], None], note: Callable[[str], None],
                 launcher: "Callable[[], Launcher] | None" = None, poll: float = FOLLOW_POLL,
                 settle: float = FOLLOW_SETTLE, now: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Print a job attempt's log through ``write`` (a list of events at a time, in order) and
    return the exit code: 0, or with ``follow`` the ``status --wait`` code (0 finished, 1 failed or
    cancelled). ``note`` gets the one-line remarks meant for stderr. ``client`` makes the
    CloudWatch Logs client and ``launcher`` the EC2 launcher, only once they are needed (a job that
    never launched is an error without touching AWS, or importing boto3)."""
    from .model import JobStatus

    job = service.get(request.job_id)
    attempt = choose_attempt(job, request.attempt)
    start = None if request.since_seconds is None else int((now() - request.since_seconds) * 1000)
    logs = client()
    reader = StreamReader(logs, group, stream_name(job.id, attempt), start_time=start)
    waiting_said = False
    ended_at: float | None = None
    while True:
        if request.follow and request.attempt is None and job.attempts > attempt:
            attempt = job.attempts
            note(f"attempt {attempt} of job {job.id} started; following its log")
            reader = StreamReader(logs, group, stream_name(job.id, attempt), start_time=start)
        was_terminal = job.terminal  # read before the drain, so the last drain follows the end
        received = 0
        try:
            for events in reader.pages():
                write(events)
                received += len(events)
        except LogNotFound as missing:
            if request.follow and not was_terminal:
                if not waiting_said:
                    note(f"waiting for log stream {reader.stream} in log group {group} (job {job.id} is "
                         f"{job.status.value})")
                    waiting_said = True
                sleep(poll)
                job = service.get(request.job_id)
                continue
            _console_fallback(job, attempt, missing, reader.stream, group, write, note, launcher)
            return _exit_code(job, request.follow)
        if not request.follow:
            return 0
        if was_terminal:
            ended_at = ended_at if ended_at is not None else time.monotonic()
            if received == 0 and time.monotonic() - ended_at >= settle:
                return 0 if job.status is JobStatus.FINISHED else 1
        sleep(poll)
        job = service.get(request.job_id)


def _exit_code(job: "Job", follow: bool) -> int:
    from .model import JobStatus

    if not follow:
        return 0
    return 0 if job.status is JobStatus.FINISHED else 1


def _console_fallback(job: "Job", attempt: int, missing: LogNotFound, stream: str, group: str,
                      write: Callable[[Sequence[LogEvent]], None], note: Callable[[str], None],
                      launcher: "Callable[[], Launcher] | None") -> None:
    """EC2 console output of the attempt's instance, only when that instance still exists."""
    if job.terminal or attempt != job.attempts:
        reason = (f"log not found: no stream {stream} in log group {group} (attempt {attempt} of job {job.id}: its "
                  "instance never reached CloudWatch Logs, or the log is older than the group's retention)")
    else:
        reason = (f"log not found yet: job {job.id} is {job.status.value} and its instance has not written to "
                  f"stream {stream} in log group {group} yet (use --follow to wait for it)")
    if launcher is None or attempt != job.attempts or not job.instance_id:
        raise LogNotFound(reason) from missing
    ec2 = launcher()
    if job.instance_id not in ec2.describe([job.instance_id]):
        raise LogNotFound(reason) from missing
    note(f"no log stream {stream} in log group {group}; showing the EC2 console output of {job.instance_id} "
         "instead (a late snapshot of the last 64 KiB, gone with the instance)")
    output = ec2.console_output(job.instance_id)
    if not output:
        note(f"no console output from {job.instance_id} yet; EC2 publishes it a few minutes after boot")
        return
    write([LogEvent(None, line, f"console:{job.instance_id}") for line in output.splitlines()])
