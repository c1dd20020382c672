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

# ``socket`` (2.6-4.4 ms with _socket, selectors, select, array) is imported inside numeric_host,
# its one user: model/job.py and model/records.py import this module, so a top-level import was paid
# by every store command (status, list), which never resolves a host. ``ipaddress`` stays: it is
# already loaded by ``urllib.parse`` (Python 3.11), so importing it lazily would save nothing.

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
    host = (urlsplit(target).hostname or "").lower().rstrip(".")
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
    try:
        ascii_host(parts.hostname)
    except UnicodeError:
        raise InvalidInput(field, f"{shown!r}: the host name is not valid (each dot-separated label "
                                  "1 to 63 characters)") from None
    address = numeric_host(parts.hostname)
    if address is not None and blocked(address):
        # 169.254.169.254 is the instance metadata service: never a receiver, always a mistake or an
        # attack — in any spelling (2852039166, 0xa9fea9fe, [::ffff:169.254.169.254], fd00:ec2::254)
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
    keys = [_same_key(t) for t in targets]
    if len(set(keys)) != len(keys):
        dup = next(t for i, t in enumerate(targets) if keys[i] in keys[:i])
        raise InvalidInput(field, f"{redact(dup)!r} is given twice")
    return targets


def _same_key(target: str) -> str:
    """What makes two targets the same receiver: scheme and host in any case, a trailing dot on the
    host and the default port (80/443) do not make a different one."""
    if target.startswith("sns:"):
        return target
    parts = urlsplit(url_of(target))
    host = (parts.hostname or "").rstrip(".")
    port = parts.port if parts.port not in (None, {"http": 80, "https": 443}[parts.scheme]) else None
    netloc = (parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    return f"{parts.scheme}://{netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")


def validate_notify_on(value: Any, field: str = "notify-on") -> str:
    if value is None:
        return DEFAULT_NOTIFY_ON
    if value not in NOTIFY_ON:
        raise InvalidInput(field, f"must be one of {', '.join(NOTIFY_ON)} (got {value!r})")
    return value


def redact(target: str) -> str:
    """The target as it may be shown: no ``user:password@``, no query, and of the path at most the
    first segment (Discord, Teams, Zapier, Mattermost hooks carry their secret in the path:
    ``https://discord.com/api/…``); a Slack hook (``/services/T.../B.../<secret>``) keeps its two
    public ids, which say which workspace and channel, and loses the rest."""
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
    segments = [s for s in parts.path.split(";", 1)[0].split("/") if s]
    hidden = ";" in parts.path
    keep = 1
    if target_kind(target) == "slack":
        keep = min(3, len(segments) - 1)  # services/T.../B...: never the last one (the secret)
    shown, hidden = segments[:max(keep, 0)], hidden or len(segments) > max(keep, 0)
    path = "/" + "/".join(shown) + ("/…" if hidden and shown else "…" if hidden else "")
    prefix = "slack+" if target.startswith("slack+") else ""
    userinfo = "…@" if "@" in parts.netloc else ""
    query = "?…" if parts.query else ""
    return f"{prefix}{parts.scheme}://{userinfo}{host}{port}{path}{query}"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def ascii_host(host: str) -> str:
    """The host as sent (IDNA for a non-ASCII name); UnicodeError when it cannot be (an empty or
    over-63-character label): refused at validation, never discovered by the sender."""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        return host.encode("idna").decode("ascii")
    if not _address(host) and any(not label or len(label) > 63 for label in host.rstrip(".").split(".")):
        raise UnicodeError(f"label empty or too long in {host!r}")
    return host


def numeric_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a numeric host means to the resolver, in every spelling ``inet_aton`` accepts
    (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``); None for a name."""
    import socket

    address = _address(host)
    if address is not None:
        return address
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


#: The AWS instance metadata service's IPv6 address (Nitro instances).
_METADATA_V6 = ipaddress.IPv6Address("fd00:ec2::254")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether jobman refuses to send to ``address``: link-local (169.254.0.0/16, fe80::/10 — the
    instance metadata service lives there), also inside IPv6 (mapped, compatible, NAT64), and
    the metadata service's IPv6 address."""
    if address.is_link_local:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # without a %zone
        if address == _METADATA_V6:
            return True
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and (int(address) >> 32 == 0 or address in _NAT64):  # ::a.b.c.d, 64:ff9b::a.b.c.d
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return inner is not None and inner.is_link_local
    return False


def _loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or (address is not None and address.is_loopback)
