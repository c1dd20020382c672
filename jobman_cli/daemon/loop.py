"""The daemon's one driver: sleep until something is worth a pass, then run one.

The loop's whole job is to call :meth:`LoopTarget.tick` at the right moments and otherwise cost
nothing. It wakes

* at the next due time (``store.next_due_at()``, re-read only when the store changed),
* at the next reconciliation, or when a job that crashed may be looked at again,
* when the store's change marker moved (a ``stat`` every ``watch_interval``; another process
  added or changed a job) and something is due,
* when the waker is set (the API changed something through the service, a launch ended, a signal
  arrived).

It knows the daemon only through :class:`LoopTarget` (what :class:`~.wiring.Daemon` offers), so
neither module imports the other.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

from ..errors import JobmanError
from ..model import format_time
from ..settings import DaemonSettings
from .common import TickReport


class LoopTarget(Protocol):
    """What the loop drives: one pass (:meth:`tick`) and what it needs to know when to run it."""

    store: Any  # the store's ``change_marker()`` and ``next_due_at()``
    clock: Any
    settings: DaemonSettings

    @property
    def stopping(self) -> bool: ...

    @property
    def next_reconcile(self) -> datetime | None: ...

    def log(self, line: str) -> None: ...

    def observe(self) -> None: ...

    def tick(self, now: datetime | None = None, *, wait_launches: bool = True,
             reconcile: bool | None = None) -> TickReport: ...

    def next_wake(self, after: datetime | None = None) -> datetime | None: ...

    def sleep(self, seconds: float) -> None: ...


class _Errors:
    """Logs a failing loop step once per distinct message, so a broken store does not flood stderr."""

    def __init__(self, daemon: "LoopTarget") -> None:
        self.daemon = daemon
        self.last: str | None = None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # the loop must survive anything one step does
            message = " ".join(f"{type(exc).__name__}: {exc}".split()) if not isinstance(exc, JobmanError) else str(exc)
            if message != self.last:
                self.daemon.log(f"error: {message} (the daemon keeps running)")
                self.last = message
            return False, None
        self.last = None
        return True, result


def run_loop(daemon: LoopTarget) -> None:
    """Drive ``daemon`` until it is stopping (the only loop of the daemon; see the module doc)."""
    store, clock = daemon.store, daemon.clock
    watch = timedelta(seconds=daemon.settings.watch_interval)
    errors = _Errors(daemon)
    # The marker is always read *before* the store is: a write after that read moves the marker,
    # so the next poll notices it even if the tick's own read just missed it.
    _, marker = errors.call(store.change_marker)
    errors.call(daemon.observe)  # the first look only remembers the active jobs' states
    now = clock.now()
    errors.call(daemon.tick, now, wait_launches=False, reconcile=True)
    last_tick = now
    _, next_due = errors.call(store.next_due_at)
    dirty = False  # the store changed since the last pass, while older due jobs were still in flight
    daemon.log(f"ready; next job due {_when(next_due)}")
    while not daemon.stopping:
        now = clock.now()
        wake_at = [now + watch]
        if next_due is not None and next_due > last_tick:
            wake_at.append(next_due)
        if dirty:
            wake_at.append(last_tick + watch)
        if daemon.next_reconcile is not None:
            wake_at.append(daemon.next_reconcile)
        cooled = daemon.next_wake(after=last_tick)
        if cooled is not None:
            wake_at.append(cooled)
        daemon.sleep((min(wake_at) - now).total_seconds())
        if daemon.stopping:
            break
        now = clock.now()
        ok, current = errors.call(store.change_marker)
        if ok and current != marker:
            marker = current
            dirty = True
            _, next_due = errors.call(store.next_due_at)
            errors.call(daemon.observe)  # log changes other processes made (a CLI cancel, ...)
        due = False
        if next_due is not None and next_due <= now:
            # A due time passed since the last pass: go now. Otherwise the earliest due jobs are
            # the ones already in flight, and the store changed (our own claims, callbacks, a CLI
            # adding a job): look again, but at most once per watch interval during a burst.
            due = next_due > last_tick or (dirty and now - last_tick >= watch)
        cooled_now = cooled is not None and cooled <= now
        reconcile_now = daemon.next_reconcile is None or now >= daemon.next_reconcile
        if due or cooled_now or reconcile_now:
            _, marker = errors.call(store.change_marker)
            errors.call(daemon.tick, now, wait_launches=False)
            last_tick, dirty = now, False
            _, next_due = errors.call(store.next_due_at)
    daemon.log("stopping: no new launches; waiting for launches in flight")


def _when(value: datetime | None) -> str:
    return format_time(value) if value is not None else "(none scheduled)"
