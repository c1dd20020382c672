"""Three real ``jobman daemon`` processes sharing one DynamoDB table (real moto server processes).

300 jobs fall due at the same instant; the daemons race for them through conditional writes. The
test counts EC2 instances per ``jobman:job-id`` tag (exactly one each), drives every job to its end
through the HTTP callbacks of all three listeners, and waits until the reapers have terminated
every instance. The second test SIGKILLs one daemon in the middle of the burst: the two others
take over its abandoned claims once the launch lease (shortened to a few seconds here) expired,
find the instances it had already started by tag, and launch the rest, still once per job.

Two moto servers: EC2 on the shared ``moto_server`` fixture, DynamoDB on a second one (reached
through ``AWS_ENDPOINT_URL_DYNAMODB``, so the standard endpoint variables are exercised too) whose
conditional writes are atomic, as on AWS (moto checks and writes without a lock; see
``test_store_dynamodb.py``). A double launch could therefore only be jobman's fault. Two processes
also spread the load over two cores: under moto every call walks every item.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re
import signal
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import boto3
import pytest

from moto_server import atomic_dynamodb_server, aws_env, moto_server, moto_server_process, reset  # noqa: F401
from faultproxy import FaultProxy
from test_e2e_daemon import DaemonProcess, instances_by_job, jobman, poll

from jobman_cli.daemon import CLAIMED_BY
from jobman_cli.model import Job, JobStatus
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.dynamodb import DynamoDBStore

pytestmark = pytest.mark.slow

TABLE = "jobman-race"
URL = f"dynamodb://{TABLE}"
JOBS = 300
#: Seconds a claim is honoured before another daemon takes it over. It must outlast any launch
#: (claim to recorded instance: 0.75 s median, 1.7 s max measured here under load).
LEASE = 8.0
TOKEN = "race-test-api-token-0123456789abcdef"
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=timezone.utc)
WAIT = 200.0  # liveness limit only (the whole module normally takes well under 75 s)


@pytest.fixture(scope="module")
def dynamodb_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second moto server, for DynamoDB only (``AWS_ENDPOINT_URL_DYNAMODB``), with atomic
    conditional writes. EC2 stays on the shared ``moto_server`` fixture: two processes, two cores."""
    with atomic_dynamodb_server(tmp_path_factory.mktemp("moto-dynamodb")) as url:
        dynamodb_client(url).list_tables()  # load the DynamoDB backend before the clock matters
        yield url


@pytest.fixture
def dynamodb_server(dynamodb_server_process: str) -> Iterator[str]:
    reset(dynamodb_server_process)
    yield dynamodb_server_process
    reset(dynamodb_server_process)


def dynamodb_client(url: str):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def env(moto_server: str, dynamodb_server: str, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    return aws_env(moto_server, AWS_ENDPOINT_URL_DYNAMODB=dynamodb_server, JOBMAN_HOME=str(tmp_path / "home"),
                   JOBMAN_STORE=URL, JOBMAN_API_TOKEN=TOKEN, JOBMAN_LAUNCH_LEASE=str(LEASE))


@pytest.fixture
def store(dynamodb_server: str, env: dict[str, str]) -> Iterator[DynamoDBStore]:
    """``jobman store init`` (the real command), then a handle of this test process on the table."""
    init = jobman(env, "store", "init")
    assert init.returncode == 0 and init.stdout.startswith(f"Created DynamoDB table {TABLE} "), init
    handle = DynamoDBStore(TABLE, client=dynamodb_client(dynamodb_server))
    yield handle
    handle.close()


@pytest.fixture
def start_daemons(env: dict[str, str]) -> Iterator[Callable[..., list[DaemonProcess]]]:
    """``start(count=3)``: that many daemons on the table, started together; each ready (its first
    pass done) on return; any still running at the end are killed. Reconciliation keeps its
    default (30 s): under moto every DescribeInstances of 300 instances costs about a second of the
    EC2 server's time. (Also the schedules race's fixture: test_schedules_dynamodb_race.py.)"""
    started: list[DaemonProcess] = []

    def start(count: int = 3) -> list[DaemonProcess]:
        new = [DaemonProcess(env) for _ in range(count)]
        started.extend(new)
        for daemon in new:
            daemon.wait_for(lambda line: " ready;" in line, timeout=WAIT)
        return new

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)


def listen_url(daemon: DaemonProcess) -> str:
    daemon.wait_for(lambda line: "listening on http://" in line)
    return re.search(r"listening on (http://\S+)", daemon.text()).group(1)  # type: ignore[union-attr]


