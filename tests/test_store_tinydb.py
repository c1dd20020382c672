"""The TinyDB file store: the shared contract, plus what a handle on a file can get wrong over time
(idempotency, read-only handles, snapshots and caching, group commit, and real processes racing on
one file). The file's own layout, modes and damaged or foreign files: test_store_jobfile.py."""

from __future__ import annotations

import errno
import functools
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import T0, make_draft
from jobman_cli.errors import JobNotFound, StoreError, TransitionNotAllowed
from jobman_cli.model import JobStatus
from jobman_cli.stores import jobfile
from jobman_cli.stores import snapshot as snapshot_mod
from jobman_cli.stores.tinydb import TinyDBStore
from store_contract import NOW, StoreContract, bump

TESTS = Path(__file__).resolve().parent


class TestTinyDBContract(StoreContract):
    @pytest.fixture
    def make_store(self, tinydb_handles):
        return tinydb_handles  # conftest: new handles on one file


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "home" / "jobs.json"


# --------------------------------------------------------------------------- idempotency
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


def test_a_closed_store_says_so(db_path):
    store = TinyDBStore(db_path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list()
    with pytest.raises(StoreError, match="closed"):
        store.add(make_draft())


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


# --------------------------------------------------------------------------- the generation nonce
def test_a_stat_that_repeats_cannot_hide_another_processs_write(db_path, monkeypatch):
    """A long-lived handle reuses its parsed snapshot while ``still_current`` says the file is
    unchanged: ``stat`` plus the lock file's generation nonce. The stat alone can repeat: ext4 hands
    a freed inode to the next temp file (measured here: a store alternates between two inode
    numbers) and timestamps are coarse (a tick of 1-4 ms held two commits), so a third commit in
    one tick can leave ``(inode, size, mtime, ctime)`` exactly as labelled. This reader's stat is
    reduced to what such a collision leaves (the device), so only the nonce can notice that a
    separate ``jobman cancel`` process replaced the file. Without the nonce check, the daemon-like
    reader would keep the cancelled job scheduled (and due) and launch it."""
    from jobman_cli.stores import filelock

    reader = TinyDBStore(db_path)
    job, _ = reader.add(make_draft(date_time=T0))
    collided = lambda st: (st.st_dev,)  # noqa: E731
    monkeypatch.setattr(filelock, "stat_key", collided)
    monkeypatch.setattr(snapshot_mod, "stat_key", collided)
    assert [j.id for j in reader.due(T0)] == [job.id]  # a labelled snapshot with the views built
    cancelled = subprocess.run([sys.executable, "-m", "jobman_cli", "--store", str(db_path), "cancel", str(job.id)],
                               capture_output=True, text=True, timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    assert reader.get(job.id).status is JobStatus.CANCELLED
    assert reader.due(T0) == []
    reader.close()


# --------------------------------------------------------------------------- snapshots, own commits
def _due_store(path: Path, count: int, *, views: bool = True) -> TinyDBStore:
    """A handle on ``count`` scheduled jobs (job n due at T0 + n minutes), its views built or not."""
    TinyDBStore(path)._commits.submit(lambda batch: [batch.add(make_draft(date_time=T0 + timedelta(minutes=n)))
                                                     for n in range(1, count + 1)])
    store = TinyDBStore(path)
    assert not views or store.next_due_at() == T0 + timedelta(minutes=1)
    return store


def _count_reloads(monkeypatch) -> dict[str, list[int]]:
    """Count file reads, full parses and view builds: what a reader pays when it reloads."""
    counts: dict[str, list[int]] = {"reads": [], "parses": _count_full_parses(monkeypatch), "builds": []}
    real_read, real_build = snapshot_mod.read_labelled, snapshot_mod.Views.build.__func__
    monkeypatch.setattr(snapshot_mod, "read_labelled", lambda *a: counts["reads"].append(1) or real_read(*a))
    monkeypatch.setattr(snapshot_mod.Views, "build",
                        classmethod(lambda cls, snap: counts["builds"].append(1) or real_build(cls, snap)))
    return counts


def test_readers_never_reload_because_of_this_processs_own_commits(db_path, monkeypatch):
    """50 writer threads claim the 200 earliest of 10k jobs while a reader loops ``next_due_at()``
    (the daemon taking 50 callbacks at once). A reader that catches one of our commits mid-flight
    takes its base or waits for its successor: it never re-reads (and re-parses) the file."""
    store = _due_store(db_path, 10_000)
    counts, seen, done = _count_reloads(monkeypatch), [], threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(store.next_due_at())

    def writer(first: int) -> None:
        for job_id in range(first, 201, 50):
            store.update(job_id, lambda j: j.claimed(NOW, "t"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 51)]
    for thread in [watcher := threading.Thread(target=reader), *threads]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert seen and seen == sorted(seen)  # claims only remove due times: never an older state
    assert store.next_due_at() == T0 + timedelta(minutes=201) and len(store.active()) == 200
    assert counts == {"reads": [], "parses": [], "builds": []}
    assert TinyDBStore(db_path).next_due_at() == T0 + timedelta(minutes=201)  # what is on disk


def test_after_another_process_writes_one_reader_thread_reloads_for_all(db_path, monkeypatch):
    store = _due_store(db_path, 1000)
    TinyDBStore(db_path).update(1, lambda j: j.claimed(NOW, "another process"))
    counts, go = _count_reloads(monkeypatch), threading.Barrier(8)
    readers = _Readers(store, 8, before=go.wait)
    assert readers.joined() and readers.results == [T0 + timedelta(minutes=2)] * 8
    assert counts == {"reads": [1], "parses": [1], "builds": [1]}


class _Waits(threading.Condition):
    """Stands in for the handle's condition, counting the waits on it."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.count = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.count += 1
        return super().wait(timeout)


def _hook_next_commit(monkeypatch, *, before_write=None, after_rename=None) -> None:
    """In the next commit: ``before_write(chunks)`` (returns the chunks to write) once its nonce is
    written; ``after_rename(publish, st)`` instead of the publish (must call ``publish(st)`` or raise)."""
    real_write, calls = snapshot_mod.atomic_write, []

    def write(path, chunks, *, create_only=False, renamed=None):
        calls.append(1)
        if len(calls) == 1 and before_write is not None:
            chunks = before_write(chunks)
        if len(calls) == 1 and after_rename is not None:
            renamed = functools.partial(after_rename, renamed)
        return real_write(path, chunks, create_only=create_only, renamed=renamed)

    monkeypatch.setattr(snapshot_mod, "atomic_write", write)


class _Readers:
    """Threads calling ``next_due_at()`` once each; ``wait_for(waits)`` until that many waits were
    counted or every reader is done (so a wrong implementation fails the asserts, not hangs)."""

    def __init__(self, store: TinyDBStore, count: int, waits: _Waits | None = None, before=lambda: None) -> None:
        self.results: list[object] = []
        self.threads = [threading.Thread(target=lambda: (before(), self.results.append(store.next_due_at())))
                        for _ in range(count)]
        self.waits = waits
        for thread in self.threads:
            thread.start()

    def wait_for(self, waits: int) -> None:
        deadline = time.monotonic() + 10
        while self.waits.count < waits and any(t.is_alive() for t in self.threads) and time.monotonic() < deadline:
            time.sleep(0.001)

    def joined(self) -> bool:
        for thread in self.threads:
            thread.join(10)
        return not any(thread.is_alive() for thread in self.threads)


def test_readers_take_the_base_before_the_rename_and_wait_for_the_successor_after_it(db_path, monkeypatch):
    store, waits, seen = _due_store(db_path, 3, views=False), _Waits(), {}
    monkeypatch.setattr(store._file, "_changed", waits, raising=False)

    def before_write(chunks):  # the nonce has changed, the file has not: the base, without waiting
        # (and its first views, built now, are carried to the successor)
        seen["early"] = _Readers(store, 1, waits)
        assert seen["early"].joined() and waits.count == 0
        return chunks

    def after_rename(publish, st):  # renamed, not yet published: readers wait for it
        seen["late"] = readers = _Readers(store, 3, waits)
        readers.wait_for(3)
        seen["waits"] = waits.count
        publish(st)
        assert readers.joined()

    _hook_next_commit(monkeypatch, before_write=before_write, after_rename=after_rename)
    counts = _count_reloads(monkeypatch)
    store.update(1, lambda j: j.claimed(NOW, "t"))
    assert seen["early"].results == [T0 + timedelta(minutes=1)] and seen["waits"] == 3
    assert seen["late"].results == [T0 + timedelta(minutes=2)] * 3 and store.next_due_at() == seen["late"].results[0]
    assert counts == {"reads": [], "parses": [1], "builds": [1]}


def test_a_commit_failing_after_its_rename_wakes_its_waiting_readers(db_path, monkeypatch):
    """A disk error once the new file is in place: the readers waiting for the publish are woken
    and read the file as it is (the claim is on disk: the old state would be stale)."""
    store, waits, seen = _due_store(db_path, 3), _Waits(), {}
    monkeypatch.setattr(store._file, "_changed", waits, raising=False)

    def after_rename(publish, st):
        seen["readers"] = readers = _Readers(store, 3, waits)
        readers.wait_for(3)
        seen["waits"] = waits.count
        raise OSError(errno.EIO, "Input/output error")

    _hook_next_commit(monkeypatch, after_rename=after_rename)
    counts = _count_reloads(monkeypatch)
    with pytest.raises(StoreError, match="written, but not confirmed on disk: Input/output error"):
        store.update(1, lambda j: j.claimed(NOW, "t"))
    assert seen["readers"].joined() and seen["waits"] == 3
    assert seen["readers"].results == [T0 + timedelta(minutes=2)] * 3 and len(counts["reads"]) == 1
    assert store.update(2, lambda j: j.claimed(NOW, "t")).status is JobStatus.LAUNCHING
    assert store.next_due_at() == T0 + timedelta(minutes=3) == TinyDBStore(db_path).next_due_at()


def test_a_commit_failing_before_its_rename_leaves_readers_the_unchanged_file(db_path, monkeypatch):
    """Disk full while writing the temp file: the file is untouched, readers keep the base (and
    its views: no reload), and a write by another process afterwards is still noticed."""
    store, before, seen = _due_store(db_path, 3), db_path.read_bytes(), {}

    def before_write(chunks):
        def failing():
            yield chunks[0]
            seen["readers"] = _Readers(store, 3)
            assert seen["readers"].joined()  # mid-write: the readers got the base without waiting
            raise OSError(errno.ENOSPC, "No space left on device")

        return failing()

    _hook_next_commit(monkeypatch, before_write=before_write)
    counts = _count_reloads(monkeypatch)
    with pytest.raises(StoreError, match="cannot write: No space left on device"):
        store.update(1, lambda j: j.claimed(NOW, "t"))
    assert seen["readers"].results == [T0 + timedelta(minutes=1)] * 3
    assert db_path.read_bytes() == before and sorted(p.name for p in db_path.parent.iterdir()) == [
        "jobs.json", "jobs.json.lock"]
    assert store.next_due_at() == T0 + timedelta(minutes=1) and counts["reads"] == []
    TinyDBStore(db_path).update(1, lambda j: j.claimed(NOW, "another process"))
    reads = len(counts["reads"])  # the other handle's
    assert store.next_due_at() == T0 + timedelta(minutes=2) and len(counts["reads"]) == reads + 1


# --------------------------------------------------------------------------- real processes
WORKER = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from conftest import T0, make_draft
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
