"""A job's states and the only transitions between them.

Kept apart from :class:`~jobman_cli.model.job.Job` because many readers (the stores' indexes, the
observer, the dashboard's filters) need only "is this state terminal/active?" and the table of
allowed moves, not the job itself.
"""

from __future__ import annotations

import enum
from typing import Mapping

from ..errors import InvalidInput


class JobStatus(str, enum.Enum):
    """A job's state; a ``str`` enum, so it compares equal to (and serializes as) its stored value."""

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


def parse_status(value: str, field_name: str = "status") -> JobStatus:
    """A status named by a user (a filter, a query string), or InvalidInput naming the allowed ones."""
    try:
        return JobStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise InvalidInput(field_name, f"must be one of {allowed} (got {value!r})") from None
