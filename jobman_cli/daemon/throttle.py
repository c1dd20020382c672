"""A client-side token bucket in front of ``RunInstances``, shared by the launch pool.

EC2 limits ``RunInstances`` with a token bucket per account and region (AWS: 1,000 instances,
refilled at 2 per second); a call beyond it is refused with ``RequestLimitExceeded``. Pacing the
calls here, with the same shape, turns a burst larger than the bucket into a steady stream instead
of a storm of refusals, and a refusal that still comes back (other clients share the account's
bucket) empties this bucket, so every worker slows down to the refill rate at once.

Each call *reserves* its token (the count may go below zero) and is told how long to wait for it:
callers are served in the order they asked, and nobody polls.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    def __init__(self, capacity: float, refill: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        """``capacity`` tokens at most (it starts full), ``refill`` tokens per second."""
        if capacity < 1 or refill <= 0:
            raise ValueError("a token bucket needs a capacity of at least 1 and a positive refill rate")
        self.capacity = float(capacity)
        self.refill = float(refill)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tokens = float(capacity)
        self._at = monotonic()

    def _update(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.refill)
        self._at = now

    def reserve(self, tokens: float = 1.0) -> float:
        """Take ``tokens``; return how many seconds to wait before using them (0: at once)."""
        with self._lock:
            self._update()
            self._tokens -= tokens
            return max(0.0, -self._tokens / self.refill)

    def drain(self) -> None:
        """The server refused a call as too fast: start again from an empty bucket (if it is not
        already in debt), so the next calls come at the refill rate."""
        with self._lock:
            self._update()
            self._tokens = min(self._tokens, 0.0)

    @property
    def available(self) -> float:
        """Tokens left now (negative: reserved ahead by waiting callers)."""
        with self._lock:
            self._update()
            return self._tokens