def schedule_burst(store: DynamoDBStore) -> list[int]:
    """300 jobs due at one instant (scheduled from 8 threads, as 8 CLIs would), before the daemons
    start: they all find the whole burst due together, whether or not the instant has passed."""
    due = (datetime.now(timezone.utc) + timedelta(seconds=5)).replace(microsecond=0)
    service = JobService(store)

    def one(n: int) -> int:
        return service.schedule(ScheduleRequest(image="alpine:3.20", when=due.isoformat(), title=f"race {n}"))[0].id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = sorted(pool.map(one, range(JOBS)))
    assert len(set(ids)) == JOBS
    return ids


LAUNCHED = re.compile(r"job (\d+) \w+ -> running \(instance (i-\w+)")
REAPED = re.compile(r"instance (i-\w+) terminated by the reaper")


def seen(daemons: list[DaemonProcess], pattern: re.Pattern) -> set[str]:
    """First groups of ``pattern`` in every daemon's log. Waiting on the logs costs moto nothing
    (its Scan and DescribeInstances walk every item: polling them would slow the daemons down)."""
    return {m.group(1) for d in daemons for m in pattern.finditer(d.text())}


def wait_until_launched(daemons: list[DaemonProcess], store: DynamoDBStore, ids: list[int]) -> None:
    """Until every job has its launch recorded. The logs say so at no cost to moto; a daemon killed
    between recording a launch and logging it leaves a gap only the store can fill, so every few
    seconds the index is asked too (nothing scheduled or launching any more)."""
    wanted, polls = {str(i) for i in ids}, [0]

    def launched() -> bool:
        polls[0] += 1
        if seen(daemons, LAUNCHED) >= wanted:
            return True
        return polls[0] % 6 == 0 and not store.due(FAR_FUTURE) and \
            not any(j.status is JobStatus.LAUNCHING for j in store.active())

    if not poll(launched, timeout=WAIT, every=0.5):
        missing = sorted(wanted - seen(daemons, LAUNCHED), key=int)
        lines = [line for d in daemons for line in d.text().splitlines()
                 if any(f"job {i} " in line or f"job {i}:" in line for i in missing)]
        raise AssertionError(f"not launched: {missing}; their log lines: {lines}")


def assert_one_instance_per_job(server: str, store: DynamoDBStore, ids: list[int]) -> dict[int, Job]:
    grouped = instances_by_job(server, store.store_id)
    assert sorted(grouped) == ids
    duplicates = {i: [x["InstanceId"] for x in grouped[i]] for i in ids if len(grouped[i]) != 1}
    assert duplicates == {}
    jobs = {job.id: job for job in store.list()}
    assert sorted(jobs) == ids
    for i in ids:
        assert jobs[i].status is JobStatus.RUNNING and jobs[i].attempts == 1
        assert jobs[i].instance_id == grouped[i][0]["InstanceId"]
        assert grouped[i][0]["State"]["Name"] == "running"  # no daemon's reaper ended another's launch
    return jobs


def callback(base: str, job_id: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/jobMan/v1.1/jobs/{job_id}/callback", method="PUT",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def finish_every_job(store: DynamoDBStore, daemons: list[DaemonProcess], ids: list[int]) -> None:
    """Every job reports its end through one of the daemons' listeners (round robin), as its
    instance would: ``finished``, or ``failed`` with exit code 3 for every fifth job. Then each job
    is in exactly that final state."""
    listeners = [listen_url(d) for d in daemons]
    expected = {i: ("failed", 3) if i % 5 == 0 else ("finished", 0) for i in ids}

    def report(index_and_id: tuple[int, int]) -> None:
        index, job_id = index_and_id
        status, code = expected[job_id]
        answer = callback(listeners[index % len(listeners)], job_id, {"status": status, "exit-code": code})
        assert answer[0] == 200 and answer[1]["status"] == status and answer[1]["exit-code"] == code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(report, enumerate(ids)))
    final = {job.id: job for job in store.list()}
    assert {i: (final[i].status.value, final[i].exit_code) for i in ids} == expected


def wait_until_reaped(server: str, store: DynamoDBStore, daemons: list[DaemonProcess]) -> None:
    """The reapers end every instance of a finished job at their next reconciliation (≤ 30 s)."""
    instances = {x["InstanceId"] for group in instances_by_job(server, store.store_id).values() for x in group}
    assert poll(lambda: seen(daemons, REAPED) >= instances, timeout=WAIT, every=0.5), len(seen(daemons, REAPED))
    states = {x["State"]["Name"] for group in instances_by_job(server, store.store_id).values() for x in group}
    assert states == {"terminated"}


def daemon_id(daemon: DaemonProcess) -> str:
    return re.search(r"daemon (\S+) starting", daemon.text()).group(1)  # type: ignore[union-attr]


