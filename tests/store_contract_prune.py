"""The store contract's part on ``prune`` (mixed into :class:`store_contract.StoreContract`, so it
runs against every backend). Every test uses only the port, plus one seam: the prune rules are
looked up on ``jobman_cli.stores.base`` at call time, so a test can do something at the exact
moment a store has decided from what it read and not yet written."""

from __future__ import annotations

import dataclasses
import random
import threading
from datetime import timedelta

import pytest

from conftest import T0, make_draft
from jobman_cli.errors import JobNotFound
from jobman_cli.model import Job, JobStatus
from jobman_cli.stores import base as port

ENDED = T0 - timedelta(days=40)  # long before the cutoff
CUTOFF = T0 - timedelta(days=30)
RECENT = T0 - timedelta(days=1)  # after the cutoff


def ended(status: JobStatus = JobStatus.FINISHED, at=ENDED, **fields) -> Job:
    """A draft of a job that ended at ``at`` (terminal, with finished/updated times)."""
    values = {"created_at": at - timedelta(hours=1), "finished_at": at, "updated_at": at,
              "date_time": at - timedelta(minutes=30), "exit_code": 0 if status is JobStatus.FINISHED else None}
    return make_draft(status=status, **{**values, **fields})


def revived(job: Job) -> Job:
    """A change that makes an old ended job recent (as a late write would): no longer prunable."""
    return dataclasses.replace(job, finished_at=RECENT, updated_at=RECENT, version=job.version + 1)


