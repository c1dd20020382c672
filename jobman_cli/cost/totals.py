"""``jobman cost``: what the ended jobs cost, in total and per group, and which have no price.

Read straight from the stored records (no :class:`~jobman_cli.model.Job` per record: a year of
jobs is read in well under a second). A job counts when it ended (finished, failed, cancelled) at
or after ``since``; its figure is its receipt's ``cost``. Three kinds of ended job:

* priced: the receipt has a figure; summed (``math.fsum``: no rounding drift over many jobs);
* unpriced: it had an instance (now, or in an earlier run a spot interruption ended) but no figure:
  the receipt is pending (the daemon makes it shortly after the end) or ``unknown: why``
  (``jobman status ID`` says why). Listed by id, never guessed;
* not launched: no instance ever ran (cancelled or failed before any launch), so nothing was billed.

Groups (``--by``): ``title``; ``image`` (the Docker image reference); ``tag``: jobs carry no tags of
their own, so ``tag`` groups by the recurring schedule that created the job (``schedule N``;
``one-off`` for a job scheduled by hand) — the one label jobman puts on every run of a job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from ..model import TERMINAL_STATES, format_time, parse_time
from .runs import ran_on_an_instance

GROUPINGS = ("title", "image", "tag")
_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)


@dataclass
class Group:
    key: str
    jobs: int = 0
    priced: int = 0
    not_launched: int = 0
    costs: list[float] = field(default_factory=list)
    unpriced: list[int] = field(default_factory=list)

    @property
    def cost(self) -> float:
        return math.fsum(self.costs)

    def add(self, record: Mapping[str, Any]) -> None:
        self.jobs += 1
        cost = record.get("cost")
        if cost is not None:
            self.priced += 1
            self.costs.append(float(cost))
        elif ran_on_an_instance(record):
            self.unpriced.append(int(record["id"]))
        else:
            self.not_launched += 1

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "jobs": self.jobs, "priced": self.priced, "cost": self.cost,
                "unpriced": {"count": len(self.unpriced), "ids": sorted(self.unpriced)},
                "not-launched": self.not_launched}


def group_key(record: Mapping[str, Any], by: str) -> str:
    if by == "title":
        return str(record.get("title") or "(untitled)")
    if by == "image":
        return str(record.get("docker-image") or "?")
    if by == "tag":
        schedule = record.get("schedule-id")
        return f"schedule {schedule}" if schedule is not None else "one-off"
    raise ValueError(by)


def ended_at(record: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(record.get("finished-at") or record.get("updated-at") or record.get("created-at"))
    except (TypeError, ValueError):
        return None


@dataclass
class Totals:
    since: datetime | None
    by: str | None
    all: Group
    groups: dict[str, Group]

    def to_json(self) -> dict[str, Any]:
        out = {"since": format_time(self.since), "by": self.by, **self.all.to_json()}
        del out["key"]
        out["groups"] = [g.to_json() for g in self.sorted_groups()] if self.by else None
        return out

    def sorted_groups(self) -> list[Group]:
        """Most expensive first; ties by name (stable, readable output)."""
        return sorted(self.groups.values(), key=lambda g: (-g.cost, g.key))


def totals(records: Iterable[Mapping[str, Any]], *, by: str | None = None, since: datetime | None = None) -> Totals:
    if by is not None and by not in GROUPINGS:
        raise ValueError(by)
    result = Totals(since, by, Group("all"), {})
    for record in records:
        if record.get("status") not in _TERMINAL:
            continue
        if since is not None:
            end = ended_at(record)
            if end is None or end < since:
                continue
        result.all.add(record)
        if by is not None:
            key = group_key(record, by)
            group = result.groups.get(key)
            if group is None:
                group = result.groups[key] = Group(key)
            group.add(record)
    return result
