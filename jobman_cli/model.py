"""The job model: states, the only transitions that exist, and the one serializer.

A :class:`Job` is immutable. Every change is a method that checks the transition is allowed and
returns a new ``Job`` (with ``version`` bumped), so the rules live here and nowhere else: the CLI,
the HTTP API and the daemon all go through these methods, and a store only persists their results.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from .errors import InvalidInput, TransitionNotAllowed
from .notify.targets import DEFAULT_NOTIFY_ON, redact

UTC = timezone.utc


class JobStatus(str, enum.Enum):
    SCHEDULED = "scheduled"
    LAUNCHING = "launching"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:  # click and f-strings show the plain value
        return self.value


TERMINAL_STATES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATES = frozenset({JobStatus.LAUNCHING, JobStatus.RUNNING})

#: Every transition that exists. Two steps go back to ``scheduled``: ``launching -> scheduled``, a
#: retryable launch error (or every rung of the launch ladder refused) returns the claim with a
#: backoff so another attempt can be made; and ``running``/``launching -> scheduled`` for one case
#: only, a spot interruption reported while the job's interruption budget lasts
#: (:meth:`Job.reported` with ``interrupted``), so the job is relaunched at once.
ALLOWED_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SCHEDULED: frozenset({JobStatus.LAUNCHING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.LAUNCHING: frozenset(
        {JobStatus.RUNNING, JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SCHEDULED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SCHEDULED}),
    JobStatus.FINISHED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

#: Statuses an instance (or an operator acting for it) may report through the callback.
CALLBACK_STATUSES = ("running", "finished", "failed")


class ReasonCode(str, enum.Enum):
    """Why a job ended, for machines (DESIGN.md section 9). ``reason`` says it for people."""

    EXITED = "exited"
    TIMED_OUT = "timed-out"
    IMAGE_PULL_FAILED = "image-pull-failed"
    DOCKER_UNAVAILABLE = "docker-unavailable"
    SECRET_UNAVAILABLE = "secret-unavailable"
    LAUNCH_FAILED = "launch-failed"
    MISSED_START_DEADLINE = "missed-start-deadline"
    INTERRUPTED = "interrupted"
    INSTANCE_VANISHED = "instance-vanished"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


_CODE_VALUES = frozenset(code.value for code in ReasonCode)
#: The codes an instance may report in a ``failed`` callback: what only the instance can know.
INSTANCE_REASON_CODES = frozenset({
    ReasonCode.EXITED, ReasonCode.TIMED_OUT, ReasonCode.IMAGE_PULL_FAILED, ReasonCode.DOCKER_UNAVAILABLE,
    ReasonCode.SECRET_UNAVAILABLE, ReasonCode.INTERRUPTED,
})
#: A reported ``reason`` is clipped to this many characters (docker's messages can be long).
MAX_REPORTED_REASON = 500


def parse_reason_code(value: Any, field_name: str = "reason-code") -> ReasonCode:
    """An instance-reportable reason code, or InvalidInput naming the allowed ones."""
    allowed = sorted(code.value for code in INSTANCE_REASON_CODES)
    if isinstance(value, str):
        try:
            code = ReasonCode(value)
        except ValueError:
            code = None
        if code in INSTANCE_REASON_CODES:
            return code  # type: ignore[return-value]
    raise InvalidInput(field_name, f"must be one of {', '.join(allowed)} (got {value!r})")


def infer_reason_code(status: "JobStatus", reason: str | None, exit_code: int | None) -> ReasonCode | None:
    """The code of a terminal job stored before reason codes existed, read from its words."""
    if status is JobStatus.FINISHED:
        return ReasonCode.EXITED
    if status is JobStatus.CANCELLED:
        return ReasonCode.CANCELLED
    if status is not JobStatus.FAILED:
        return None
    text = (reason or "").lower()
    for needle, code in (("missed start deadline", ReasonCode.MISSED_START_DEADLINE),
                         ("timed out", ReasonCode.TIMED_OUT),
                         ("vanished", ReasonCode.INSTANCE_VANISHED),
                         ("launch error", ReasonCode.LAUNCH_FAILED)):
        if needle in text:
            return code
    if exit_code is not None or text.startswith(("exit code", "container failed")):
        return ReasonCode.EXITED
    return None


def hash_callback_token(token: str) -> str:
    """What a store keeps of a callback token: its SHA-256, hex. The token itself is 32 random
    bytes, so a plain hash is enough (nothing to brute-force), and a reader of the store who sees
    the hash cannot present it as the token."""
    return hashlib.sha256(token.encode("utf-8", "backslashreplace")).hexdigest()


def callback_token_matches(token: str, hashes: "tuple[str, ...] | list[str]") -> bool:
    """Constant-time check of a presented token against an attempt's stored hashes."""
    presented = hash_callback_token(token).encode()
    matched = False
    for expected in hashes:
        # compare every hash (no early exit) so the time says nothing about which one matched
        matched |= bool(expected) and hmac.compare_digest(presented, str(expected).encode())
    return matched

