"""The schedules contract (:mod:`store_contract_schedules`) on both backends, plus what only the
file store has: the layout stays fast-path readable, plain TinyDB reads the table, a process
elsewhere loses no update, and a damaged table is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from jobman_cli.errors import StoreError
from jobman_cli.stores import jobfile
from jobman_cli.stores.dynamodb import DynamoDBStore
from jobman_cli.stores.tinydb import TinyDBStore
from store_contract_schedules import ScheduleContract, append, make_schedule
from test_store_dynamodb import aws, make_handle, table  # noqa: F401 - fixtures

from conftest import make_draft

ROOT = Path(__file__).resolve().parent.parent


class TestTinyDBSchedules(ScheduleContract):
    @pytest.fixture
    def make_store(self, tmp_path):
        handles: list[TinyDBStore] = []

        def make() -> TinyDBStore:
            handles.append(TinyDBStore(tmp_path / "jobs.json"))
            return handles[-1]

        yield make
        for handle in handles:
            handle.close()


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


def test_dynamodb_schedule_marker_ignores_job_writes(make_handle):  # noqa: F811
    store: DynamoDBStore = make_handle()
    store.add_schedule(make_schedule())
    marker = store.schedule_marker()
    store.add(make_draft())
    store.update(1, lambda job: job.cancelled(job.created_at))
    assert store.schedule_marker() == marker  # a busy job stream costs the daemon no schedule Scan


# ---------------------------------------------------------------------------- file store only
def test_a_schedule_write_keeps_the_job_lines_layout_and_plain_tinydb_reads_it(tmp_path):
    path = tmp_path / "jobs.json"
    store = TinyDBStore(path)
    for _ in range(3):
        store.add(make_draft())
    before = path.read_bytes()
    store.add_schedule(make_schedule())
    after = path.read_bytes()
    lines_before, lines_after = jobfile.Lines.parse(before), jobfile.Lines.parse(after)
    assert lines_after is not None  # the fast paths still trust the file (frame and CRC check out)
    assert after[:lines_after.end] == before[:lines_before.end]  # the job lines are byte-identical
    assert json.loads(after)["schedules"]["1"]["cron"] == "30 2 * * *"
    tinydb = pytest.importorskip("tinydb")
    with tinydb.TinyDB(path) as db:
        assert len(db.table("jobs")) == 3 and db.table("schedules").get(doc_id=1)["title"] == "nightly"
    # and a job write after it keeps the schedules
    store.add(make_draft())
    assert TinyDBStore(path).get_schedule(1).title == "nightly"


def test_a_damaged_schedules_table_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "jobs.json"
    TinyDBStore(path).add_schedule(make_schedule())
    doc = json.loads(path.read_bytes())
    doc["schedules"] = ["not", "a", "table"]
    path.write_bytes(orjson.dumps(doc))
    store = TinyDBStore(path)
    with pytest.raises(StoreError, match=str(path)):
        store.list_schedules()
    with pytest.raises(StoreError):
        store.add_schedule(make_schedule())
    assert json.loads(path.read_bytes())["schedules"] == ["not", "a", "table"]  # never written


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
