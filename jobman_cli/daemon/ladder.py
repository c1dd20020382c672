"""The launch ladder's part of a launch (DESIGN.md section 13; the order and tokens live in
:mod:`jobman_cli.capacity`): the daemon's default rungs, what the daemon records of a rung found by
lookup, and what happens when every rung of an attempt was refused for capacity.

Split from :mod:`.launch` (which walks the rungs) to keep each module readable on its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import LaunchError
from ..launchers.base import DEFAULT_INSTANCE_TYPE, EC2Settings, InstanceInfo, Launcher
from ..model import Job, JobStatus, ReasonCode
from .common import LAUNCH_FAILED, RETRYING, Collector, Skip, describe_change, fail_attempt, format_duration, guarded_update

if TYPE_CHECKING:
    from .launch import Launch


def ladder_defaults(launcher: Launcher) -> tuple[str, tuple[str, ...]]:
    """The daemon's default instance types and subnets (``[ec2]``, each may be a list), from the
    EC2 launcher's settings (a wrapper passes them through; a launcher without settings: the
    built-in type and EC2's default subnet)."""
    settings = getattr(launcher, "settings", None)
    if isinstance(settings, EC2Settings):
        return settings.instance_type, settings.subnet_ids
    return DEFAULT_INSTANCE_TYPE, ()


def found_placement(info: InstanceInfo) -> dict[str, Any] | None:
    """The rung an instance found by lookup runs on, read from the instance (None: the launcher
    does not say, and the job keeps what it had)."""
    return info.placement if info.instance_type else None


def refused_everywhere(launch: "Launch", job: Job, refusals: list[LaunchError], out: Collector) -> None:
    """Every rung refused this attempt for capacity; nothing started. Back to ``scheduled`` with the
    usual backoff (never parked past the start deadline, and not limited by ``max_attempts``:
    capacity comes back), until the start deadline; then ``missed-start-deadline`` with the last
    AWS error. Only refusals no later try can change (``Unsupported`` on every rung) fail it now."""
    t = launch.clock.now()
    last = refusals[-1]
    words = (f"{'the only rung' if len(refusals) == 1 else f'all {len(refusals)} rungs'} of the launch ladder "
             f"refused; last: {last}")
    summary = LaunchError(words, retryable=any(e.retryable for e in refusals), code=last.code)
    if not summary.retryable:
        reason = f"launch error: {words}"
        after = guarded_update(launch.store, job.id,
                               lambda cur: fail_attempt(cur, job, reason, t, ReasonCode.LAUNCH_FAILED))
        if after is not None:
            launch.log(describe_change(job, after, reason))
            out.add(LAUNCH_FAILED, job.id, reason)
        return
    deadline = job.start_by
    if t >= deadline:
        launch._missed(job, t, summary, out)
        return
    settings = launch.settings
    delay = min(settings.backoff_max, settings.backoff_base * 2 ** (job.attempts - 1))
    when = min(t + timedelta(seconds=delay), deadline)
    retry_reason = f"launch attempt {job.attempts} failed: {words}"

    def retry(current: Job) -> Job:
        if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts:
            raise Skip
        return current.retry_later(retry_reason, when, t)

    after = guarded_update(launch.store, job.id, retry)
    if after is not None:
        launch.log(describe_change(job, after, f"retry in {format_duration((when - t).total_seconds())}: {words}"))
        out.add(RETRYING, job.id, words)
        launch._wake()
