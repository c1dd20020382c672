"""A schedule's runs and the jobs owing a cost receipt, read without walking every job.

What the answers are is the store contract's (``store_contract_queries``, on every backend). Here:
how DynamoDB gets them. Every DynamoDB call of every client jobman makes is counted (a botocore
``before-call`` hook on each client), and ``list --schedule``, ``GET jobs?schedule=``, ``schedules
show`` (CLI and REST), the daemon's start-up costing and the schedule materializer's overlap check
must not send a single Scan. A table made by the previous jobman (no ``schedule-runs`` index, items
without ``run_of``) keeps answering (by its old Scan) until ``jobman store init`` upgrades it, and
then answers the same without one.
"""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import T0, make_draft
from jobman_cli.cli import cli
from jobman_cli.clock import FixedClock
from jobman_cli.service import JobService
from jobman_cli.stores.dynamodb import DynamoDBStore, init_table
from store_contract_queries import NOW, ended_on_an_instance
from store_contract_schedules import make_schedule
from test_store_dynamodb import TABLE, URL, admin, aws, make_handle, table  # noqa: F401 - fixtures

TOKEN = "test-api-token-0123456789"


@pytest.fixture
def calls(monkeypatch, aws) -> list[str]:  # noqa: F811
    """The operation name of every DynamoDB call of every store client made from now on."""
    import jobman_cli.stores.dynamodb as dynamodb

    seen: list[str] = []
    original = dynamodb.make_client

    def counted(*args: Any, **kwargs: Any) -> Any:
        client = original(*args, **kwargs)
        client.meta.events.register("before-call.dynamodb.*", lambda model, **_: seen.append(model.name))
        return client

    monkeypatch.setattr(dynamodb, "make_client", counted)
    return seen


def populate(store: DynamoDBStore, schedule_id: int, runs: int = 25, others: int = 60) -> list[int]:
    """``others`` ordinary jobs and runs of another schedule, with ``runs`` runs of ``schedule_id``
    among them; the runs' ids, ascending."""
    mine = []
    for n in range(runs + others):
        sid = schedule_id if n % 3 == 0 and len(mine) < runs else (schedule_id + 1 if n % 3 == 1 else None)
        job, _ = store.add(make_draft(schedule_id=sid, occurrence=T0 + timedelta(minutes=n) if sid else None))
        if sid == schedule_id:
            mine.append(job.id)
    while len(mine) < runs:
        mine.append(store.add(make_draft(schedule_id=schedule_id, occurrence=T0))[0].id)
    return mine


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["--store", URL, *args])
    assert result.exit_code == 0, result.output
    return result


def test_list_schedule_and_schedules_show_query_the_index_never_scan(table, calls):  # noqa: F811
    store = DynamoDBStore.from_url(URL)
    schedule = store.add_schedule(make_schedule())
    runs = populate(store, schedule.id)
    calls.clear()
    listed = json.loads(invoke("list", "--schedule", str(schedule.id), "--json").output)
    assert [j["id"] for j in listed] == runs[::-1] and "Query" in calls and "BatchGetItem" in calls
    limited = json.loads(invoke("list", "--schedule", str(schedule.id), "--limit", "20", "--json").output)
    assert [j["id"] for j in limited] == runs[::-1][:20]
    table_out = invoke("list", "--schedule", str(schedule.id), "--status", "scheduled", "--limit", "3").output
    assert [int(line.split()[0]) for line in table_out.splitlines()[1:]] == runs[::-1][:3]
    shown = json.loads(invoke("schedules", "show", str(schedule.id), "--json").output)
    assert [r["id"] for r in shown["runs"]] == runs[::-1][:20]
    assert "Scan" not in calls, calls
    calls.clear()
    invoke("list", "--json")  # a plain list is still a Scan: the counting sees Scans, so the above is not vacuous
    assert "Scan" in calls


