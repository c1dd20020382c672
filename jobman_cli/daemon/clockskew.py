"""Telling the operator, once per episode, that AWS refuses this host's clock.

AWS refuses a signed request whose time is more than about 5 minutes off its own (``RequestExpired``,
``AuthFailure`` "Signature expired" ...): nothing is applied, and every launch worker and lookup
sees the same refusal until the clock is right. One line says so when the first refusal comes and
one when AWS accepts a request again, however many workers saw it in between.

Split from :mod:`.launch` (which sends the refused attempts again, with a back-off) so that module
stays readable; :mod:`.adopter` reports the refusals of its lookups here too.
"""

from __future__ import annotations

import threading

from ..errors import LaunchError
from .common import Log


class ClockSkewNotice:
    """The episode's state, shared by the launch workers (thread-safe)."""

    def __init__(self, log: Log, backoff_max: float) -> None:
        """``backoff_max``: the longest pause between resends, for the first line."""
        self.log = log
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._skewed = False  # AWS refused this host's clock and has not accepted a request since

    def refused(self, exc: LaunchError) -> None:
        """AWS refused a request for this host's clock: say so once, until it accepts one again."""
        with self._lock:
            if self._skewed:
                return
            self._skewed = True
        self.log(f"this host's clock looks wrong: AWS refused a signed request as outside its time window "
                 f"(about 5 minutes) ({exc}); a refused request starts nothing, due launches are sent again with a back-off "
                 f"of up to {self.backoff_max:g}s until the clock is right (check NTP/chrony)")

    def accepted(self) -> None:
        """AWS answered a request: if it had refused this host's clock, say that the episode is over."""
        if not self._skewed:
            return
        with self._lock:
            if not self._skewed:
                return
            self._skewed = False
        self.log("AWS accepts this host's clock again")
