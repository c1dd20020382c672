"""Notification targets: what ``--notify`` / ``"notify"`` accept, and how a target is shown.

Three kinds (DESIGN.md section 11):

* ``http://`` / ``https://`` URL: a webhook, sent the signed JSON body;
* a Slack incoming webhook: ``https://hooks.slack.com/...`` (recognised by its host) or any
  ``slack+https://...`` URL (a Slack-compatible receiver elsewhere, e.g. Mattermost): a paragraph;
* ``sns:arn:aws:sns:REGION:ACCOUNT:TOPIC``: an SNS Publish of the same JSON body.

A webhook URL can be a credential (a Slack hook's path *is* its secret; a URL may carry a token in
its query or ``user:password@``), so everything jobman prints or serves shows :func:`redact`'s form;
only the store keeps the full URL. Stdlib only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from ..errors import InvalidInput

NOTIFY_ON = ("failure", "end")
DEFAULT_NOTIFY_ON = "failure"
#: The terminal statuses each ``--notify-on`` value sends for. "failure" is ``failed`` only, with
#: every reason-code (exited non-zero, timed-out, image-pull-failed, launch-failed,
#: missed-start-deadline, instance-vanished, interrupted, ...): a ``cancelled`` job was ended by an
#: operator, who already knows.
EVENTS = {"failure": ("failed",), "end": ("finished", "failed", "cancelled")}
MAX_TARGETS = 10
MAX_TARGET_LENGTH = 2048
SLACK_HOSTS = ("hooks.slack.com",)
_SNS_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")


def target_kind(target: str) -> str:
    """``"webhook"``, ``"slack"`` or ``"sns"`` of a valid target."""
    if target.startswith("sns:"):
        return "sns"
    if target.startswith("slack+"):
        return "slack"
    host = (urlsplit(target).hostname or "").lower()
    return "slack" if host in SLACK_HOSTS else "webhook"


def url_of(target: str) -> str:
    """The URL to POST to (``slack+https://x`` -> ``https://x``)."""
    return target[len("slack+"):] if target.startswith("slack+") else target


def sns_region(target: str) -> str:
    return target.split(":")[4]


def validate_target(value: Any, field: str = "notify") -> str:
    """One target, or InvalidInput naming it and saying what a target looks like."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, f"a target must be a non-empty string (got {value!r})")
    shown = redact(value) if isinstance(value, str) else value
    if len(value) > MAX_TARGET_LENGTH or any(not ch.isprintable() or ch.isspace() for ch in value):
        raise InvalidInput(field, f"{shown[:80]!r} is not a target: at most {MAX_TARGET_LENGTH} characters, "
                                  "no spaces or control characters")
    if value.startswith("sns:"):
        if not _SNS_ARN.fullmatch(value[4:]):
            raise InvalidInput(field, f"{shown!r} is not an SNS target: sns:arn:aws:sns:REGION:ACCOUNT:TOPIC")
        return value
    url = url_of(value)
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port out of range
    except ValueError as exc:
        raise InvalidInput(field, f"{shown!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, f"{shown!r} is not a target: give an http(s):// webhook URL, "
                                  "a Slack webhook (https://hooks.slack.com/... or slack+https://...) "
                                  "or sns:arn:aws:sns:REGION:ACCOUNT:TOPIC")
    if value.startswith("slack+") and parts.scheme != "https" and not _loopback(parts.hostname):
        raise InvalidInput(field, f"{shown!r}: a Slack webhook must be https://")
    if parts.fragment:
        raise InvalidInput(field, f"{shown!r}: a webhook URL has no #fragment")
    if _link_local(parts.hostname):
        # 169.254.169.254 is the instance metadata service: never a receiver, always a mistake or an attack
        raise InvalidInput(field, f"{shown!r}: link-local addresses (the instance metadata service) "
                                  "are not notification targets")
    del port
    return value


def validate_targets(value: Any, field: str = "notify") -> tuple[str, ...]:
    """A list of targets (``None``: none). Duplicates and more than :data:`MAX_TARGETS` are refused."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidInput(field, "must be a list of targets")
    if len(value) > MAX_TARGETS:
        raise InvalidInput(field, f"at most {MAX_TARGETS} targets (got {len(value)})")
    targets = tuple(validate_target(item, field) for item in value)
    if len(set(targets)) != len(targets):
        dup = next(t for i, t in enumerate(targets) if t in targets[:i])
        raise InvalidInput(field, f"{redact(dup)!r} is given twice")
    return targets


def validate_notify_on(value: Any, field: str = "notify-on") -> str:
    if value is None:
        return DEFAULT_NOTIFY_ON
    if value not in NOTIFY_ON:
        raise InvalidInput(field, f"must be one of {', '.join(NOTIFY_ON)} (got {value!r})")
    return value


def redact(target: str) -> str:
    """The target as it may be shown: no ``user:password@``, no query, and a Slack hook's secret
    path (``/services/T.../B.../<secret>``) without its last part."""
    if target.startswith("sns:"):
        return target
    try:
        parts = urlsplit(url_of(target))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path
    if target_kind(target) == "slack" and path.count("/") >= 2:
        path = path.rsplit("/", 1)[0] + "/…"
    prefix = "slack+" if target.startswith("slack+") else ""
    userinfo = "…@" if "@" in parts.netloc else ""
    query = "?…" if parts.query else ""
    return f"{prefix}{parts.scheme}://{userinfo}{host}{port}{path}{query}"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _link_local(host: str) -> bool:
    address = _address(host)
    return address is not None and address.is_link_local


def _loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or (address is not None and address.is_loopback)
