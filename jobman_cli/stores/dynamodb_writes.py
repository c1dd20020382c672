"""The DynamoDB store's job writes: ``add`` and ``update``, and settling a write whose answer was lost.

Why a module apart from :mod:`.dynamodb` (the store: its table, its reads, its change marker): the
writes carry the concurrency and lost-answer reasoning below, which reads on its own and changes
apart from the reads. :class:`DynamoDBWrites` is a half of :class:`~.dynamodb.DynamoDBStore`, as
:class:`~.dynamodb_schedules.DynamoDBSchedules` is for schedules.

* ``update`` is compare-and-set on ``version``: a consistent GetItem, ``change(job)``, then a PutItem
  conditioned on ``version = <the version read>``. On a conflict the failed write returns the
  current item (``ReturnValuesOnConditionCheckFailure``) and the change is applied again to it, so
  of two daemons claiming one job exactly one write succeeds and the other's change function sees
  ``launching`` and steps aside. A change that forgets to bump the version gets it bumped here:
  an unchanged version would let a concurrent writer's condition pass.
* ``add`` takes a fresh id from the counter item, then writes the job item (with the idempotency
  key item, in one transaction, when the draft has a key), both under ``attribute_not_exists``.

Lost answers (DESIGN.md section 5). botocore resends a write whose answer was lost (connection
closed, timeout, 5xx); the resend then meets the write it already committed, and its condition
fails. Every write therefore carries a fresh nonce (``wn``/``nn`` in :mod:`.dynamodb_items`), asks
for the item on a failed condition (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), and a failed
condition whose item carries its own nonce is its own success, not someone else's write. That covers each conditional
write: the job PutItem of ``add`` (else: "id taken", a second job), the idempotency transaction
(else: "Already scheduled" for a new job; it also carries the nonce as ``ClientRequestToken``, with
which AWS itself answers a resend as a success; so a transaction cancelled by throttling or a
conflict, which wrote nothing, is sent again unchanged, and a new job id always gets a new nonce: AWS
refuses one token for other items), the compare-and-set of ``update`` (else: a claim
re-applied to its own result looks lost, or a transition is counted twice), and the id counter
(else: an id skipped). The ``seq`` bump alone is left plain: a doubled bump only moves the marker.
When botocore gives up, the store reads the item back: its nonce proves the write; an item that
moved on without it proves the write can never apply (conditions); otherwise
:class:`~jobman_cli.stores.WriteOutcomeUnknown`. A caller's retry is then safe: ``update`` is
conditional again, and ``add`` with the same draft object reuses its job id and nonce.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from typing import Any

from ..errors import JobNotFound, StoreError
from ..model import Job, as_stored
from . import WriteOutcomeUnknown
from .base import JobChange
from .dynamodb_api import LostAnswer, describe_error
from .dynamodb_items import COUNTER_PK, IDEM_PREFIX, JOB_PREFIX, encode_job, item_key, new_nonce, nonce_list, nonces

#: Conflicting writers on one job before ``update`` gives up (each loser re-reads for free) -- but
#: not before MIN_CAS_SECONDS: every lost round means another writer won, so only a starved writer
#: (16 threads on one job on a loaded machine lost 40 rounds in a row) gets here, and it should wait.
MAX_CAS_ATTEMPTS = 40
MIN_CAS_SECONDS = 15.0
#: Adds whose outcome is unknown, remembered so that a retry with the same draft reuses the job id.
UNSETTLED_KEPT = 256
_CHECK_FAILED = ("ConditionalCheckFailedException",)
#: Transaction cancellation reasons that mean throttling (sent again as it was, after a longer pause).
_THROTTLED_REASONS = {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}


class DynamoDBWrites:
    """The job-writing half of :class:`~jobman_cli.stores.dynamodb.DynamoDBStore` (see the module doc)."""

    # The store provides these (and ``get``, ``_call``, ``_read``, ``_touch``, ``_decode_job``).
    table: str
    location: str
    _api: Any
    _lock: Any
    _unsettled: dict[int, tuple[Job, int, str]]  # id(draft) -> (draft, job id, nonce)

    def _next_id(self, counter: str = COUNTER_PK) -> int:
        """The counter's next value (``counter``: the job ids' item, or the schedules'). A resend of an increment whose answer was lost fails its
        condition (the counter already carries its nonce) and returns the value it set, so a lost
        answer does not skip an id; if another increment landed in between, the resend takes a
        new id and the first is simply never used."""
        from botocore.exceptions import ClientError

        nonce = new_nonce()
        try:
            answer = self._call("update_item", expect=_CHECK_FAILED, TableName=self.table,
                                Key=item_key(counter),
                                UpdateExpression="SET n = if_not_exists(n, :zero) + :one, nn = :nonce",
                                ConditionExpression="attribute_not_exists(nn) OR nn <> :nonce",
                                ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"},
                                                           ":nonce": {"S": nonce}},
                                ReturnValues="UPDATED_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return int(answer["Attributes"]["n"]["N"])
        except ClientError as exc:  # only our own increment carries our nonce
            try:
                return int(exc.response["Item"]["n"]["N"])
            except (KeyError, TypeError, ValueError):
                raise StoreError(f"{self.location}: the id counter item is malformed") from None

    def add(self, draft: Job) -> tuple[Job, bool]:
        """A fresh id from the counter, then the job item (and the key item, in one transaction),
        both under ``attribute_not_exists``: a used key returns its job; a used id (someone reset
        the counter) takes the next id, so ids are never reused. Lost answers: see the module doc."""
        key = draft.idempotency_key
        with self._lock:
            unsettled = self._unsettled.pop(id(draft), None)
        job_id, nonce = (unsettled[1], unsettled[2]) if unsettled and unsettled[0] is draft else (0, new_nonce())
        if key:  # the common retry (a cron job scheduling again) then costs no job id
            item = self._call("get_item", TableName=self.table, Key=item_key(IDEM_PREFIX + key), ConsistentRead=True)
            if "Item" in item:
                return self._existing(key, item["Item"]), nonce in nonces(item["Item"])
        for attempt in range(MAX_CAS_ATTEMPTS):
            job = as_stored(dataclasses.replace(draft, id=job_id or self._next_id()))
            try:
                outcome = self._put_keyed(job, key, nonce, attempt) if key else self._put_new(job, nonce)
            except WriteOutcomeUnknown:
                self._remember(draft, job.id, nonce)
                raise
            if outcome == "again":  # not applied (a conflict, throttling): the same id and nonce again
                job_id = job.id
                continue
            if outcome is not None:
                return outcome
            # The job id was taken: take another, with a fresh nonce. The nonce is also the
            # transaction's ClientRequestToken, and DynamoDB refuses one token for other items
            # (IdempotentParameterMismatch, for 10 minutes).
            job_id, nonce = 0, new_nonce()
        raise StoreError(f"{self.location}: could not add a job after {MAX_CAS_ATTEMPTS} attempts "
                         "(job ids taken, constant conflicts or throttling)")

    def _put_new(self, job: Job, nonce: str) -> tuple[Job, bool] | None:
        """The job item under ``attribute_not_exists(pk)``; None if the id is someone else's."""
        from botocore.exceptions import ClientError

        try:
            self._api.write("put_item", expect=_CHECK_FAILED, TableName=self.table, Item=encode_job(job, [nonce]),
                            ConditionExpression="attribute_not_exists(pk)",
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if nonce not in nonces(exc.response.get("Item", {})):
                return None
        except LostAnswer as lost:
            item = self._settle(lost, f"{JOB_PREFIX}{job.id}", f"adding job {job.id}",
                                f"see 'jobman status {job.id}' before scheduling it again")
            if nonce not in nonces(item):
                return None  # another job holds the id (so ours can never be written there)
        self._touch()
        return job, True

    def _put_keyed(self, job: Job, key: str, nonce: str, attempt: int) -> tuple[Job, bool] | str | None:
        """The job and its key item in one transaction (``ClientRequestToken``: the nonce).
        ``(job, created)``, None if the id is someone else's (the job item's condition failed),
        "again" if it was cancelled for another reason (a conflicting transaction, throttling):
        nothing was written, so the caller sends the same transaction again (same id, same token)."""
        from botocore.exceptions import ClientError

        put = {"TableName": self.table, "Item": encode_job(job, [nonce]),
               "ConditionExpression": "attribute_not_exists(pk)"}
        idem = {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                "Item": {"pk": {"S": IDEM_PREFIX + key}, "job_id": {"N": str(job.id)}, "wn": nonce_list([nonce])},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        try:
            self._api.write("transact_write_items", expect=("TransactionCanceledException",),
                            TransactItems=[{"Put": put}, {"Put": idem}], ClientRequestToken=nonce)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            codes = [r.get("Code") for r in reasons]
            if len(codes) == 2 and codes[1] == "ConditionalCheckFailed":
                return self._keyed_outcome(key, reasons[1].get("Item") or self._read(IDEM_PREFIX + key) or {}, nonce)
            if codes[:1] == ["ConditionalCheckFailed"]:  # the job item exists: the id is someone else's
                return None
            if "ValidationError" in codes:  # sending it again cannot help
                raise StoreError(describe_error(self.table, "TransactionCanceledException", exc)) from None
            if any(code in _THROTTLED_REASONS for code in codes):
                _throttled_pause(attempt)
            else:
                _pause(attempt)
            return "again"
        except LostAnswer as lost:
            item = self._settle(lost, IDEM_PREFIX + key, f"adding job {job.id} (idempotency key {key!r})",
                                "scheduling again with the same idempotency key is safe")
            return self._keyed_outcome(key, item, nonce)
        self._touch()
        return job, True

    def _keyed_outcome(self, key: str, idem: dict[str, Any], nonce: str) -> tuple[Job, bool]:
        """The job a key item names; created by us if the item carries our nonce (a resend met
        our own committed transaction), else someone else's job with that key."""
        created = nonce in nonces(idem)
        job = self._existing(key, idem)
        if created:
            self._touch()
        return job, created

    def _settle(self, lost: LostAnswer, pk: str, what: str, advice: str) -> dict[str, Any]:
        """The item at ``pk`` after botocore gave up on a write to it; the caller looks for its
        nonce. A missing item proves nothing (the write may still be in flight), and neither does
        a failed read: both are :class:`WriteOutcomeUnknown` (one line: ``what`` may or may not
        have happened; ``advice``), never a guess."""
        try:
            item = self._read(pk)
        except StoreError as exc:
            raise self._unknown(lost, what, f"reading it back failed too: {exc}", advice) from None
        if item is None:
            raise self._unknown(lost, what, "not in the table yet", advice)
        return item

    def _unknown(self, lost: LostAnswer, what: str, state: str, advice: str) -> WriteOutcomeUnknown:
        return WriteOutcomeUnknown(f"{self.location}: no answer from DynamoDB ({lost.detail}); {what} may or may "
                                   f"not have been applied ({state}); {advice}")

    def _remember(self, draft: Job, job_id: int, nonce: str) -> None:
        """Keep an unsettled add's id and nonce for a retry with the same draft (the draft itself
        is kept too, so its ``id()`` cannot be reused by another object meanwhile)."""
        with self._lock:
            if len(self._unsettled) >= UNSETTLED_KEPT:
                self._unsettled.pop(next(iter(self._unsettled)))
            self._unsettled[id(draft)] = (draft, job_id, nonce)

    def _existing(self, key: str, item: dict[str, Any]) -> Job:
        if "job_id" not in item:  # the cancelled transaction did not return the item: read it
            item = self._read(IDEM_PREFIX + key) or {}
        try:
            return self.get(int(item["job_id"]["N"]))  # type: ignore[index]
        except (JobNotFound, KeyError, TypeError, ValueError):
            raise StoreError(f"{self.location}: idempotency key {key!r} names a job that does not exist") from None

    def update(self, job_id: int, change: JobChange) -> Job:
        """Compare-and-set on ``version`` (see the module doc). ``change`` may run more than once
        (once per conflicting writer), always on the job as currently stored."""
        from botocore.exceptions import ClientError

        pk, nonce = f"{JOB_PREFIX}{job_id}", new_nonce()
        item = self._read(pk)
        deadline = time.monotonic() + MIN_CAS_SECONDS
        for attempt in itertools.count():
            if attempt >= MAX_CAS_ATTEMPTS and time.monotonic() >= deadline:
                raise StoreError(f"{self.location}: job {job_id}: gave up after {attempt} conflicting writes")
            if item is None:
                raise JobNotFound(job_id)
            current = self._decode_job(item)
            new = change(current)
            if new is current:
                return current
            if not isinstance(new, Job) or new.id != job_id:
                raise TypeError(f"a change of job {job_id} must return that job (got {new!r:.60})")
            if new.version <= current.version:
                new = dataclasses.replace(new, version=current.version + 1)
            new = as_stored(new)
            try:
                self._api.write("put_item", expect=_CHECK_FAILED, TableName=self.table,
                                Item=encode_job(new, nonces(item) + [nonce]), ConditionExpression="version = :v",
                                ExpressionAttributeValues={":v": {"N": str(current.version)}},
                                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            except ClientError as exc:
                item = exc.response.get("Item")  # the item as it is now (None: it was deleted)
                if item is None or nonce not in nonces(item):
                    _pause(attempt)
                    continue
            except LostAnswer as lost:
                # Moved on without our nonce: our write can never apply (its condition names the
                # version we read), so apply the change to what is there now, as for a conflict.
                item = self._settle(lost, pk, f"the change of job {job_id}", "retrying is safe")
                if nonce not in nonces(item):
                    if int(item["version"]["N"]) == current.version:
                        raise self._unknown(lost, f"the change of job {job_id}", "not applied yet", "retrying is safe")
                    continue
            self._touch()
            return new
        raise AssertionError("unreachable")  # itertools.count() never ends


def _pause(attempt: int) -> None:
    """Back off between conflicting writes after the first few (full jitter, at most 0.2 s)."""
    if attempt >= 2:
        time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))


def _throttled_pause(attempt: int) -> None:
    """Back off after a throttled transaction (full jitter, from 25 ms doubling up to 1 s)."""
    time.sleep(random.uniform(0, min(1.0, 0.025 * 2 ** attempt)))
