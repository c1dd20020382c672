"""Daily retention: prune the jobs that ended longer ago than ``[daemon] retention``.

Driven by :meth:`~jobman_cli.daemon.wiring.Daemon.tick` with the pass's ``now`` (so a test drives
it with a fake clock): the first pass after start prunes, then one pass a day. A failed prune (the
store unreachable) is logged and tried again an hour later, not a day later. Several daemons on one
shared store may each prune: every delete is conditional (see ``JobStore.prune``), so they can only
find less to do. Off (None) unless configured: see :mod:`jobman_cli.housekeeping`.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from ..errors import JobmanError, one_line
from ..housekeeping import id_ranges
from ..model import format_time
from ..stores.base import JobStore
from .common import Log, error_text

INTERVAL = timedelta(days=1)
RETRY = timedelta(hours=1)


class Retention:
    """Once a day, ``store.prune(now - keep)``. ``keep``: seconds, or None for never."""

    def __init__(self, store: JobStore, keep: int | None, *, log: Log, interval: timedelta = INTERVAL) -> None:
        self.store = store
        self.keep = keep
        self.log = log
        self.interval = interval
        self._next: datetime | None = None  # None: the next pass prunes
        self._lock = threading.Lock()
        self._ran = False

    def due(self, now: datetime) -> bool:
        """Whether this pass prunes; if so, the next one is booked now (a background prune still
        running when the next pass comes is not started twice)."""
        if self.keep is None:
            return False
        with self._lock:
            if self._next is not None and now < self._next:
                return False
            self._next = now + self.interval
            return True

    def run(self, now: datetime) -> list[int] | None:
        """Prune now (call after :meth:`due` said so): the removed ids, or None if it failed."""
        assert self.keep is not None
        cutoff = now - timedelta(seconds=self.keep)
        try:
            ids = self.store.prune(cutoff)
        except (JobmanError, OSError) as exc:
            with self._lock:
                self._next = now + RETRY
            text = one_line(str(exc)) if isinstance(exc, JobmanError) else error_text(exc)
            self.log(f"retention: prune failed, trying again in an hour: {text}")
            return None
        if ids or not self._ran:  # the first run always says so: the operator sees it is on
            listed = f": {id_ranges(ids)}" if ids else "; next run in a day"
            self.log(f"retention: removed {len(ids)} job(s) that ended before {format_time(cutoff)}{listed}")
        self._ran = True
        return ids

    def step(self, now: datetime) -> list[int] | None:
        """:meth:`due` then :meth:`run`: None when not due (or failed)."""
        return self.run(now) if self.due(now) else None