DEFAULT_TIMEOUT = 3600
DEFAULT_START_DEADLINE = 3600


def parse_status(value: str, field_name: str = "status") -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise InvalidInput(field_name, f"must be one of {allowed} (got {value!r})") from None


@dataclass(frozen=True)
class Job:
    """One scheduled container run. ``id == 0`` means "not stored yet" (a draft)."""

    id: int
    title: str
    date_time: datetime
    docker_image: str
    env_variables: Mapping[str, str]
    status: JobStatus
    created_at: datetime
    timeout: int = DEFAULT_TIMEOUT
    start_deadline: int = DEFAULT_START_DEADLINE
    instance_type: str | None = None
    idempotency_key: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    reason_code: ReasonCode | None = None
    #: The container's command (``docker run IMAGE CMD...``) and entrypoint; None: the image's own.
    command: tuple[str, ...] | None = None
    entrypoint: str | None = None
    #: The root volume's size in GiB; None: the AMI's default.
    disk_gb: int | None = None
    #: Secrets by reference: NAME -> ``ssm:...`` / ``secretsmanager:...`` (see :mod:`secretrefs`).
    #: Never a value: the instance reads it with its own role just before ``docker run``.
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: Whether the container may reach the instance metadata service (and so the instance's
    #: credentials): IMDS hop limit 2 instead of 1.
    container_imds: bool = False
    #: Notification targets (see :mod:`jobman_cli.notify.targets`; a URL may be a credential, so the
    #: public JSON shows them redacted) and which ends they are told about (``failure`` | ``end``).
    notify: tuple[str, ...] = ()
    notify_on: str = DEFAULT_NOTIFY_ON
    #: One record per notification owed once terminal (see :mod:`jobman_cli.notify.deliveries`).
    deliveries: tuple[Mapping[str, Any], ...] = ()
    # Capacity and cost (DESIGN.md section 13). ``instance_type`` may be a preference list
    # ("m7i.large,m6i.large"); ``placement`` is the rung that launched the current attempt:
    # {"instance-type", "availability-zone", "subnet-id", "market"}.
    subnet_ids: tuple[str, ...] = ()
    capacity: str = "on-demand"
    max_interruptions: int = 3
    interruptions: int = 0
    max_cost: float | None = None
    placement: Mapping[str, Any] | None = None
    #: When the last spot interruption sent the job back to ``scheduled``: its relaunch has a
    #: start deadline counted from then, not from ``date_time`` (see :attr:`start_by`).
    interrupted_at: datetime | None = None
    #: USD, set once when the job has ended; None with ``cost_basis`` "unknown: why" when no price was found.
    cost: float | None = None
    cost_basis: str | None = None
    #: The runs of earlier attempts that spot interruptions ended (oldest first), kept because the
    #: relaunch clears ``instance_id``/``launched_at``/``placement`` yet each run was billed:
    #: ``{"instance-id", "placement", "launched-at", "ended-at"}`` (times as :func:`format_time`).
    past_runs: tuple[Mapping[str, Any], ...] = ()
    # Recurring schedules (DESIGN.md section 14): the schedule that created this job, and the
    # occurrence (nominal instant, UTC) it is the run of.
    schedule_id: int | None = None
    occurrence: datetime | None = None
    #: SHA-256 hashes of the callback tokens valid for the current attempt (see
    #: :func:`hash_callback_token`). Reset by every new attempt, so an instance of an abandoned
    #: attempt cannot report; more than one only when a take-over relaunched the same attempt.
    callback_hashes: tuple[str, ...] = ()
    instance_id: str | None = None
    attempts: int = 0
    launch_token: str | None = None
    #: The rung of the launch ladder the current attempt is sending (0: the first). Stored before a
    #: rung ``k > 0`` is sent, so a daemon taking over a dead daemon's launch resumes there (tag
    #: lookup, then rung ``k``'s ``ClientToken``) instead of sending rung 0 beside an instance of
    #: rung ``k`` that a lagging lookup missed. Reset by every new attempt.
    rung: int = 0
    #: Launch attempts that failed with a retryable error (counted against the daemon's
    #: ``max_attempts``). ``attempts`` also counts relaunches after spot interruptions and passes
    #: where every rung was refused for capacity; neither is a failed launch.
    launch_failures: int = 0
    launched_at: datetime | None = None
    #: When the current attempt was claimed (scheduled -> launching), and when its instance first
    #: reported ``running`` (the container is starting): the dashboard's timeline.
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    not_before: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    # ----------------------------------------------------------------- derived facts
    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def due_at(self) -> datetime:
        """When the daemon may next try to launch it (the schedule, or a retry's backoff)."""
        if self.not_before is not None and self.not_before > self.date_time:
            return self.not_before
        return self.date_time

    @property
    def start_by(self) -> datetime:
        """The latest time a launch may start: ``start_deadline`` after ``date_time``, or after the
        last spot interruption (a relaunch of a job that ran for hours is not late)."""
        base = self.date_time
        if self.interrupted_at is not None and self.interrupted_at > base:
            base = self.interrupted_at
        return base + timedelta(seconds=self.start_deadline)

    def fingerprint(self) -> tuple:
        """The fields a client chose; two schedule requests with one idempotency key must agree."""
        return (
            self.title,
            self.date_time,
            self.docker_image,
            tuple(sorted(self.env_variables.items())),
            self.timeout,
            self.start_deadline,
            self.instance_type,
            self.command,
            self.entrypoint,
            self.disk_gb,
            tuple(sorted(self.secrets.items())),
            self.container_imds,
            self.notify,
            self.notify_on,
            self.subnet_ids,
            self.capacity,
            self.max_interruptions,
            self.max_cost,
            self.schedule_id,
            self.occurrence,
        )

    # ----------------------------------------------------------------- transitions
    def _to(self, status: JobStatus, now: datetime, **changes: Any) -> "Job":
        if status not in ALLOWED_TRANSITIONS[self.status]:
            raise TransitionNotAllowed(f"job {self.id} is {self.status.value}; cannot become {status.value}")
        if status in TERMINAL_STATES and "finished_at" not in changes:
            changes["finished_at"] = now
        return dataclasses.replace(self, status=status, updated_at=now, version=self.version + 1, **changes)

    def claimed(self, now: datetime, launch_token: str, callback_hash: str | None = None) -> "Job":
        """scheduled -> launching: the intent to launch is persisted before AWS is called.

        ``callback_hash`` is the hash of the new attempt's callback token; it replaces every
        earlier attempt's, so only this attempt's instance can report (None: no instance can;
        the operator's ``jobman callback`` still can)."""
        return self._to(JobStatus.LAUNCHING, now, attempts=self.attempts + 1, launch_token=launch_token,
                        not_before=None, callback_hashes=(callback_hash,) if callback_hash else (),
                        claimed_at=now, started_at=None, rung=0)

    def at_rung(self, rung: int, now: datetime) -> "Job":
        """The launching attempt is about to send rung ``rung`` of its ladder (no change of state)."""
        if self.status is not JobStatus.LAUNCHING:
            raise TransitionNotAllowed(f"job {self.id} is {self.status.value}; cannot move its launch ladder")
        return dataclasses.replace(self, rung=rung, updated_at=now, version=self.version + 1)

    def with_callback_hash(self, callback_hash: str) -> "Job":
        """Accept one more token for the current attempt (a take-over re-rendered its user-data;
        the first launcher's instance, if its request did land, keeps its own token)."""
        if callback_hash in self.callback_hashes:
            return self
        return dataclasses.replace(self, callback_hashes=self.callback_hashes + (callback_hash,))

    def launched(self, instance_id: str, now: datetime, placement: Mapping[str, Any] | None = None) -> "Job":
        """Record the instance (and ``placement``, the rung of the launch ladder it runs on). Also
        valid on a job the instance already reported ``running``."""
        where = dict(placement) if placement is not None else self.placement
        if self.status is JobStatus.RUNNING and self.instance_id in (None, instance_id):
            return dataclasses.replace(self, instance_id=instance_id, launched_at=self.launched_at or now,
                                       placement=where, updated_at=now, version=self.version + 1)
        if self.status is not JobStatus.LAUNCHING:
            raise TransitionNotAllowed(f"job {self.id} is {self.status.value}; cannot record a launch")
        return self._to(JobStatus.RUNNING, now, instance_id=instance_id, launched_at=now, placement=where)

    def attach_instance(self, instance_id: str, now: datetime) -> "Job":
        """Remember the instance of a job that ended before its launch was recorded."""
        return dataclasses.replace(self, instance_id=instance_id, updated_at=now, version=self.version + 1)

    def retry_later(self, reason: str, not_before: datetime, now: datetime, *, failed: bool = False) -> "Job":
        """launching -> scheduled after a retryable launch error, not before ``not_before``.
        ``failed``: the launch failed (counted in ``launch_failures``); else nothing was tried or
        only capacity refused it, which ``max_attempts`` does not limit."""
        if self.status is not JobStatus.LAUNCHING:
            raise TransitionNotAllowed(f"job {self.id} is {self.status.value}; cannot retry")
        return self._to(JobStatus.SCHEDULED, now, reason=reason, not_before=not_before, launch_token=None,
                        callback_hashes=(), launch_failures=self.launch_failures + (1 if failed else 0))

    def with_cost(self, cost: float | None, basis: str, now: datetime) -> "Job":
        """The cost receipt of an ended job: ``cost`` in USD (None when no price could be found, with
        ``basis`` saying why). No change of state."""
        return dataclasses.replace(self, cost=cost, cost_basis=basis, updated_at=now, version=self.version + 1)

    def failed(self, reason: str, now: datetime, code: ReasonCode, exit_code: int | None = None) -> "Job":
        """-> failed, with a human ``reason`` and the machine ``code`` (section 9)."""
        return self._to(JobStatus.FAILED, now, reason=reason, reason_code=ReasonCode(code), exit_code=exit_code)

    def cancelled(self, now: datetime, reason: str = "cancelled by operator") -> "Job":
        if self.status is JobStatus.CANCELLED:
            return self
        return self._to(JobStatus.CANCELLED, now, reason=reason, reason_code=ReasonCode.CANCELLED)

    def reported(self, status: str, exit_code: int | None, now: datetime, reason_code: Any = None,
                 reason: Any = None) -> "Job":
        """Apply a completion callback (``running``, ``finished`` or ``failed``).

        ``running`` on a running job and a repeat of the same terminal report are no-ops (the
        instance retries its curl). Anything else that does not move forward is refused (409).
        A ``failed`` report may say why (``reason_code``, one of :data:`INSTANCE_REASON_CODES`,
        and a short ``reason``); without one it is ``exited`` with the exit code, as the original
        service's body always was. A ``finished`` report may carry a ``reason`` too (the instance's
        note that the job's log is incomplete); the job still finished.
        """
        if status not in CALLBACK_STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(CALLBACK_STATUSES)} (got {status!r})")
        if exit_code is not None:
            if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255:
                raise InvalidInput("exit-code", f"must be an integer from 0 to 255 (got {exit_code!r})")
        if status == "finished" and exit_code not in (None, 0):
            raise InvalidInput("exit-code", "must be 0 when status is finished (report failed instead)")
        if status == "failed" and exit_code == 0:
            raise InvalidInput("exit-code", "must not be 0 when status is failed (report finished instead)")
        code = None if reason_code is None else parse_reason_code(reason_code)
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("reason", "must be a string")
        if code is not None and status != "failed" and not (status == "finished" and code is ReasonCode.EXITED):
            raise InvalidInput("reason-code", f"goes with status failed (got status {status!r})")
        if reason is not None and status == "running":  # finished: e.g. "log incomplete (...)"
            raise InvalidInput("reason", "goes with status finished or failed (got status 'running')")
        told = _printable(reason or "")[:MAX_REPORTED_REASON]

        if status == "running":
            if self.status is JobStatus.RUNNING:
                if self.started_at is not None:
                    return self  # the instance repeated its report
                # The first report of this attempt: no change of state, only when it came.
                return dataclasses.replace(self, started_at=now, updated_at=now, version=self.version + 1)
            if self.status is JobStatus.LAUNCHING:
                return self._to(JobStatus.RUNNING, now, launched_at=self.launched_at or now, started_at=now)
            raise TransitionNotAllowed(f"job {self.id} is {self.status.value}; cannot become running")

        if status == "finished":
            target, stored_code, words, code = JobStatus.FINISHED, 0, told or None, ReasonCode.EXITED
        else:
            target, stored_code = JobStatus.FAILED, exit_code
            code = code or ReasonCode.EXITED
            words = _reported_reason(code, exit_code, told)

        if self.terminal:
            if (self.status is target and (exit_code is None or exit_code == self.exit_code)
                    and (reason_code is None or self.reason_code in (None, code))):
                return self  # the instance repeated its report
            raise TransitionNotAllowed(f"job {self.id} is already {self.status.value}; cannot become {status}")
        if self.status is JobStatus.SCHEDULED:
            raise TransitionNotAllowed(f"job {self.id} is scheduled and has not been launched; cannot become {status}")
        if code is ReasonCode.INTERRUPTED:
            return self._interrupted(words, now)
        return self._to(target, now, exit_code=stored_code, reason=words, reason_code=code)

    def _interrupted(self, words: str, now: datetime) -> "Job":
        """A spot interruption (the instance stopped the container on EC2's notice). Within the
        budget (``interruptions < max_interruptions``): back to ``scheduled``, due now, with a new
        attempt to come (no callback token, no instance: the old one is being reclaimed and the
        reaper ends it), and a start deadline counted from now. Budget spent: ``failed``,
        ``interrupted``. Only this path moves a ``running`` job back to ``scheduled``."""
        count = self.interruptions + 1
        if self.interruptions < self.max_interruptions:
            reason = f"{words} (interruption {count} of at most {self.max_interruptions}; relaunching)"
            runs = self.past_runs
            if self.instance_id is not None or self.launched_at is not None:  # what the cost receipt must price
                runs += ({"instance-id": self.instance_id,
                          "placement": dict(self.placement) if self.placement is not None else None,
                          "launched-at": format_time(self.launched_at), "ended-at": format_time(now)},)
            return self._to(JobStatus.SCHEDULED, now, reason=reason, reason_code=None, exit_code=None,
                            interruptions=count, interrupted_at=now, not_before=now, launch_token=None,
                            callback_hashes=(), instance_id=None, launched_at=None, placement=None,
                            past_runs=runs)
        reason = f"{words} (interruption {count}; the budget of {self.max_interruptions} is spent)"
        return self._to(JobStatus.FAILED, now, reason=reason, reason_code=ReasonCode.INTERRUPTED, exit_code=None,
                        interruptions=count)


