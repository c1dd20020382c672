"""What becomes of a launch attempt that started nothing: a retry with back-off, a failure, a missed
start deadline, or (the daemon stopping before it was sent) a give-back to ``scheduled``.

Split from :mod:`.launch`, which decides *that* an attempt launched nothing (by what EC2 answered);
this module decides *what it becomes*, with the job's budget (``max_attempts``, the start deadline)
and the one log line and outcome of each change. :mod:`.ladder` does the same for a pass where
every rung of the launch ladder was refused. Each change is a compare-and-set on the attempt the
caller handled: a job that moved on meanwhile (a cancel, a take-over) is left alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import LaunchError
from ..model import Job, JobStatus, ReasonCode
from .common import (LAUNCH_FAILED, MISSED, RETRYING, Collector, Skip, describe_change, fail_and_report, format_duration,
                     guarded_update, missed_reason)

if TYPE_CHECKING:
    from .launch import Launch


def failed(launch: "Launch", job: Job, exc: LaunchError, out: Collector) -> None:
    """EC2 refused the attempt and nothing started (not a ladder refusal). Retryable (a quota, a
    connection that never opened, missing credentials): back to ``scheduled`` after a back-off,
    up to ``max_attempts`` failed launches; then, or at once for anything else, ``launch-failed``
    with AWS's code and message. ``IdempotentInstanceTerminated``: this attempt already ran and
    ended without reporting, so ``instance-vanished``."""
    t = launch.clock.now()
    settings = launch.settings
    code = ReasonCode.LAUNCH_FAILED
    if exc.code == "IdempotentInstanceTerminated":
        reason = "instance vanished without reporting (state: terminated)"
        code = ReasonCode.INSTANCE_VANISHED
    elif exc.retryable and job.launch_failures + 1 < settings.max_attempts:
        # Only failed launches count (not relaunches after spot interruptions, nor passes
        # where every rung was refused for capacity): they are what max_attempts limits.
        delay = min(settings.backoff_max, settings.backoff_base * 2 ** job.launch_failures)
        retry_reason = f"launch attempt {job.attempts} failed: {exc}"

        def retry(current: Job) -> Job:
            if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts:
                raise Skip
            return current.retry_later(retry_reason, t + timedelta(seconds=delay), t, failed=True)

        after = guarded_update(launch.store, job.id, retry)
        if after is not None:
            launch.log(describe_change(job, after, f"retry in {format_duration(delay)}: {exc}"))
            out.add(RETRYING, job.id, str(exc))
            launch.wake()
        return
    elif exc.retryable:
        reason = f"launch error after {job.launch_failures + 1} attempts: {exc}"
    else:
        reason = f"launch error: {exc}"
    fail_and_report(launch.store, job, reason, t, code, LAUNCH_FAILED, launch.log, out)


def missed(launch: "Launch", job: Job, t: datetime, last: LaunchError, out: Collector) -> None:
    """The start deadline passed while EC2 kept not launching the attempt (``last``: why not)."""
    reason = f"{missed_reason(job, t)}; RunInstances did not launch it in time: {last}"
    fail_and_report(launch.store, job, reason, t, ReasonCode.MISSED_START_DEADLINE, MISSED, launch.log, out)


def unchecked(launch: "Launch", job: Job, exc: LaunchError, out: Collector) -> None:
    """``--max-cost`` could not be checked (``MaxCostUnchecked``, before any ``RunInstances``): the
    job is not launched (a limit is never ignored), but nothing was tried either, so it is not a
    failed launch and ``max_attempts`` does not count it. Transient (the Price List throttled or
    unreachable): back to ``scheduled`` with the usual back-off, never parked past the start
    deadline, and checked again at the next claim; at the deadline ``missed-start-deadline``, the
    reason naming the check. Anything else (no price for that type, no region): ``launch-failed``
    now, with the reason saying the limit could not be checked (not that it was exceeded)."""
    t = launch.clock.now()
    if not exc.retryable:
        fail_and_report(launch.store, job, f"launch error: {exc}", t, ReasonCode.LAUNCH_FAILED, LAUNCH_FAILED,
                        launch.log, out)
        return
    deadline = job.start_by
    if t >= deadline:
        reason = f"{missed_reason(replace(job, reason=None), t)}; {exc}"
        fail_and_report(launch.store, job, reason, t, ReasonCode.MISSED_START_DEADLINE, MISSED, launch.log, out)
        return
    settings = launch.settings
    delay = min(settings.backoff_max, settings.backoff_base * 2 ** min(max(job.attempts - 1, 0), 32))
    when = min(t + timedelta(seconds=delay), deadline)
    retry_reason = f"launch attempt {job.attempts} not sent: {exc}"

    def retry(current: Job) -> Job:
        if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts:
            raise Skip
        return current.retry_later(retry_reason, when, t)  # failed=False: not a failed launch

    after = guarded_update(launch.store, job.id, retry)
    if after is not None:
        launch.log(describe_change(job, after, f"retry in {format_duration((when - t).total_seconds())}: {exc}"))
        out.add(RETRYING, job.id, str(exc))
        launch.wake()


def give_back(launch: "Launch", job: Job, out: Collector) -> None:
    """The daemon stops before this attempt was ever accepted by EC2: back to ``scheduled``."""
    t = launch.clock.now()
    reason = f"launch attempt {job.attempts} not sent: the daemon stopped while pacing RunInstances"

    def back(current: Job) -> Job:
        if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts or current.instance_id:
            raise Skip
        return current.retry_later(reason, t, t)

    after = guarded_update(launch.store, job.id, back)
    if after is not None:
        launch.log(describe_change(job, after, reason))
        out.add(RETRYING, job.id, reason)
