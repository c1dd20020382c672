"""The daemon's one driver: sleep until something is worth a pass, then run one.

The loop's whole job is to call :meth:`LoopTarget.tick` at the right moments and otherwise cost
nothing. It wakes

* at the next due time (``store.next_due_at()``, re-read only when the store changed),
* at the next reconciliation, or when a job that crashed may be looked at again,
* when another daemon's launch claim runs out unless renewed (shared stores: :mod:`.lease`),
* when the store's change marker moved (a ``stat`` every ``watch_interval``; another process
  added or changed a job) and something is due,
* when the waker is set (the API changed something through the service, a launch ended, a signal
  arrived).

**Two clocks** (:mod:`jobman_cli.clock`). Whether a job is due is always the store's answer to
``due <= now`` on the wall clock; the loop remembers no wall-clock time to compare with, so a
wall-clock step in either direction (NTP, suspend/resume, a migrated VM) never stops or repeats a
launch: after a step back, a job due "now" is due at once; after a step forward, every job whose
time the new clock has passed is due at once (and one past its start deadline by the store's
times is failed as missed, as after any downtime). How long to sleep, when to reconcile and how
often to look again during a burst are measured on the monotonic clock, which never steps. Every
sleep is at most ``watch_interval``, so a step is noticed within that.

**Errors** (:class:`_Trouble`). A step that fails (the store unreachable, its file deleted under
the daemon) is logged once, when it starts failing, and once when it works again; meanwhile the
loop backs off (``watch_interval`` doubling up to :data:`MAX_BACKOFF`), so a broken store costs
neither log volume nor CPU, and the daemon resumes by itself when the store is back.

It knows the daemon only through :class:`LoopTarget` (what :class:`~.wiring.Daemon` offers), so
neither module imports the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Protocol

from ..errors import JobmanError
from ..model import format_time
from ..settings import DaemonSettings
from .common import TickReport, error_text, format_duration

#: The longest pause between two looks at a failing store (seconds).
MAX_BACKOFF = 10.0


class LoopTarget(Protocol):
    """What the loop drives: one pass (:meth:`tick`) and what it needs to know when to run it."""

    store: Any  # the store's ``change_marker()`` and ``next_due_at()``
    clock: Any  # ``now()`` (wall) and ``monotonic()``
    settings: DaemonSettings
    leases: Any  # ``next_expiry(after)``: when another daemon's claim runs out (monotonic)

    @property
    def stopping(self) -> bool: ...

    def log(self, line: str) -> None: ...

    def observe(self) -> None: ...

    def tick(self, now: datetime | None = None, *, wait_launches: bool = True,
             reconcile: bool | None = None) -> TickReport: ...

    def next_wake(self, after: datetime | None = None) -> datetime | None: ...

    def sleep(self, seconds: float) -> None: ...


class _Trouble:
    """The loop's failing steps. Each distinct failure is logged once when it starts (not again
    while it lasts, whichever step hits it), and its end once; the loop backs off meanwhile."""

    def __init__(self, daemon: LoopTarget, base: float) -> None:
        self.daemon = daemon
        self.base = base
        self.failing: dict[str, str] = {}  # step -> message, while it fails
        self.since: float | None = None  # monotonic time the current trouble began
        self.rounds = 0  # loop iterations in a row with a failure

    def call(self, step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # the loop must survive anything one step does
            message = str(exc) if isinstance(exc, JobmanError) else error_text(exc)
            message = " ".join(message.split())
            if message not in self.failing.values():
                self.daemon.log(f"error: {message} (the daemon keeps running and looks again, "
                                f"backing off up to {format_duration(MAX_BACKOFF)})")
            if self.since is None:
                self.since = self.daemon.clock.monotonic()
            self.failing[step] = message
            return False, None
        if self.failing.pop(step, None) is not None and not self.failing:
            lasted = self.daemon.clock.monotonic() - (self.since or self.daemon.clock.monotonic())
            self.daemon.log(f"recovered after {format_duration(lasted)}: the failing step works again")
            self.since, self.rounds = None, 0
        return True, result

    def retry(self, step: str) -> bool:
        """Whether ``step`` failed last time (so the loop tries it again, backing off)."""
        return step in self.failing

    def backoff(self) -> float:
        """Seconds to wait before the next iteration: 0 while nothing fails, then doubling."""
        if not self.failing:
            self.rounds = 0
            return 0.0
        self.rounds += 1
        return min(MAX_BACKOFF, self.base * 2 ** min(self.rounds, 16))


def run_loop(daemon: LoopTarget) -> None:
    """Drive ``daemon`` until it is stopping (the only loop of the daemon; see the module doc)."""
    store, clock = daemon.store, daemon.clock
    watch = daemon.settings.watch_interval
    every = daemon.settings.reconcile_interval
    trouble = _Trouble(daemon, watch)
    # The marker is always read *before* the store is: a write after that read moves the marker,
    # so the next poll notices it even if the tick's own read just missed it.
    _, marker = trouble.call("marker", store.change_marker)
    trouble.call("observe", daemon.observe)  # the first look only remembers the active jobs' states
    now = clock.now()
    trouble.call("tick", daemon.tick, now, wait_launches=False, reconcile=True)
    last_pass = reconciled = clock.monotonic()
    due_known, next_due = trouble.call("next-due", store.next_due_at)
    #: The earliest due time the last pass already handed out (it was due then), or None: the same
    #: value still due means those jobs are in flight; anything else due is new and goes at once.
    handed = next_due if due_known and next_due is not None and next_due <= now else None
    dirty = False  # the store changed since the last pass, while older due jobs were still in flight
    cooled_after: datetime | None = None  # cool-down ends up to here were already acted on
    last_now = now
    daemon.log(f"ready; next job due {_when(next_due)}")
    while not daemon.stopping:
        pause = trouble.backoff()
        if pause:
            _pause(daemon, pause)
            if daemon.stopping:
                break
        now, mono = clock.now(), clock.monotonic()
        if now < last_now:
            cooled_after = None  # the wall clock went back: cool-down ends are read afresh
        last_now = now
        seconds = min(watch, every - (mono - reconciled))
        if next_due is not None and next_due > now:
            seconds = min(seconds, (next_due - now).total_seconds())
        cooled = daemon.next_wake(after=cooled_after)
        if cooled is not None and cooled > now:
            seconds = min(seconds, (cooled - now).total_seconds())
        expiry = daemon.leases.next_expiry(after=last_pass)
        if expiry is not None:
            seconds = min(seconds, expiry - mono)
        daemon.sleep(seconds)
        if daemon.stopping:
            break
        now, mono = clock.now(), clock.monotonic()
        ok, current = trouble.call("marker", store.change_marker)
        if (ok and current != marker) or trouble.retry("observe"):
            marker, dirty = current if ok else marker, True
            due_known = False
            trouble.call("observe", daemon.observe)  # log changes other processes made (a CLI cancel, ...)
        if not due_known:
            due_known, next_due = trouble.call("next-due", store.next_due_at)
        due = False
        if next_due is not None and next_due <= now:
            # New due jobs go now. If the earliest due jobs are the ones the last pass handed out
            # (in flight) and the store changed (our own claims, callbacks, a CLI adding a job
            # due at the same instant): look again, at most once per watch interval.
            due = next_due != handed or (dirty and mono - last_pass >= watch)
        cooled = daemon.next_wake(after=cooled_after)
        cooled_now = cooled is not None and cooled <= now
        reconcile_now = mono - reconciled >= every
        expiry = daemon.leases.next_expiry(after=last_pass)
        lease_ran_out = expiry is not None and expiry <= mono
        if due or cooled_now or reconcile_now or lease_ran_out or trouble.retry("tick"):
            _, marker = trouble.call("marker", store.change_marker)
            trouble.call("tick", daemon.tick, now, wait_launches=False, reconcile=reconcile_now)
            last_pass, dirty = mono, False
            if reconcile_now:
                reconciled = mono
            if cooled_now:
                cooled_after = cooled if cooled_after is None else max(cooled_after, cooled)
            due_known, next_due = trouble.call("next-due", store.next_due_at)
            handed = next_due if due_known and next_due is not None and next_due <= now else None
    daemon.log("stopping: no new launches; waiting for launches in flight")


def _pause(daemon: LoopTarget, seconds: float) -> None:
    """Back off for ``seconds`` on the monotonic clock; only a stop request ends it early (the API's
    wake-ups would otherwise turn a failing store into a busy loop)."""
    clock = daemon.clock
    end = clock.monotonic() + seconds
    while not daemon.stopping:
        before = clock.monotonic()
        if end <= before:
            return
        daemon.sleep(end - before)
        if clock.monotonic() == before:  # a clock a test holds still: one sleep is the pause
            return


def _when(value: datetime | None) -> str:
    return format_time(value) if value is not None else "(none scheduled)"
