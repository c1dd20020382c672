"""A real ``jobman daemon`` process launching through a fault-injecting proxy in front of moto.

``AWS_ENDPOINT_URL`` points the daemon at :mod:`faultproxy` (a separate process), which forwards
to ``moto_server`` except where a rule injects a fault. Instances are counted in moto directly, by
their ``jobman:job-id`` tag, so a second instance for any job cannot hide; the proxy's own counters
say how many ``RunInstances`` requests it saw, forwarded, dropped and throttled.

* every job's first ``RunInstances`` answer is lost *after* moto created the instance (connection
  closed, reset, a 500 from a server that applied it, a read timeout): exactly one instance per
  job, each job ``running`` at attempt 1, and no second ``RunInstances`` at all (the tag lookup
  found each instance);
* a throttling storm: the proxy enforces EC2's token bucket (scaled down: 50 instances, refilled at
  5 per second) and 300 jobs fall due at once: all launch, none fails, and the first to the last
  forwarded ``RunInstances`` take about the bucket's own minimum time (within 20 %). The figures are printed and kept as test properties (BENCHMARKS.md has a row);
* a take-over answered ``IdempotentParameterMismatch`` (the proxy plays EC2's ``ClientToken``
  contract): the new daemon adopts the dead daemon's instance instead of failing the job.
"""

from __future__ import annotations

import collections
import time

import pytest

from faultproxy import FaultProxy, fault_proxy  # noqa: F401  (fixture)
from moto_server import aws_env, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import _schedule_burst, daemons, instances_by_job  # noqa: F401  (fixture)

from jobman_cli.model import JobStatus
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow

RUNNING = "launching -> running"


def run_instances(proxy: FaultProxy) -> list[dict]:
    return [c for c in proxy.calls() if c["action"] == "RunInstances"]


def assert_one_running_instance_per_job(moto: str, store: TinyDBStore, ids: list[int]) -> None:
    grouped = instances_by_job(moto, store.store_id)
    assert sorted(grouped) == sorted(ids)
    duplicates = {i: [x["InstanceId"] for x in grouped[i]] for i in ids if len(grouped[i]) != 1}
    assert duplicates == {}
    for i in ids:
        job = store.get(i)
        (instance,) = grouped[i]
        assert job.status is JobStatus.RUNNING and job.attempts == 1, job
        assert job.instance_id == instance["InstanceId"] and instance["State"]["Name"] == "running"


#: How each job's first RunInstances answer is lost once moto has launched its instance, and for
#: how many jobs: the connection closed, reset (TCP RST), a 500 from a server that did apply the
#: request, and an answer held past the daemon's 20 s read timeout (one batch of workers).
LOST_ANSWERS = {
    "closed": ({"fault": "drop_response"}, 50),
    "reset": ({"fault": "drop_response", "reset": True}, 16),
    "500 after applying": ({"fault": "error", "status": 500, "code": "InternalError", "forward": True}, 16),
    "read timeout": ({"fault": "drop_response", "seconds": 25}, 8),
}


@pytest.mark.parametrize("how", list(LOST_ANSWERS))
def test_every_first_run_instances_answer_lost_after_the_launch_gives_one_instance_per_job(
        fault_proxy, moto_server, daemons, tmp_path, record_property, how):  # noqa: F811
    rule, jobs = LOST_ANSWERS[how]
    ids = _schedule_burst(tmp_path / "jobs.json", jobs)
    fault_proxy.set_rules([{"action": "RunInstances", "per": "job_id", **rule}])
    env = aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))
    daemon = daemons(env)
    daemon.wait_for(lambda line: RUNNING in line, count=len(ids), timeout=90)
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        assert_one_running_instance_per_job(moto_server, store, ids)
    finally:
        store.close()
    stats = fault_proxy.action("RunInstances")
    # One request per job, each applied by moto, each answer lost; never a second request for any job.
    lost = stats["errored"] if rule["fault"] == "error" else stats["dropped"]
    assert (stats["requests"], stats["forwarded"], lost) == (jobs, jobs, jobs), stats
    text = daemon.text()
    assert text.count("outcome of RunInstances unknown") == jobs
    assert text.count("by tag after an unknown outcome") == jobs
    assert "retry in" not in text and "-> failed" not in text and "-> scheduled" not in text
    assert daemon.stop() == 0
    record_property("run_instances_requests", stats["requests"])


