"""Reading or following a job attempt's log in CloudWatch Logs (DESIGN.md section 10).

Where the logs live (the group, one stream per attempt: :func:`~jobman_cli.loggroup.stream_name`)
and setting that up are :mod:`jobman_cli.loggroup`'s; this module reads. Its names are importable
from here too, as they were before the split. No boto3 at the top (the user-data renderer imports
:func:`stream_name` from here on the ``schedule`` path); the functions that talk to AWS import it.

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

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .awserrors import PermissionDenied, aws_failure, denied_action, error_code
from .errors import InvalidInput, JobmanError
from .loggroup import (LogTarget, client_config, ensure_log_group, find_log_group, job_log_target, logs_client,
                       make_session, prepare_log_group, size_probe_target, stream_name)

if TYPE_CHECKING:
    from .launchers.base import Launcher
    from .model import Job
    from .service import JobService

# What the CLI, the API, the daemon, the renderer and the tests import from here; the group's
# names (:mod:`.loggroup`) and the AWS error helpers (:mod:`.awserrors`) are re-exported.
__all__ = ["FOLLOW_POLL", "FOLLOW_SETTLE", "LogEvent", "LogNotFound", "LogRequest", "StreamReader", "TokenRejected",
           "choose_attempt", "show_job_log",
           "LogTarget", "client_config", "ensure_log_group", "find_log_group", "job_log_target", "logs_client",
           "make_session", "prepare_log_group", "size_probe_target", "stream_name",
           "PermissionDenied", "aws_failure", "denied_action", "error_code"]

#: Seconds between polls while following, and how long to keep reading after the job ended.
FOLLOW_POLL = 1.0
FOLLOW_SETTLE = 3.0


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