def test_rest_filter_and_show_query_the_index_never_scan(table, calls):  # noqa: F811
    from jobman_cli.api import ApiServer

    store = DynamoDBStore.from_url(URL)
    schedule = store.add_schedule(make_schedule())
    runs = populate(store, schedule.id)
    log: list[str] = []
    server = ApiServer(JobService(store, FixedClock(NOW)), api_token=TOKEN, log=log.append).start()

    def get(path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", "/jobMan/v1.1" + path, headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            assert response.status == 200
            return json.loads(response.read())
        finally:
            conn.close()

    try:
        calls.clear()
        assert [j["id"] for j in get(f"/jobs?schedule={schedule.id}&limit=5")["jobs"]] == runs[::-1][:5]
        assert [j["id"] for j in get(f"/jobs?schedule={schedule.id}&status=scheduled")["jobs"]] == runs[::-1]
        assert [r["id"] for r in get(f"/schedules/{schedule.id}")["runs"]] == runs[::-1][:20]
        assert "Scan" not in calls and "Query" in calls, calls
    finally:
        server.stop()
        store.close()
    assert log == []


class FakePricer:
    def __init__(self) -> None:
        self.priced: list[int] = []

    def receipt(self, job: Any) -> Any:
        from jobman_cli.cost.receipt import Receipt

        self.priced.append(job.id)
        return Receipt(0.25, "test price")


def test_daemon_start_up_costing_finds_the_jobs_owing_a_receipt_without_a_scan(table, calls):  # noqa: F811
    from jobman_cli.daemon.costing import Costing

    store = DynamoDBStore.from_url(URL)
    ids = [store.add(make_draft())[0].id for _ in range(6)]
    ended_on_an_instance(store, ids[1])
    ended_on_an_instance(store, ids[3], status="failed")
    ended_on_an_instance(store, ids[4], when=NOW - timedelta(days=8))  # older than the window
    store.update(ids[5], lambda j: j.cancelled(NOW))  # never ran: owes nothing
    calls.clear()
    pricer = FakePricer()
    lines: list[str] = []
    costing = Costing(DynamoDBStore.from_url(URL), lambda: pricer, FixedClock(NOW + timedelta(minutes=1)),
                      log=lines.append)
    assert costing.run_once() == 2  # looked at: the two that ended within the window
    assert sorted(pricer.priced) == [ids[1], ids[3]]
    assert "Scan" not in calls and calls.count("Query") == 3, calls  # one per terminal status
    assert store.get(ids[1]).cost == 0.25 and store.get(ids[4]).cost_basis is None
    # a receipt takes the job out of the index: the next start finds nothing
    assert DynamoDBStore.from_url(URL).owing_receipts(NOW - timedelta(days=7)) == []
    item = admin().get_item(TableName=TABLE, Key={"pk": {"S": f"job#{ids[1]}"}})["Item"]
    assert "due_ms" not in item


def test_the_materializers_overlap_check_reads_the_previous_run_by_id_never_scans(table, calls):  # noqa: F811
    from jobman_cli.daemon.schedules import Materializer
    from jobman_cli.schedules.model import Overlap

    store = DynamoDBStore.from_url(URL)
    populate(store, 9, runs=3)
    schedule = store.add_schedule(make_schedule(cron=None, every=900, tz="UTC", overlap=Overlap.FORBID,
                                                next_at=T0 + timedelta(hours=1)))
    lines: list[str] = []
    clock = FixedClock(T0 + timedelta(hours=1))
    materializer = Materializer(store, JobService(store, clock), terminate=lambda _: None, log=lines.append)
    calls.clear()
    assert materializer.step(T0 + timedelta(hours=1)) == 1
    first = store.get_schedule(schedule.id).last_job_id
    clock.set(T0 + timedelta(hours=1, minutes=15))
    materializer.invalidate()
    assert materializer.step(T0 + timedelta(hours=1, minutes=15)) == 0  # the first run is still scheduled
    assert any("skipped" in line for line in lines), lines
    assert store.get_schedule(schedule.id).records[-1]["outcome"] == "skipped"
    assert "Scan" not in calls, calls
    assert [j.id for j in store.list(schedule=schedule.id)] == [first]


# --------------------------------------------------------------------------- a table of the previous jobman
def old_table() -> None:
    """The table as the previous jobman made it: the status-due index only, a meta item without
    ``features``."""
    from jobman_cli.stores.dynamodb_admin import _INDEX_KEYS

    admin().create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "status", "AttributeType": "S"},
                              {"AttributeName": "due_ms", "AttributeType": "N"}],
        GlobalSecondaryIndexes=[{"IndexName": "status-due", "KeySchema": _INDEX_KEYS,
                                 "Projection": {"ProjectionType": "ALL"}}])
    admin().put_item(TableName=TABLE, Item={"pk": {"S": "meta"}, "format": {"S": "jobman"}, "schema": {"N": "1"},
                                            "store_id": {"S": "0123456789abcdef0123456789abcdef"},
                                            "created_at": {"S": "2030-01-01T00:00:00+00:00"}})


