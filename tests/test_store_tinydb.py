"""The TinyDB file store: the shared contract, plus what a handle on a file can get wrong over time
(idempotency, read-only handles, snapshots and caching, group commit, and real processes racing on
one file). The file's own layout, modes and damaged or foreign files: test_store_jobfile.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import make_draft
from jobman_cli.errors import JobNotFound, StoreError, TransitionNotAllowed
from jobman_cli.model import JobStatus
from jobman_cli.stores import jobfile
from jobman_cli.stores import snapshot as snapshot_mod
from jobman_cli.stores.tinydb import TinyDBStore
from store_contract import NOW, StoreContract, bump

TESTS = Path(__file__).resolve().parent


class TestTinyDBContract(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path):
        handles: list[TinyDBStore] = []

        def make() -> TinyDBStore:
            handles.append(TinyDBStore(tmp_path / "jobs.json"))
            return handles[-1]

        yield make
        for handle in handles:
            handle.close()


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "home" / "jobs.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- idempotency
def test_idempotent_add_and_noop_update_leave_the_file_untouched(db_path):
    store = TinyDBStore(db_path)
    job, _ = store.add(make_draft(idempotency_key="k"))
    before, st = db_path.read_bytes(), os.stat(db_path)
    assert TinyDBStore(db_path).add(make_draft(idempotency_key="k")) == (job, False)
    assert store.update(job.id, lambda j: j) == job
    with pytest.raises(TransitionNotAllowed):
        store.update(job.id, lambda j: j.reported("running", None, NOW))
    assert db_path.read_bytes() == before
    assert os.stat(db_path).st_ino == st.st_ino and os.stat(db_path).st_mtime_ns == st.st_mtime_ns


def test_idempotency_keys_are_found_by_scan_and_by_the_daemons_views(db_path):
    first, _ = TinyDBStore(db_path).add(make_draft(idempotency_key="a"))
    daemon = TinyDBStore(db_path)
    daemon.due(NOW)  # builds the views
    assert daemon.add(make_draft(idempotency_key="a")) == (first, False)
    second, created = daemon.add(make_draft(idempotency_key="b"))  # the views learn the new key
    assert created and daemon.add(make_draft(idempotency_key="b")) == (second, False)
    assert TinyDBStore(db_path).add(make_draft(idempotency_key="b")) == (second, False)
    assert len(daemon.list()) == 2


# --------------------------------------------------------------------------- handles
def test_odd_job_ids_name_no_job(db_path):
    store = TinyDBStore(db_path)
    job, _ = store.add(make_draft())
    assert store.get(str(job.id)) == job  # a digit string is tolerated
    for odd in (True, -1, 0, "1x", "", None, 1.5, "../1"):
        with pytest.raises(JobNotFound):
            store.get(odd)
        with pytest.raises(JobNotFound):
            store.update(odd, bump)


def test_a_store_swapped_for_another_under_an_open_handle_is_refused(tmp_path, db_path):
    store = TinyDBStore(db_path)
    store.add(make_draft())
    TinyDBStore(tmp_path / "other.json").add(make_draft())
    os.replace(tmp_path / "other.json", db_path)
    with pytest.raises(StoreError, match="replaced by a different store"):
        store.list()
    assert len(TinyDBStore(db_path).list()) == 1  # a fresh handle simply opens the new store


def test_a_closed_store_says_so(db_path):
    store = TinyDBStore(db_path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list()
    with pytest.raises(StoreError, match="closed"):
        store.add(make_draft())


# --------------------------------------------------------------------------- create=False
def test_read_only_open_of_a_missing_store_creates_nothing(tmp_path):
    path = tmp_path / "not-yet" / "jobs.json"
    store = TinyDBStore(path, create=False)
    assert store.list() == [] and store.due(NOW) == [] and store.active() == []
    assert store.next_due_at() is None and store.change_marker() is None and store.store_id == ""
    with pytest.raises(JobNotFound):
        store.get(1)
    with pytest.raises(JobNotFound):
        store.update(1, bump)
    assert not path.parent.exists()
    job, created = store.add(make_draft())  # the first write creates it
    assert created and job.id == 1
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert store.store_id and TinyDBStore(path, create=False).store_id == store.store_id


def test_a_writer_creates_the_store_under_a_read_only_handle(db_path):
    reader = TinyDBStore(db_path, create=False)
    assert reader.list() == []
    job, _ = TinyDBStore(db_path).add(make_draft())
    assert reader.get(job.id) == job and reader.store_id


# --------------------------------------------------------------------------- caching, group commit
def _count_full_parses(monkeypatch) -> list[int]:
    """Record every full parse of the store file (the slow path the line layout exists to avoid)."""
    calls: list[int] = []
    real = jobfile.decode
    monkeypatch.setattr(jobfile, "decode", lambda *a: calls.append(1) or real(*a))
    return calls


def test_one_shot_operations_never_parse_the_whole_file_and_caches_are_reused(db_path, monkeypatch):
    first, _ = TinyDBStore(db_path).add(make_draft(idempotency_key="k"))
    decodes, reads, writes = _count_full_parses(monkeypatch), [], []
    real_read, real_write = snapshot_mod.read_labelled, snapshot_mod.atomic_write
    monkeypatch.setattr(snapshot_mod, "read_labelled", lambda *a: reads.append(1) or real_read(*a))
    monkeypatch.setattr(snapshot_mod, "atomic_write", lambda *a, **k: writes.append(1) or real_write(*a, **k))
    counts = lambda: (len(decodes), len(reads), len(writes))  # noqa: E731

    store = TinyDBStore(db_path)  # what one CLI command does: read, find, splice, write
    job, _ = store.add(make_draft())
    assert store.add(make_draft(idempotency_key="k")) == (first, False)
    assert store.get(first.id) == first
    store.update(job.id, bump)
    assert counts() == (0, 1, 2)
    assert len(store.list()) == 2  # needs every job: one full parse, then kept
    for _ in range(3):
        store.get(job.id), store.list(), store.due(NOW), store.active(), store.next_due_at()
        store.update(job.id, bump)
    assert counts() == (1, 1, 5)  # its own writes keep both the bytes and the parse current
    TinyDBStore(db_path, create=False).update(job.id, bump)  # another "process" writes
    assert counts() == (1, 2, 6)
    assert store.get(job.id).attempts == 5  # reloaded, and still no full parse for one job
    assert counts() == (1, 3, 6)
    assert [j.id for j in store.due(NOW)] == [first.id, job.id]
    assert counts() == (2, 3, 6)


def test_group_commit_batches_waiting_writers_into_one_write(db_path, monkeypatch):
    store = TinyDBStore(db_path)
    ids = [store.add(make_draft())[0].id for _ in range(3)]
    release, writing, writes = threading.Event(), threading.Event(), []
    real_write = snapshot_mod.atomic_write

    def slow_write(*args, **kwargs):
        writes.append(1)
        writing.set()
        release.wait(10)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(snapshot_mod, "atomic_write", slow_write)
    results: dict[str, object] = {}

    def call(name, fn):
        try:
            results[name] = fn()
        except Exception as err:  # noqa: BLE001 - each caller gets its own outcome
            results[name] = err

    first = threading.Thread(target=call, args=("first", lambda: store.update(ids[0], bump)))
    first.start()
    assert writing.wait(10)  # the leader is now writing, holding the lock
    queued = [
        ("claim", lambda: store.update(ids[1], lambda j: j.claimed(NOW, "x"))),
        ("claim again", lambda: store.update(ids[1], lambda j: j.claimed(NOW, "y"))),
        ("launched", lambda: store.update(ids[1], lambda j: j.launched("i-1", NOW))),
        ("unknown", lambda: store.update(999, bump)),
        ("add", lambda: store.add(make_draft(title="batched"))),
    ] + [(f"bump {n}", lambda: store.update(ids[2], bump)) for n in range(20)]
    threads = [threading.Thread(target=call, args=item) for item in queued]
    for count, thread in enumerate(threads, 1):
        thread.start()
        deadline = time.monotonic() + 10
        while len(store._commits._queue) < count and time.monotonic() < deadline:
            time.sleep(0.001)  # one at a time, so the queue holds them in this order
    assert len(store._commits._queue) == len(queued)
    release.set()
    for thread in [first, *threads]:
        thread.join()
    assert len(writes) == 2  # the leader's own write, then one for all 25 queued calls
    assert isinstance(results["claim again"], TransitionNotAllowed)
    assert isinstance(results["unknown"], JobNotFound)
    assert results["launched"].status is JobStatus.RUNNING and results["claim"].launch_token == "x"
    assert results["add"][0].id == 4
    reread = TinyDBStore(db_path, create=False)
    assert reread.get(ids[2]).attempts == 20 and reread.get(ids[1]).instance_id == "i-1"
    assert reread.get(ids[0]).attempts == 1


# --------------------------------------------------------------------------- real processes
WORKER = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from conftest import make_draft
from store_contract import NOW, bump
from jobman_cli.errors import TransitionNotAllowed
from jobman_cli.stores.tinydb import TinyDBStore

mode, path, go, me = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
args = [int(a) for a in sys.argv[6:]]
store = TinyDBStore(path)
while not go.exists():
    time.sleep(0.001)
out, lock = [], threading.Lock()

def claim(thread):
    for job_id in range(args[0], args[1] + 1):
        try:
            store.update(job_id, lambda j: j.claimed(NOW, f"{me}-{thread}"))
            with lock:
                out.append(f"{job_id} {me}-{thread}")
        except TransitionNotAllowed:
            pass

if mode == "add":
    out = [str(store.add(make_draft(title=f"{me}-{n}"))[0].id) for n in range(args[0])]
elif mode == "idem":
    job, created = store.add(make_draft(idempotency_key="same-key", title=me))
    out = [f"{job.id} {created}"]
else:
    target = claim if mode == "claim" else (lambda t: [store.update(args[0], bump) for _ in range(args[1])])
    threads = [threading.Thread(target=target, args=(t,)) for t in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
print("\n".join(out))
"""


