"""Schedules of the TinyDB store: the file ``<store>.schedules`` beside the job file, under its lock.

Layout (a plain TinyDB document too: tables ``schedules`` and ``meta``)::

    {"schedules":{"1":{<schedule_to_record>},...},
     "meta":{"1":{"format":"jobman-schedules","schema":1,"store-id":"<the job file's>","next-id":N}}}

Why a file of its own and not a table in the job file: the job file's last line (where every table
but ``jobs`` lives) is parsed by every one-shot command. Measured at 10,000 jobs, ``open + get`` took
5 ms with no schedules, 20 ms with 1,000 schedules in that line and 103 ms with 100 schedules
holding their 500 run records each (a 5.7 MB line) -- schedules would have slowed every job
command. Here the job file and its fast paths are untouched: a schedule write never rewrites the
job file, never changes its lock nonce, so no process's parsed job snapshot is invalidated.

Safety is the job file's (see ``tinydb``): every read-modify-write holds the same exclusive lock
(``<store>.lock``) and re-reads the file inside it; writes go to a temp file that is fsynced and
renamed over it (then the directory is fsynced), so readers need no lock and a crash leaves the old
or the new file. The file names the store id of its job file: a file that is not valid JSON, is
foreign, newer, or belongs to another store raises :class:`StoreError` naming it and is never
written. Ids come from ``next-id`` (never reused, also not after a delete).

Change detection: :meth:`TinyDBSchedules.schedule_marker` is the file's ``stat`` (every write is a
rename, so a new inode), which the store's ``change_marker`` includes, so a daemon polling it sees
a new or paused schedule.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import orjson

from ..errors import ScheduleNotFound, StoreError
from .filelock import GroupCommit, Request, atomic_write, decode_json, remove_stale_temps, stat_key

SUFFIX = ".schedules"
FORMAT, SCHEMA = "jobman-schedules", 1
TABLE, META, META_ID = "schedules", "meta", "1"
_GROUP_GUARD = threading.Lock()  # creates a store's schedule GroupCommit once
if TYPE_CHECKING:  # schedules.model (~1.5 ms) is imported where a schedule is decoded or encoded:
    # TinyDBStore subclasses this class, so a top-level import was paid by every job command
    from ..schedules.model import Schedule

ScheduleChange = Callable[["Schedule"], "Schedule"]


class _Loaded:
    """One parse of the schedules file, reused while its ``stat`` is unchanged."""

    __slots__ = ("key", "table", "meta")

    def __init__(self, key: tuple | None, table: dict[str, dict], meta: dict[str, Any]) -> None:
        self.key, self.table, self.meta = key, table, meta


class TinyDBSchedules:
    """The schedule half of :class:`~jobman_cli.stores.tinydb.TinyDBStore` (see the port).

    The store provides ``path``, ``_lock`` (the job file's FileLock), ``store_id``, ``_commits``
    and ``_snapshot()``."""

    path: Path
    _lock: Any
    _commits: Any
    _loaded: _Loaded | None = None
    _swept = False
    _group: GroupCommit | None = None

    @property
    def schedules_path(self) -> Path:
        return self.path.with_name(self.path.name + SUFFIX)

    # ------------------------------------------------------------------ reading
    def _load(self) -> _Loaded:
        """The file as it is now (empty when it does not exist), validated, cached by its stat."""
        self._snapshot()  # type: ignore[attr-defined]  # refuses a closed store
        path = self.schedules_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return _Loaded(None, {}, {})
        except OSError as err:
            raise StoreError(f"{path}: cannot read: {err.strerror or err}") from None
        try:
            st = os.fstat(fd)
            key = stat_key(st)
            cached = self._loaded
            if cached is not None and cached.key == key:
                return cached
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read()
        except OSError as err:
            raise StoreError(f"{path}: cannot read: {err.strerror or err}") from None
        finally:
            os.close(fd)
        loaded = _Loaded(key, *self._validate(path, decode_json(path, data)))
        self._loaded = loaded
        return loaded

    def _validate(self, path: Path, doc: Any) -> tuple[dict[str, dict], dict[str, Any]]:
        meta = doc.get(META, {}).get(META_ID) if isinstance(doc, dict) and isinstance(doc.get(META), dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{path}: not a jobman schedules file; refusing to use it")
        if type(meta.get("schema")) is not int or meta["schema"] > SCHEMA:
            raise StoreError(f"{path}: schedules schema {meta.get('schema')!r} is not one this jobman supports")
        store_id = self.store_id  # type: ignore[attr-defined]
        if meta.get("store-id") != store_id:
            raise StoreError(f"{path}: belongs to another store (id {meta.get('store-id')!r}, this store is "
                             f"{store_id!r}); refusing to use it")
        table = doc.get(TABLE, {})
        if (not isinstance(table, dict) or type(meta.get("next-id")) is not int
                or not all(isinstance(r, dict) and k.isascii() and k.isdigit() for k, r in table.items())):
            raise StoreError(f"{path}: damaged jobman schedules file (bad table or meta)")
        return table, meta

    def _decode(self, schedule_id: int, record: dict[str, Any]) -> Schedule:
        from ..schedules.model import schedule_from_record

        try:
            schedule = schedule_from_record(record)
            if schedule.id != schedule_id:
                raise ValueError(f"its record says id {schedule.id}")
        except (KeyError, ValueError, TypeError) as err:
            raise StoreError(f"{self.schedules_path}: schedule {schedule_id} is malformed "
                             f"({type(err).__name__}: {err})") from None
        return schedule

    def schedule_marker(self) -> tuple | None:
        """The schedules file's stat (None while there is none): it moves with every schedule write."""
        try:
            return stat_key(os.stat(self.schedules_path))
        except OSError:
            return None

    def get_schedule(self, schedule_id: int) -> Schedule:
        schedule_id = _as_schedule_id(schedule_id)
        record = self._load().table.get(str(schedule_id))
        if record is None:
            raise ScheduleNotFound(schedule_id)
        return self._decode(schedule_id, record)

    def list_schedules(self) -> list[Schedule]:
        table = self._load().table
        return [self._decode(int(key), table[key]) for key in sorted(table, key=int)]

    # ------------------------------------------------------------------ writing (under the lock)
    def _write(self, apply: Callable[[dict[str, dict], dict[str, Any]], Any]) -> Any:
        """Read-modify-write under the store's exclusive lock: ``apply(table, meta)`` changes copies
        (or raises: then its own change is dropped) and returns ``(result, changed)``.

        Group-committed like the job file (:class:`~.filelock.GroupCommit`): concurrent writers of
        this process (the daemon's schedule workers: 1,000 occurrences due in one minute) queue
        behind the one holding the lock, and the next leader applies the whole queue to one copy
        and rewrites the file once — one lock, one encode, two fsyncs for the batch instead of one
        each (measured: 1,000 due schedules took ~30 s one write at a time)."""
        if not self.store_id:  # type: ignore[attr-defined]
            self._commits.submit(lambda batch: None)  # the job file first: it names the store
        group = self._group
        if group is None:
            with _GROUP_GUARD:
                if self._group is None:
                    self._group = GroupCommit(self._run_batch, self.schedules_path)
                group = self._group
        return group.submit(apply)

    def _run_batch(self, batch: list[Request]) -> None:
        """One lock holder's turn: every queued change in order on one copy, one write if any changed.
        A change that raises gets its own error and changes nothing (every ``apply`` here writes into
        the copies only as its last step, after everything that can raise)."""
        with self._lock.exclusive():
            if not self._swept:  # temp files of writers killed mid-write (no live writer now: we hold the lock)
                remove_stale_temps(self.schedules_path)
                self._swept = True
            loaded = self._load()
            table, meta = dict(loaded.table), dict(loaded.meta)
            if not meta:
                meta = {"format": FORMAT, "schema": SCHEMA, "store-id": self.store_id, "next-id": 1}  # type: ignore[attr-defined]
            changed = False
            for item in batch:
                try:
                    item.result, one = item.apply(table, meta)  # type: ignore[call-arg]
                except Exception as exc:  # noqa: BLE001 - this caller's error, not the batch's
                    item.error = exc
                    continue
                changed = changed or one
            if changed:
                doc = {TABLE: {key: table[key] for key in sorted(table, key=int)}, META: {META_ID: meta}}
                try:
                    data = orjson.dumps(doc)
                except TypeError as err:
                    raise StoreError(f"{self.schedules_path}: cannot encode the schedules: {err}") from None
                atomic_write(self.schedules_path, [data + b"\n"])

    def add_schedule(self, draft: Schedule) -> Schedule:
        """A fresh id from the file's own counter (never reused, also not after a delete)."""
        from ..schedules.model import as_stored, schedule_to_record

        def apply(table: dict, meta: dict) -> tuple[Schedule, bool]:
            next_id = max(meta["next-id"], max(map(int, table), default=0) + 1)
            schedule = as_stored(dataclasses.replace(draft, id=next_id))
            table[str(next_id)] = schedule_to_record(schedule)
            meta["next-id"] = next_id + 1
            return schedule, True

        return self._write(apply)

    def update_schedule(self, schedule_id: int, change: ScheduleChange) -> Schedule:
        """Compare-and-set, as ``update``: ``change`` runs under the lock on the current schedule."""
        from ..schedules.model import Schedule, as_stored, schedule_to_record

        schedule_id = _as_schedule_id(schedule_id)
        if self.schedule_marker() is None:
            raise ScheduleNotFound(schedule_id)  # (and a read-only handle creates nothing)

        def apply(table: dict, meta: dict) -> tuple[Schedule, bool]:
            record = table.get(str(schedule_id))
            if record is None:
                raise ScheduleNotFound(schedule_id)
            current = self._decode(schedule_id, record)
            new = change(current)
            if new is current:
                return current, False
            if not isinstance(new, Schedule) or new.id != schedule_id:
                raise TypeError(f"a change of schedule {schedule_id} must return that schedule (got {new!r:.60})")
            if new.version <= current.version:
                new = dataclasses.replace(new, version=current.version + 1)
            new = as_stored(new)
            table[str(schedule_id)] = schedule_to_record(new)
            return new, True

        return self._write(apply)

    def delete_schedule(self, schedule_id: int) -> None:
        schedule_id = _as_schedule_id(schedule_id)
        if self.schedule_marker() is None:
            raise ScheduleNotFound(schedule_id)

        def apply(table: dict, meta: dict) -> tuple[None, bool]:
            if table.pop(str(schedule_id), None) is None:
                raise ScheduleNotFound(schedule_id)
            return None, True

        self._write(apply)


def _as_schedule_id(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ScheduleNotFound(str(value))