def test_three_daemons_launch_300_simultaneous_jobs_once_each(store, start_daemons, moto_server, record_property):  # noqa: F811
    ids = schedule_burst(store)
    daemons = start_daemons()
    wait_until_launched(daemons, store, ids)
    jobs = assert_one_instance_per_job(moto_server, store, ids)
    by_daemon = collections.Counter(job.extra[CLAIMED_BY] for job in jobs.values())
    assert set(by_daemon) == {daemon_id(d) for d in daemons}, by_daemon  # all three took part
    record_property("launches_per_daemon", sorted(by_daemon.values()))
    print(f"\nlaunches per daemon: {sorted(by_daemon.values())}")
    finish_every_job(store, daemons, ids)
    wait_until_reaped(moto_server, store, daemons)
    assert [d.stop() for d in daemons] == [0, 0, 0]


def claims_of(store: DynamoDBStore, daemon: str) -> list[int]:
    """Jobs ``daemon`` has claimed (persisted) and not yet recorded as launched: one index Query
    for ``launching`` (the store itself, not the logs, which a busy reader thread can lag behind)."""
    return [j.id for j in store.active() if j.status is JobStatus.LAUNCHING and j.extra.get(CLAIMED_BY) == daemon]


def test_one_of_three_daemons_sigkilled_mid_burst_the_others_take_over(store, start_daemons, moto_server,  # noqa: F811
                                                                       env, tmp_path, record_property):
    ids = schedule_burst(store)
    # The victim reaches EC2 through a proxy that holds each RunInstances answer 3 s (moto has
    # created the instance): its claims stay in flight that long, so the SIGKILL below lands with
    # launches in flight on any machine (without the hold, a loaded CI box let the victim record
    # every launch it had claimed between the test's read of the store and the kill).
    proxy = FaultProxy(moto_server, [{"action": "RunInstances", "fault": "delay", "seconds": 3}],
                       workdir=tmp_path / "ec2-proxy").start()
    victim = DaemonProcess({**env, "AWS_ENDPOINT_URL_EC2": proxy.url})
    in_flight: list[int] = []

    def victim_has_claims() -> bool:
        in_flight[:] = claims_of(store, daemon_id(victim))
        return len(in_flight) >= 2

    try:
        victim.wait_for(lambda line: " ready;" in line, timeout=WAIT)
        survivors = start_daemons(2)
        daemons = [victim, *survivors]
        # Kill it mid-burst, with launches in flight: claims persisted but not yet recorded. The
        # claims are those of the store's last read before the kill: a read after it (once the
        # victim and the proxy are stopped, which a loaded box stretched past the 8 s lease) can
        # show them already taken over by the survivors (CI-like run: 0 left, 'assert []').
        assert poll(victim_has_claims, timeout=WAIT, every=0.05)
        victim.proc.send_signal(signal.SIGKILL)
        assert victim.stop() == -signal.SIGKILL
    finally:
        if victim.proc.poll() is None:
            victim.proc.kill()
        proxy.stop()
    at_kill = store.list()
    claimed = list(in_flight)  # claimed, not recorded as launched, at most 0.05 s before the kill
    assert len(claimed) >= 2, collections.Counter(j.status for j in at_kill)
    assert any(j.status is JobStatus.SCHEDULED for j in at_kill)  # and the burst was not over

    wait_until_launched(daemons, store, ids)
    jobs = assert_one_instance_per_job(moto_server, store, ids)
    survivor_ids = {daemon_id(d) for d in survivors}
    finish_every_job(store, survivors, ids)
    # The take-over lines come before the launches they lead to in the store, but the threads
    # reading the daemons' stderr may lag behind the store (the wait above can end on the store's
    # word): stopped, their logs are complete.
    assert [d.stop() for d in survivors] == [0, 0]
    # Survivors took over the victim's abandoned claims, each after looking its instance up by tag.
    # A request the victim sent just before it died can still land (moto, like AWS, finishes what
    # it received): such a claim ends recorded by the victim itself, or claimed too late to be in
    # ``claimed`` and then taken over as well.
    log = "\n".join(d.text() for d in survivors)
    adopted = {int(i) for i in re.findall(r"job (\d+): found instance \S+ \(\w+\) of attempt 1 .* adopting it", log)}
    relaunched = {int(i) for i in re.findall(r"job (\d+): no instance of attempt 1 exists; launching it again", log)}
    taken_over = adopted | relaunched
    assert taken_over and not adopted & relaunched
    assert all(jobs[i].extra[CLAIMED_BY] in survivor_ids for i in taken_over)
    assert all(i in taken_over or jobs[i].extra[CLAIMED_BY] == daemon_id(victim) for i in claimed)
    record_property("taken_over", len(taken_over))
    print(f"\nSIGKILL left {len(claimed)} claims; survivors adopted {len(adopted)} instances and "
          f"relaunched {len(relaunched)} jobs")