def run_workers(tmp_path: Path, path: Path, mode: str, count: int, *args: int) -> list[list[str]]:
    """Start ``count`` processes, let them go at once, and return each one's output lines."""
    go = tmp_path / f"go-{mode}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(TESTS), mode, str(path), str(go), f"p{n}",
                               *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(count)]
    time.sleep(0.3)  # let them import and open the store
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.split())
    return outputs


def test_eight_processes_adding_at_once_get_400_distinct_ids(tmp_path, db_path):
    TinyDBStore(db_path)
    outputs = run_workers(tmp_path, db_path, "add", 8, 50)
    ids = [int(i) for out in outputs for i in out]
    assert len(ids) == 400 and set(ids) == set(range(1, 401))
    for out in outputs:  # each process saw its own ids increase
        assert [int(i) for i in out] == sorted(int(i) for i in out)
    jobs = TinyDBStore(db_path).list()
    assert len(jobs) == 400 and {j.id for j in jobs} == set(ids)
    assert {j.title for j in jobs} == {f"p{p}-{n}" for p in range(8) for n in range(50)}


def test_processes_racing_for_one_idempotency_key_make_one_job(tmp_path, db_path):
    TinyDBStore(db_path)
    outputs = run_workers(tmp_path, db_path, "idem", 6)
    results = [tuple(out) for out in outputs]
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(created for _, created in results) == ["False"] * 5 + ["True"]
    assert len(TinyDBStore(db_path).list()) == 1


def test_processes_and_threads_racing_to_claim_claim_each_job_once(tmp_path, db_path):
    store = TinyDBStore(db_path)
    ids = [store.add(make_draft())[0].id for _ in range(40)]
    outputs = run_workers(tmp_path, db_path, "claim", 4, ids[0], ids[-1])
    wins = [line for out in outputs for line in zip(out[::2], out[1::2])]
    assert sorted(int(job_id) for job_id, _ in wins) == ids  # every job exactly once
    final = {job.id: job for job in store.list()}
    for job_id, token in wins:
        assert final[int(job_id)].launch_token == token and final[int(job_id)].attempts == 1
    assert all(job.status is JobStatus.LAUNCHING for job in final.values())


def test_processes_and_threads_incrementing_one_job_lose_no_update(tmp_path, db_path):
    store = TinyDBStore(db_path)
    job, _ = store.add(make_draft())
    run_workers(tmp_path, db_path, "bump", 4, job.id, 25)  # 4 processes x 4 threads x 25
    final = store.get(job.id)
    assert final.attempts == 400 and final.version == 400
