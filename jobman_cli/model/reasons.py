"""Why a job ended: the machine-readable reason codes and the human words that go with them.

A terminal job carries both a ``reason`` (for people) and a ``reason_code`` (for machines, DESIGN.md
section 9). The codes an instance may report, how a report's words are cleaned and defaulted, and
how a job stored before codes existed gets one back all live here, so :mod:`.job` only decides
*when* a job ends and :mod:`.records` only reads and writes what this module defines.
"""

from __future__ import annotations

import enum
from typing import Any

from ..errors import InvalidInput
from .states import JobStatus


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


def infer_reason_code(status: JobStatus, reason: str | None, exit_code: int | None) -> ReasonCode | None:
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


def printable(text: str) -> str:
    """An instance's words made safe to store and print: every control, format (bidi) or other
    non-printable character becomes a space, runs of white space one space. A reason comes from
    whoever holds an attempt's token; it must not be able to drive an operator's terminal."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def reported_reason(code: ReasonCode, exit_code: int | None, told: str) -> str:
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
