"""Schedules in the TinyDB store file: the table ``schedules`` beside ``jobs`` and ``meta``.

Why in the same file, on its last line (``jobfile``'s "every other table"): a schedule write then
takes the same lock, the same atomic rename and the same group commit as a job write, so a crash
leaves the old or the new file and two processes never lose each other's update; the schedules'
own id counter (``schedule-next-id`` in meta) is committed in the same write. Plain TinyDB sees an
ordinary table. The job fast paths are untouched: the job lines and their CRC stay as they are;
only the last line grows by the schedules (a few hundred bytes each, plus their run records).

Cost: the last line is parsed with every read of the file's layout, so schedules add their size
to every one-shot command's read (1,000 schedules without history: about 0.6 MB, ~1 ms). A
schedule keeps at most :data:`~jobman_cli.schedules.model.MAX_RECORDS` records.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from ..errors import ScheduleNotFound, StoreError
from ..schedules.model import Schedule, as_stored, schedule_from_record, schedule_to_record
from .snapshot import Snapshot

SCHEDULES = "schedules"
NEXT_ID = "schedule-next-id"
ScheduleChange = Callable[[Schedule], Schedule]


def stored_table(snap: Snapshot | None) -> dict[str, Any]:
    """The schedules table of a committed state ({} when there is none), shape-checked."""
    if snap is None:
        return {}
    table = snap.table(SCHEDULES)
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(r, dict) and k.isdigit() for k, r in table.items()):
        raise StoreError(f"{snap.path}: damaged jobman store (bad schedules table)")
    return table


def decode(snap: Snapshot, schedule_id: int, record: dict[str, Any]) -> Schedule:
    try:
        schedule = schedule_from_record(record)
        if schedule.id != schedule_id:
            raise ValueError(f"its record says id {schedule.id}")
    except (KeyError, ValueError, TypeError) as err:
        raise StoreError(f"{snap.path}: schedule {schedule_id} is malformed ({type(err).__name__}: {err})") from None
    return schedule


class ScheduleBatch:
    """The schedule changes of one group commit, on top of its base snapshot (in order)."""

    def __init__(self, base: Snapshot) -> None:
        self.base = base
        self.table = stored_table(base)
        self.changed: dict[int, dict[str, Any] | None] = {}  # id -> new record, None: deleted
        counter = base.meta.get(NEXT_ID)
        highest = max(map(int, self.table), default=0)
        self.next_id = max(counter if type(counter) is int else 1, highest + 1)
        self.added = False

    @property
    def dirty(self) -> bool:
        return bool(self.changed) or self.added

    def current(self, schedule_id: int) -> Schedule:
        if schedule_id in self.changed:
            record = self.changed[schedule_id]
        else:
            record = self.table.get(str(schedule_id))
        if record is None:
            raise ScheduleNotFound(schedule_id)
        return decode(self.base, schedule_id, record)

    def add(self, draft: Schedule) -> Schedule:
        schedule = as_stored(_replace_id(draft, self.next_id))
        self.changed[schedule.id] = self._encodable(schedule)
        self.next_id += 1
        self.added = True
        return schedule

    def update(self, schedule_id: int, change: ScheduleChange) -> Schedule:
        current = self.current(schedule_id)
        new = change(current)
        if new is current:
            return current
        if not isinstance(new, Schedule) or new.id != schedule_id:
            raise TypeError(f"a change of schedule {schedule_id} must return that schedule (got {new!r:.60})")
        if new.version <= current.version:
            new = _replace_version(new, current.version + 1)
        new = as_stored(new)
        self.changed[schedule_id] = self._encodable(new)
        return new

    def delete(self, schedule_id: int) -> None:
        self.current(schedule_id)  # ScheduleNotFound if it is not there
        self.changed[schedule_id] = None

    def _encodable(self, schedule: Schedule) -> dict[str, Any]:
        """Its record, checked now: a request that cannot be stored fails alone, not its batch."""
        record = schedule_to_record(schedule)
        try:
            orjson.dumps(record)
        except TypeError as err:
            raise StoreError(f"{self.base.path}: cannot encode schedule {schedule.id}: {err}") from None
        return record

    def encoded(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tables, meta changes)`` for the commit: the whole new schedules table (ids ascending)
        and the counter."""
        table = dict(self.table)
        for schedule_id, record in self.changed.items():
            if record is None:
                table.pop(str(schedule_id), None)
            else:
                table[str(schedule_id)] = record
        table = {key: table[key] for key in sorted(table, key=int)}
        return {SCHEDULES: table}, {NEXT_ID: self.next_id}


def _replace_id(draft: Schedule, schedule_id: int) -> Schedule:
    import dataclasses

    return dataclasses.replace(draft, id=schedule_id)


def _replace_version(schedule: Schedule, version: int) -> Schedule:
    import dataclasses

    return dataclasses.replace(schedule, version=version)


class TinyDBSchedules:
    """The schedule half of :class:`~jobman_cli.stores.tinydb.TinyDBStore` (see the port)."""

    _commits: Any
    _file: Any

    def _snapshot(self) -> Snapshot | None: ...  # provided by the store

    def schedule_marker(self) -> Any:
        """Moves whenever a schedule changed: here the file's change marker (listing the schedules
        is a look at the in-memory snapshot, so a job write that also moves it costs nothing)."""
        return self.change_marker()  # type: ignore[attr-defined]

    def add_schedule(self, draft: Schedule) -> Schedule:
        """A fresh id from the file's own counter (never reused, also not after a delete)."""
        return self._commits.submit(lambda batch: batch.schedule_batch().add(draft))

    def get_schedule(self, schedule_id: int) -> Schedule:
        schedule_id = _as_schedule_id(schedule_id)
        snap = self._snapshot()
        record = stored_table(snap).get(str(schedule_id))
        if record is None or snap is None:
            raise ScheduleNotFound(schedule_id)
        return decode(snap, schedule_id, record)

    def list_schedules(self) -> list[Schedule]:
        snap = self._snapshot()
        table = stored_table(snap)
        return [decode(snap, int(key), table[key]) for key in sorted(table, key=int)]  # type: ignore[arg-type]

    def update_schedule(self, schedule_id: int, change: ScheduleChange) -> Schedule:
        """Compare-and-set, as ``update``: ``change`` runs under the file lock on the current schedule."""
        schedule_id = _as_schedule_id(schedule_id)
        if not self._file.store_id and self._snapshot() is None:
            raise ScheduleNotFound(schedule_id)  # a read-only handle must not create the file
        return self._commits.submit(lambda batch: batch.schedule_batch().update(schedule_id, change))

    def delete_schedule(self, schedule_id: int) -> None:
        schedule_id = _as_schedule_id(schedule_id)
        if not self._file.store_id and self._snapshot() is None:
            raise ScheduleNotFound(schedule_id)
        self._commits.submit(lambda batch: batch.schedule_batch().delete(schedule_id))


def _as_schedule_id(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ScheduleNotFound(str(value))
