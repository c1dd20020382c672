"""The DynamoDB store under moto: the shared contract, plus what only a table can get wrong (table
design, ``store init``, index use instead of Scan, conditional-write races, one-line AWS errors).

moto's conditional writes check and write without a lock, so two threads can both pass one
condition (measured: one double claim in 300 with a short GIL switch interval). Real DynamoDB
applies each conditional write atomically per item; :func:`atomic_moto_writes` gives moto that
same guarantee, so a double claim in these tests can only be jobman's fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from datetime import timedelta
from typing import Any, Iterator

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from click.testing import CliRunner
from moto import mock_aws

from conftest import T0, make_draft
from jobman_cli.cli import cli
from jobman_cli.errors import JobNotFound, StoreError, TransitionNotAllowed
from jobman_cli.model import JobStatus
from jobman_cli.stores import open_store
from jobman_cli.stores.dynamodb import INDEX, DynamoDBStore, init_table, make_client, parse_url
from store_contract import NOW, StoreContract

TABLE = "jobman-test"
URL = f"dynamodb://{TABLE}"
WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "create_table")


@contextlib.contextmanager
def atomic_moto_writes() -> Iterator[None]:
    """Serialize moto's DynamoDB writes (see the module doc): what AWS guarantees per item."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    originals = {name: getattr(DynamoDBBackend, name) for name in WRITES}

    def locked(original: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(self, *args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(DynamoDBBackend, name, locked(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(DynamoDBBackend, name, original)


@pytest.fixture
def aws(monkeypatch) -> Iterator[None]:
    """Fake credentials, a region given only as AWS_REGION, no endpoint or profile: moto in-process."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
                 "AWS_SESSION_TOKEN", "JOBMAN_STORE", "JOBMAN_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with mock_aws(), atomic_moto_writes():
        yield


@pytest.fixture
def table(aws) -> str:
    assert init_table(URL, wait_delay=0)[0]
    return TABLE


@pytest.fixture
def make_handle(table) -> Iterator[Any]:
    handles: list[DynamoDBStore] = []

    def make() -> DynamoDBStore:
        handles.append(DynamoDBStore.from_url(URL))  # a new boto3 client each: as another process
        return handles[-1]

    yield make
    for handle in handles:
        handle.close()


class TestDynamoDBContract(StoreContract):
    @pytest.fixture
    def make_store(self, make_handle):
        return make_handle


def record_calls(store: DynamoDBStore) -> list[tuple[str, dict]]:
    """Every API call the store's client makes from now on: (operation name, parameters)."""
    calls: list[tuple[str, dict]] = []
    store.client.meta.events.register(
        "before-parameter-build.dynamodb.*", lambda model, params, **_: calls.append((model.name, dict(params))))
    return calls


def admin() -> Any:
    """A plain boto3 client on the same (moto) account and region, to look behind the store's back."""
    return boto3.client("dynamodb", region_name="eu-west-1")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# --------------------------------------------------------------------------- jobman store init
def test_store_init_creates_the_table_once_and_is_idempotent(aws):
    first = invoke("store", "init", "--store", URL)
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"Created DynamoDB table {TABLE} (store id ")
    store_id = first.output.split("store id ")[1].rstrip(")\n")
    again = invoke("--store", URL, "store", "init")  # the global option works too
    assert again.exit_code == 0, again.output
    assert again.output == f"DynamoDB table {TABLE} already exists (store id {store_id})\n"
    with DynamoDBStore.from_url(URL) as store:
        assert store.store_id == store_id and len(store_id) == 32


def test_store_init_refuses_a_table_of_another_design(aws):
    client = admin()
    client.create_table(TableName="foreign", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    result = invoke("store", "init", "--store", "dynamodb://foreign")
    assert result.exit_code == 1
    assert result.output == ("Error: dynamodb://foreign: table foreign already exists but is not a jobman table: "
                             "its key is [id (N, HASH)], jobman needs [pk (S, HASH)]; choose another table name\n")
    client.create_table(TableName="noindex", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    result = invoke("store", "init", "--store", "dynamodb://noindex")
    assert result.exit_code == 1 and "has no global secondary index 'status-due'" in result.output
    assert len(result.output.splitlines()) == 1
    assert client.scan(TableName="noindex")["Items"] == []  # nothing written into it


def test_store_init_adopts_a_table_of_the_right_design_without_meta(aws):
    """A table made by CloudFormation/Terraform with jobman's design gets its meta item."""
    created, store_id = init_table(URL, wait_delay=0)
    client = admin()
    client.delete_item(TableName=TABLE, Key={"pk": {"S": "meta"}})
    with pytest.raises(StoreError, match=r"has no jobman meta item \(run 'jobman store init"):
        DynamoDBStore.from_url(URL)
    again, new_id = init_table(URL, wait_delay=0)
    assert created and not again and new_id != store_id
    assert DynamoDBStore.from_url(URL).store_id == new_id


def test_store_init_of_a_file_creates_it(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBMAN_STORE", raising=False)
    path = tmp_path / "home" / "jobs.json"
    first = invoke("--db", str(path), "store", "init")
    assert first.exit_code == 0 and first.output.startswith(f"Created store file {path} (store id ")
    assert path.is_file()
    again = invoke("store", "init", "--store", str(path))
    assert again.exit_code == 0 and again.output.startswith(f"Store file {path} already exists (store id ")


# --------------------------------------------------------------------------- table design
def test_table_design_has_the_sparse_status_due_index(table, make_handle):
    description = admin().describe_table(TableName=TABLE)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    index, runs = sorted(description["GlobalSecondaryIndexes"], key=lambda i: i["IndexName"] != INDEX)
    assert index["IndexName"] == INDEX == "status-due"
    assert runs["IndexName"] == "schedule-runs" and runs["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert runs["KeySchema"] == [{"AttributeName": "run_of", "KeyType": "HASH"},
                                 {"AttributeName": "job_id", "KeyType": "RANGE"}]
    assert index["KeySchema"] == [{"AttributeName": "status", "KeyType": "HASH"},
                                  {"AttributeName": "due_ms", "KeyType": "RANGE"}]
    assert index["Projection"] == {"ProjectionType": "ALL"}

    store = make_handle()
    live, _ = store.add(make_draft(idempotency_key="nightly"))
    done, _ = store.add(make_draft())
    store.update(done.id, lambda j: j.cancelled(NOW))
    client = admin()
    items = {i["pk"]["S"]: i for i in client.scan(TableName=TABLE, ConsistentRead=True)["Items"]}
    assert set(items) == {"meta", "counter", "idem#nightly", f"job#{live.id}", f"job#{done.id}"}
    assert items["counter"]["n"] == {"N": str(done.id)}
    assert items["idem#nightly"]["job_id"] == {"N": str(live.id)}
    job_item = items[f"job#{live.id}"]
    assert job_item["status"] == {"S": "scheduled"} and job_item["version"] == {"N": "0"}
    assert job_item["due_ms"] == {"N": str(int(live.due_at.timestamp() * 1000))}
    assert "due_ms" not in items[f"job#{done.id}"]  # terminal jobs leave the index
    indexed = client.scan(TableName=TABLE, IndexName=INDEX)["Items"]
    assert [i["pk"]["S"] for i in indexed] == [f"job#{live.id}"]


# --------------------------------------------------------------------------- index, not Scan
def test_due_next_due_at_and_active_query_the_index_and_never_scan(make_handle):
    store = make_handle()
    ids = [store.add(make_draft(date_time=T0 + timedelta(minutes=n)))[0].id for n in range(30)]
    store.update(ids[0], lambda j: j.claimed(NOW, "a"))
    store.update(ids[1], lambda j: j.claimed(NOW, "b"))
    store.update(ids[1], lambda j: j.launched("i-1", NOW))
    calls = record_calls(store)
    assert [j.id for j in store.due(T0 + timedelta(minutes=10))] == ids[2:11]
    assert [j.id for j in store.due(NOW, limit=3)] == ids[2:5]
    assert store.next_due_at() == T0 + timedelta(minutes=2)
    assert [j.id for j in store.active()] == ids[:2]
    names = {name for name, _ in calls}
    assert names == {"Query"}, names
    assert all(params["IndexName"] == INDEX for _, params in calls)
    assert [p["Limit"] for _, p in calls if "Limit" in p][-1] == 1  # next_due_at reads one item
    calls.clear()
    store.list()
    assert [name for name, _ in calls] == ["Scan"]  # the operator's list is a Scan (documented)


def test_due_with_a_limit_keeps_id_order_among_equal_due_times_across_pages(make_handle):
    store = make_handle()
    ids = [store.add(make_draft(date_time=T0))[0].id for _ in range(40)]
    calls = record_calls(store)
    assert [j.id for j in store.due(T0, limit=3)] == ids[:3]
    assert len(calls) == 2  # pages of 25: the second page was needed to see every tie
    assert [j.id for j in store.due(T0)] == ids


# --------------------------------------------------------------------------- compare-and-set
def test_two_clients_racing_to_claim_50_jobs_claim_each_exactly_once(make_handle):
    """Both handles read every job at the same version before either writes (a barrier inside the
    change function), so each claim is a real conflict that only the conditional write decides."""
    store, other = make_handle(), make_handle()
    ids = [store.add(make_draft())[0].id for _ in range(50)]
    barriers = {job_id: threading.Barrier(2, timeout=10) for job_id in ids}
    conflicts = []
    for handle in (store, other):
        handle.client.meta.events.register(
            "after-call.dynamodb.PutItem",
            lambda parsed, **_: conflicts.append(1) if parsed.get("Error", {}).get("Code") == "ConditionalCheckFailedException" else None)
    wins: dict[int, list[str]] = {job_id: [] for job_id in ids}

    def claim_all(handle: DynamoDBStore, name: str) -> None:
        for job_id in ids:
            first = [True]

            def claim(job):
                if first[0]:
                    first[0] = False
                    barriers[job_id].wait()
                return job.claimed(NOW, f"token-{name}")

            try:
                handle.update(job_id, claim)
                wins[job_id].append(name)
            except TransitionNotAllowed:
                pass

    threads = [threading.Thread(target=claim_all, args=(h, n)) for h, n in ((store, "a"), (other, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(winners) == 1 for winners in wins.values()), wins
    assert len(conflicts) == 50  # every job: one write won, the other's condition failed
    final = {job.id: job for job in make_handle().list()}
    for job_id, [winner] in wins.items():
        assert final[job_id].launch_token == f"token-{winner}" and final[job_id].attempts == 1
        assert final[job_id].version == 1


def test_concurrent_adds_with_one_idempotency_key_make_one_job(make_handle):
    handles = [make_handle() for _ in range(4)]
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(4)

    def add(handle: DynamoDBStore) -> None:
        barrier.wait()
        job, created = handle.add(make_draft(idempotency_key="cron-0900"))
        results.append((job.id, created))

    threads = [threading.Thread(target=add, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert len(handles[0].list()) == 1


class TokenCheckingClient:
    """The store's (moto) client, with TransactWriteItems recorded as (ClientRequestToken, job id)
    and checked as AWS checks it (moto ignores the token): one token sent again with other items
    is IdempotentParameterMismatchException. ``cancel``: the cancellation reasons to answer the
    first calls with (one list per call, nothing written), before the real calls."""

    def __init__(self, client: Any, cancel: list[list[str]]) -> None:
        self.client, self.cancel = client, list(cancel)
        self.sent: list[tuple[str, int]] = []
        self.items_of: dict[str, Any] = {}

    def transact_write_items(self, **kwargs: Any) -> dict:
        token, items = kwargs["ClientRequestToken"], kwargs["TransactItems"]
        self.sent.append((token, int(items[0]["Put"]["Item"]["job_id"]["N"])))
        if self.items_of.setdefault(token, items) != items:
            raise ClientError({"Error": {"Code": "IdempotentParameterMismatchException",
                                         "Message": "token reused with a different request"}}, "TransactWriteItems")
        if self.cancel:
            codes = self.cancel.pop(0)
            raise ClientError({"Error": {"Code": "TransactionCanceledException",
                                         "Message": f"Transaction cancelled [{', '.join(codes)}]"},
                               "CancellationReasons": [{"Code": code} for code in codes]}, "TransactWriteItems")
        return self.client.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def pauses(monkeypatch) -> list[str]:
    """The back-offs ``add`` takes between sends (recorded, not slept)."""
    import jobman_cli.stores.dynamodb_writes as module

    taken: list[str] = []
    monkeypatch.setattr(module, "_pause", lambda attempt: taken.append("conflict"))
    monkeypatch.setattr(module, "_throttled_pause", lambda attempt: taken.append("throttled"))
    return taken


def test_a_throttled_or_conflicting_keyed_add_is_sent_again_with_the_same_id_and_token(table, pauses):
    client = TokenCheckingClient(make_client(), [["ThrottlingError", "None"], ["None", "ProvisionedThroughputExceeded"],
                                                 ["TransactionConflict", "None"]])
    with DynamoDBStore(TABLE, client=client) as store:
        job, created = store.add(make_draft(idempotency_key="cron-0900"))
        assert (job.id, created) == (1, True)
        assert [job_id for _, job_id in client.sent] == [1, 1, 1, 1]  # not read as "id taken"
        assert len({token for token, _ in client.sent}) == 1
        assert pauses == ["throttled", "throttled", "conflict"]
        assert [j.id for j in store.list()] == [1]
        assert store.add(make_draft())[0].id == 2  # no id was used up either


def test_a_keyed_add_whose_id_is_taken_moves_to_a_new_id_with_a_new_token(table, pauses):
    client = TokenCheckingClient(make_client(), [["ThrottlingError", "None"]])
    with DynamoDBStore(TABLE, client=client) as store:
        taken, _ = store.add(make_draft())
        admin().put_item(TableName=TABLE, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})  # someone reset it
        job, created = store.add(make_draft(idempotency_key="cron-0900"))
        assert (taken.id, job.id, created) == (1, 2, True)
        (first, _), (again, _), (moved, _) = client.sent
        assert [job_id for _, job_id in client.sent] == [1, 1, 2]  # throttled: id 1 again; taken: id 2
        assert first == again != moved
        assert store.get(2).idempotency_key == "cron-0900" and store.get(1) == taken


def test_a_change_that_forgets_to_bump_the_version_gets_it_bumped(make_handle):
    store = make_handle()
    job, _ = store.add(make_draft())
    renamed = store.update(job.id, lambda j: dataclasses.replace(j, title="renamed"))
    assert renamed.version == job.version + 1 and store.get(job.id) == renamed
    stale = make_handle()
    # A writer that still holds version 0 cannot overwrite: its change is re-applied to version 1.
    assert stale.update(job.id, lambda j: j.claimed(NOW, "t")).title == "renamed"


def test_update_of_a_deleted_item_is_job_not_found(make_handle):
    store = make_handle()
    job, _ = store.add(make_draft())
    admin().delete_item(TableName=TABLE, Key={"pk": {"S": f"job#{job.id}"}})
    with pytest.raises(JobNotFound):
        store.update(job.id, lambda j: j.cancelled(NOW))


# --------------------------------------------------------------------------- configuration and errors
def test_region_endpoint_and_url_options(aws, monkeypatch):
    assert make_client().meta.region_name == "eu-west-1"  # AWS_REGION alone is enough
    assert make_client(region="ap-south-1").meta.region_name == "ap-south-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert make_client().meta.endpoint_url == "http://127.0.0.1:9"
    assert parse_url("dynamodb://t-1.x?region=us-west-2&endpoint=http://h:1") == \
        ("t-1.x", {"region": "us-west-2", "endpoint": "http://h:1"})
    for bad in ("dynamodb://", "dynamodb://a b", "dynamodb://t?colour=red", "dynamodb://ab"):
        with pytest.raises(StoreError):
            parse_url(bad)


def test_aws_profile_is_honoured_and_a_missing_one_is_one_line(aws, monkeypatch, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[profile team]\nregion = ap-northeast-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert make_client().meta.region_name == "eu-west-1"  # AWS_REGION still wins, as in the AWS CLI
    monkeypatch.delenv("AWS_REGION")
    assert make_client().meta.region_name == "ap-northeast-1"
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    with pytest.raises(StoreError) as err:
        DynamoDBStore.from_url(URL)
    assert str(err.value) == f"{URL}: cannot reach DynamoDB: The config profile (nobody) could not be found"


def test_no_region_is_one_line(monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    with pytest.raises(StoreError) as err:
        DynamoDBStore.from_url("dynamodb://jobs")
    assert str(err.value) == ("dynamodb://jobs: cannot reach DynamoDB: You must specify a region. "
                              "(set AWS_REGION or add ?region=... to the store URL)")


def test_a_missing_table_is_one_line_from_the_store_and_the_cli(aws):
    with pytest.raises(StoreError) as err:
        open_store("dynamodb://missing")
    assert str(err.value) == ("dynamodb://missing: table missing does not exist "
                              "(create it with 'jobman store init --store dynamodb://missing')")
    result = invoke("--store", "dynamodb://missing", "list")
    assert result.exit_code == 1
    assert result.output == f"Error: {err.value}\n"


class FailingClient:
    """A stand-in client whose every call raises ``error`` (what botocore raises after retries)."""

    def __init__(self, error: Exception, meta_ok: bool = True) -> None:
        self.error, self.meta_ok = error, meta_ok

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            if self.meta_ok and kwargs.get("Key") == {"pk": {"S": "meta"}}:
                return {"Item": {"format": {"S": "jobman"}, "schema": {"N": "1"}, "store_id": {"S": "x"}}}
            raise self.error
        return call


def client_error(code: str, message: str, operation: str = "GetItem") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(("error", "expected"), [
    (client_error("AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized\nto perform"),
     "dynamodb://t-1: access denied to table t-1 for dynamodb:GetItem (AccessDeniedException: User: "
     "arn:aws:iam::1:user/x is not authorized to perform)"),
    (client_error("ThrottlingException", "Rate exceeded"),
     "dynamodb://t-1: DynamoDB throttled GetItem on table t-1 after retries (Rate exceeded)"),
    (client_error("ProvisionedThroughputExceededException", "slow down"),
     "dynamodb://t-1: DynamoDB throttled GetItem on table t-1 after retries (slow down)"),
    (client_error("InternalServerError", "oops"),
     "dynamodb://t-1: DynamoDB GetItem on table t-1 failed: InternalServerError: oops"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
     'dynamodb://t-1: cannot reach DynamoDB: Could not connect to the endpoint URL: "http://127.0.0.1:9"'),
])
def test_aws_errors_become_one_line_store_errors_naming_the_table(error, expected):
    store = DynamoDBStore("t-1", client=FailingClient(error))
    for call in (lambda: store.get(1), store.list, lambda: store.due(NOW), store.next_due_at,
                 lambda: store.update(1, lambda j: j), lambda: store.add(make_draft())):
        with pytest.raises(StoreError) as err:
            call()
        assert "\n" not in str(err.value) and str(err.value).startswith("dynamodb://t-1: ")
    with pytest.raises(StoreError) as err:
        store.get(1)
    assert str(err.value) == expected


def test_a_closed_store_refuses_calls(make_handle):
    store = make_handle()
    store.close()
    with pytest.raises(StoreError, match="store is closed"):
        store.get(1)


# --------------------------------------------------------------------------- what one job costs
def test_calls_over_one_jobs_life_match_docs_dynamodb_md(make_handle):
    """The DynamoDB calls of one job's life with a real daemon (shared-store mode, EC2 under moto):
    the numbers docs/dynamodb.md prices. If this fails, update the table there too."""
    from jobman_cli.clock import FixedClock
    from jobman_cli.daemon import Daemon
    from jobman_cli.launchers.base import EC2Settings
    from jobman_cli.launchers.ec2 import EC2Launcher
    from jobman_cli.model import format_time
    from jobman_cli.service import JobService, ScheduleRequest
    from jobman_cli.settings import DaemonSettings

    cli, shared = make_handle(), make_handle()
    cli_calls, calls = record_calls(cli), record_calls(shared)
    clock = FixedClock(T0)
    due = T0 + timedelta(minutes=5)

    def phase(*recorders: list) -> dict[str, int]:
        counts: dict[str, int] = {}
        for recorder in recorders:
            for name, _ in recorder:
                counts[name] = counts.get(name, 0) + 1
            recorder.clear()
        return counts

    request = ScheduleRequest(image="alpine:3.20", when=format_time(due), env={"GREETING": "hello"})
    job, _ = JobService(cli, clock).schedule(request)
    assert phase(cli_calls) == {"UpdateItem": 2, "PutItem": 1}  # id counter, job, change marker
    keyed = dataclasses.replace(request, idempotency_key="nightly")
    other, _ = JobService(cli, clock).schedule(keyed)
    assert phase(cli_calls) == {"GetItem": 1, "UpdateItem": 2, "TransactWriteItems": 1}
    JobService(cli, clock).schedule(keyed)  # a retried cron call: no write at all
    assert phase(cli_calls) == {"GetItem": 2}
    cli.update(other.id, lambda j: j.cancelled(clock.now()))  # one job's life from here on
    phase(cli_calls)

    settings = DaemonSettings(store_location=URL, public_url="http://10.1.2.3:8321", reconcile_interval=30.0)
    daemon = Daemon(shared, EC2Launcher(EC2Settings(region="eu-west-1")), settings, clock=clock,
                    exclusive=False, log=lambda line: None)
    try:
        clock.set(due)
        daemon.tick(due, reconcile=False)
        # Queries: active() for abandoned claims (2), due() (1). Claim and launch record: each a
        # consistent GetItem, a conditional PutItem and the marker bump. A fresh daemon's first pass
        # also lists the schedules once (the schedule marker's GetItem and the GetItem of their ids;
        # no Scan, and no BatchGetItem when there are none); later passes only when the schedules
        # changed (daemon/schedules.py). The cost pass's start-up search for jobs owing a receipt
        # is one Query of the status index per ended status (daemon/costing.py), never a Scan.
        assert phase(calls) == {"Query": 6, "GetItem": 4, "PutItem": 2, "UpdateItem": 2}
        assert shared.get(job.id).status is JobStatus.RUNNING
        phase(calls)
        shared.change_marker()
        shared.next_due_at()
        assert phase(calls) == {"GetItem": 1, "Query": 1}  # one idle poll (+ a Query when it moved)
        daemon.service.report(job.id, "running", None)  # the instance's first callback: records started-at
        assert phase(calls) == {"GetItem": 1, "PutItem": 1, "UpdateItem": 1}  # read inside the write only
        daemon.service.report(job.id, "running", None)  # its repeat: a no-op
        assert phase(calls) == {"GetItem": 1}
        daemon.tick(due + timedelta(seconds=30), reconcile=True)
        # A reconciliation pass: the tick's 3 Queries, active() again (2), and the reaper's
        # consistent GetItem for each live instance of this store.
        assert phase(calls) == {"Query": 5, "GetItem": 1}
        daemon.service.report(job.id, "finished", 0)
        assert phase(calls) == {"GetItem": 1, "PutItem": 1, "UpdateItem": 1}
        assert shared.get(job.id).status is JobStatus.FINISHED
    finally:
        daemon.close()


def test_concurrent_store_inits_make_one_table_and_one_store_id(aws):
    results: list[tuple[bool, str]] = []
    barrier = threading.Barrier(4)

    def init() -> None:
        barrier.wait()
        results.append(init_table(URL, wait_delay=0))

    threads = [threading.Thread(target=init) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({store_id for _, store_id in results}) == 1
    assert sum(created for created, _ in results) >= 1


def test_a_reader_of_the_dynamodb_items_cannot_forge_a_callback(make_handle) -> None:
    """The README's read-only role can Scan the table: every string in every item (the attempt's
    token hash included) tried as the callback's Bearer token is refused with 401."""
    import http.client
    import json

    from boto3.dynamodb.types import TypeDeserializer
    from conftest import claim_with_token
    from jobman_cli.api import ApiServer
    from jobman_cli.service import JobService, ScheduleRequest

    store = make_handle()
    service = JobService(store)
    job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when="+10m", env={"K": "v"}))
    token = claim_with_token(store, job.id, NOW)
    items = boto3.client("dynamodb", region_name="eu-west-1").scan(TableName=TABLE)["Items"]
    plain = [{k: TypeDeserializer().deserialize(v) for k, v in item.items()} for item in items]

    def strings(value: Any) -> set[str]:
        if isinstance(value, str):
            try:  # the job's record is one JSON string attribute: what is inside it counts too
                inner = json.loads(value)
            except ValueError:
                return {value}
            return {value} | (strings(inner) if isinstance(inner, (dict, list)) else set())
        if isinstance(value, dict):
            return set().union(set(), *(strings(k) | strings(v) for k, v in value.items()))
        if isinstance(value, (list, tuple, set)):
            return set().union(set(), *(strings(v) for v in value))
        return set()

    candidates = {s for s in strings(plain) if s and all(0x21 <= ord(c) <= 0x7E for c in s)}
    assert any(len(c) == 64 for c in candidates)  # the token's SHA-256 is in the item, and tried
    assert token not in candidates
    api_token = "a" * 40
    server = ApiServer(service, api_token=api_token, log=lambda _: None).start()

    def put(bearer: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("PUT", f"/jobMan/v1.1/jobs/{job.id}/callback", body=json.dumps({"status": "finished"}),
                         headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
            return conn.getresponse().status
        finally:
            conn.close()

    try:
        assert {candidate: put(candidate) for candidate in sorted(candidates)} == dict.fromkeys(sorted(candidates), 401)
        assert store.get(job.id).status is JobStatus.LAUNCHING
        assert put(token) == 200
    finally:
        server.stop()
