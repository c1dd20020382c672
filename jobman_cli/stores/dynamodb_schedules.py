"""Schedules in the DynamoDB table: items of their own, beside the jobs.

Items (same table, so ``jobman store init`` and IAM policies need nothing new)::

    "schedcounter"     n (N): the last schedule id handed out (atomic conditional UpdateItem,
                       never reused); nn (S): the nonce of the last increment
    "sched#<id>"       schedule_id (N), version (N), record (S: schedule_to_record as JSON),
                       wn (L of S): the nonces of the last writes

No index: the daemon reads every schedule per wake (one consistent paginated Scan filtered on the
``sched#`` prefix; the job items are filtered out server-side, so it costs read units for the
whole table — acceptable for the daemon's schedule pass, which runs at most once per occurrence
or change, not per tick). Writes are conditional exactly like the jobs': ``add_schedule`` under
``attribute_not_exists(pk)``, ``update_schedule`` compare-and-set on ``version`` with the change
applied again to the current item on a conflict, and a write nonce so that a resend after a lost
answer recognises its own committed write (see :mod:`.dynamodb`). Every write moves the store's
change marker, so a daemon notices a new or paused schedule.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable

import orjson

from ..errors import ScheduleNotFound, StoreError, one_line
from ..schedules.model import Schedule, as_stored, schedule_from_record, schedule_to_record
from .dynamodb_api import LostAnswer
from .dynamodb_items import NONCES_KEPT, item_key, new_nonce, nonce_list, nonces

SCHEDULE_PREFIX, SCHEDULE_COUNTER_PK = "sched#", "schedcounter"
_CHECK_FAILED = ("ConditionalCheckFailedException",)
MAX_ATTEMPTS = 40
MIN_CAS_SECONDS = 15.0
ScheduleChange = Callable[[Schedule], Schedule]


def encode_schedule(schedule: Schedule, write_nonces: list[str]) -> dict[str, Any]:
    return {
        "pk": {"S": f"{SCHEDULE_PREFIX}{schedule.id}"},
        "schedule_id": {"N": str(schedule.id)},
        "version": {"N": str(schedule.version)},
        "record": {"S": orjson.dumps(schedule_to_record(schedule)).decode()},
        "wn": nonce_list(write_nonces[-NONCES_KEPT:]),
    }


class DynamoDBSchedules:
    """The schedule half of :class:`~jobman_cli.stores.dynamodb.DynamoDBStore` (see the port)."""

    # The store provides these (and ``_next_id(counter)``, ``_touch``, ``_pages``, ``_read``).
    table: str
    location: str
    _api: Any

    def _decode_schedule(self, item: dict[str, Any]) -> Schedule:
        try:
            schedule = schedule_from_record(orjson.loads(item["record"]["S"]))
            if f"{SCHEDULE_PREFIX}{schedule.id}" != item["pk"]["S"]:
                raise ValueError(f"its record says id {schedule.id}")
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise StoreError(f"{self.location}: item {item.get('pk', {}).get('S', '?')} is malformed "
                             f"({type(exc).__name__}: {one_line(exc)})") from None
        return schedule

    def add_schedule(self, draft: Schedule) -> Schedule:
        """A fresh id from the schedule counter, then the item under ``attribute_not_exists``
        (an id someone else holds — a counter set back by hand — takes the next id)."""
        from botocore.exceptions import ClientError

        for _ in range(MAX_ATTEMPTS):
            nonce = new_nonce()
            schedule = as_stored(dataclasses.replace(draft, id=self._next_id(SCHEDULE_COUNTER_PK)))
            pk = f"{SCHEDULE_PREFIX}{schedule.id}"
            try:
                self._api.write("put_item", expect=_CHECK_FAILED, TableName=self.table,
                                Item=encode_schedule(schedule, [nonce]), ConditionExpression="attribute_not_exists(pk)",
                                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            except ClientError as exc:
                if nonce not in nonces(exc.response.get("Item", {})):
                    continue
            except LostAnswer as lost:
                item = self._read(pk)
                if item is None:
                    from . import WriteOutcomeUnknown

                    raise WriteOutcomeUnknown(f"{self.location}: no answer from DynamoDB ({lost.detail}); schedule "
                                              f"{schedule.id} may or may not have been added; see 'jobman schedules "
                                              "list' before adding it again") from None
                if nonce not in nonces(item):
                    continue
            self._touch()
            return schedule
        raise StoreError(f"{self.location}: could not add a schedule after {MAX_ATTEMPTS} attempts (ids taken)")

    def get_schedule(self, schedule_id: int) -> Schedule:
        schedule_id = _as_schedule_id(schedule_id)
        item = self._read(f"{SCHEDULE_PREFIX}{schedule_id}")
        if item is None:
            raise ScheduleNotFound(schedule_id)
        return self._decode_schedule(item)

    def list_schedules(self) -> list[Schedule]:
        """Every schedule by id: a consistent, paginated Scan filtered on the ``sched#`` prefix."""
        items = self._pages("scan", TableName=self.table, ConsistentRead=True,
                            FilterExpression="begins_with(pk, :p)",
                            ExpressionAttributeValues={":p": {"S": SCHEDULE_PREFIX}})
        return sorted((self._decode_schedule(item) for item in items), key=lambda s: s.id)

    def update_schedule(self, schedule_id: int, change: ScheduleChange) -> Schedule:
        """Compare-and-set on ``version``; ``change`` may run once per conflicting writer, always
        on the schedule as currently stored."""
        from botocore.exceptions import ClientError

        schedule_id = _as_schedule_id(schedule_id)
        pk, nonce = f"{SCHEDULE_PREFIX}{schedule_id}", new_nonce()
        item = self._read(pk)
        deadline = time.monotonic() + MIN_CAS_SECONDS
        for attempt in itertools.count():
            if attempt >= MAX_ATTEMPTS and time.monotonic() >= deadline:
                raise StoreError(f"{self.location}: schedule {schedule_id}: gave up after {attempt} conflicting writes")
            if item is None:
                raise ScheduleNotFound(schedule_id)
            current = self._decode_schedule(item)
            new = change(current)
            if new is current:
                return current
            if not isinstance(new, Schedule) or new.id != schedule_id:
                raise TypeError(f"a change of schedule {schedule_id} must return that schedule (got {new!r:.60})")
            if new.version <= current.version:
                new = dataclasses.replace(new, version=current.version + 1)
            new = as_stored(new)
            try:
                self._api.write("put_item", expect=_CHECK_FAILED, TableName=self.table,
                                Item=encode_schedule(new, nonces(item) + [nonce]), ConditionExpression="version = :v",
                                ExpressionAttributeValues={":v": {"N": str(current.version)}},
                                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            except ClientError as exc:
                item = exc.response.get("Item")  # as it is now (None: deleted meanwhile)
                if item is None or nonce not in nonces(item):
                    _pause(attempt)
                    continue
            except LostAnswer as lost:
                item = self._read(pk)
                if item is None or nonce not in nonces(item):
                    if item is not None and int(item["version"]["N"]) == current.version:
                        from . import WriteOutcomeUnknown

                        raise WriteOutcomeUnknown(f"{self.location}: no answer from DynamoDB ({lost.detail}); the "
                                                  f"change of schedule {schedule_id} may or may not have been applied; "
                                                  "retrying is safe") from None
                    continue
            self._touch()
            return new
        raise AssertionError("unreachable")

    def delete_schedule(self, schedule_id: int) -> None:
        """Delete the item (its jobs stay); ScheduleNotFound when there is none."""
        from botocore.exceptions import ClientError

        schedule_id = _as_schedule_id(schedule_id)
        pk = f"{SCHEDULE_PREFIX}{schedule_id}"
        try:
            self._api.write("delete_item", expect=_CHECK_FAILED, TableName=self.table, Key=item_key(pk),
                            ConditionExpression="attribute_exists(pk)")
        except ClientError:
            raise ScheduleNotFound(schedule_id) from None
        except LostAnswer:
            if self._read(pk) is not None:
                raise StoreError(f"{self.location}: no answer from DynamoDB deleting schedule {schedule_id}, and it "
                                 "is still there; retrying is safe") from None
        self._touch()


def _pause(attempt: int) -> None:
    if attempt >= 2:
        import random

        time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))


def _as_schedule_id(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ScheduleNotFound(str(value))
