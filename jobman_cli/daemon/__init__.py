"""``jobman daemon``: launch due jobs on EC2 and follow them to the end (DESIGN.md section 5).

The daemon is a set of small parts, each with one job and a ``step``; :mod:`.wiring` builds them
into a :class:`Daemon` (its module docstring has the map), :mod:`.loop` is the only driver, and
:mod:`.main` is the ``jobman daemon`` process around them. Read :mod:`.wiring` first.
"""

from __future__ import annotations

from .common import CLAIMED_BY, DEFAULT_LAUNCH_LEASE, Outcome, TickReport, format_duration
from .main import run_daemon
from .wiring import Daemon

__all__ = ["Daemon", "TickReport", "Outcome", "run_daemon", "format_duration", "CLAIMED_BY", "DEFAULT_LAUNCH_LEASE"]
