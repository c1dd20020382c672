"""The job model: states, the only transitions that exist, and the one serializer.

A :class:`Job` is immutable. Every change is a method that checks the transition is allowed and
returns a new ``Job`` (with ``version`` bumped), so the rules live here and nowhere else: the CLI,
the HTTP API and the daemon all go through these methods, and a store only persists their results.

Read it one part at a time:

* :mod:`.states`   ``JobStatus``, terminal/active states, and the table of allowed transitions;
* :mod:`.reasons`  ``ReasonCode``: why a job ended, what an instance may report, legacy inference;
* :mod:`.job`      the ``Job`` dataclass, its derived facts and its transition methods;
* :mod:`.records`  the public JSON (``job_to_api``) and the stored record, both directions;
* :mod:`.times`    the one text form of a time; :mod:`.tokens` callback-token hashing.

Everything is re-exported here, so ``from jobman_cli.model import Job, JobStatus`` is the way to
use it; the parts import only each other, the standard library, :mod:`jobman_cli.errors` and
:mod:`jobman_cli.notify.targets` (no cycles: each can be imported on its own).
"""

from __future__ import annotations

from .job import DEFAULT_START_DEADLINE, DEFAULT_TIMEOUT, Job
from .reasons import INSTANCE_REASON_CODES, MAX_REPORTED_REASON, ReasonCode, infer_reason_code, parse_reason_code
from .records import API_KEYS, as_stored, job_from_record, job_to_api, job_to_record, record_to_api
from .states import ACTIVE_STATES, ALLOWED_TRANSITIONS, CALLBACK_STATUSES, TERMINAL_STATES, JobStatus, parse_status
from .times import UTC, format_time, parse_time
from .tokens import callback_token_matches, hash_callback_token

__all__ = [
    "ACTIVE_STATES", "ALLOWED_TRANSITIONS", "API_KEYS", "CALLBACK_STATUSES", "DEFAULT_START_DEADLINE",
    "DEFAULT_TIMEOUT", "INSTANCE_REASON_CODES", "MAX_REPORTED_REASON", "TERMINAL_STATES", "UTC", "Job",
    "JobStatus", "ReasonCode", "as_stored", "callback_token_matches", "format_time", "hash_callback_token",
    "infer_reason_code", "job_from_record", "job_to_api", "job_to_record", "parse_reason_code", "parse_status",
    "parse_time", "record_to_api",
]
