"""The :class:`Job` itself: its fields, the facts derived from them, and every transition.

A :class:`Job` is immutable. Every change is a method that checks the transition is allowed (see
:mod:`.states`) and returns a new ``Job`` (with ``version`` bumped), so the rules live here and
nowhere else: the CLI, the HTTP API and the daemon all go through these methods, and a store only
persists their results (in the shape :mod:`.records` defines).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..errors import InvalidInput, TransitionNotAllowed
from ..notify.targets import DEFAULT_NOTIFY_ON
from .reasons import MAX_REPORTED_REASON, ReasonCode, parse_reason_code, printable, reported_reason
from .states import ALLOWED_TRANSITIONS, CALLBACK_STATUSES, TERMINAL_STATES, JobStatus
from .times import format_time

#: Seconds a job may run (pull included), and may start late, when its request does not say.
DEFAULT_TIMEOUT = 3600
DEFAULT_START_DEADLINE = 3600
#: The reason of a job an operator cancelled (``jobman cancel``, the API); a schedule's
#: ``overlap replace`` gives its own.
OPERATOR_CANCEL_REASON = "cancelled by operator"


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
    def run_market(self) -> str | None:
        """The market the current run launched on: its placement's (a ``spot-then-on-demand`` job
        may have launched on either), else ``on-demand`` for an on-demand job; None: not known."""
        market = (self.placement or {}).get("market")
        if market:
            return str(market)
        return "on-demand" if self.capacity == "on-demand" else None

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

    def cancelled(self, now: datetime, reason: str = OPERATOR_CANCEL_REASON) -> "Job":
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
        told = printable(reason or "")[:MAX_REPORTED_REASON]

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
            words = reported_reason(code, exit_code, told)

        if self.terminal:
            if (self.status is target and (exit_code is None or exit_code == self.exit_code)
                    and (reason_code is None or self.reason_code in (None, code))):
                return self  # the instance repeated its report
            raise TransitionNotAllowed(f"job {self.id} is already {self.status.value}; cannot become {status}")
        if self.status is JobStatus.SCHEDULED:
            raise TransitionNotAllowed(f"job {self.id} is scheduled and has not been launched; cannot become {status}")
        if code is ReasonCode.INTERRUPTED:
            if self.run_market == "on-demand":
                # EC2 sends no interruption notice to an on-demand instance, so no budget applies and
                # a relaunch would buy another instance for a report that cannot be a spot notice.
                # Refusing it would lose the last word of an instance that is ending: it is kept.
                words = "interrupted (on-demand: not relaunched)" + (f": {told}" if told else "")
                return self._to(target, now, exit_code=stored_code, reason=words, reason_code=code)
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
