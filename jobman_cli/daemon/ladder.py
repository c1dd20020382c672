"""The launch ladder's part of a launch (DESIGN.md section 13; the order and tokens live in
:mod:`jobman_cli.capacity`): the daemon's default rungs, what the daemon records of a rung found by
lookup, the log line of a refused rung, and what happens when every rung of an attempt was refused.

Split from :mod:`.launch` (which walks the rungs) to keep each module readable on its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..capacity import LADDER_SCOPES, Rung
from ..errors import LaunchError
from ..launchers.base import DEFAULT_INSTANCE_TYPE, EC2Settings, InstanceInfo, Launcher
from ..model import Job, JobStatus, ReasonCode
from .common import LAUNCH_FAILED, RETRYING, Collector, Skip, describe_change, fail_and_report, format_duration, guarded_update
from .unlaunched import failed, missed

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


def _why_skipped(rung: Rung, excluded: set[tuple[str, Any]]) -> str:
    if ("subnet", rung.subnet_id) in excluded:
        return f"no free address in {rung.subnet_id or 'the default subnet'}"
    return f"an account quota of the {rung.market} market"


def moving_on(job: Job, rungs: list[Rung], rung: int, ahead: int, exc: LaunchError,
              excluded: set[tuple[str, Any]]) -> str:
    """The log line of a refused rung: what was refused, the rungs skipped with it and why (what
    this pass's refusals ruled out, :func:`jobman_cli.capacity.ruled_out`), and the rung sent next."""
    line = f"job {job.id}: rung {rung + 1} of {len(rungs)}, {rungs[rung].describe()}, refused ({exc.code})"
    skipped = rungs[rung + 1:ahead]
    if skipped:
        why = ", ".join(dict.fromkeys(_why_skipped(r, excluded) for r in skipped))
        line += f"; skipping {len(skipped)} rung{'s' if len(skipped) > 1 else ''} ({why})"
    return line + f"; trying rung {ahead + 1}, {rungs[ahead].describe()}"


def refused_everywhere(launch: "Launch", job: Job, refusals: list[LaunchError], out: Collector, *,
                       skipped: int = 0) -> None:
    """Every rung of this pass was refused, or skipped because a refusal ruled it out (``skipped``
    of them: a subnet out of addresses, a market's quota); nothing started.

    * Any of the refusals was a capacity shortage (retryable, of scope ``rung``): back to
      ``scheduled`` with the usual backoff (never parked past the start deadline, and not limited
      by ``max_attempts``: capacity comes back), until the start deadline; then
      ``missed-start-deadline`` with the last AWS error.
    * Only quotas and subnets out of addresses: a failed launch (:func:`.unlaunched.failed`),
      bounded by ``max_attempts`` as before the ladder climbed on them: a quota too small for the
      job does not grow by waiting.
    * Only refusals no later try can change (``Unsupported`` on every rung): ``launch-failed`` now."""
    t = launch.clock.now()
    last = refusals[-1]
    if skipped:
        words = (f"{len(refusals)} of {len(refusals) + skipped} rungs of the launch ladder refused and the other "
                 f"{skipped} skipped (ruled out by {', '.join(sorted({e.code for e in refusals if e.code}))}); "
                 f"last: {last}")
    else:
        words = (f"{'the only rung' if len(refusals) == 1 else f'all {len(refusals)} rungs'} of the launch ladder "
                 f"refused; last: {last}")
    summary = LaunchError(words, retryable=any(e.retryable for e in refusals), code=last.code)
    if summary.retryable and not any(e.retryable and LADDER_SCOPES.get(e.code or "") == "rung" for e in refusals):
        # Only quotas and subnets out of addresses, no capacity shortage: a failed launch, bounded
        # by max_attempts like any other quota error (a quota too small for the job stays so).
        failed(launch, job, last if len(refusals) == 1 and not skipped else summary, out)
        return
    if not summary.retryable:
        fail_and_report(launch.store, job, f"launch error: {words}", t, ReasonCode.LAUNCH_FAILED, LAUNCH_FAILED,
                        launch.log, out)
        return
    deadline = job.start_by
    if t >= deadline:
        missed(launch, job, t, summary, out)
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
        launch.wake()
