"""What only the TinyDB file can get wrong in housekeeping: the bytes a prune leaves (plain TinyDB
still reads them, the line layout's checks still pass), batches, a stale ``next-id`` counter, and
the byte-level shortcut of ``list --since`` (never skipping a job it should list)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import orjson
import pytest
from tinydb import TinyDB

from conftest import T0, make_draft
from jobman_cli.model import JobStatus
from jobman_cli.stores import jobfile
from jobman_cli.stores.tinydb import TinyDBStore
from store_contract_prune import CUTOFF, ENDED, RECENT, ended


@pytest.fixture
def path(tmp_path):
    return tmp_path / "jobs.json"


def reopen(path) -> TinyDBStore:
    return TinyDBStore(path, create=False)


@pytest.mark.parametrize("which", ["first", "middle", "last", "all", "all-but-first"])
def test_the_file_after_a_prune_is_valid_for_jobman_and_plain_tinydb(path, which):
    with TinyDBStore(path) as store:
        old = {n: ended(title=f"job {n}") for n in range(5)}
        young = make_draft(title="young", status=JobStatus.FINISHED, finished_at=RECENT, created_at=RECENT)
        pick = {"first": [0], "middle": [2], "last": [4], "all": [0, 1, 2, 3, 4], "all-but-first": [1, 2, 3, 4]}[which]
        ids = [store.add(old[n] if n in pick else dataclasses.replace(young, title=f"job {n}"))[0].id
               for n in range(5)]
        assert store.prune(CUTOFF) == [ids[n] for n in pick]
    data = path.read_bytes()
    assert jobfile.Lines.parse(data) is not None  # the fast layout's frame and CRC check out
    left = [ids[n] for n in range(5) if n not in pick]
    with reopen(path) as store:
        assert [j.id for j in store.list()] == left[::-1]
        for job_id in left:
            assert store.get(job_id).id == job_id
    db = TinyDB(path)
    try:
        assert sorted(int(doc.doc_id) for doc in db.table("jobs").all()) == left
        assert db.table("meta").get(doc_id=1)["next-id"] == ids[-1] + 1
    finally:
        db.close()
    with TinyDBStore(path) as store:
        assert store.add(make_draft())[0].id == ids[-1] + 1


def test_prune_in_small_batches_removes_everything_once(path):
    with TinyDBStore(path) as store:
        ids = [store.add(ended())[0].id for _ in range(10)]
        keep = store.add(ended(at=RECENT))[0].id
        assert store.prune(CUTOFF, batch=3) == ids
        assert [j.id for j in store.list()] == [keep]
    with reopen(path) as store:
        assert [j.id for j in store.list()] == [keep]


def test_a_stale_next_id_counter_still_never_hands_out_a_pruned_id(path):
    with TinyDBStore(path) as store:
        for _ in range(3):
            newest = store.add(ended())[0].id
    # A hand edit (or an old tool) set the counter back: only the stored ids kept new ids unique.
    doc = orjson.loads(path.read_bytes())
    doc["meta"]["1"]["next-id"] = 1
    path.write_bytes(orjson.dumps(doc))
    with TinyDBStore(path) as store:
        assert store.prune(CUTOFF) == [1, 2, 3]
    with TinyDBStore(path) as store:
        assert store.add(make_draft())[0].id == newest + 1


def test_since_never_skips_a_job_it_should_list(path):
    since = T0 + timedelta(minutes=10)
    with TinyDBStore(path) as store:
        before = store.add(make_draft(created_at=since - timedelta(seconds=1)))[0].id
        same_second = store.add(make_draft(created_at=since + timedelta(milliseconds=1)))[0].id
        same_second_earlier = store.add(make_draft(created_at=since - timedelta(milliseconds=1)))[0].id
        # An unknown field holding an old "created-at" (it comes after the real one on the line).
        nested = store.add(make_draft(created_at=since + timedelta(hours=1),
                                      extra={"x-history": {"created-at": "2000-01-01T00:00:00Z"}}))[0].id
        lured = store.add(make_draft(created_at=since - timedelta(days=1),
                                     title='"created-at":"2999-01-01T00:00:00Z"'))[0].id
    with reopen(path) as store:  # a fresh handle: the byte-level path
        assert [j.id for j in store.list(since=since)] == [nested, same_second]
    with reopen(path) as store:
        chosen = [j.id for j in store.list(since=since - timedelta(seconds=1))]  # "at or after": "before" is in
        assert chosen == [nested, same_second_earlier, same_second, before]
        assert lured not in chosen
    with reopen(path) as store:
        store.list()  # parsed: the other path answers the same
        assert [j.id for j in store.list(since=since)] == [nested, same_second]


def test_since_reads_a_hand_edited_record_whose_first_created_at_is_not_its_own(path):
    """Plain TinyDB put an unknown field holding an old "created-at" *before* the real one; the next
    jobman write keeps that order in the line layout. The byte shortcut must still list the job."""
    since = T0 + timedelta(minutes=10)
    with TinyDBStore(path) as store:
        job = store.add(make_draft(created_at=since + timedelta(hours=1)))[0]
    doc = orjson.loads(path.read_bytes())
    record = doc["jobs"][str(job.id)]
    doc["jobs"][str(job.id)] = {"x-first": {"created-at": "2000-01-01T00:00:00Z"}, **record}
    path.write_bytes(orjson.dumps(doc))  # not the line layout: jobman's next write re-encodes it
    with TinyDBStore(path) as store:
        other = store.add(make_draft(created_at=since - timedelta(days=1)))[0].id
    data = path.read_bytes()
    assert jobfile.Lines.parse(data) is not None and data.index(b'"x-first"') < data.index(b'"created-at":"2030')
    with reopen(path) as store:
        assert [j.id for j in store.list(since=since)] == [job.id]
        assert [j.id for j in store.list(since=since - timedelta(days=2))] == [other, job.id]
