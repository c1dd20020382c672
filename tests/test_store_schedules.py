"""The schedules contract (:mod:`store_contract_schedules`) on both backends, plus what only the
file store has: a schedule write leaves the job file (and every process's parse of it) untouched,
plain TinyDB reads the schedules file, a process elsewhere loses no update, and a damaged or
foreign schedules file is refused by name and never written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from jobman_cli.errors import ScheduleNotFound, StoreError
from jobman_cli.stores.dynamodb import DynamoDBStore
from jobman_cli.stores.tinydb import TinyDBStore
from store_contract_schedules import ScheduleContract, append, make_schedule
from test_store_dynamodb import aws, make_handle, table  # noqa: F401 - fixtures

from conftest import make_draft

ROOT = Path(__file__).resolve().parent.parent


class TestTinyDBSchedules(ScheduleContract):
    @pytest.fixture
    def make_store(self, tinydb_handles):
        return tinydb_handles  # conftest: new handles on one file


class TestDynamoDBSchedules(ScheduleContract):
    @pytest.fixture
    def make_store(self, make_handle):  # noqa: F811
        return make_handle

    def test_items_have_their_own_prefix_and_counter(self, make_handle):  # noqa: F811
        store: DynamoDBStore = make_handle()
        store.add(make_draft())
        store.add_schedule(make_schedule())
        keys = {item["pk"]["S"] for item in store.client.scan(TableName=store.table)["Items"]}
        assert {"sched#1", "schedcounter", "schedseq", "job#1", "counter"} <= keys
        assert [j.id for j in store.list()] == [1]


def test_dynamodb_lists_schedules_without_a_scan_in_batches(make_handle):  # noqa: F811
    from test_store_dynamodb import record_calls

    store: DynamoDBStore = make_handle()
    for _ in range(5):
        store.add(make_draft())
    made = [store.add_schedule(make_schedule(title=f"s{i}")) for i in range(130)]
    store.delete_schedule(7)
    reader = make_handle()
    calls = record_calls(reader)
    listed = reader.list_schedules()
    assert [s.id for s in listed] == [s.id for s in made if s.id != 7] and listed[0] == made[0]
    names = [name for name, _ in calls]
    assert "Scan" not in names and names.count("BatchGetItem") == 2  # 129 keys: 100 + 29
    assert all(params["RequestItems"][store.table]["ConsistentRead"] for name, params in calls if name == "BatchGetItem")


def test_dynamodb_schedule_marker_ignores_job_writes(make_handle):  # noqa: F811
    store: DynamoDBStore = make_handle()
    store.add_schedule(make_schedule())
    marker = store.schedule_marker()
    store.add(make_draft())
    store.update(1, lambda job: job.cancelled(job.created_at))
    assert store.schedule_marker() == marker  # a busy job stream costs the daemon no schedule Scan


# ---------------------------------------------------------------------------- file store only
def test_a_schedule_write_leaves_the_job_file_and_its_nonce_untouched(tmp_path):
    path = tmp_path / "jobs.json"
    store = TinyDBStore(path)
    for _ in range(3):
        store.add(make_draft())
    daemon = TinyDBStore(path)
    daemon.due(make_draft().date_time)  # a long-lived reader with a parsed snapshot and views
    snap = daemon._file.snapshot()
    before, nonce, marker = path.read_bytes(), store._lock.read_nonce(), store.change_marker()
    store.add_schedule(make_schedule())
    store.update_schedule(1, append("x"))
    assert path.read_bytes() == before and store._lock.read_nonce() == nonce
    assert daemon._file.snapshot() is snap  # the job snapshot is still current: no reload, no re-parse
    assert store.change_marker() != marker  # but pollers see that something changed
    sidecar = tmp_path / "jobs.json.schedules"
    assert json.loads(sidecar.read_bytes())["schedules"]["1"]["cron"] == "30 2 * * *"
    assert oct(sidecar.stat().st_mode & 0o777) == "0o600"
    tinydb = pytest.importorskip("tinydb")
    with tinydb.TinyDB(sidecar) as db:
        assert db.table("schedules").get(doc_id=1)["title"] == "nightly"
    store.add(make_draft())  # a job write after it keeps the schedules
    assert TinyDBStore(path).get_schedule(1).records[0]["detail"] == "x"


@pytest.mark.parametrize("damage", ["garbage", "foreign", "other-store", "bad-table"])
def test_a_damaged_or_foreign_schedules_file_is_refused_naming_it_and_never_written(tmp_path, damage):
    path = tmp_path / "jobs.json"
    TinyDBStore(path).add_schedule(make_schedule())
    sidecar = tmp_path / "jobs.json.schedules"
    doc = json.loads(sidecar.read_bytes())
    if damage == "garbage":
        data = b'{"schedules": {"1": '
    else:
        if damage == "foreign":
            doc["meta"]["1"]["format"] = "something-else"
        elif damage == "other-store":
            doc["meta"]["1"]["store-id"] = "0" * 32
        else:
            doc["schedules"] = ["not", "a", "table"]
        data = orjson.dumps(doc)
    sidecar.write_bytes(data)
    store = TinyDBStore(path)
    with pytest.raises(StoreError, match=str(sidecar)):
        store.list_schedules()
    with pytest.raises(StoreError):
        store.add_schedule(make_schedule())
    with pytest.raises(StoreError):
        store.update_schedule(1, append("x"))
    assert sidecar.read_bytes() == data  # never written
    assert store.add(make_draft())[1]  # the jobs are not held hostage


def test_a_read_only_handle_on_a_missing_store_creates_nothing(tmp_path):
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    assert store.list_schedules() == []
    with pytest.raises(ScheduleNotFound):
        store.update_schedule(1, append("x"))
    assert list(tmp_path.iterdir()) == []


def test_a_writer_killed_mid_write_leaves_the_old_schedules_and_its_temp_is_swept(tmp_path, monkeypatch):
    from jobman_cli.stores import filelock

    path = tmp_path / "jobs.json"
    TinyDBStore(path).add_schedule(make_schedule())
    sidecar = tmp_path / "jobs.json.schedules"
    before = sidecar.read_bytes()
    stale = tmp_path / ".jobs.json.schedules.0123456789ab.tmp"
    stale.write_bytes(b'{"schedules": {"1": {"id"')  # what a writer killed before its rename leaves
    store = TinyDBStore(path)

    def power_cut(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(filelock.os, "replace", power_cut)
    with pytest.raises(StoreError, match="cannot write"):
        store.update_schedule(1, append("lost"))
    monkeypatch.undo()
    assert sidecar.read_bytes() == before and not stale.exists()
    assert TinyDBStore(path).get_schedule(1).records == ()
    assert store.update_schedule(1, append("kept")).records[0]["detail"] == "kept"


_WRITER = """
import sys
from jobman_cli.stores.tinydb import TinyDBStore
sys.path.insert(0, sys.argv[3])
from store_contract_schedules import append
store = TinyDBStore(sys.argv[1])
for n in range(15):
    store.update_schedule(1, append(sys.argv[2] + str(n)))