class PruneContract:
    def test_prune_removes_only_jobs_that_ended_before_the_cutoff(self, store, make_store):
        old = [store.add(ended(status))[0].id for status in (JobStatus.FINISHED, JobStatus.FAILED,
                                                            JobStatus.CANCELLED)]
        young = store.add(ended(at=RECENT))[0].id
        at_cutoff = store.add(ended(at=CUTOFF))[0].id  # "before" is strict
        # Active and scheduled jobs are never pruned, however old their times.
        scheduled = store.add(make_draft(date_time=ENDED, created_at=ENDED - timedelta(days=9)))[0].id
        launching = store.add(make_draft(date_time=ENDED, created_at=ENDED))[0].id
        store.update(launching, lambda j: j.claimed(ENDED, "t"))
        running = store.add(make_draft(date_time=ENDED, created_at=ENDED))[0].id
        store.update(running, lambda j: j.claimed(ENDED, "r"))
        store.update(running, lambda j: j.launched("i-1", ENDED))
        assert store.prune(CUTOFF) == old
        kept = [j.id for j in make_store().list()]
        assert kept == sorted([young, at_cutoff, scheduled, launching, running], reverse=True)
        for job_id in old:
            with pytest.raises(JobNotFound):
                make_store().get(job_id)
        assert store.prune(CUTOFF) == []  # nothing left to do
        assert [j.id for j in store.active()] == [launching, running]
        assert [j.id for j in store.due(T0)] == [scheduled]
        assert store.prune(T0 + timedelta(days=999)) == [young, at_cutoff]  # terminal ones only

    def test_dry_run_names_the_jobs_and_writes_nothing(self, store, make_store):
        ids = [store.add(ended())[0].id for _ in range(3)]
        store.add(ended(at=RECENT))
        marker = store.change_marker()
        assert store.prune(CUTOFF, dry_run=True) == ids
        assert store.change_marker() == marker
        assert len(make_store().list()) == 4
        assert store.prune(CUTOFF) == ids

    def test_the_end_falls_back_to_updated_then_created(self, store):
        by_updated = store.add(ended(finished_at=None, updated_at=ENDED))[0].id
        young_update = store.add(ended(finished_at=None, updated_at=RECENT, created_at=ENDED))[0].id
        by_created = store.add(ended(finished_at=None, updated_at=None, created_at=ENDED))[0].id
        assert store.prune(CUTOFF) == [by_updated, by_created]
        assert [j.id for j in store.list()] == [young_update]

    def test_ids_are_never_reused_after_pruning_the_newest_job(self, store, make_store):
        first = store.add(ended())[0].id
        newest = store.add(ended())[0].id
        assert store.prune(CUTOFF) == [first, newest]
        assert store.list() == []
        for handle in (store, make_store()):
            assert handle.add(make_draft())[0].id > newest
        again = make_store()
        assert again.prune(T0 + timedelta(days=999)) == []  # the scheduled ones stay
        assert again.add(make_draft())[0].id > newest + 2

    def test_a_pruned_jobs_idempotency_key_is_free_again(self, store, make_store):
        old, _ = store.add(ended(idempotency_key="nightly-2029-11-01"))
        kept, _ = store.add(ended(at=RECENT, idempotency_key="nightly-2029-12-31"))
        assert store.prune(CUTOFF) == [old.id]
        fresh, created = make_store().add(make_draft(idempotency_key="nightly-2029-11-01"))
        assert created and fresh.id > kept.id
        assert store.add(make_draft(idempotency_key="nightly-2029-12-31")) == (kept, False)

    def test_jobs_owing_a_notification_are_kept(self, store):
        target = ("https://hooks.example.com/jobman",)

        def delivery(state: str) -> dict:
            return {"target-index": 0, "event": "failed", "state": state, "attempts": 1}

        pending = store.add(ended(JobStatus.FAILED, notify=target, deliveries=(delivery("pending"),)))[0].id
        sending = store.add(ended(JobStatus.FAILED, notify=target, deliveries=(delivery("sending"),)))[0].id
        never_tried = store.add(ended(JobStatus.FAILED, notify=target))[0].id
        delivered = store.add(ended(JobStatus.FAILED, notify=target, deliveries=(delivery("delivered"),)))[0].id
        gave_up = store.add(ended(JobStatus.FAILED, notify=target, deliveries=(delivery("failed"),)))[0].id
        not_wanted = store.add(ended(JobStatus.FINISHED, notify=target))[0].id  # notify-on failure only
        assert store.prune(CUTOFF) == [delivered, gave_up, not_wanted]
        assert [j.id for j in store.list()] == [never_tried, sending, pending]

    def test_a_job_changed_after_the_prune_read_it_is_kept(self, store, make_store, monkeypatch):
        """The write of a prune is conditional: a job changed between the store's read and its
        delete (here: at the very moment the store has judged it prunable) is judged again."""
        target = store.add(ended())[0].id
        other = store.add(ended())[0].id
        writer = make_store()
        rule = port.record_prunable
        fired = threading.Event()

        def judge_then_change(record, cutoff):
            verdict = rule(record, cutoff)
            if record.get("id") == target and verdict and not fired.is_set():
                fired.set()
                writer.update(target, revived)  # another process's write, after the read
            return verdict

        monkeypatch.setattr(port, "record_prunable", judge_then_change)
        removed = store.prune(CUTOFF)
        assert fired.is_set()
        assert removed == [other]
        assert make_store().get(target).finished_at == RECENT

    def test_concurrent_prune_and_updates_agree(self, store, make_store):
        """Many jobs, a prune racing updates that revive them: every job ends up either pruned (and
        the update found no job) or updated (and still stored), never updated and then deleted."""
        ids = [store.add(ended())[0].id for _ in range(40)]
        outcome: dict[int, str] = {}
        pruned: list[int] = []
        pruner, updater = make_store(), make_store()
        start = threading.Barrier(2)

        def prune() -> None:
            start.wait()
            pruned.extend(pruner.prune(CUTOFF))

        def update() -> None:
            order = ids[:]
            random.Random(7).shuffle(order)
            start.wait()
            for job_id in order:
                try:
                    updater.update(job_id, revived)
                    outcome[job_id] = "updated"
                except JobNotFound:
                    outcome[job_id] = "gone"

        threads = [threading.Thread(target=prune), threading.Thread(target=update)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = {j.id: j for j in make_store().list()}
        for job_id in ids:
            if outcome[job_id] == "updated":
                assert job_id in stored and job_id not in pruned, job_id
                assert stored[job_id].finished_at == RECENT
            else:
                assert job_id in pruned and job_id not in stored, job_id
        assert sorted(pruned) == pruned


class ListWindowContract:
    """``list``/``list_records`` with ``limit`` (newest first) and ``since`` (created at or after)."""

    def test_limit_and_since_choose_the_newest_jobs(self, store, make_store):
        from jobman_cli.model import job_to_api, record_to_api

        ids = [store.add(make_draft(created_at=T0 + timedelta(minutes=n)))[0].id for n in range(6)]
        store.update(ids[4], lambda j: j.cancelled(NOW_))
        store.update(ids[1], lambda j: j.cancelled(NOW_))
        fresh, parsed = make_store(), make_store()
        parsed.list()  # a handle that has parsed the whole file already (another code path)
        for handle in (fresh, parsed, store):
            assert [j.id for j in handle.list(limit=2)] == [ids[5], ids[4]]
            assert [j.id for j in handle.list(limit=100)] == ids[::-1]
            assert [j.id for j in handle.list([JobStatus.CANCELLED], limit=1)] == [ids[4]]
            assert [j.id for j in handle.list([JobStatus.SCHEDULED], limit=3)] == [ids[5], ids[3], ids[2]]
            assert [j.id for j in handle.list(since=T0 + timedelta(minutes=3))] == [ids[5], ids[4], ids[3]]
            assert [j.id for j in handle.list(since=T0 + timedelta(minutes=3, seconds=1))] == [ids[5], ids[4]]
            assert [j.id for j in handle.list([JobStatus.SCHEDULED], limit=1, since=T0)] == [ids[5]]
            assert handle.list(since=T0 + timedelta(days=1)) == []
            for kwargs in ({"limit": 3}, {"since": T0 + timedelta(minutes=2)}, {"limit": 1, "since": T0}):
                assert ([record_to_api(r) for r in handle.list_records(**kwargs)]
                        == [job_to_api(j) for j in handle.list(**kwargs)])
        assert make_store().list(limit=3) == store.list()[:3]


NOW_ = T0 + timedelta(hours=2)