def test_a_throttling_storm_of_300_jobs_is_paced_by_the_bucket_and_none_fails(
        fault_proxy, moto_server, daemons, tmp_path, record_property):  # noqa: F811
    capacity, refill, jobs = 50, 5.0, 300
    ids = _schedule_burst(tmp_path / "jobs.json", jobs)
    fault_proxy.set_rules([{"action": "RunInstances", "fault": "token_bucket", "capacity": capacity,
                            "refill": refill}])
    env = aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))
    started = time.monotonic()
    daemon = daemons(env, "--launch-burst", str(capacity), "--launch-rate", f"{refill:g}")
    last = daemon.wait_for(lambda line: RUNNING in line, count=jobs, timeout=90)
    total = last - started
    calls = run_instances(fault_proxy)
    forwarded = [c["t"] for c in calls if c["outcome"] == "forwarded"]
    span = max(forwarded) - min(forwarded)
    minimum = (jobs - capacity) / refill  # the bucket's own minimum: 50 s
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        assert_one_running_instance_per_job(moto_server, store, ids)
        statuses = collections.Counter(store.get(i).status for i in ids)
    finally:
        store.close()
    stats = fault_proxy.action("RunInstances")
    print(f"\nthrottling storm: {jobs} jobs, bucket {capacity} + {refill:g}/s (minimum {minimum:g} s): "
          f"first to last RunInstances {span:.1f} s, daemon start to last job running {total:.1f} s; "
          f"{stats['requests']} RunInstances requests, {stats['throttled']} throttled")
    for name, value in (("storm_span_seconds", round(span, 2)), ("storm_total_seconds", round(total, 2)),
                        ("storm_throttled", stats["throttled"]), ("storm_requests", stats["requests"])):
        record_property(name, value)
    assert statuses == {JobStatus.RUNNING: jobs}
    assert stats["forwarded"] == jobs  # one RunInstances per job reached moto
    # The daemon paced itself: EC2 (the proxy) almost never had to refuse (a refusal costs a request).
    assert stats["throttled"] <= jobs * 0.05, stats
    text = daemon.text()
    assert "-> failed" not in text and "retry in" not in text
    # Paced, not merely eventually done: never faster than the bucket allows, and within 20 % of it.
    # Measured from the first forwarded RunInstances to the last (the proxy's own stamps), so the
    # daemon's start-up (interpreter, imports, first store read) on a loaded CI box is not counted;
    # ``total`` (daemon start to the last job running) is only reported.
    assert minimum * 0.95 <= span <= minimum * 1.2, (span, total)
    assert daemon.stop() == 0


def test_a_take_over_answered_idempotent_parameter_mismatch_adopts_the_dead_daemons_instance(
        fault_proxy, moto_server, daemons, tmp_path):  # noqa: F811
    """EC2's ClientToken contract (the proxy's ``client_token`` rule; moto alone ignores tokens).
    Daemon A sends RunInstances; the request is held on its way (until B's arrives) and A is SIGKILLed. Daemon
    B takes the attempt over: its tag lookup finds nothing (A's request has not arrived), so it sends
    the same attempt with the same ClientToken but its own callback token in the user-data. A's
    request lands first and launches; B's, with other parameters, is answered
    IdempotentParameterMismatch, which means "this attempt's instance exists": B looks it up and
    adopts it. One instance, attempt 1, running, never failed."""
    from test_e2e_daemon import poll

    (job_id,) = _schedule_burst(tmp_path / "jobs.json", 1)
    fault_proxy.set_rules([{"action": "RunInstances", "fault": "client_token"},
                           # A's request is held until B's has arrived, B's 2 s more: A's lands
                           # first however fast or slow B starts (timed holds raced both ways on CI).
                           {"action": "RunInstances", "fault": "delay", "until_requests": 2, "seconds": 120,
                            "first": 1},
                           {"action": "RunInstances", "fault": "delay", "when": "before", "seconds": 2, "skip": 1,
                            "first": 1}])
    env = aws_env(fault_proxy.url, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))
    first = daemons(env)
    assert poll(lambda: fault_proxy.action("RunInstances")["requests"] == 1)
    first.proc.kill()
    first.stop()
    second = daemons(env)
    second.wait_for(lambda line: f"job {job_id} launching -> running" in line, timeout=60)
    text = second.text()
    assert f"job {job_id}: no instance of attempt 1 exists; launching it again" in text  # the lookup came first
    assert "EC2 answered IdempotentParameterMismatch); adopting it" in text, text
    stats = fault_proxy.action("RunInstances")
    assert (stats["requests"], stats["forwarded"], stats["mismatched"]) == (2, 1, 1), stats
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        assert_one_running_instance_per_job(moto_server, store, [job_id])
        assert len(store.get(job_id).callback_hashes) == 2  # A's instance keeps its token; B's was added
    finally:
        store.close()
    assert "-> failed" not in text
    assert second.stop() == 0
