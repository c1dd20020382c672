"""What the CLI tells a user beyond the answer itself (issue 14, "the operator's first hour"):
the note that no daemon runs, ``status --wait``'s progress, and the input slips refused with a
reason. Apart from cli.py so that module stays the command table.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .service import JobService


def no_daemon_note(location: str) -> str | None:
    """A one-line note when no daemon runs on this TinyDB store, so a scheduled job would wait
    forever without a word (None: one runs, or it cannot be told: DynamoDB daemons run anywhere).
    The daemon holds ``flock`` on ``<store>.daemon.lock`` while it runs; probing it never blocks."""
    if location.startswith("dynamodb://"):
        return None
    from pathlib import Path

    from .stores.filelock import daemon_holding

    if daemon_holding(Path(os.path.realpath(Path(location).expanduser()))) is not None:
        return None
    return f"Note: no jobman daemon is running on {location}; jobs start only while one runs ('jobman daemon')"


def refuse_repeated_env(assignments: tuple[str, ...]) -> None:
    """``-e A=1 -e A=2``: refused (exit 2), not "the last wins" silently: two values for one name in
    one command line is a copy-paste slip far more often than intent. (``--env-file`` then ``-e``
    still overrides, as documented.)"""
    from .errors import InvalidInput

    seen: dict[str, str] = {}
    for item in assignments:
        name = item.split("=", 1)[0]
        if name in seen:
            raise InvalidInput("-e", f"{name} is given twice ({seen[name]} and {item}); give each name once")
        seen[name] = item


def notify_targets(notify: tuple[str, ...], no_notify: bool, notify_on: str | None) -> list[str] | None:
    """The request's ``notify``: the targets given, ``[]`` for ``--no-notify`` (nobody, not even the
    config's defaults: the API's ``"notify": []``), or None (the ``[notify]`` defaults apply).
    ``--no-notify`` beside ``--notify`` or ``--notify-on`` contradicts itself: a usage error."""
    if no_notify:
        for given, flag in ((notify, "--notify"), (notify_on is not None, "--notify-on")):
            if given:
                raise click.UsageError(f"--no-notify and {flag} cannot be used together")
        return []
    return list(notify) if notify else None


#: Seconds between checks, while ``status --wait`` waits, whether a daemon runs on the store.
DAEMON_CHECK_INTERVAL = 10.0


def wait_with_progress(service: "JobService", job: Any, limit: float | None, location: str) -> Any:
    """:func:`_wait_in_slices` with a Ctrl-C that only sets a flag: a KeyboardInterrupt raised in
    the middle of the store's code (a snapshot being loaded, a lock being taken) could leave the
    store's state half-changed, and the "still scheduled" answer that follows reads the store again:
    it hung on CI. The flag is checked between slices (every 0.25 s), outside the store's code,
    and turned into the KeyboardInterrupt the command expects there."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _wait_in_slices(service, job, limit, location, None)
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        return _wait_in_slices(service, job, limit, location, interrupted)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_in_slices(service: "JobService", job: Any, limit: float | None, location: str,
                    interrupted: Any) -> Any:
    """``service.wait`` in slices, saying on stderr what it waits for: each status change when stderr
    is a terminal, and (always) a note whenever no daemon runs on the store, for then nothing moves."""
    import time

    from .render import relative

    tty = sys.stderr.isatty()
    deadline = None if limit is None else time.monotonic() + limit
    if tty:
        due = f", due {relative(job.date_time)}" if job.status.value == "scheduled" else ""
        click.echo(f"Waiting for job {job.id} ({job.status.value}{due}); Ctrl-C stops waiting", err=True)
    shown, warned, checked = job.status, False, float("-inf")
    while True:
        if time.monotonic() - checked >= DAEMON_CHECK_INTERVAL:
            checked = time.monotonic()
            note = no_daemon_note(location)
            if note and not warned:  # once, and again if a daemon came and went
                click.echo(note, err=True)
            warned = bool(note)
        if interrupted is not None and interrupted.is_set():
            raise KeyboardInterrupt
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        step = 0.25 if left is None else min(0.25, left)
        ended = service.wait(job.id, step)
        if ended is not None:
            return ended
        current = service.get(job.id)
        if tty and current.status is not shown:
            click.echo(f"job {job.id}: {current.status.value}", err=True)
        shown = current.status
        if left is not None and left <= step:
            return None


def refuse_once_beside_a_daemon(location: str) -> None:
    """``daemon --once`` beside a running daemon on a TinyDB store: the running daemon already does
    what one pass would (and only one daemon may hold the store's lock), so say that, not just "busy"."""
    if location.startswith("dynamodb://"):
        return  # shared stores allow several daemons
    from pathlib import Path

    from .errors import ConfigError
    from .stores.filelock import daemon_holding

    pid = daemon_holding(Path(os.path.realpath(Path(location).expanduser())))
    if pid is not None:
        who = f"a jobman daemon (pid {pid})" if pid else "a jobman daemon"
        raise ConfigError(f"{who} is already running on {location}; it launches due jobs and reconciles by itself, "
                          "so --once is not needed (use --once only where no daemon runs, e.g. from cron)")
