"""How the EC2 adapter reads botocore's failures: one-line :class:`LaunchError` values with AWS's code,
and, for ``RunInstances``, what the failure means for the attempt (:func:`run_instances_error`).

Kept apart from :mod:`.ec2` (the calls themselves) so the classification can be read, and tested,
on its own. Imports botocore's exception types only (no client is made here).
"""

from __future__ import annotations

import re

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from ..errors import ConfigError, LaunchError, one_line
from ..model import Job
from .base import LaunchOutcomeUnknown, LaunchThrottled, LaunchTokenInUse

#: AWS error codes after which the same request may succeed later: capacity, quotas that free up
#: when other instances end, throttling and server-side failures. Any HTTP 5xx also counts.
RETRYABLE_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity",
    "InsufficientCapacity", "InsufficientAddressCapacity", "InsufficientFreeAddressesInSubnet",
    "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow",
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException",
    "EC2ThrottledException", "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
    "SlowDown", "PriorRequestNotComplete", "ServiceUnavailable", "Unavailable", "InternalError",
    "InternalFailure", "InternalServerError", "ServerInternal", "RequestTimeout", "RequestTimeoutException",
})

#: Request-rate throttling: refused before acceptance, nothing started (EC2 answers HTTP 503 for
#: ``RequestLimitExceeded``, so the status alone would say "server error").
THROTTLING_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "EC2ThrottledException",
    "RequestThrottled", "RequestThrottledException", "TooManyRequestsException", "SlowDown",
})

#: Server-side failures: the request reached EC2, which may or may not have applied it. Any other
#: HTTP 5xx without a code of :data:`RETRYABLE_CODES` counts too.
SERVER_ERROR_CODES = frozenset({
    "InternalError", "InternalFailure", "InternalServerError", "ServerInternal", "ServiceUnavailable",
    "Unavailable", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
})

#: AWS refused the request because its signature time is more than about 5 minutes off AWS's own
#: clock: this host's clock is wrong. Nothing was applied; the same request works once the clock is
#: right. EC2 says ``RequestExpired``; S3-style APIs ``RequestTimeTooSkewed``/``RequestInTheFuture``.
CLOCK_SKEW_CODES = frozenset({"RequestExpired", "RequestTimeTooSkewed", "RequestInTheFuture"})
#: Codes that mean clock skew only when the message is about the signature's time: EC2's
#: ``AuthFailure`` (also bad credentials) and the JSON APIs' ``InvalidSignatureException``
#: (DynamoDB, CloudWatch Logs: "Signature expired: ... is now earlier than ...").
CLOCK_SKEW_IF_TIME_CODES = frozenset({"AuthFailure", "InvalidSignatureException"})
_TIME_MESSAGE = re.compile(r"expired|not yet current|skew|clock|\btime\b|in the future", re.IGNORECASE)
#: ... but an expired *token* (credentials) is not the clock.
_TOKEN_MESSAGE = re.compile(r"token", re.IGNORECASE)

_MESSAGE_LIMIT = 1000

NO_CREDENTIALS = ("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                  "or use an instance role)")
NO_REGION = "no AWS region configured (set AWS_REGION or AWS_DEFAULT_REGION, or a region in your AWS profile)"


class LaunchClockSkew(LaunchThrottled):
    """AWS refused the signed request as outside its time window (this host's clock is off by more
    than about 5 minutes): nothing was applied. Like throttling, not a failed attempt: the same
    request is sent again later, with a capped back-off, until the clock is right or the job's
    start deadline passes. Raised by ``launch`` and returned by :func:`to_launch_error` for any
    other call (a lookup), so every caller that catches :class:`LaunchError` still works.

    ``clock_skew`` is how the daemon recognises it without importing this (botocore) module."""

    clock_skew = True


def is_clock_skew(code: str, message: str) -> bool:
    """True when AWS's ``code``/``message`` say the request's time is too far from AWS's clock."""
    if code in CLOCK_SKEW_CODES:
        return True
    return (code in CLOCK_SKEW_IF_TIME_CODES and bool(_TIME_MESSAGE.search(message))
            and not _TOKEN_MESSAGE.search(message))


