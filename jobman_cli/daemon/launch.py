"""Launching one claimed attempt: render its user-data, call ``RunInstances``, record the answer.

The job arrives here already claimed (``launching``, its attempt's ``ClientToken`` stored, only the
hash of its callback token stored) by :mod:`.starter` or taken over by :mod:`.adopter`. What
happens next:

* launched (or an instance of the attempt found): the instance is recorded (``running``); if the job
  was cancelled (or reported) meanwhile, the new instance is terminated at once;
* a retryable error (capacity, throttling, 5xx): the job goes back to ``scheduled`` with
  exponential backoff, up to ``max_attempts``;
* any other error: the job fails as ``launch-failed`` with AWS's code and message.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

from ..clock import Clock
from ..errors import InvalidInput, JobmanError, LaunchError
from ..launchers.base import Launcher
from ..launchers.userdata import callback_url_for, render_user_data
from ..model import Job, JobStatus, ReasonCode
from ..settings import DaemonSettings
from ..stores.base import JobStore
from .common import (CANCELLED_DURING_LAUNCH, LAUNCH_FAILED, LAUNCHED, RETRYING, Collector, Log, Skip,
                     describe_change, fail_attempt, format_duration, guarded_update)


class Launch:
    def __init__(self, store: JobStore, launcher: Launcher, clock: Clock, settings: DaemonSettings, *,
                 public_url: str, callback_ca: str | None, log: Log, wake: Callable[[], None]) -> None:
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.settings = settings
        self.public_url = public_url
        self.callback_ca = callback_ca
        self.log = log
        self._wake = wake

    def run(self, job: Job, callback_token: str, out: Collector) -> None:
        """RunInstances for a claimed job, then record what happened."""
        try:
            user_data = render_user_data(job, callback_url=callback_url_for(self.public_url, job.id),
                                         callback_token=callback_token, callback_ca=self.callback_ca)
        except InvalidInput as exc:  # cannot happen for a validated job; never launch what we cannot quote
            self._failed(job, LaunchError(f"cannot render user-data: {exc}", retryable=False), out)
            return
        try:
            instance_id = self.launcher.launch(job, user_data=user_data, store_id=self.store.store_id)
        except LaunchError as exc:
            self._failed(job, exc, out)
            return
        self.record(job, instance_id, out, LAUNCHED)

    def record(self, job: Job, instance_id: str, out: Collector, kind: str) -> None:
        """Record ``instance_id`` as the instance of ``job``'s attempt (``kind``: launched or adopted)."""
        t = self.clock.now()

        def record(current: Job) -> Job:
            if current.attempts != job.attempts:
                raise Skip  # moved on to another attempt: the reaper ends this instance
            if current.terminal:  # cancelled (or reported) while we launched
                return current if current.instance_id else current.attach_instance(instance_id, t)
            if current.status in (JobStatus.LAUNCHING, JobStatus.RUNNING) and current.instance_id in (None, instance_id):
                return current.launched(instance_id, t)
            raise Skip

        after = guarded_update(self.store, job.id, record)
        if after is None:
            self.log(f"job {job.id}: instance {instance_id} is not wanted any more; the reaper will end it")
            return
        if after.terminal:
            try:
                self.launcher.terminate([instance_id])
            except JobmanError as exc:
                self.log(f"job {job.id}: cannot terminate instance {instance_id}: {exc}; the reaper will end it")
            else:
                self.log(f"job {job.id} was {after.status.value} during its launch; instance {instance_id} terminated")
            out.add(CANCELLED_DURING_LAUNCH, job.id, after.status.value, instance_id)
            return
        # ``job`` is the claimed snapshot; if the instance reported ``running`` first, the service
        # already logged that change, and this line records the instance.
        self.log(describe_change(job, after, f"instance {instance_id}, attempt {after.attempts}"))
        out.add(kind, job.id, "", instance_id)

    def _failed(self, job: Job, exc: LaunchError, out: Collector) -> None:
        t = self.clock.now()
        settings = self.settings
        code = ReasonCode.LAUNCH_FAILED
        if exc.code == "IdempotentInstanceTerminated":
            reason = "instance vanished without reporting (state: terminated)"
            code = ReasonCode.INSTANCE_VANISHED
        elif exc.retryable and job.attempts < settings.max_attempts:
            delay = min(settings.backoff_max, settings.backoff_base * 2 ** (job.attempts - 1))
            retry_reason = f"launch attempt {job.attempts} failed: {exc}"

            def retry(current: Job) -> Job:
                if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts:
                    raise Skip
                return current.retry_later(retry_reason, t + timedelta(seconds=delay), t)

            after = guarded_update(self.store, job.id, retry)
            if after is not None:
                self.log(describe_change(job, after, f"retry in {format_duration(delay)}: {exc}"))
                out.add(RETRYING, job.id, str(exc))
                self._wake()
            return
        elif exc.retryable:
            reason = f"launch error after {job.attempts} attempts: {exc}"
        else:
            reason = f"launch error: {exc}"

        after = guarded_update(self.store, job.id, lambda cur: fail_attempt(cur, job, reason, t, code))
        if after is not None:
            self.log(describe_change(job, after, reason))
            out.add(LAUNCH_FAILED, job.id, reason)
