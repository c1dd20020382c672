"""The store contract's part on the reads that must not walk every job (mixed into
:class:`store_contract.StoreContract`, so every backend runs it): a schedule's runs
(``list``/``list_records`` with ``schedule=``) and the jobs owing a cost receipt (``owing_receipts``).

How each backend answers without a full read is tested beside it (``test_store_schedule_query.py``
counts the DynamoDB calls); here only what the answers are.
"""

from __future__ import annotations

from datetime import timedelta

from conftest import T0, make_draft
from jobman_cli.model import JobStatus, job_to_api, record_to_api

NOW = T0 + timedelta(hours=2)


def ended_on_an_instance(store, job_id: int, when=NOW, status: str = "finished"):
    """Claim, launch on an instance and end a job at ``when`` (it then owes a cost receipt)."""
    store.update(job_id, lambda j: j.claimed(when - timedelta(minutes=10), "t"))
    store.update(job_id, lambda j: j.launched(f"i-{job_id:08x}", when - timedelta(minutes=9)))
    return store.update(job_id, lambda j: j.reported(status, 0 if status == "finished" else 3, when))


class ScheduleQueryContract:
    """``schedule=N``: the runs of schedule N only, newest first, ``limit`` counting runs."""

    def _mixed(self, store):
        """Runs of schedules 7 and 70 (a prefix of each other in bytes), ordinary jobs between."""
        ids: dict[object, list[int]] = {7: [], 70: [], None: []}
        for n in range(12):
            sid = (7, None, 70)[n % 3]
            job, _ = store.add(make_draft(schedule_id=sid, created_at=T0 + timedelta(minutes=n),
                                          occurrence=T0 + timedelta(minutes=n) if sid else None))
            ids[sid].append(job.id)
        return ids

    def test_a_schedules_runs_newest_first_and_no_other_job(self, store, make_store):
        ids = self._mixed(store)
        parsed = make_store()
        parsed.list()  # a handle that has parsed every job already (another code path)
        for handle in (make_store(), parsed, store):
            assert [j.id for j in handle.list(schedule=7)] == ids[7][::-1]
            assert [j.id for j in handle.list(schedule=70)] == ids[70][::-1]
            assert [r["id"] for r in handle.list_records(schedule=7)] == ids[7][::-1]
            assert handle.list(schedule=3) == [] and handle.list_records(schedule=700) == []
            assert all(j.schedule_id == 7 for j in handle.list(schedule=7))

    def test_limit_counts_the_runs_and_filters_combine(self, store, make_store):
        ids = self._mixed(store)
        store.update(ids[7][1], lambda j: j.cancelled(NOW))
        store.update(ids[7][3], lambda j: j.cancelled(NOW))
        store.update(ids[None][3], lambda j: j.cancelled(NOW))  # not a run: never listed with schedule=7
        for handle in (make_store(), store):
            assert [j.id for j in handle.list(schedule=7, limit=2)] == [ids[7][3], ids[7][2]]
            assert [j.id for j in handle.list([JobStatus.CANCELLED], schedule=7)] == [ids[7][3], ids[7][1]]
            assert [j.id for j in handle.list([JobStatus.CANCELLED], schedule=7, limit=1)] == [ids[7][3]]
            assert [j.id for j in handle.list([JobStatus.SCHEDULED], schedule=7, limit=1)] == [ids[7][2]]
            # created T0+0, +3, +6, +9 minutes: since +4 leaves the last two
            assert [j.id for j in handle.list(schedule=7, since=T0 + timedelta(minutes=4))] == [ids[7][3], ids[7][2]]
            assert handle.list(schedule=7, since=T0 + timedelta(days=1)) == []
            for kwargs in ({"limit": 3}, {"since": T0 + timedelta(minutes=2)}, {"statuses": [JobStatus.CANCELLED]}):
                assert ([record_to_api(r) for r in handle.list_records(schedule=7, **kwargs)]
                        == [job_to_api(j) for j in handle.list(schedule=7, **kwargs)])

    def test_a_run_changed_or_pruned_is_listed_as_it_is_now(self, store, make_store):
        ids = self._mixed(store)
        ended_on_an_instance(store, ids[7][0], when=T0 + timedelta(hours=2))
        other = make_store()
        assert other.list(schedule=7)[-1].status is JobStatus.FINISHED
        assert store.prune(T0 + timedelta(days=1)) == [ids[7][0]]
        assert [j.id for j in make_store().list(schedule=7)] == ids[7][:0:-1]
        assert [j.id for j in other.list(schedule=7)] == ids[7][:0:-1]


class ReceiptQueryContract:
    """``owing_receipts(since)``: ended on an instance, no receipt yet, ended at or after ``since``."""

    def test_owing_receipts(self, store, make_store):
        owes = store.add(make_draft())[0].id
        failed = store.add(make_draft(schedule_id=3))[0].id
        priced = store.add(make_draft())[0].id
        never_ran = store.add(make_draft())[0].id
        old = store.add(make_draft())[0].id
        live = store.add(make_draft())[0].id
        ended_on_an_instance(store, owes)
        ended_on_an_instance(store, failed, status="failed")
        ended_on_an_instance(store, priced)
        store.update(priced, lambda j: j.with_cost(0.5, "test price", NOW))
        store.update(never_ran, lambda j: j.cancelled(NOW))
        ended_on_an_instance(store, old, when=T0 - timedelta(days=30))
        store.update(live, lambda j: j.claimed(NOW, "t"))
        store.update(live, lambda j: j.launched("i-live", NOW))
        since = T0 - timedelta(days=7)
        for handle in (make_store(), store):
            assert [r["id"] for r in handle.owing_receipts(since)] == [owes, failed]
            assert [r["id"] for r in handle.owing_receipts(T0 - timedelta(days=31))] == [owes, failed, old]
            assert handle.owing_receipts(NOW + timedelta(seconds=1)) == []
        store.update(owes, lambda j: j.with_cost(None, "unknown: test", NOW))  # a receipt, even unknown
        assert [r["id"] for r in make_store().owing_receipts(since)] == [failed]
        assert store.prune(NOW + timedelta(days=1)) == sorted([owes, failed, priced, never_ran, old])
        assert make_store().owing_receipts(since) == []
