"""DynamoDB writes take effect once when their responses are lost (DESIGN.md section 5, issue 9).

Real processes throughout: a ``moto_server`` (DynamoDB writes made atomic per item, as AWS applies
them), the fault proxy of ``tests/faultproxy.py`` in front of it, and real ``jobman`` CLI
processes (or this process's store, with botocore's own retries) talking through the proxy. The
proxy lets each chosen request reach moto, then closes the connection without answering; botocore
resends the same request, which now meets its own committed write. The store must recognise its
own write (a nonce in the item) instead of taking it for someone else's.

Faults and what must hold:

* every first PutItem / TransactWriteItems / UpdateItem answer lost, 50 ``jobman schedule`` CLIs
  (half with an idempotency key) -> exactly 50 jobs, one per CLI, each told "Scheduled";
* every first write answer lost for claims (``update``) and ``jobman callback`` CLIs -> each
  transition applied once: attempts 1, version bumped once per transition, no job stuck;
* the same for a real ``jobman daemon`` claiming and launching 20 due jobs (EC2 on its own moto
  server, every first DynamoDB write answer lost) -> each job claimed once, one instance each,
  attempts 1, every job ``running``;
* every answer lost, botocore gives up -> the store proves its write by reading it back, or
  raises a clear "outcome unknown" error; the caller's retry with the same draft never duplicates;
* a lost id-counter answer does not skip an id; ``jobman store init`` with lost answers makes one
  store and says "Created".

Measured before the fix: one ``jobman schedule`` under these faults wrote its job 39 times (each
resend "found the id taken" and took the next) until botocore's retry quota ran out and it failed.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import make_draft
from faultproxy import FaultProxy
from moto_server import atomic_dynamodb_server, aws_env, moto_server, moto_server_process, reset  # noqa: F401
from test_e2e_daemon import DaemonProcess, instances_by_job, poll

from jobman_cli.errors import StoreError
from jobman_cli.stores import WriteOutcomeUnknown
from jobman_cli.model import JobStatus
from jobman_cli.stores.dynamodb import DynamoDBStore, make_client

pytestmark = pytest.mark.slow

TABLE = "jobman-faults"
URL = f"dynamodb://{TABLE}"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
WRITES = ("PutItem", "TransactWriteItems", "UpdateItem")
#: Every distinct write request's first answer is lost (a botocore resend is the same body).
DROP_FIRST_ANSWERS = [{"action": action, "fault": "drop_response", "per": "body"} for action in WRITES]


@pytest.fixture(scope="module")
def dynamodb_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with atomic_dynamodb_server(tmp_path_factory.mktemp("moto-dynamodb")) as url:
        yield url


@pytest.fixture
def dynamodb(dynamodb_process: str) -> str:
    reset(dynamodb_process)
    return dynamodb_process


@pytest.fixture
def proxy(dynamodb: str, tmp_path: Path) -> Iterator[FaultProxy]:
    with FaultProxy(dynamodb, workdir=tmp_path / "proxy") as started:
        yield started


@pytest.fixture
def env(proxy: FaultProxy, tmp_path: Path) -> dict[str, str]:
    """A jobman CLI's environment: every AWS call through the proxy."""
    return aws_env(proxy.url, JOBMAN_HOME=str(tmp_path / "home"))


@pytest.fixture
def table(dynamodb: str, tmp_path: Path) -> str:
    """``jobman store init`` straight at moto (no faults yet)."""
    made = jobman(aws_env(dynamodb, JOBMAN_HOME=str(tmp_path / "home")), "store", "init")
    assert made.returncode == 0, made.stderr
    return TABLE


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, dynamodb: str) -> None:
    """This process's boto3 sees the same fake credentials as the CLIs (and nothing else)."""
    for name, value in aws_env(dynamodb).items():
        if name.startswith("AWS_") and name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def jobman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobman_cli", "--store", URL, *args], env=env,
                          capture_output=True, text=True, timeout=120)


def through(proxy: FaultProxy, **retries: Any) -> DynamoDBStore:
    """A store of this process whose client goes through the proxy (the store's own retry
    settings unless ``retries`` replaces them, e.g. ``total_max_attempts=2``)."""
    client = make_client("us-east-1", proxy.url)
    if retries:
        import boto3
        from botocore.config import Config

        client = boto3.client("dynamodb", endpoint_url=proxy.url, region_name="us-east-1",
                              config=Config(retries={"mode": "standard", **retries}, read_timeout=10))
    return DynamoDBStore(TABLE, client=client)


def direct(dynamodb: str) -> DynamoDBStore:
    return DynamoDBStore(TABLE, client=make_client("us-east-1", dynamodb))


