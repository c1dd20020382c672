"""End to end: a real ``jobman daemon`` process against a real ``moto_server`` process.

The CLI and the daemon are separate processes sharing one TinyDB file, exactly as an operator runs
them. Waits poll with generous limits (they prove liveness, not speed); the latencies they observe
are printed (``pytest -s``) and kept as test properties, never asserted.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from faultproxy import fault_proxy  # noqa: F401  (fixture)
from moto_server import aws_env, ec2_client, moto_server, moto_server_process  # noqa: F401  (fixtures)

from jobman_cli.model import JobStatus
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow

WAIT = 30.0  # liveness limit for anything the test waits for


class DaemonProcess:
    """``python -m jobman_cli daemon`` with its stderr read line by line in a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        command = [sys.executable, "-m", "jobman_cli", "daemon", "--listen", "127.0.0.1:0",
                   "--public-url", "http://127.0.0.1:9", *args]
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], count: int = 1, timeout: float = WAIT) -> float:
        """Block until ``count`` lines matched; return when the last of them was read."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matched = [t for t, line in self.lines if predicate(line)]
                if len(matched) >= count:
                    return matched[count - 1]
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.text()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for the daemon:\n{self.text()}")
                self._cond.wait(min(left, 0.2))

    def text(self) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        # After the exit, every line it wrote is read (EOF): ``text()`` is then the whole log.
        self._reader.join(timeout=timeout)
        return code


@pytest.fixture
def env(moto_server, tmp_path) -> dict[str, str]:  # noqa: F811
    return aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(env: dict[str, str], *args: str) -> DaemonProcess:
        proc = DaemonProcess(env, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(timeout=10)


def jobman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobman_cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def instances_by_job(url: str, store_id: str) -> dict[int, list[dict]]:
    """Every instance of the store (any state), grouped by its ``jobman:job-id`` tag."""
    pages = ec2_client(url).get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:jobman:store", "Values": [store_id]}])
    grouped: dict[int, list[dict]] = collections.defaultdict(list)
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                grouped[int(tags["jobman:job-id"])].append(instance)
    return grouped


def poll(check: Callable[[], bool], timeout: float = WAIT, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def test_job_for_now_gets_its_instance(env, daemons, moto_server, tmp_path, record_property):  # noqa: F811
    daemon = daemons(env)
    daemon.wait_for(lambda line: "ready" in line)
    scheduled = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "now", "-q")
    assert scheduled.returncode == 0, scheduled.stderr
    returned = time.monotonic()
    job_id = int(scheduled.stdout)
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        assert poll(lambda: len(instances_by_job(moto_server, store.store_id).get(job_id, [])) == 1)
        seen = time.monotonic()
        assert poll(lambda: store.get(job_id).status is JobStatus.RUNNING)
        job = store.get(job_id)
        store_id = store.store_id
        (instance,) = instances_by_job(moto_server, store_id)[job_id]
        assert job.instance_id == instance["InstanceId"] and job.attempts == 1
    finally:
        store.close()
    # Observed, not asserted: how long after `schedule` returned the instance was visible in EC2.
    record_property("schedule_to_instance_seconds", round(seen - returned, 3))
    print(f"\n`jobman schedule --at now` returned -> instance visible in EC2: {seen - returned:.3f}s")

    # The operator's side, through the same environment: console output, then cancel.
    logs = jobman(env, "logs", str(job_id))
    assert logs.returncode == 0, logs.stderr
    cancelled = jobman(env, "cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"instance {instance['InstanceId']} terminated" in cancelled.stdout
    (after,) = instances_by_job(moto_server, store_id)[job_id]
    assert after["State"]["Name"] == "terminated"
    assert daemon.stop() == 0


def _schedule_burst(path: Path, count: int) -> list[int]:
    """``count`` jobs due at once, written by this process (another writer, as a CLI would be)."""
    store = TinyDBStore(path)
    try:
        service = JobService(store)
        return [service.schedule(ScheduleRequest(image="alpine:3.20", when="now", title=f"burst {n}"))[0].id
                for n in range(count)]
    finally:
        store.close()


def test_sigkill_in_the_middle_of_a_burst_then_restart_launches_each_job_exactly_once(
        env, daemons, moto_server, fault_proxy, tmp_path, record_property):  # noqa: F811
    """The kill lands with jobs in ``launching`` of both kinds: some whose instance moto already
    started (the proxy holds the RunInstances answers of jobs 6 and 7), some claimed but not yet
    sent (the first daemon's own RunInstances bucket, 7 at once then one per 100 s, keeps them
    waiting for a token). The restarted daemon adopts exactly the first kind and launches exactly
    the second kind again, with the same token; every job ends with one instance, at attempt 1."""
    ids = _schedule_burst(tmp_path / "jobs.json", 50)
    fault_proxy.set_rules([{"action": "RunInstances", "fault": "delay", "seconds": 300, "job_ids": [6, 7]}])
    first = daemons({**env, "AWS_ENDPOINT_URL": fault_proxy.url}, "--launch-workers", "4",
                    "--launch-burst", "7", "--launch-rate", "0.01")
    first.wait_for(lambda line: "launching -> running" in line, count=5)
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        def launching() -> list[int]:
            return [i for i in ids if store.get(i).status is JobStatus.LAUNCHING]

        # Every worker is busy: one or two wait for their held answers, the others for a RunInstances
        # token. (Claims go roughly, not strictly, in id order: job 8 may take job 7's token.) All 7
        # tokens of the bucket were spent and their requests reached the proxy (the next token comes
        # ~100 s later): no RunInstances of the first daemon can still be on its way when it dies
        # (a fixed pause after the kill raced a slow proxy on a loaded box).
        def settled() -> bool:
            calls = fault_proxy.action("RunInstances")
            return calls["requests"] >= 7 and calls["delayed"] >= 1 and len(launching()) == 4

        assert poll(settled), (fault_proxy.action("RunInstances"), launching(), first.text())
        first.proc.send_signal(signal.SIGKILL)
        assert first.stop() == -signal.SIGKILL
        # Nothing of the dead daemon's is in flight towards moto any more: every RunInstances the
        # proxy took in has been forwarded (held answers count as forwarded before their hold).
        assert poll(lambda: (lambda s: s["forwarded"] == s["requests"] == 7)(fault_proxy.action("RunInstances"))), \
            fault_proxy.action("RunInstances")

        at_kill = collections.Counter(store.get(i).status for i in ids)
        grouped = instances_by_job(moto_server, store.store_id)
        with_instance = {i for i in launching() if grouped.get(i)}
        without_instance = set(launching()) - with_instance
        # The kill really landed mid-burst, with launches in flight of both kinds.
        assert 5 <= at_kill[JobStatus.RUNNING] < len(ids), at_kill
        assert with_instance and without_instance, (with_instance, without_instance)
        assert all(len(grouped[i]) == 1 for i in with_instance)

        second = daemons(env)
        assert poll(lambda: all(store.get(i).status is JobStatus.RUNNING for i in ids)), \
            (collections.Counter(store.get(i).status for i in ids), second.text())
        second.wait_for(lambda line: "ready" in line)
        grouped = instances_by_job(moto_server, store.store_id)
        assert sorted(grouped) == sorted(ids)
        duplicates = {i: [x["InstanceId"] for x in grouped[i]] for i in ids if len(grouped[i]) != 1}
        assert duplicates == {}
        for i in ids:
            job = store.get(i)
            (instance,) = grouped[i]
            assert job.instance_id == instance["InstanceId"] and job.attempts == 1
            assert instance["State"]["Name"] == "running"
        # The take-over lines are logged before the store shows the jobs running, but read from the
        # daemon's stderr by a thread that may lag: stop it first, then its log is complete.
        assert second.stop() == 0
        log = second.text()
        adopted = {int(i) for i in re.findall(r"job (\d+): found instance \S+ \(\w+\) of attempt 1 launched before "
                                              r"a restart; adopting it", log)}
        relaunched = {int(i) for i in re.findall(r"job (\d+): no instance of attempt 1 exists; launching it again",
                                                 log)}
        assert adopted == with_instance and relaunched == without_instance, (adopted, relaunched, log)
        record_property("status_at_kill", dict((k.value, v) for k, v in at_kill.items()))
        print(f"\nat SIGKILL: {dict((k.value, v) for k, v in at_kill.items())}; after restart: "
              f"{len(adopted)} adopted, {len(relaunched)} relaunched with the same token")
    finally:
        store.close()


@pytest.mark.parametrize("pacing", [(), ("--launch-burst", "2", "--launch-rate", "0.05")], ids=["free", "paced"])
def test_sigterm_mid_burst_exits_0_and_leaves_nothing_half_launched(env, daemons, moto_server, tmp_path,  # noqa: F811
                                                                    pacing):
    """``paced``: after two launches the RunInstances bucket is empty, so both workers hold a fresh
    claim waiting 20 s for a token when SIGTERM lands; those go back to ``scheduled``."""
    ids = _schedule_burst(tmp_path / "jobs.json", 20)
    daemon = daemons(env, "--launch-workers", "2", *pacing)
    daemon.wait_for(lambda line: "launching -> running" in line, count=2)
    if pacing:
        daemon.wait_for(lambda line: "scheduled -> launching" in line, count=4)
    sent = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    print(f"\nSIGTERM -> exit 0 in {time.monotonic() - sent:.3f}s")
    assert "stopping" in daemon.text()
    if pacing:
        assert daemon.text().count("the daemon stopped while pacing RunInstances") == 2, daemon.text()
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        statuses = {i: store.get(i).status for i in ids}
        assert set(statuses.values()) <= {JobStatus.SCHEDULED, JobStatus.RUNNING}, statuses
        grouped = instances_by_job(moto_server, store.store_id)
        assert sorted(grouped) == sorted(i for i, s in statuses.items() if s is JobStatus.RUNNING)
        assert all(len(v) == 1 for v in grouped.values())
    finally:
        store.close()


def test_idle_daemon_stops_on_sigterm_and_sigint(env, daemons):
    for sig in (signal.SIGTERM, signal.SIGINT):
        daemon = daemons(env)
        daemon.wait_for(lambda line: "ready" in line)
        assert daemon.stop(sig) == 0, daemon.text()


def test_missing_credentials_stop_the_daemon_with_one_line(env, tmp_path):
    bare = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = subprocess.run([sys.executable, "-m", "jobman_cli", "daemon", "--listen", "127.0.0.1:0"],
                            env=bare, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no AWS credentials found"), result.stderr
    assert not (tmp_path / "jobs.json").exists()


def test_a_second_daemon_on_the_same_store_is_refused_with_one_line(env, daemons):
    first = daemons(env)
    first.wait_for(lambda line: "ready" in line)
    result = subprocess.run([sys.executable, "-m", "jobman_cli", "daemon", "--listen", "127.0.0.1:0",
                             "--public-url", "http://127.0.0.1:9"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "another jobman daemon is already running" in lines[0], result.stderr
    assert first.stop() == 0


def test_once_does_one_pass_and_exits(env, moto_server, tmp_path):  # noqa: F811
    ids = _schedule_burst(tmp_path / "jobs.json", 3)
    result = subprocess.run([sys.executable, "-m", "jobman_cli", "daemon", "--once", "--public-url",
                             "http://127.0.0.1:9"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "one pass done: 3 launched" in result.stderr
    store = TinyDBStore(tmp_path / "jobs.json", create=False)
    try:
        assert all(store.get(i).status is JobStatus.RUNNING for i in ids)
        assert sorted(instances_by_job(moto_server, store.store_id)) == ids
    finally:
        store.close()


def _daemon_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobman_cli", "daemon", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_daemon_on_a_fresh_host_creates_the_store_directory(env, tmp_path):
    fresh = tmp_path / "fresh" / "jobman"
    result = _daemon_cli({**env, "JOBMAN_DB": str(fresh / "jobs.json")}, "--once", "--public-url", "http://10.0.0.5:8321")
    assert result.returncode == 0, result.stderr
    assert (fresh / "jobs.json").exists() and fresh.stat().st_mode & 0o777 == 0o700
    assert "one pass done" in result.stderr


@pytest.mark.parametrize("args, text", [
    (("--listen", "nonsense"), "Error: --listen: 'nonsense' must be HOST:PORT"),
    (("--launch-workers", "0"), "Error: --launch-workers: must be at least 1"),
    (("--listen", "127.0.0.1:0"), "Error: --public-url: instances cannot reach 127.0.0.1; give an address"),
    (("--once",), "Error: --public-url: required with --once"),
    (("--public-url", "ftp://10.0.0.5"), "Error: --public-url: must be an http:// or https:// URL"),
])
def test_bad_daemon_flags_and_unreachable_callbacks_exit_2_with_one_line(env, tmp_path, args, text):
    real_aws = {k: v for k, v in env.items() if not k.startswith("AWS_ENDPOINT_URL")}  # nothing is contacted
    result = _daemon_cli(real_aws, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(text), result.stderr
    assert not (tmp_path / "jobs.json").exists()


def test_loopback_callbacks_under_an_emulator_are_allowed_and_logged(env, tmp_path):
    result = _daemon_cli(env, "--once")
    assert result.returncode == 0, result.stderr
    assert "callbacks go to the loopback address 127.0.0.1 because an emulator endpoint is configured" in result.stderr


def test_a_cli_cancel_is_logged_by_the_daemon(env, daemons, tmp_path):
    daemon = daemons(env)
    daemon.wait_for(lambda line: "ready" in line)
    job_id = int(jobman(env, "schedule", "--image", "alpine:3.20", "--at", "now", "-q").stdout)
    daemon.wait_for(lambda line: f"job {job_id} launching -> running" in line)
    assert jobman(env, "cancel", str(job_id)).returncode == 0
    daemon.wait_for(lambda line: f"job {job_id} running -> cancelled (by another process)" in line)
    assert daemon.stop() == 0
