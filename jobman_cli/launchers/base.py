"""The launcher port: what the daemon, ``cancel`` and ``logs`` need from a cloud, and no more.

This module imports no AWS SDK, so code that only *names* these types (the service, the daemon's
wiring, tests with a fake launcher) stays cheap to import. The one adapter, :mod:`.ec2`, imports
boto3 and is itself imported lazily.

The port reports facts; it never decides a job's state. ``find_instances`` and ``describe`` say what
exists, ``launch`` says what AWS answered, and the daemon turns those facts into transitions.

Errors: every failure of a call to the cloud surfaces as :class:`~jobman_cli.errors.LaunchError`
(a one-line ``"<AWS code>: <AWS message>"``, ``code`` set, ``retryable`` true for capacity,
throttling, 5xx and network trouble) and missing configuration as
:class:`~jobman_cli.errors.ConfigError`; an SDK exception never escapes an adapter.

``launch`` says more, because what the daemon must do next depends on whether an instance may have
started. Three subclasses of :class:`LaunchError` name the cases that are *not* a failed attempt:

* :class:`LaunchOutcomeUnknown` (ambiguous: the request may have been applied and its answer lost),
* :class:`LaunchThrottled` (refused before acceptance: nothing started, only too fast),
* :class:`LaunchTokenInUse` (``IdempotentParameterMismatch``: this attempt's instance exists).

A plain :class:`LaunchError` from ``launch`` means that nothing started (capacity, quotas,
validation, permissions): ``retryable`` says whether a later attempt may succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, Sequence, runtime_checkable

from ..errors import ConfigError, LaunchError
from ..model import Job

#: The public SSM parameter that always names the current Amazon Linux 2023 AMI of the region.
DEFAULT_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEFAULT_INSTANCE_TYPE = "t3.micro"
DEFAULT_STORE_TAG_KEY = "jobman:store"

#: Tags the launcher writes on every instance. ``job-id`` and ``attempt`` are how a daemon that
#: died mid-launch finds the instance of an attempt again, so nothing may override them.
JOB_ID_TAG = "jobman:job-id"
ATTEMPT_TAG = "jobman:attempt"

#: EC2 instance state names. Terminated instances stay visible for about an hour on AWS (for ever
#: under moto); after that they are simply absent.
INSTANCE_STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
LIVE_STATES = tuple(s for s in INSTANCE_STATES if s != "terminated")


class LaunchOutcomeUnknown(LaunchError):
    """``RunInstances`` may have reached EC2 and started an instance, but no answer came back: a read
    timeout, a connection reset or closed mid-request, a 5xx. Not a failed attempt: the same
    attempt is sent again with the same ``ClientToken`` and user-data, after a tag lookup."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message, retryable=True, code=code)


class LaunchThrottled(LaunchError):
    """EC2 refused the call before accepting it (``RequestLimitExceeded``): nothing started. Not a
    failed attempt: the same attempt is sent again once the request rate allows."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message, retryable=True, code=code)


class LaunchTokenInUse(LaunchError):
    """``IdempotentParameterMismatch``: an instance already exists for this ``ClientToken``, launched
    with other parameters (a take-over renders the user-data with a new callback token). So this
    attempt's instance exists: look it up and adopt it; never fail the job for it."""

    def __init__(self, message: str, *, code: str = "IdempotentParameterMismatch") -> None:
        super().__init__(message, retryable=False, code=code)


@dataclass(frozen=True)
class InstanceInfo:
    """What the daemon needs to know about one instance, read from its state and tags.

    ``job_id``/``attempt``/``store_id`` are ``None`` when the tag is missing or not a number (an
    instance someone else tagged by hand): callers must not mistake it for one of their jobs.
    """

    instance_id: str
    state: str
    job_id: int | None
    attempt: int | None
    store_id: str | None
    launch_time: datetime | None
    #: Where it runs (the launch ladder's rung): type, zone, subnet, market (``spot``/``on-demand``).
    instance_type: str | None = None
    availability_zone: str | None = None
    subnet_id: str | None = None
    market: str | None = None
    #: EC2's ``StateReason.Code`` (``Server.SpotInstanceTermination``: EC2 reclaimed a spot instance).
    state_reason: str | None = None

    @property
    def placement(self) -> dict[str, str | None]:
        """What ``Job.placement`` records of the instance."""
        return {"instance-type": self.instance_type, "availability-zone": self.availability_zone,
                "subnet-id": self.subnet_id, "market": self.market}

    @property
    def gone(self) -> bool:
        """True once the instance can no longer run anything (terminated or on its way there)."""
        return self.state in ("shutting-down", "terminated")


class Launched(str):
    """What :meth:`Launcher.launch` returns: the instance id (a plain ``str`` to every caller) that may
    also carry the availability zone EC2 placed it in (``RunInstances`` answers with it), so the
    daemon records the rung without another call. A launcher may return a plain ``str``."""

    availability_zone: str | None = None

    @classmethod
    def of(cls, instance_id: str, availability_zone: str | None) -> "Launched":
        launched = cls(instance_id)
        launched.availability_zone = availability_zone
        return launched