def test_50_schedules_with_every_first_write_answer_lost_make_50_jobs(table: str, proxy: FaultProxy,
                                                                       env: dict[str, str], dynamodb: str,
                                                                       aws_credentials: None,
                                                                       record_property: Any) -> None:
    proxy.set_rules(DROP_FIRST_ANSWERS)

    def schedule(n: int) -> subprocess.CompletedProcess:
        keyed = ("--idempotency-key", f"key-{n}") if n % 2 else ()
        return jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+1h", "--title", f"job {n}", *keyed)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(schedule, range(50)))
    elapsed = time.monotonic() - started
    record_property("schedule_50_seconds", round(elapsed, 1))
    for n, result in enumerate(results):
        assert result.returncode == 0, (n, result.stderr)
        assert result.stdout.startswith("Scheduled job "), (n, result.stdout)  # not "Already scheduled"
    printed = {n: int(r.stdout.split()[2]) for n, r in enumerate(results)}  # "Scheduled job N for ..."
    assert len(set(printed.values())) == 50

    stored = direct(dynamodb).list()
    assert sorted(job.title for job in stored) == sorted(f"job {n}" for n in range(50))  # no duplicate
    assert {job.id: job.title for job in stored} == {job_id: f"job {n}" for n, job_id in printed.items()}
    stats = proxy.stats()["by_action"]
    # The fault really happened to every write: 25 plain PutItems, 25 transactions, 50 id counters.
    assert stats["PutItem"]["dropped"] == 25 and stats["TransactWriteItems"]["dropped"] == 25
    assert stats["UpdateItem"]["dropped"] >= 50


def test_claims_and_callbacks_with_every_first_write_answer_lost_apply_once(table: str, proxy: FaultProxy,
                                                                            env: dict[str, str], dynamodb: str,
                                                                            aws_credentials: None) -> None:
    setup = direct(dynamodb)
    ids = [setup.add(make_draft(title=f"claimed {n}"))[0].id for n in range(8)]
    versions = {job_id: setup.get(job_id).version for job_id in ids}
    proxy.set_rules(DROP_FIRST_ANSWERS)
    daemon = through(proxy)  # botocore's retries as configured in production
    for job_id in ids:
        claimed = daemon.update(job_id, lambda job: job.claimed(NOW, f"token-{job.id}"))
        assert (claimed.status, claimed.attempts) == (JobStatus.LAUNCHING, 1)
    # The instances' callbacks (real CLI processes), then the daemon's late launch record.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = list(pool.map(lambda i: jobman(env, "callback", str(i), "--status", "running"), ids))
    assert all(r.returncode == 0 and "is running" in r.stdout for r in running), running
    for job_id in ids:
        daemon.update(job_id, lambda job: job.launched(f"i-{job.id:017x}", NOW))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        finished = list(pool.map(lambda i: jobman(env, "callback", str(i), "--status", "finished"), ids))
    assert all(r.returncode == 0 and "is finished" in r.stdout for r in finished), finished

    for job_id in ids:
        job = setup.get(job_id)
        assert (job.status, job.attempts, job.launch_token) == (JobStatus.FINISHED, 1, f"token-{job_id}")
        assert job.instance_id == f"i-{job_id:017x}"
        assert job.version == versions[job_id] + 4  # claim, running, launch record, finished: once each
    dropped = proxy.stats()["by_action"]["PutItem"]["dropped"]
    assert dropped == 4 * len(ids)  # every transition's first answer was lost


def test_a_write_whose_answers_are_all_lost_is_proved_by_reading_it_back(table: str, proxy: FaultProxy,
                                                                         dynamodb: str,
                                                                         aws_credentials: None) -> None:
    store = through(proxy, total_max_attempts=2)
    # Both sends reach moto and both answers are lost: botocore gives up, the write did land.
    proxy.set_rules([{"action": "PutItem", "fault": "drop_response", "first": 2}])
    job, created = store.add(make_draft(title="landed"))
    assert created and [j.title for j in direct(dynamodb).list()] == ["landed"]
    proxy.set_rules([{"action": "PutItem", "fault": "drop_response", "first": 2}])
    claimed = store.update(job.id, lambda j: j.claimed(NOW, "t1"))
    assert claimed.attempts == 1 and direct(dynamodb).get(job.id) == claimed


def test_a_write_that_never_arrived_is_an_unknown_outcome_and_a_retry_does_not_duplicate(
        table: str, proxy: FaultProxy, dynamodb: str, aws_credentials: None) -> None:
    store = through(proxy, total_max_attempts=2)
    draft = make_draft(title="retried")
    # Neither send is forwarded: from the client's side exactly like lost answers.
    proxy.set_rules([{"action": "PutItem", "fault": "drop_request", "first": 2}])
    with pytest.raises(WriteOutcomeUnknown) as info:
        store.add(draft)
    message = str(info.value)
    assert "\n" not in message and "may or may not" in message and URL in message
    proxy.set_rules([])
    job, created = store.add(draft)  # the caller's retry: the same job id, written once
    assert created and [(j.id, j.title) for j in direct(dynamodb).list()] == [(job.id, "retried")]
    # And if the first attempt had landed after all, the retry recognises it instead of a second job.
    later = make_draft(title="landed late")
    proxy.set_rules([{"action": "PutItem", "fault": "drop_response", "first": 2},
                     {"action": "GetItem", "fault": "drop_request", "first": 7}])
    with pytest.raises(StoreError):
        store.add(later)  # landed, but the read that would prove it failed too
    proxy.set_rules([])
    again, created = store.add(later)
    assert created and sorted(j.title for j in direct(dynamodb).list()) == ["landed late", "retried"]
    # A compare-and-set that never arrived: unknown (the job is still at the version it read).
    proxy.set_rules([{"action": "PutItem", "fault": "drop_request", "first": 2}])
    with pytest.raises(WriteOutcomeUnknown) as unknown:
        store.update(job.id, lambda j: j.claimed(NOW, "t1"))
    assert f"the change of job {job.id} may or may not have been applied" in str(unknown.value)
    proxy.set_rules([])
    assert store.update(job.id, lambda j: j.claimed(NOW, "t1")).attempts == 1


