"""AWS failures as one line for people: permission errors name the refused IAM action,
configuration problems say what to set, anything else carries AWS's error code.

Shared by every part that calls AWS on the operator's behalf (job logs, ``setup aws``, prices).
"""

from __future__ import annotations

import re

from .errors import ConfigError, JobmanError, one_line


class PermissionDenied(JobmanError):
    """AWS refused a call for lack of permission; ``action`` is the IAM action, e.g. ``logs:GetLogEvents``."""

    def __init__(self, action: str, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"no permission: your AWS identity may not call {action}; allow {action} in its IAM "
                         f"policy{suffix}")
        self.action = action


#: Error codes meaning "not allowed" across services (IAM/STS, EC2, JSON services; moto's logs
#: answers a bare 403).
_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess",
                           "NotAuthorized", "AuthorizationError", "403"})
_ACTION = re.compile(r"not authorized to perform:?\s+([a-z0-9-]+:[A-Za-z0-9]+)")


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def denied_action(exc: BaseException, service: str) -> str | None:
    """The IAM action an AccessDenied-like error refused, or ``None`` if ``exc`` is not one.

    The action is read from AWS's message (``... is not authorized to perform: logs:GetLogEvents
    on resource ...``); EC2's encoded messages do not name it, so then it is ``service:Operation``.
    """
    response = getattr(exc, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if error_code(exc) not in _DENIED_CODES and status != 403:
        return None
    found = _ACTION.search(str((response.get("Error") or {}).get("Message") or "") + " " + str(exc))
    if found:
        return found.group(1)
    operation = getattr(exc, "operation_name", None) or "the operation"
    return f"{service}:{operation}"


def aws_failure(exc: BaseException, service: str, context: str) -> JobmanError:
    """Any botocore failure as one line: permission errors name the action, configuration
    problems (region, credentials, profile) say what to set, anything else carries AWS's code."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    action = denied_action(exc, service)
    if action is not None:
        return PermissionDenied(action, context)
    if isinstance(exc, NoRegionError):
        return ConfigError("no AWS region configured (set AWS_REGION or AWS_DEFAULT_REGION, or a region in your "
                           "AWS profile)")
    if isinstance(exc, NoCredentialsError):
        return ConfigError("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                           "or use an instance role)")
    if isinstance(exc, (PartialCredentialsError, ProfileNotFound)):
        return ConfigError(one_line(f"{context}: {exc}"))
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        message = str(error.get("Message") or exc)
        return JobmanError(one_line(f"{context}: {error.get('Code') or 'error'}: {message}")[:1000])
    return JobmanError(one_line(f"{context}: {type(exc).__name__}: {exc}")[:1000])
