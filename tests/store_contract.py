"""The contract every store backend must pass (the port is ``jobman_cli.stores.base.JobStore``).

How to use it for a backend: subclass :class:`StoreContract` in a ``test_*.py`` module and give the
subclass a ``make_store`` fixture: a function that opens a *new handle* on one and the same empty
store each time it is called (as a second process would), and closes the handles at teardown::

    from store_contract import StoreContract

    class TestMyBackend(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            handles = []
            def make():
                handles.append(MyStore(...))
                return handles[-1]
            yield make
            for handle in handles:
                handle.close()

The class is not collected by itself (its name does not start with ``Test``). Every test here
uses only the port, so it holds for a file, a table, or anything else.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import timedelta

import pytest

from conftest import T0, make_draft
from jobman_cli.errors import JobNotFound, TransitionNotAllowed
from jobman_cli.model import Job, JobStatus, ReasonCode
from jobman_cli.stores.base import JobStore
from store_contract_prune import ListWindowContract, PruneContract
from store_contract_queries import ReceiptQueryContract, ScheduleQueryContract

NOW = T0 + timedelta(hours=2)  # every draft from make_draft (due T0 + 1h) is due by then


def bump(job: Job) -> Job:
    """A pure change that increments a counter: a lost update would show as a missing increment."""
    return dataclasses.replace(job, attempts=job.attempts + 1, version=job.version + 1)


def run_threads(count: int, target, *args) -> None:
    """Start ``count`` threads at once (behind a barrier) and re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index, *args)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class StoreContract(PruneContract, ListWindowContract, ScheduleQueryContract, ReceiptQueryContract):
    """The whole contract (housekeeping's part, ``prune`` and ``list``'s window, is in
    :mod:`store_contract_prune`)."""

    @pytest.fixture
    def store(self, make_store) -> JobStore:
        return make_store()

    # ------------------------------------------------------------------ identity
    def test_is_a_job_store_with_a_stable_id(self, store, make_store):
        assert isinstance(store, JobStore)
        assert isinstance(store.store_id, str) and store.store_id
        assert make_store().store_id == store.store_id
        assert isinstance(store.location, str) and store.location

    # ------------------------------------------------------------------ add / get
    def test_add_assigns_increasing_unique_ids(self, store):
        results = [store.add(make_draft(title=f"job {n}")) for n in range(5)]
        ids = [job.id for job, _ in results]
        assert all(created for _, created in results)
        assert ids == sorted(set(ids)) and ids[0] >= 1
        for job, _ in results:
            assert store.get(job.id) == job

    def test_add_ignores_the_draft_id(self, store):
        job, _ = store.add(make_draft(id=77))
        other, _ = store.add(make_draft(id=77))
        assert job.id != other.id

    def test_ids_are_never_reused_across_handles(self, store, make_store):
        second = make_store()
        ids = []
        for n in range(6):
            handle = store if n % 2 else second
            ids.append(handle.add(make_draft(title=f"job {n}"))[0].id)
        assert ids == sorted(set(ids))
        assert make_store().add(make_draft())[0].id > max(ids)

    def test_get_unknown_raises_job_not_found(self, store):
        with pytest.raises(JobNotFound):
            store.get(12345)
        store.add(make_draft())
        with pytest.raises(JobNotFound):
            store.get(12345)
        with pytest.raises(JobNotFound):
            store.update(12345, bump)

    def test_round_trip_of_every_field(self, store, make_store):
        env = {
            "PLAIN": "value",
            "EMPTY": "",
            "SPACES": "  two  spaces ",
            "NEWLINES": "line one\nline two\r\nline three\n",
            "QUOTES": "it's \"quoted\" `uname` $HOME ${X} ; rm -rf / #",
            "UNICODE": "héllo wörld ✓ 日本語 🚀",
            "BACKSLASH": "C:\\path\\to\\x \\n not a newline",
        }
        draft = make_draft(
            title="Nächtlicher Bericht ✓\nzweite Zeile",
            date_time=T0 + timedelta(minutes=5, milliseconds=250),
            docker_image="registry.example.com:5000/team/report:1.2.3",
            env_variables=env,
            status=JobStatus.FAILED,
            timeout=7200,
            start_deadline=600,
            instance_type="t3.small",
            idempotency_key="key-é-1",
            exit_code=137,
            reason="exit code 137",
            reason_code=ReasonCode.EXITED,
            command=("sh", "-c", 'echo "$1" `id`', "--", "x\ny é"),
            entrypoint="/bin/sh",
            disk_gb=40,
            callback_hashes=("a" * 64, "b" * 64),
            instance_id="i-0123456789abcdef0",
            attempts=3,
            launch_token="job-1-attempt-3",
            launched_at=T0 + timedelta(minutes=6),
            finished_at=T0 + timedelta(minutes=7, milliseconds=1),
            not_before=T0 + timedelta(minutes=5, seconds=30),
            updated_at=T0 + timedelta(minutes=7, milliseconds=1),
            version=9,
            extra={"x-future-field": "kept as is"},
        )
        job, created = store.add(draft)
        assert created
        assert job == dataclasses.replace(draft, id=job.id)
        again = make_store().get(job.id)
        assert again == job
        assert dict(again.env_variables) == env
        assert again.title == draft.title
        assert dict(again.extra) == {"x-future-field": "kept as is"}  # unknown fields survive

    # ------------------------------------------------------------------ list
    def test_list_is_newest_first_with_status_filter(self, store):
        ids = [store.add(make_draft(title=f"job {n}"))[0].id for n in range(4)]
        store.update(ids[0], lambda job: job.cancelled(NOW))
        store.update(ids[2], lambda job: job.claimed(NOW, "token-2"))
        assert [job.id for job in store.list()] == ids[::-1]
        assert [job.id for job in store.list(())] == ids[::-1]  # empty filter = every status
        assert [job.id for job in store.list([JobStatus.SCHEDULED])] == [ids[3], ids[1]]
        assert [job.id for job in store.list({JobStatus.CANCELLED, JobStatus.LAUNCHING})] == [ids[2], ids[0]]
        assert store.list([JobStatus.FINISHED]) == []

    def test_list_records_project_to_the_same_api_json_as_list(self, store):
        from jobman_cli.model import job_to_api, record_to_api

        for n in range(4):
            job, _ = store.add(make_draft(title=f"r{n}", env_variables={"N": str(n), "NL": "a\nb"}))
        store.update(job.id, lambda j: j.cancelled(NOW))
        for statuses in (None, [JobStatus.CANCELLED], [JobStatus.SCHEDULED, JobStatus.CANCELLED]):
            jobs = store.list(statuses)
            records = store.list_records(statuses)
            assert [record_to_api(r) for r in records] == [job_to_api(j) for j in jobs]
        assert store.list_records([JobStatus.FAILED]) == []

    def test_list_of_an_empty_store(self, store):
        assert store.list() == []
        assert store.due(NOW) == [] and store.active() == [] and store.next_due_at() is None

    # ------------------------------------------------------------------ idempotency
    def test_idempotency_key_returns_the_existing_job_and_writes_nothing(self, store, make_store):
        job, created = store.add(make_draft(idempotency_key="nightly-2030-01-01", title="first"))
        assert created
        marker = store.change_marker()
        again, created = make_store().add(make_draft(idempotency_key="nightly-2030-01-01", title="other"))
        assert not created
        assert again == job and again.title == "first"
        assert store.change_marker() == marker
        assert [j.id for j in store.list()] == [job.id]
        other, created = store.add(make_draft(idempotency_key="another-key"))
        assert created and other.id > job.id

    def test_idempotency_keys_match_exactly(self, store, make_store):
        keys = ['say "hi"', 'say "hi', "say", 'back\\slash\\', "back\\slash", "é✓ 日本", "a\tb", '"']
        jobs = {}
        for n, key in enumerate(keys):  # each title holds the next key as JSON, to tempt a text search
            lure = json.dumps({"idempotency-key": keys[(n + 1) % len(keys)]}, ensure_ascii=False,
                              separators=(",", ":"))
            job, created = store.add(make_draft(idempotency_key=key, title=lure))
            assert created, key
            jobs[key] = job
        assert len({job.id for job in jobs.values()}) == len(keys)
        other = make_store()
        for key in keys:
            assert other.add(make_draft(idempotency_key=key)) == (jobs[key], False)
        assert other.add(make_draft(idempotency_key="say \"hi\"x"))[1] is True

    def test_every_job_is_found_by_id_from_a_fresh_handle(self, store, make_store):
        titles = ['\n"5":{', '"1":', "}", "]},{", '\\n\\"2\\":', "日本語 🚀", "", "line\n" * 20]
        jobs = [store.add(make_draft(title=titles[n % len(titles)], env_variables={"V": f'{n}\n"{n}":{{'}))[0]
                for n in range(24)]
        store.update(jobs[5].id, bump)
        expected = {job.id: job for job in store.list()}
        for job in jobs:
            assert make_store().get(job.id) == expected[job.id]
        with pytest.raises(JobNotFound):
            make_store().get(max(expected) + 1)

    # ------------------------------------------------------------------ update (compare-and-set)
    def test_update_persists_the_change_and_bumps_the_version(self, store, make_store):
        job, _ = store.add(make_draft())
        claimed = store.update(job.id, lambda j: j.claimed(NOW, "launch-token-1"))
        assert claimed.status is JobStatus.LAUNCHING and claimed.version == job.version + 1
        assert claimed.attempts == 1 and claimed.launch_token == "launch-token-1"
        seen = make_store().get(job.id)
        assert seen == claimed
        running = make_store().update(job.id, lambda j: j.launched("i-0abc", NOW))
        assert store.get(job.id) == running and running.version == job.version + 2

    def test_update_that_returns_the_same_job_writes_nothing(self, store):
        job, _ = store.add(make_draft())
        marker = store.change_marker()
        result = store.update(job.id, lambda j: j)
        assert result == job
        assert store.change_marker() == marker
        assert store.get(job.id).version == job.version

    def test_update_whose_change_raises_writes_nothing(self, store, make_store):
        job, _ = store.add(make_draft())
        marker = store.change_marker()
        with pytest.raises(TransitionNotAllowed):
            store.update(job.id, lambda j: j.reported("finished", 0, NOW))  # scheduled: not allowed

        def explode(j: Job) -> Job:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            store.update(job.id, explode)
        assert store.change_marker() == marker
        assert make_store().get(job.id) == job

    def test_update_sees_the_latest_state_so_a_claim_wins_once(self, store, make_store):
        job, _ = store.add(make_draft())
        other = make_store()
        other.get(job.id)  # let the second handle cache the scheduled job first
        store.update(job.id, lambda j: j.claimed(NOW, "first"))
        with pytest.raises(TransitionNotAllowed):
            other.update(job.id, lambda j: j.claimed(NOW, "second"))
        final = make_store().get(job.id)
        assert final.launch_token == "first" and final.attempts == 1

    # ------------------------------------------------------------------ handles
    def test_two_handles_see_each_others_writes(self, store, make_store):
        other = make_store()
        assert other.list() == []
        first, _ = store.add(make_draft(title="from A"))
        assert other.get(first.id) == first
        second, _ = other.add(make_draft(title="from B"))
        assert [j.id for j in store.list()] == [second.id, first.id]
        other.update(first.id, lambda j: j.cancelled(NOW))
        assert store.get(first.id).status is JobStatus.CANCELLED
        assert [j.id for j in store.due(NOW)] == [second.id]

    def test_change_marker_moves_when_another_handle_writes(self, store, make_store):
        store.add(make_draft())
        before = store.change_marker()
        hash(before)
        assert store.change_marker() == before
        make_store().add(make_draft())
        assert store.change_marker() != before

    # ------------------------------------------------------------------ the daemon's queries
    def test_due_is_earliest_first_and_respects_limit(self, store):
        late = store.add(make_draft(date_time=T0 + timedelta(minutes=30)))[0]
        early = store.add(make_draft(date_time=T0 - timedelta(hours=1)))[0]
        middle = store.add(make_draft(date_time=T0))[0]
        future = store.add(make_draft(date_time=T0 + timedelta(days=1)))[0]
        cancelled = store.add(make_draft(date_time=T0 - timedelta(days=1)))[0]
        store.update(cancelled.id, lambda j: j.cancelled(T0))
        assert [j.id for j in store.due(T0 + timedelta(hours=1))] == [early.id, middle.id, late.id]
        assert [j.id for j in store.due(T0 + timedelta(hours=1), limit=2)] == [early.id, middle.id]
        assert [j.id for j in store.due(T0)] == [early.id, middle.id]  # due_at == now is due
        assert store.next_due_at() == early.date_time
        assert future.id not in [j.id for j in store.due(T0 + timedelta(hours=23))]

    def test_backoff_delays_due_and_next_due_at(self, store, make_store):
        job, _ = store.add(make_draft(date_time=T0))
        store.update(job.id, lambda j: j.claimed(T0, "t1"))
        assert store.due(T0) == [] and store.next_due_at() is None
        retry_at = T0 + timedelta(minutes=10)
        store.update(job.id, lambda j: j.retry_later("capacity", retry_at, T0))
        for handle in (store, make_store()):
            assert handle.due(T0 + timedelta(minutes=9)) == []
            assert [j.id for j in handle.due(retry_at)] == [job.id]
            assert handle.next_due_at() == retry_at
        assert store.get(job.id).due_at == retry_at

    def test_active_lists_launching_and_running_jobs(self, store, make_store):
        ids = [store.add(make_draft())[0].id for _ in range(5)]
        store.update(ids[0], lambda j: j.claimed(NOW, "a"))
        store.update(ids[1], lambda j: j.claimed(NOW, "b"))
        store.update(ids[1], lambda j: j.launched("i-1", NOW))
        store.update(ids[2], lambda j: j.claimed(NOW, "c"))
        store.update(ids[2], lambda j: j.failed("launch error", NOW, ReasonCode.LAUNCH_FAILED))
        store.update(ids[3], lambda j: j.cancelled(NOW))
        for handle in (store, make_store()):
            assert [j.id for j in handle.active()] == [ids[0], ids[1]]
            assert [j.status for j in handle.active()] == [JobStatus.LAUNCHING, JobStatus.RUNNING]
            assert [j.id for j in handle.due(NOW)] == [ids[4]]
        store.update(ids[1], lambda j: j.reported("finished", 0, NOW))
        assert [j.id for j in make_store().active()] == [ids[0]]

    # ------------------------------------------------------------------ threads
    def test_concurrent_updates_from_threads_lose_nothing(self, store):
        job, _ = store.add(make_draft())
        run_threads(16, lambda index: [store.update(job.id, bump) for _ in range(10)])
        assert store.get(job.id).attempts == 160

    def test_concurrent_claims_from_threads_win_once_each(self, store, make_store):
        ids = [store.add(make_draft())[0].id for _ in range(12)]
        wins: list[tuple[int, str]] = []
        handles = [store, make_store()]

        def claim_all(index: int) -> None:
            handle, token = handles[index % 2], f"thread-{index}"
            for job_id in ids:
                try:
                    handle.update(job_id, lambda j: j.claimed(NOW, token))
                    wins.append((job_id, token))
                except TransitionNotAllowed:
                    pass

        run_threads(8, claim_all)
        assert sorted(job_id for job_id, _ in wins) == ids
        final = {job.id: job for job in make_store().list()}
        for job_id, token in wins:
            assert final[job_id].launch_token == token and final[job_id].attempts == 1
