"""The exceptions the core raises.

Every layer above the core (CLI, HTTP API) converts these in exactly one place: the CLI to a
one-line message and exit code, the API to a JSON error and HTTP status. Both mappings live on the
exception classes themselves so the two front ends can never disagree.
"""

from __future__ import annotations


def one_line(value: object) -> str:
    """Any message folded onto one line (users and logs get one line per error)."""
    return " ".join(("" if value is None else str(value)).split())


class JobmanError(Exception):
    """Base of every error a user may see. ``str(err)`` is the one-line message."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(JobmanError):
    """A field broke a rule. The message names the field and the rule; nothing was written."""

    exit_code = 2
    http_status = 400

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class JobNotFound(JobmanError):
    exit_code = 1
    http_status = 404

    def __init__(self, job_id: int | str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class ScheduleNotFound(JobmanError):
    exit_code = 1
    http_status = 404

    def __init__(self, schedule_id: int | str) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id


class TransitionNotAllowed(JobmanError):
    """A state change that the job's current state does not allow (HTTP 409)."""

    exit_code = 1
    http_status = 409


class IdempotencyConflict(JobmanError):
    """The idempotency key is already used by a job with different fields (a usage error)."""

    exit_code = 2
    http_status = 409


class StoreError(JobmanError):
    """The store cannot be read or written (corrupt, foreign, unreachable, permissions)."""

    exit_code = 1
    http_status = 503


class LaunchError(JobmanError):
    """The cloud refused to start an instance.

    ``retryable`` says whether trying again later may succeed (capacity, throttling, 5xx).
    """

    exit_code = 1
    http_status = 502

    def __init__(self, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


class ConfigError(JobmanError):
    """Configuration or credentials are missing or wrong; the daemon cannot start."""

    exit_code = 1
    http_status = 500
