"""Time is injected so the daemon's ``tick(now)`` and the core can be driven in tests.

A clock has two sides, because they answer different questions:

* :meth:`Clock.now` — the wall clock (UTC). It says *whether* something is due or late, always
  against the times in the store (``due <= now``). NTP, a suspend/resume or a migrated VM can step
  it in either direction.
* :meth:`Clock.monotonic` — seconds on a clock that never steps. It says *how long* something took:
  how long to sleep, when the next reconciliation is, whether another daemon stopped renewing its
  lease. It means nothing across processes or hosts; only differences of it are used.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class FixedClock:
    """A clock a test moves by hand.

    * :meth:`advance` — time passes: both sides move by ``seconds``.
    * :meth:`set` — time passes up to ``now``: the monotonic side moves by the same amount if that
      is forward; a ``now`` in the past is a wall-clock step back (the monotonic side stays).
    * :meth:`step` — the wall clock alone jumps by ``seconds`` (either sign), as NTP or a resumed VM
      makes it; the monotonic side does not move.
    """

    def __init__(self, now: datetime, monotonic: float = 1000.0) -> None:
        self._now = now
        self._mono = monotonic

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def set(self, now: datetime) -> None:
        passed = (now - self._now).total_seconds()
        if passed > 0:
            self._mono += passed
        self._now = now

    def advance(self, seconds: float) -> datetime:
        self._mono += max(0.0, seconds)
        self._now = self._now + timedelta(seconds=seconds)
        return self._now

    def step(self, seconds: float) -> datetime:
        self._now = self._now + timedelta(seconds=seconds)
        return self._now