def _config_error(exc: BotoCoreError, context: str) -> ConfigError:
    """A botocore configuration failure as one line: the named cases, else ``context: exc``."""
    if isinstance(exc, NoRegionError):
        return ConfigError(NO_REGION)
    if isinstance(exc, ProfileNotFound):
        return ConfigError(_one_line(f"AWS profile not found: {exc}"))
    if isinstance(exc, PartialCredentialsError):
        return ConfigError(_one_line(f"incomplete AWS credentials: {exc}"))
    return ConfigError(_one_line(f"{context}: {exc}"))


def _one_line(text: str) -> str:
    line = one_line(text)
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 1] + "…"


def to_launch_error(exc: Exception, context: str | None = None) -> LaunchError:
    """Map a botocore exception to a one-line :class:`LaunchError` with the AWS code.

    ``retryable``: a listed code, any HTTP 5xx, any network-level failure (connection refused,
    timeouts, dropped connections) and failures to fetch credentials (an instance role's
    credentials being rotated; an SSO session an operator can renew). A request refused for this
    host's clock (:func:`is_clock_skew`) is a retryable :class:`LaunchClockSkew`. Everything else
    (bad parameters, missing permissions, unknown AMI ...) will fail the same way again.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        retryable = code in RETRYABLE_CODES or (isinstance(status, int) and status >= 500)
        if is_clock_skew(code, message):
            text = f"{code}: {message}" if not context else f"{context}: {code}: {message}"
            return LaunchClockSkew(_one_line(text), code=code)
    elif isinstance(exc, (BotoConnectionError, HTTPClientError)):
        code, message, retryable = type(exc).__name__, str(exc), True
    elif isinstance(exc, (NoCredentialsError, CredentialRetrievalError)):
        code, message, retryable = type(exc).__name__, f"{exc} ({NO_CREDENTIALS})", True
    else:
        code, message, retryable = type(exc).__name__, str(exc), False
    text = f"{code}: {message}" if not context else f"{context}: {code}: {message}"
    return LaunchError(_one_line(text), retryable=retryable, code=code)


def run_instances_error(exc: Exception, job: Job, token: str) -> LaunchError:
    """What a failed ``RunInstances`` (sent once, without botocore retries) means for the attempt.

    * :class:`~.base.LaunchThrottled`: a throttling code; nothing started. Its subclass
      :class:`LaunchClockSkew`: refused for this host's clock; nothing started.
    * :class:`~.base.LaunchTokenInUse`: ``IdempotentParameterMismatch``; this token's instance exists.
    * :class:`~.base.LaunchOutcomeUnknown`: a server error (5xx, ``InternalError`` ...) or a
      connection that failed after the request was sent (read timeout, reset, closed); an
      instance may have started.
    * a plain :class:`LaunchError`: nothing started. Retryable for capacity and quotas, for a
      connection that could not even be opened (nothing was sent) and for missing credentials;
      not retryable for validation and permissions. ``IdempotentInstanceTerminated`` says that
      this attempt already ran and ended.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "Unknown")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code == "IdempotentInstanceTerminated":
            return LaunchError(_one_line(
                f"IdempotentInstanceTerminated: attempt {job.attempts} of job {job.id} already launched an "
                f"instance (client token {token}) and it has terminated; it will not be started again. "
                f"{error.get('Message') or ''}"), retryable=False, code=code)
        mapped = to_launch_error(exc)
        if isinstance(mapped, LaunchClockSkew):
            return mapped
        if code == "IdempotentParameterMismatch":
            return LaunchTokenInUse(str(mapped), code=code)
        if code in THROTTLING_CODES:
            return LaunchThrottled(str(mapped), code=code)
        if code in SERVER_ERROR_CODES or (code not in RETRYABLE_CODES and isinstance(status, int) and status >= 500):
            return LaunchOutcomeUnknown(str(mapped), code=code)
        return mapped
    mapped = to_launch_error(exc)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return mapped  # the connection was never opened: nothing was sent
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return LaunchOutcomeUnknown(str(mapped), code=mapped.code)
    return mapped
