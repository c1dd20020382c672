"""Housekeeping shared by ``jobman prune`` and the daemon's daily retention: the retention setting
and how a list of removed ids is shown. Standard library only (the CLI imports it).

Why retention is off unless asked for: deleting history is not something an upgrade should start
doing by itself, and what "old" means differs per team (an audit may need a year). A store of a
year of 5-minute cron jobs (105,120 jobs) stays usable without it (README: "Housekeeping").
"""

from __future__ import annotations

from typing import Any, Sequence

from .errors import ConfigError, InvalidInput

#: Values of the retention setting that mean "keep everything" (e.g. ``JOBMAN_RETENTION=off``
#: overriding a config file's value).
OFF = ("off", "none", "never")
#: Ids shown in a message before "and N more".
SHOWN_RANGES = 12


def parse_retention(value: Any, name: str, *, flag: bool = False) -> int | None:
    """The retention setting as seconds (None: off). A DUR such as ``90d`` (at most ten years), a
    whole number of seconds, or ``off``. Anything else is a one-line error naming ``name``: a usage
    error (exit 2) for a flag, a configuration error (exit 1) for the environment or config file."""
    from .service import MAX_WINDOW
    from .validation import parse_duration

    if value is None or (isinstance(value, str) and value.strip().lower() in OFF):
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidInput(name, f"must be a duration such as '90d' (got {type(value).__name__})")
        return parse_duration(value, field=name, maximum=MAX_WINDOW)
    except InvalidInput as exc:
        if flag:
            raise InvalidInput(name, f"{exc.rule}, or 'off'") from None
        raise ConfigError(f"{exc}, or 'off'") from None


def id_ranges(ids: Sequence[int], shown: int = SHOWN_RANGES) -> str:
    """``1-3, 7, 9-12`` for ascending ids; past ``shown`` ranges, ``... and N more``."""
    ranges: list[tuple[int, int]] = []
    for job_id in ids:
        if ranges and job_id == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], job_id)
        else:
            ranges.append((job_id, job_id))
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:shown]]
    rest = sum(b - a + 1 for a, b in ranges[shown:])
    return ", ".join(parts) + (f" and {rest} more" if rest else "")