def test_a_lost_counter_answer_does_not_skip_an_id(table: str, proxy: FaultProxy, dynamodb: str,
                                                   aws_credentials: None) -> None:
    store = through(proxy)
    proxy.set_rules([{"action": "UpdateItem", "fault": "drop_response", "per": "body"}])
    ids = [store.add(make_draft())[0].id for _ in range(3)]
    assert ids == [1, 2, 3]


def test_a_real_daemon_claims_and_launches_each_job_once_with_every_first_write_answer_lost(
        table: str, proxy: FaultProxy, dynamodb: str, moto_server: str, tmp_path: Path,  # noqa: F811
        aws_credentials: None, record_property: Any) -> None:
    """The daemon's claim (scheduled -> launching) and launch record (-> running) are the store's
    compare-and-set writes; each first answer is lost and botocore resends it. Before nonces the
    resent claim met its own write, re-applied the claim to ``launching``, and the daemon stepped
    aside as if another daemon had won: the job sat in ``launching`` until its lease expired."""
    setup = direct(dynamodb)
    due = datetime.now(timezone.utc)
    ids = [setup.add(make_draft(title=f"due {n}", date_time=due))[0].id for n in range(20)]
    proxy.set_rules(DROP_FIRST_ANSWERS)
    env = aws_env(moto_server, AWS_ENDPOINT_URL_DYNAMODB=proxy.url, JOBMAN_HOME=str(tmp_path / "home"),
                  JOBMAN_STORE=URL, JOBMAN_API_TOKEN="faults-test-api-token-0123456789abcdef")
    daemon = DaemonProcess(env)
    try:
        started = time.monotonic()

        def all_running() -> bool:
            return all(job.status is JobStatus.RUNNING for job in setup.list())

        assert poll(all_running, timeout=90, every=0.5), daemon.text()
        record_property("daemon_20_launches_seconds", round(time.monotonic() - started, 1))
        grouped = instances_by_job(moto_server, setup.store_id)
        assert {i: len(grouped.get(i, [])) for i in ids} == {i: 1 for i in ids}
        for job in setup.list():
            assert job.attempts == 1 and job.instance_id == grouped[job.id][0]["InstanceId"]
        assert proxy.stats()["by_action"]["PutItem"]["dropped"] >= 2 * len(ids)  # claims and launch records
    finally:
        daemon.stop()


def test_store_init_with_every_first_answer_lost_makes_one_store(dynamodb: str, proxy: FaultProxy,
                                                                  env: dict[str, str]) -> None:
    """``jobman store init``: CreateTable's resend meets its own table (ResourceInUse: it looks the
    table up, and still says "Created": the meta item it then writes is its own) and the meta
    item's resend its own item (the condition fails: it reads it back)."""
    proxy.set_rules([{"action": action, "fault": "drop_response", "per": "body"}
                     for action in ("CreateTable", "PutItem")])
    made = jobman(env, "store", "init")
    assert made.returncode == 0, made.stderr
    again = jobman(env, "store", "init")
    assert again.returncode == 0, again.stderr
    ids = {line.split("store id ")[-1].split()[0].strip("().,") for line in (made.stdout, again.stdout)}
    assert len(ids) == 1, (made.stdout, again.stdout)
    assert made.stdout.startswith("Created DynamoDB table") and "already exists" in again.stdout
    # One lost CreateTable answer; each init's meta PutItem (a new store id each) lost once.
    assert proxy.action("CreateTable")["dropped"] == 1 and proxy.action("PutItem")["dropped"] == 2


def test_a_5xx_after_the_write_was_applied_is_recognised_on_the_resend(table: str, proxy: FaultProxy,
                                                                       dynamodb: str,
                                                                       aws_credentials: None) -> None:
    """DynamoDB answered 500 but had applied the write (the proxy forwards, then answers the
    error): botocore retries the 5xx, the resend meets the write, the nonce says it is ours."""
    store = through(proxy)
    proxy.set_rules([{"action": action, "fault": "error", "status": 500, "forward": True, "per": "body"}
                     for action in WRITES])
    job, created = store.add(make_draft(title="five hundred"))
    claimed = store.update(job.id, lambda j: j.claimed(NOW, "t"))
    assert created and claimed.attempts == 1 and claimed.version == job.version + 1
    assert [(j.id, j.title, j.version) for j in direct(dynamodb).list()] == [(job.id, "five hundred", claimed.version)]
    stats = proxy.stats()["by_action"]
    assert stats["PutItem"]["errored"] == 2 and stats["PutItem"]["forwarded"] == 4