def as_the_previous_jobman_wrote_them() -> None:
    """Take away what the previous jobman did not write: ``run_of``, and ``due_ms`` of ended jobs."""
    client = admin()
    for item in client.scan(TableName=TABLE)["Items"]:
        if item["pk"]["S"].startswith("job#"):
            gone = ["run_of"] + (["due_ms"] if item["status"]["S"] in ("finished", "failed", "cancelled") else [])
            client.update_item(TableName=TABLE, Key={"pk": item["pk"]}, UpdateExpression="REMOVE " + ", ".join(gone))


def test_a_table_of_the_previous_jobman_answers_by_scan_until_store_init_upgrades_it(aws, calls):  # noqa: F811
    old_table()
    store = DynamoDBStore.from_url(URL)
    runs = populate(store, 4, runs=6, others=12)
    ended_on_an_instance(store, runs[0])
    as_the_previous_jobman_wrote_them()
    before = DynamoDBStore.from_url(URL)
    calls.clear()
    assert [j.id for j in before.list(schedule=4)] == runs[::-1]  # still right: by the old Scan
    assert [r["id"] for r in before.owing_receipts(T0)] == [runs[0]]
    assert calls.count("Scan") == 2

    assert init_table(URL, wait_delay=0) == (False, "0123456789abcdef0123456789abcdef")
    names = {i["IndexName"] for i in admin().describe_table(TableName=TABLE)["Table"]["GlobalSecondaryIndexes"]}
    assert names == {"status-due", "schedule-runs"}
    after = DynamoDBStore.from_url(URL)
    calls.clear()
    assert [j.id for j in after.list(schedule=4)] == runs[::-1]
    assert [j.id for j in after.list(schedule=4, limit=2)] == runs[::-1][:2]
    assert [r["id"] for r in after.owing_receipts(T0)] == [runs[0]]
    assert "Scan" not in calls, calls
    assert [j.id for j in before.list(schedule=4)] == runs[::-1]  # a handle opened before: still right
    assert init_table(URL, wait_delay=0)[0] is False  # idempotent


def test_store_init_refuses_a_schedule_runs_index_of_another_design(aws):  # noqa: F811
    old_table()
    admin().update_table(
        TableName=TABLE, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "status", "AttributeType": "S"},
                                               {"AttributeName": "due_ms", "AttributeType": "N"},
                                               {"AttributeName": "run_of", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[{"Create": {"IndexName": "schedule-runs", "KeySchema": [
            {"AttributeName": "run_of", "KeyType": "HASH"}], "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    result = CliRunner().invoke(cli, ["store", "init", "--store", URL])
    assert result.exit_code == 1 and "its index 'schedule-runs' is not (run_of N HASH, job_id N RANGE)" in result.output
    assert len(result.output.splitlines()) == 1


# --------------------------------------------------------------------------- remote
def test_remote_list_schedule_asks_the_server_for_the_runs_not_for_every_job(tmp_path, monkeypatch):
    """``jobman --server URL list --schedule N --limit L``: the server's store is asked for the
    schedule's runs (``schedule=N``, ``limit=L``), once; the client no longer fetches every job to
    filter them itself. Same answer as the local command."""
    from jobman_cli.api import ApiServer
    from jobman_cli.stores.tinydb import TinyDBStore

    for name in ("JOBMAN_SERVER", "JOBMAN_STORE", "JOBMAN_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    db = tmp_path / "jobs.json"
    store = TinyDBStore(db)
    runs = populate(store, 7, runs=5, others=10)

    class Recording:
        def __init__(self) -> None:
            self.asked: list[dict[str, Any]] = []

        def list_records(self, *args: Any, **kwargs: Any) -> Any:
            self.asked.append(kwargs)
            return store.list_records(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    recording = Recording()
    server = ApiServer(JobService(recording, FixedClock(NOW)), api_token=TOKEN, log=lambda line: None).start()  # type: ignore[arg-type]
    try:
        remote = CliRunner().invoke(cli, ["--server", server.url, "list", "--schedule", "7", "--limit", "2", "--json"],
                                    env={"JOBMAN_API_TOKEN": TOKEN})
    finally:
        server.stop()
    assert remote.exit_code == 0, remote.output
    assert [j["id"] for j in json.loads(remote.output)] == runs[::-1][:2]
    assert recording.asked == [{"limit": 2, "since": None, "schedule": 7}]
    local = CliRunner().invoke(cli, ["--store", str(db), "list", "--schedule", "7", "--limit", "2", "--json"])
    assert local.output == remote.output
    store.close()
