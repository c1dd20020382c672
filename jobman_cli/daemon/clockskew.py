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
    """The episode's state, shared by the launch workers (thread-safe).

    Answers are reported after the fact, each by its own worker, so two workers' reports can come
    in the other order than their requests went out. Each request therefore takes a ticket first
    (:meth:`sending`, kept per thread): a refusal of a request sent before one that was accepted
    is stale (the clock is right now) and does not reopen the episode; an acceptance of a request
    sent before one that was refused does not end it. The lines are written under the lock, so
    they come in the order of the state changes they announce."""

    def __init__(self, log: Log, backoff_max: float) -> None:
        """``backoff_max``: the longest pause between resends, for the first line."""
        self.log = log
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._skewed = False  # AWS refused this host's clock and has not accepted a request since
        self._sent = 0  # tickets handed out
        self._accepted = 0  # the newest ticket accepted
        self._refused = 0  # the newest ticket refused for the clock
        self._mine = threading.local()  # .ticket: the calling thread's request under way

    def sending(self) -> None:
        """The calling thread is about to send a request whose answer it will report here."""
        with self._lock:
            self._sent += 1
            self._mine.ticket = self._sent

    def _ticket(self) -> int:
        """(Holding the lock.) The calling thread's ticket; one that took none counts as sent now."""
        return getattr(self._mine, "ticket", None) or self._sent

    def refused(self, exc: LaunchError) -> None:
        """AWS refused a request for this host's clock: say so once, until it accepts one again."""
        with self._lock:
            ticket = self._ticket()
            if ticket < self._accepted:
                return  # a request sent after this one was accepted: the clock is right now
            self._refused = max(self._refused, ticket)
            if self._skewed:
                return
            self._skewed = True
            self.log(f"this host's clock looks wrong: AWS refused a signed request as outside its time window "
                     f"(about 5 minutes) ({exc}); a refused request starts nothing, due launches are sent again with "
                     f"a back-off of up to {self.backoff_max:g}s until the clock is right (check NTP/chrony)")

    def accepted(self) -> None:
        """AWS answered a request: if it had refused this host's clock, say that the episode is over."""
        with self._lock:
            ticket = self._ticket()
            self._accepted = max(self._accepted, ticket)
            if not self._skewed or ticket < self._refused:
                return  # no episode, or a request sent after this one was refused since
            self._skewed = False
            self.log("AWS accepts this host's clock again")