def _printable(text: str) -> str:
    """An instance's words made safe to store and print: every control, format (bidi) or other
    non-printable character becomes a space, runs of white space one space. A reason comes from
    whoever holds an attempt's token; it must not be able to drive an operator's terminal."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _reported_reason(code: ReasonCode, exit_code: int | None, told: str) -> str:
    """The human reason of a ``failed`` report: the instance's words, or what the code means."""
    if code is ReasonCode.EXITED:
        base = f"exit code {exit_code}" if exit_code is not None else "container failed (no exit code reported)"
        return f"{base}: {told}" if told else base
    default = {
        ReasonCode.TIMED_OUT: "timed out: the container was stopped",
        ReasonCode.IMAGE_PULL_FAILED: "the image could not be pulled",
        ReasonCode.DOCKER_UNAVAILABLE: "Docker could not be installed or started on the instance",
        ReasonCode.SECRET_UNAVAILABLE: "a secret could not be read on the instance",
        ReasonCode.INTERRUPTED: "the spot instance was interrupted",
    }.get(code, code.value)
    return f"{default}: {told}" if told else default


# --------------------------------------------------------------------- serialization
def format_time(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z``; milliseconds only when there are any."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def job_to_api(job: Job) -> dict[str, Any]:
    """The public JSON shape (DESIGN.md section 4), shared by ``--json`` and the REST API.

    Secrets (the callback token) and bookkeeping (launch token, version) are never included.
    """
    return {
        "id": job.id,
        "title": job.title,
        "date-time": format_time(job.date_time),
        "docker-image": job.docker_image,
        "env-variables": dict(job.env_variables),
        "status": job.status.value,
        "exit-code": job.exit_code,
        "reason": job.reason,
        "reason-code": job.reason_code.value if job.reason_code is not None else None,
        "instance-id": job.instance_id,
        "attempts": job.attempts,
        "created-at": format_time(job.created_at),
        "launched-at": format_time(job.launched_at),
        "claimed-at": format_time(job.claimed_at),
        "started-at": format_time(job.started_at),
        "finished-at": format_time(job.finished_at),
        "timeout": job.timeout,
        "start-deadline": job.start_deadline,
        "instance-type": job.instance_type,
        "command": list(job.command) if job.command is not None else None,
        "entrypoint": job.entrypoint,
        "disk-gb": job.disk_gb,
        "secrets": dict(job.secrets),
        "container-imds": job.container_imds,
        "notify": [redact(target) for target in job.notify],
        "notify-on": job.notify_on,
        "notifications": [dict(record) for record in job.deliveries],
        "subnet-ids": list(job.subnet_ids),
        "capacity": job.capacity,
        "max-interruptions": job.max_interruptions,
        "interruptions": job.interruptions,
        "max-cost": job.max_cost,
        "placement": dict(job.placement) if job.placement is not None else None,
        "cost": job.cost,
        "cost-basis": job.cost_basis,
        "past-runs": [dict(run) for run in job.past_runs],
        "schedule-id": job.schedule_id,
        "occurrence": format_time(job.occurrence),
    }


#: The public keys, in the order :func:`job_to_api` emits them.
API_KEYS = (
    "id", "title", "date-time", "docker-image", "env-variables", "status", "exit-code", "reason",
    "reason-code", "instance-id", "attempts", "created-at", "launched-at", "claimed-at", "started-at", "finished-at",
    "timeout",
    "start-deadline", "instance-type", "command", "entrypoint", "disk-gb", "secrets", "container-imds",
    "notify", "notify-on", "notifications",
    "subnet-ids", "capacity", "max-interruptions", "interruptions", "max-cost", "placement", "cost", "cost-basis",
    "past-runs", "schedule-id", "occurrence",
)


def record_to_api(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`job_to_api` of a stored record, without building the :class:`Job` in between.

    A record is ``job_to_api``'s dict plus private keys (see :func:`job_to_record`), so projecting
    the public keys gives the same JSON. Bulk output (``list --json``, ``GET /jobs``) uses this:
    the round trip through ``Job`` costs ~30 µs a job, 300 ms at 10,000 jobs. Defaults match
    :func:`job_from_record` for records that leave empty fields out.
    """
    api = {key: record.get(key) for key in API_KEYS}
    JobStatus(api["status"])  # ValueError for a record that is not a job's (the caller names the store)
    api["title"] = api["title"] or ""
    api["env-variables"] = dict(api["env-variables"] or {})
    api["attempts"] = int(api["attempts"] or 0)
    api["timeout"] = int(api["timeout"] or DEFAULT_TIMEOUT)
    api["start-deadline"] = int(api["start-deadline"] or DEFAULT_START_DEADLINE)
    api["id"] = int(api["id"])
    api["secrets"] = dict(api["secrets"] or {})
    api["container-imds"] = bool(api["container-imds"])
    api["notify"] = list(api["notify"] or [])
    api["notify-on"] = api["notify-on"] or DEFAULT_NOTIFY_ON
    api["notifications"] = list(api["notifications"] or [])
    api["subnet-ids"] = list(api["subnet-ids"] or [])
    api["capacity"] = api["capacity"] or "on-demand"
    api["max-interruptions"] = int(api["max-interruptions"] if api["max-interruptions"] is not None else 3)
    api["interruptions"] = int(api["interruptions"] or 0)
    api["past-runs"] = [dict(run) for run in api["past-runs"] or () if isinstance(run, Mapping)]
    if api["reason-code"] is None:  # stored before reason codes existed
        code = infer_reason_code(JobStatus(api["status"]), api["reason"], api["exit-code"])
        api["reason-code"] = code.value if code is not None else None
    return api


def job_to_record(job: Job) -> dict[str, Any]:
    """What a store persists: the public shape plus the private bookkeeping fields."""
    record = job_to_api(job)
    record.update(
        {
            "callback-hashes": list(job.callback_hashes),
            "notify-targets": list(job.notify),
            "idempotency-key": job.idempotency_key,
            "launch-token": job.launch_token,
            "rung": job.rung or None,  # None: left out of a DynamoDB item (most jobs never climb)
            "launch-failures": job.launch_failures or None,
            "not-before": format_time(job.not_before),
            "interrupted-at": format_time(job.interrupted_at),
            "updated-at": format_time(job.updated_at),
            "version": job.version,
        }
    )
    if job.extra:
        record.update(job.extra)
    return record


_KNOWN_KEYS = frozenset(API_KEYS) | {
    "callback-hashes", "callback-token", "idempotency-key", "notify-targets", "launch-token", "not-before", "updated-at", "version",
    "interrupted-at", "rung", "launch-failures",
}


def job_from_record(record: Mapping[str, Any]) -> Job:
    """Inverse of :func:`job_to_record`. Unknown keys survive in ``extra`` (forward compatibility)."""
    extra = {k: v for k, v in record.items() if k not in _KNOWN_KEYS}
    status = JobStatus(record["status"])
    hashes = tuple(record.get("callback-hashes") or ())
    if not hashes and record.get("callback-token"):  # stored in clear before 0.2: keep it working
        hashes = (hash_callback_token(record["callback-token"]),)
    code = record.get("reason-code")
    command = record.get("command")
    return Job(
        id=int(record["id"]),
        title=record.get("title") or "",
        date_time=parse_time(record["date-time"]),  # type: ignore[arg-type]
        docker_image=record["docker-image"],
        env_variables=dict(record.get("env-variables") or {}),
        status=status,
        created_at=parse_time(record["created-at"]),  # type: ignore[arg-type]
        timeout=int(record.get("timeout") or DEFAULT_TIMEOUT),
        start_deadline=int(record.get("start-deadline") or DEFAULT_START_DEADLINE),
        instance_type=record.get("instance-type"),
        idempotency_key=record.get("idempotency-key"),
        exit_code=record.get("exit-code"),
        reason=record.get("reason"),
        reason_code=(ReasonCode(code) if code in _CODE_VALUES else  # unknown: a newer jobman wrote it
                     infer_reason_code(status, record.get("reason"), record.get("exit-code"))),
        command=tuple(command) if command is not None else None,
        entrypoint=record.get("entrypoint"),
        disk_gb=int(record["disk-gb"]) if record.get("disk-gb") is not None else None,
        secrets=dict(record.get("secrets") or {}),
        container_imds=bool(record.get("container-imds")),
        notify=tuple(record.get("notify-targets") or ()),
        notify_on=record.get("notify-on") or DEFAULT_NOTIFY_ON,
        deliveries=tuple(dict(r) for r in record.get("notifications") or () if isinstance(r, dict)),
        subnet_ids=tuple(record.get("subnet-ids") or ()),
        capacity=record.get("capacity") or "on-demand",
        max_interruptions=int(record["max-interruptions"]) if record.get("max-interruptions") is not None else 3,
        interruptions=int(record.get("interruptions") or 0),
        max_cost=float(record["max-cost"]) if record.get("max-cost") is not None else None,
        placement=dict(record["placement"]) if isinstance(record.get("placement"), dict) else None,
        cost=float(record["cost"]) if record.get("cost") is not None else None,
        cost_basis=record.get("cost-basis"),
        past_runs=tuple(dict(run) for run in record.get("past-runs") or () if isinstance(run, Mapping)),
        schedule_id=int(record["schedule-id"]) if record.get("schedule-id") is not None else None,
        occurrence=parse_time(record.get("occurrence")),
        callback_hashes=hashes,
        instance_id=record.get("instance-id"),
        attempts=int(record.get("attempts") or 0),
        launch_token=record.get("launch-token"),
        rung=int(record.get("rung") or 0),
        launch_failures=int(record.get("launch-failures") or 0),
        launched_at=parse_time(record.get("launched-at")),
        claimed_at=parse_time(record.get("claimed-at")),
        started_at=parse_time(record.get("started-at")),
        finished_at=parse_time(record.get("finished-at")),
        not_before=parse_time(record.get("not-before")),
        interrupted_at=parse_time(record.get("interrupted-at")),
        updated_at=parse_time(record.get("updated-at")),
        version=int(record.get("version") or 0),
        extra=extra,
    )


def as_stored(job: Job) -> Job:
    """The job exactly as any process reads it back from a store (times keep milliseconds only)."""
    return job_from_record(job_to_record(job))