"""


def test_two_processes_updating_one_schedule_lose_no_update(tmp_path):
    path = tmp_path / "jobs.json"
    TinyDBStore(path).add_schedule(make_schedule())
    tests = str(ROOT / "tests")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, tests], cwd=ROOT)
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    final = TinyDBStore(path).get_schedule(1)
    assert sorted(r["detail"] for r in final.records) == sorted(f"{x}{n}" for x in "ab" for n in range(15))
    assert sorted(r["job-id"] for r in final.records) == list(range(1, 31))


def test_concurrent_schedule_writers_share_one_file_write_and_a_failing_change_drops_only_its_own(
        tmp_path, monkeypatch):
    """The daemon's workers update many schedules at once: while one writer holds the lock, the
    others queue and the next leader applies them all with ONE rewrite of the schedules file
    (it was one locked rewrite + fsyncs each: 1,000 due schedules took ~30 s). A change that raises
    fails its own caller only. Ordered by events: the first write is held until 31 writers queued."""
    import threading
    import time

    from jobman_cli.stores import tinydb_schedules

    path = tmp_path / "jobs.json"
    store = TinyDBStore(path)
    ids = [store.add_schedule(make_schedule()).id for _ in range(32)]
    real, writes = tinydb_schedules.atomic_write, []
    entered, release = threading.Event(), threading.Event()

    def held_write(*args, **kwargs):
        writes.append(1)
        if len(writes) == 1:
            entered.set()
            assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(tinydb_schedules, "atomic_write", held_write)
    errors: dict[int, BaseException] = {}

    def bad(s):
        raise ValueError("this change is refused")

    def update(schedule_id: int) -> None:
        try:
            store.update_schedule(schedule_id, bad if schedule_id == ids[5] else append(f"u{schedule_id}"))
        except BaseException as exc:  # noqa: BLE001
            errors[schedule_id] = exc

    first = threading.Thread(target=update, args=(ids[0],))
    first.start()
    assert entered.wait(60)
    others = [threading.Thread(target=update, args=(i,)) for i in ids[1:]]
    for t in others:
        t.start()
    limit = time.monotonic() + 60  # liveness bound only: waits for a state, not a duration
    while len(store._group._queue) < len(others) and time.monotonic() < limit:
        time.sleep(0.01)
    release.set()
    for t in [first, *others]:
        t.join(60)
    assert len(writes) == 2  # the held one, then all 31 queued changes in one
    assert list(errors) == [ids[5]] and isinstance(errors[ids[5]], ValueError)
    fresh = TinyDBStore(path)
    for i in ids:
        details = [r["detail"] for r in fresh.get_schedule(i).records]
        assert details == ([] if i == ids[5] else [f"u{i}"])