@dataclass(frozen=True)
class EC2Settings:
    """How to launch instances. Every field has a default that works in a default VPC.

    ``region``/``profile``/``endpoint_url`` left ``None`` mean "whatever boto3 finds" (``AWS_REGION``,
    ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, the shared config files), so the
    standard AWS environment works without jobman-specific flags. An explicit ``endpoint_url`` is used
    for EC2 *and* SSM (the AMI lookup), like ``AWS_ENDPOINT_URL``.

    ``ami`` ``None`` resolves :data:`DEFAULT_AMI_PARAMETER` through SSM; ``resolve:ssm:NAME`` or
    ``ssm:NAME`` resolves ``NAME``; anything else is used as the image id.
    """

    region: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    ami: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    iam_instance_profile: str | None = None
    key_name: str | None = None
    extra_tags: tuple[tuple[str, str], ...] = ()
    store_tag_key: str = DEFAULT_STORE_TAG_KEY
    endpoint_url: str | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        # Normalise list-ish inputs so the settings stay hashable and comparable.
        object.__setattr__(self, "security_group_ids", tuple(self.security_group_ids))
        object.__setattr__(self, "extra_tags", tuple((str(k), str(v)) for k, v in self.extra_tags))
        if not self.instance_type:
            raise ConfigError("EC2 instance type must not be empty")
        if not self.store_tag_key or self.store_tag_key in (JOB_ID_TAG, ATTEMPT_TAG):
            raise ConfigError(f"store tag key {self.store_tag_key!r} is empty or reserved by jobman")
        reserved = {JOB_ID_TAG, ATTEMPT_TAG, self.store_tag_key}
        seen: set[str] = set()
        for key, _ in self.extra_tags:
            if key in reserved:
                raise ConfigError(f"extra tag {key!r} is reserved by jobman (it identifies the job and store)")
            if key in seen:
                raise ConfigError(f"extra tag {key!r} is given twice")
            seen.add(key)

    @property
    def subnet_ids(self) -> tuple[str, ...]:
        """The default subnets of the launch ladder: ``subnet_id`` may name several, comma-separated
        (one per availability zone, tried in order)."""
        return tuple(s.strip() for s in (self.subnet_id or "").split(",") if s.strip())

    @property
    def ami_parameter(self) -> str | None:
        """The SSM parameter to resolve, or ``None`` when ``ami`` is a literal image id."""
        if self.ami is None or not self.ami.strip():
            return DEFAULT_AMI_PARAMETER
        for prefix in ("resolve:ssm:", "ssm:"):
            if self.ami.startswith(prefix):
                return self.ami[len(prefix):]
        return None


@runtime_checkable
class Launcher(Protocol):
    """The cloud as the daemon sees it. Implementations must be safe to call from several threads."""

    def launch(self, job: Job, *, user_data: str, store_id: str) -> str:
        """Start one instance for the job's current attempt and return its id.

        ``job.launch_token`` is the idempotency token (``ValueError`` if it is ``None``); the
        instance is tagged with the job id, ``job.attempts`` and ``store_id``, and terminates itself
        when its OS powers off. Sends the request once (a resend is the daemon's decision, after a
        lookup). Raises :class:`LaunchOutcomeUnknown`, :class:`LaunchThrottled`,
        :class:`LaunchTokenInUse` or a plain ``LaunchError`` (see the module doc;
        ``code="IdempotentInstanceTerminated"`` when this attempt already ran and ended).
        """
        ...

    def find_instances(self, store_id: str, *, job_id: int | None = None, attempt: int | None = None,
                       include_terminated: bool = False, client_token: str | None = None) -> list[InstanceInfo]:
        """Instances tagged with ``store_id`` (and the job/attempt when given), by tag lookup.

        Without ``include_terminated`` only terminated instances are left out: ``shutting-down``
        ones are still reported (they may still be running the container's last seconds).
        ``client_token``: when the tags find nothing, also look the instance up by the
        ``ClientToken`` it was launched with (where the cloud supports that filter; else nothing).
        """
        ...

    def describe(self, instance_ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """The named instances that exist. Unknown ids are simply absent (never an error).

        On AWS a just-launched instance can be briefly absent (eventual consistency), and a
        terminated one disappears after about an hour: absence alone is not proof of death.
        """
        ...

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate the instances. Idempotent: unknown or already terminated ids are fine."""
        ...

    def console_output(self, instance_id: str) -> str:
        """The instance's console output as text ("" when there is none yet)."""
        ...

    def check_credentials(self) -> None:
        """Raise ``ConfigError`` (one line) when no region or credentials are configured.

        Offline and cheap: it looks for credentials, it does not prove they work.
        """
        ...
