"""Launching one claimed attempt: render its user-data, call ``RunInstances``, record the answer.

The job arrives here already claimed (``launching``, its attempt's ``ClientToken`` stored, only the
hash of its callback token stored) by :mod:`.starter` or taken over by :mod:`.adopter`. Every
``RunInstances`` first takes a token from the shared :class:`~.throttle.TokenBucket`, and is sent
once (the launcher never resends it by itself). Then, by what the answer means
(:mod:`jobman_cli.launchers.base`):

* **launched**: the instance is recorded (``running``); if the job was cancelled (or reported)
  meanwhile, the new instance is terminated at once.
* **outcome unknown** (read timeout, connection reset or closed, 5xx): not a failed attempt. After a
  backoff the attempt's instance is looked up by tag; found, it is recorded; not found (the lookup
  itself must succeed), the *same* attempt is sent again, with the same ``ClientToken`` and the same
  user-data (so the same callback token). This repeats until it is found or launched, the job's
  start deadline passes (one last lookup, then ``missed-start-deadline``), the job moves on (a
  cancel), or the daemon stops (the job stays ``launching``; the next daemon looks it up first).
  A fresh claim still waiting for its first accepted send when the daemon stops goes back to
  ``scheduled`` instead.
  Once an attempt had an unknown outcome, a later retryable error never gives the attempt up: its
  instance may exist.
* **throttled** (``RequestLimitExceeded``): nothing started, not a failed attempt: the bucket is
  emptied (every worker slows to the refill rate) and the same attempt is sent again when a token
  is free. Only the start deadline can end a job that keeps being throttled.
* **refused for this host's clock** (``RequestExpired``, ``AuthFailure`` "Signature expired" ...:
  the clock is more than about 5 minutes off AWS's): nothing started, not a failed attempt. The
  same attempt is sent again after a back-off (1 s doubling to 30 s), then when a token is free,
  until the clock is right; only the start deadline can end it. One line says that this host's
  clock looks wrong (with AWS's message) when it starts, and one when AWS accepts it again.
* **token in use** (``IdempotentParameterMismatch``, after a take-over rendered a new callback
  token): the attempt's instance exists; it is looked up (tags, then the ``client-token`` filter, a
  few times) and adopted. Not found yet: the job stays ``launching`` and is looked at again later.
* **this rung refused** (``InsufficientInstanceCapacity``, ``InsufficientCapacity``,
  ``SpotMaxPriceTooLow``, ``MaxSpotInstanceCountExceeded``, ``Unsupported``; and, skipping the
  rungs they rule out, ``InsufficientFreeAddressesInSubnet`` (that subnet) and ``VcpuLimitExceeded``
  / ``InstanceLimitExceeded`` (that market): nothing started, :data:`~jobman_cli.capacity.LADDER_SCOPES`):
  the next rung of the launch ladder (:mod:`jobman_cli.capacity`) is sent at once, each rung once per
  attempt, each with a ``ClientToken`` of its own. Every rung refused or skipped: back to ``scheduled`` with
  the backoff below (bounded by the start deadline, not by ``max_attempts``), then
  ``missed-start-deadline`` with the last AWS error. An unknown outcome pins the attempt to its
  rung (resent with that rung's token, after a tag lookup, as above): the ladder never moves on
  from a rung that may have started an instance. It moves on to the next rung only when the resend
  with the same token is itself refused for capacity and a lookup by tag and by that token finds
  nothing (EC2 answers a token that started an instance with that instance, not a refusal); on the
  last rung the attempt is kept and resent as before.
* **nothing started** (any other retryable error): back to ``scheduled`` with exponential backoff,
  up to ``max_attempts`` failed launches (``Job.launch_failures``: relaunches after spot
  interruptions and every-rung-refused passes do not count); anything else fails the job as
  ``launch-failed`` with AWS's code and message. After an unknown outcome of this attempt, such a failure is settled by one more lookup
  first (by tag, then client token): found, the instance is recorded; the lookup failing, the job
  stays ``launching`` and is looked at again later (:mod:`.adopter`); only "none exists" fails it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from ..clock import Clock
from ..cost.limits import UNCHECKED, launch_refusal
from ..errors import InvalidInput, JobmanError, LaunchError
from ..capacity import LADDER_CODES, ladder, narrowed, next_rung, placement_of, ruled_out
from ..launchers.base import InstanceInfo, Launcher, LaunchOutcomeUnknown, LaunchThrottled, LaunchTokenInUse
from ..joblogs import LogTarget
from ..launchers.userdata import callback_url_for, render_user_data
from ..model import Job, JobStatus
from ..settings import DaemonSettings
from ..stores.base import JobStore
from .clockskew import ClockSkewNotice
from .common import (ADOPTED, CANCELLED_DURING_LAUNCH, LAUNCHED, Collector, Log, Skip, best_instance, describe_change,
                     format_duration, guarded_update)
from .ladder import found_placement, ladder_defaults, moving_on, refused_everywhere
from .throttle import TokenBucket
from .unlaunched import failed, give_back, missed, unchecked

#: After an unknown outcome: seconds before the lookup and resend, doubling up to the maximum.
UNKNOWN_BACKOFF_FIRST = 1.0
UNKNOWN_BACKOFF_MAX = 30.0
#: ``IdempotentParameterMismatch``: pauses before each lookup of the attempt's existing instance.
TOKEN_IN_USE_LOOKUPS = (0.0, 1.0, 2.0, 4.0, 8.0)
#: Refused for this host's clock: seconds before the attempt is sent again, doubling up to the maximum.
SKEW_BACKOFF_FIRST = 1.0
SKEW_BACKOFF_MAX = 30.0


class Launch:
    def __init__(self, store: JobStore, launcher: Launcher, clock: Clock, settings: DaemonSettings, *,
                 public_url: str, callback_ca: str | None, bucket: TokenBucket, log: Log,
                 log_target: "LogTarget | None" = None,
                 wake: Callable[[], None], stopping: Callable[[], bool],
                 defer: Callable[[int, datetime], None]) -> None:
        """``defer(job_id, until)``: leave the job alone until then (its instance exists but was not
        found yet). ``stopping()``: the daemon is stopping; a waiting launch gives up its wait."""
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.settings = settings
        self.public_url = public_url
        self.callback_ca = callback_ca
        self.log_target = log_target
        self.bucket = bucket
        self.log = log
        self.wake = wake
        self.stopping = stopping
        self._defer = defer
        #: ``pause(seconds)``: wait (real time), False if the daemon began stopping. Tests that
        #: drive a fixed clock replace it with one that moves their clock.
        self.pause: Callable[[float], bool] = self._sleep
        #: ``clock_skewed(exc)`` / ``clock_accepted()``: one line when AWS starts and stops refusing this host's clock.
        self.skew = ClockSkewNotice(log, SKEW_BACKOFF_MAX)
        self.clock_skewed: Callable[[LaunchError], None] = self.skew.refused
        self.clock_accepted: Callable[[], None] = self.skew.accepted

    def _sleep(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self.stopping():
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.1))
        return False

    def run(self, job: Job, callback_token: str, out: Collector, *, fresh: bool = False) -> None:
        """Launch the claimed attempt (see the module docstring), then record what happened.

        ``fresh``: this daemon has just claimed the attempt, so no earlier process sent it. If the
        daemon stops while such an attempt waits for a token and no send of it may have started an
        instance, the job goes back to ``scheduled`` at once (nothing half launched is left)."""
        try:
            user_data = render_user_data(job, callback_url=callback_url_for(self.public_url, job.id),
                                         callback_token=callback_token, callback_ca=self.callback_ca,
                                         logs=self.log_target)
        except InvalidInput as exc:  # cannot happen for a validated job; never launch what we cannot quote
            failed(self, job, LaunchError(f"cannot render user-data: {exc}", retryable=False), out)
            return
        deadline = job.start_by
        rungs = ladder(job, *ladder_defaults(self.launcher))
        refused = launch_refusal(job, [r.instance_type for r in rungs], self.launcher)  # --max-cost
        if refused is not None:
            # Over the limit: launch-failed. Not checkable: not a failed launch (nothing was sent).
            (unchecked if refused.code == UNCHECKED else failed)(self, job, refused, out)
            return
        # The rung being sent; it moves on only after a refusal that started nothing. A take-over
        # resumes at the rung the dead daemon stored (the rungs before it were refused).
        rung = first = min(max(job.rung, 0), len(rungs) - 1)
        refusals: list[LaunchError] = []  # this pass's capacity refusals, one per rung
        excluded: set[tuple[str, Any]] = set()  # what they rule out for the rest of the pass (capacity.ruled_out)
        unknown: LaunchError | None = None  # set once a send of this attempt may have started an instance
        last: LaunchError | None = None  # why the previous send did not launch
        backoff = UNKNOWN_BACKOFF_FIRST
        skew_backoff = SKEW_BACKOFF_FIRST
        throttled = 0
        while True:
            if last is not None:  # a resend: is it still wanted, and did an earlier send launch?
                if unknown is not None:
                    found = self._look_up(job)
                    if found is None:  # the lookup failed too: never resend without one
                        if not self._wait(job, backoff):
                            return
                        backoff = min(UNKNOWN_BACKOFF_MAX, backoff * 2)
                        continue
                    if found:
                        chosen = best_instance(found)
                        self.log(f"job {job.id}: found instance {chosen.instance_id} ({chosen.state}) of attempt "
                                 f"{job.attempts} by tag after an unknown outcome ({unknown.code})")
                        self.record(job, chosen.instance_id, out, LAUNCHED, found_placement(chosen))
                        return
                if not self._still_wanted(job):
                    return
                t = self.clock.now()
                if t > deadline:
                    missed(self, job, t, last, out)
                    return
            wait = self.bucket.reserve()
            if wait > 0 and not self.pause(wait):
                if fresh and unknown is None:
                    give_back(self, job, out)
                else:
                    self._left(job)
                return
            request = narrowed(job, rungs[rung])  # one type, subnet and market; the rung's ClientToken
            self.skew.sending()
            try:
                instance_id = self.launcher.launch(request, user_data=user_data, store_id=self.store.store_id)
            except LaunchThrottled as exc:
                if getattr(exc, "clock_skew", False):  # nothing started: wait for the clock, not a token
                    self.clock_skewed(exc)
                    last = exc
                    if not self.pause(skew_backoff):
                        if fresh and unknown is None:
                            give_back(self, job, out)
                        else:
                            self._left(job)
                        return
                    skew_backoff = min(SKEW_BACKOFF_MAX, skew_backoff * 2)
                    continue
                self.clock_accepted()
                self.bucket.drain()
                throttled += 1
                if throttled == 1:
                    self.log(f"job {job.id}: RunInstances throttled ({exc.code}); sending attempt {job.attempts} "
                             f"again at the request rate")
                last = exc
                continue
            except LaunchTokenInUse as exc:
                self.clock_accepted()
                self._token_in_use(job, exc, out, token=request.launch_token)
                return
            except LaunchOutcomeUnknown as exc:
                unknown = last = exc
                self.log(f"job {job.id}: outcome of RunInstances unknown ({exc}); looking attempt {job.attempts} "
                         f"up by tag in {backoff:g}s before sending it again with the same client token")
                if not self._wait(job, backoff):
                    return
                backoff = min(UNKNOWN_BACKOFF_MAX, backoff * 2)
                continue
            except LaunchError as exc:
                # The rung a refusal moves on to (None: not a ladder refusal, or no rung left).
                ahead = (next_rung(rungs, rung, excluded | {ruled_out(rungs[rung], exc.code)})
                         if exc.code in LADDER_CODES else None)
                if unknown is not None and ahead is not None and self._started_nothing(job, request):
                    # EC2 answers a resend of a token that started an instance with that instance; refused
                    # (a ladder code), and nothing found by tag or token: the lost send started nothing, so
                    # the next rung may be sent. (With no rung left the attempt keeps its token and is
                    # resent: a new attempt would gain nothing and lose that guarantee.)
                    self.log(f"job {job.id}: the resend of rung {rung + 1} with the same client token was refused "
                             f"({exc.code}) and no instance of it exists: the lost send started nothing")
                    unknown = None
                    backoff = UNKNOWN_BACKOFF_FIRST
                if unknown is not None and exc.retryable and exc.code != "IdempotentInstanceTerminated":
                    # An earlier send may have started this attempt's instance: keep the attempt.
                    last = exc
                    self.log(f"job {job.id}: RunInstances failed ({exc}) after an unknown outcome; keeping "
                             f"attempt {job.attempts}, looking again in {backoff:g}s")
                    if not self._wait(job, backoff):
                        return
                    backoff = min(UNKNOWN_BACKOFF_MAX, backoff * 2)
                    continue
                if unknown is not None:  # an earlier send may have started it: look once more first
                    self._settle(job, unknown, exc, out, token=request.launch_token)
                    return
                if exc.code in LADDER_CODES:  # nothing started on this rung: the next one it leaves, at once
                    self.clock_accepted()
                    refusals.append(exc)
                    excluded.add(ruled_out(rungs[rung], exc.code))
                    if ahead is not None:
                        self.log(moving_on(job, rungs, rung, ahead, exc, excluded))
                        if not self._store_rung(job, ahead):
                            return
                        rung = ahead
                        last = exc
                        continue
                    refused_everywhere(self, job, refusals, out, skipped=len(rungs) - first - len(refusals))
                    return
                failed(self, job, exc, out)
                return
            self.clock_accepted()
            zone = getattr(instance_id, "availability_zone", None)  # a Launched carries it
            self.record(job, str(instance_id), out, LAUNCHED, placement_of(rungs[rung], zone))
            return

    def _started_nothing(self, job: Job, request: Job) -> bool:
        """After an unknown outcome on a rung, a resend with the same ``ClientToken`` was refused for
        capacity: True when a lookup (by tag, then by that token) answers that no instance exists.
        A failed lookup decides nothing (False: the rung stays pinned)."""
        return self._look_up(job, client_token=request.launch_token) == []

    def _store_rung(self, job: Job, rung: int) -> bool:
        """Store that this attempt now sends ``rung`` (compare-and-set), *before* it is sent: a daemon
        that takes the launch over after this one dies resumes at that rung. False: not stored
        (the job moved on, or the store failed); then nothing is sent, and the job is left as it is
        (a store failure: the next look at it resends the stored rung, which was refused)."""
        t = self.clock.now()

        def move(current: Job) -> Job:
            if current.status is not JobStatus.LAUNCHING or current.attempts != job.attempts:
                raise Skip
            return current.at_rung(rung, t)

        try:
            after = guarded_update(self.store, job.id, move)
        except JobmanError as exc:
            self.log(f"job {job.id}: cannot store rung {rung + 1} of attempt {job.attempts} ({exc}); not sending "
                     f"it, looking again in {format_duration(self.settings.reconcile_interval)}")
            self._defer(job.id, t + timedelta(seconds=self.settings.reconcile_interval))
            return False
        return after is not None

    def _settle(self, job: Job, unknown: LaunchError, exc: LaunchError, out: Collector, *, token: str | None) -> None:
        """A send that started nothing (``exc``, not retryable) after an unknown outcome of this
        attempt: the earlier send may have started an instance. One last lookup decides (by tag,
        then by ``token``, the ``ClientToken`` of the rung that was sent)."""
        found = self._look_up(job, client_token=token)
        if found:
            chosen = best_instance(found)
            self.log(f"job {job.id}: found instance {chosen.instance_id} ({chosen.state}) of attempt {job.attempts} "
                     f"by tag after an unknown outcome ({unknown.code}), though a resend failed ({exc.code})")
            self.record(job, chosen.instance_id, out, LAUNCHED, found_placement(chosen))
        elif found is None:  # cannot tell whether it launched: never fail it blind
            later = self.clock.now() + timedelta(seconds=self.settings.reconcile_interval)
            self.log(f"job {job.id}: RunInstances failed ({exc}) after an unknown outcome ({unknown.code}) and "
                     f"attempt {job.attempts} cannot be looked up; left in launching, looking again in "
                     f"{format_duration(self.settings.reconcile_interval)}")
            self._defer(job.id, later)
        else:
            failed(self, job, exc, out)

    def _wait(self, job: Job, seconds: float) -> bool:
        """Pause; False (and say so) if the daemon began stopping meanwhile."""
        if self.pause(seconds):
            return True
        self._left(job)
        return False

    def _left(self, job: Job) -> None:
        self.log(f"job {job.id}: left in launching (the daemon is stopping); the next daemon looks attempt "
                 f"{job.attempts} up by tag before launching it")

    def _look_up(self, job: Job, client_token: str | None = None) -> list[InstanceInfo] | None:
        """This attempt's instances by tag (then ``client_token``, if given), or None when the lookup failed."""
        kw = {"client_token": client_token} if client_token else {}
        self.skew.sending()
        try:
            found = self.launcher.find_instances(self.store.store_id, job_id=job.id, attempt=job.attempts,
                                                 include_terminated=True, **kw)
        except LaunchError as exc:
            if getattr(exc, "clock_skew", False):
                self.clock_skewed(exc)
            self.log(f"job {job.id}: cannot look attempt {job.attempts} up: {exc}")
            return None
        self.clock_accepted()
        return found

    def _still_wanted(self, job: Job) -> bool:
        """The job is still ``launching`` in this attempt (not cancelled or moved on meanwhile)."""
        try:
            current = self.store.get(job.id)
        except JobmanError:
            return False
        return current.status is JobStatus.LAUNCHING and current.attempts == job.attempts

    def _token_in_use(self, job: Job, exc: LaunchError, out: Collector, *, token: str | None) -> None:
        """``IdempotentParameterMismatch``: this attempt's instance exists (under ``token``, the
        ``ClientToken`` of the rung that was sent). Find it and adopt it."""
        for pause in TOKEN_IN_USE_LOOKUPS:
            if pause and not self._wait(job, pause):
                return
            try:
                found = self.launcher.find_instances(self.store.store_id, job_id=job.id, attempt=job.attempts,
                                                     include_terminated=True, client_token=token)
            except LaunchError:
                continue
            if found:
                chosen = best_instance(found)
                self.log(f"job {job.id}: attempt {job.attempts} already has instance {chosen.instance_id} "
                         f"({chosen.state}; EC2 answered {exc.code}); adopting it")
                self.record(job, chosen.instance_id, out, ADOPTED, found_placement(chosen))
                return
        later = self.clock.now() + timedelta(seconds=self.settings.reconcile_interval)
        self.log(f"job {job.id}: EC2 says attempt {job.attempts} already has an instance ({exc.code}) but it was "
                 f"not found yet; looking again in {format_duration(self.settings.reconcile_interval)}")
        self._defer(job.id, later)

    def record(self, job: Job, instance_id: str, out: Collector, kind: str,
               placement: Mapping[str, Any] | None = None) -> None:
        """Record ``instance_id`` as the instance of ``job``'s attempt (``kind``: launched or adopted)
        and ``placement``, the rung it runs on (None: not known, the job keeps what it had)."""
        t = self.clock.now()

        def record(current: Job) -> Job:
            if current.attempts != job.attempts:
                raise Skip  # moved on to another attempt: the reaper ends this instance
            if current.terminal:  # cancelled (or reported) while we launched
                return current if current.instance_id else current.attach_instance(instance_id, t)
            if current.status in (JobStatus.LAUNCHING, JobStatus.RUNNING) and current.instance_id in (None, instance_id):
                return current.launched(instance_id, t, placement)
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
