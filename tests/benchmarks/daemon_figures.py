"""End-to-end daemon figures: a real ``jobman daemon`` against a real ``moto_server`` on loopback.

* due -> RunInstances: jobs due at staggered times; the daemon talks to moto through
  :class:`proxy.LoggingProxy`, which stamps the moment each RunInstances request arrived; latency
  is that stamp minus the job's ``date-time`` (stored with millisecond precision). Same clock:
  both are this machine's wall clock.
* burst: N jobs due at one moment; "launched" is the daemon's own log line recording the instance
  (``job N launching -> running (instance ...)``, millisecond timestamps), i.e. RunInstances
  answered *and* the launch stored. Run with the default pool and with ``--launch-workers 1``,
  interleaved, each on a fresh store and a reset moto.
* callbacks: running jobs (claimed and launched through the store with made-up instance ids,
  ``launched-at`` = now, so the reconciler's 120 s grace for a not-yet-visible instance covers
  the run, and ``--reconcile-interval 3600`` so no second pass comes) receive PUT callbacks from
  concurrent clients, each a new connection with the job's own callback token, as ``curl`` on an
  instance would send it.
* idle: /proc/<pid>/stat utime+stime and VmRSS of the daemon with 10k future jobs.
"""

from __future__ import annotations

import http.client
import os
import queue
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

import datagen
from harness import (BenchError, Daemon, MotoServer, aws_env, cpu_seconds, median, ms, percentile, rss_bytes)
from proxy import LoggingProxy
from report import Row, Sizes

UTC = timezone.utc
BOTO_FLOOR = ("import boto3; boto3.client('ec2', region_name='us-east-1'); "
              "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')][0])")
WAIT_LIMIT = 120.0
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
#: Added to each RunInstances by the proxy in the "like EC2" burst: real RunInstances answers in
#: hundreds of milliseconds (and in parallel), a local moto_server in about 15 ms of its own CPU.
EC2_DELAY = 0.25


def _daemon_env(endpoint: str, workdir: Path) -> dict[str, str]:
    return aws_env(endpoint, JOBMAN_HOME=str(workdir / "home"), JOBMAN_API_TOKEN="bench-api-token-0123456789abcdef0123")


def _poll(check, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def _launched(db: Path) -> dict[int, float]:
    """job id -> its ``launched-at`` (ms precision, set by the daemon as it records the instance),
    for every job whose launch is stored. Read from the store, not from the daemon's log, so a
    change of log wording cannot break the figure."""
    return {job.id: job.launched_at.timestamp() for job in datagen.read_jobs(db).values()
            if job.instance_id and job.launched_at is not None}


def _wait_launched(db: Path, count: int, timeout: float, daemon: Daemon) -> dict[int, float]:
    deadline = time.monotonic() + timeout
    while True:
        launched = _launched(db)
        if len(launched) >= count:
            return launched
        if daemon.proc.poll() is not None:
            raise BenchError(f"the daemon exited ({daemon.proc.returncode}):\n{daemon.text()[-1500:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(launched)} of {count} launches stored after {timeout:g}s:\n"
                             f"{daemon.text()[-1500:]}")
        time.sleep(0.25)


def _verify_launched(db: Path, count: int) -> None:
    jobs = datagen.read_jobs(db)
    running = [j for j in jobs.values() if j.status is datagen.JobStatus.RUNNING and j.instance_id]
    if len(running) != count:
        raise BenchError(f"expected {count} launched jobs in the store, found {datagen.status_counts(jobs.values())}")


# --------------------------------------------------------------------------- due -> RunInstances
def due_latency(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    moto.reset()
    proxy = LoggingProxy(moto.port)
    db = workdir / "latency.json"
    datagen.empty_store(db)
    daemon = Daemon(_daemon_env(proxy.url, workdir), db, log=workdir / "daemon-latency.log")
    try:
        daemon.wait_ready()
        rng = random.Random(3)
        first = datetime.now(UTC) + timedelta(seconds=3)
        whens = [first + timedelta(seconds=i * sizes.stagger + rng.uniform(0, sizes.stagger * 0.8))
                 for i in range(sizes.staggered)]
        jobs = datagen.populate(db, [("scheduled", w) for w in whens])
        due = {job.id: job.date_time.timestamp() for job in jobs}
        span = sizes.staggered * sizes.stagger
        _poll(lambda: len(proxy.run_instances()) >= len(due), span + WAIT_LIMIT, "the staggered launches")
        _wait_launched(db, len(due), WAIT_LIMIT, daemon)
    finally:
        daemon.stop()
        proxy.stop()
    calls = proxy.run_instances()
    if set(calls) != set(due):
        raise BenchError(f"RunInstances seen for {len(calls)} jobs, expected {len(due)}")
    runs = sum(1 for c in proxy.calls if c.action == "RunInstances")
    _verify_launched(db, len(due))
    lat = [calls[i].sent - due[i] for i in due]
    trip = median([c.answered - c.sent for c in calls.values()])
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return [Row(f"due → RunInstances, {len(due)} jobs staggered", f"p50 {ms(p50)}, p99 {ms(p99)}",
                "p50 ≤ 200 ms, p99 ≤ 1 s",
                f"min {ms(min(lat))}, max {ms(max(lat))}; RunInstances round trip {ms(trip)}; "
                f"{runs} calls for {len(due)} jobs", p50 <= 0.200 and p99 <= 1.0 and runs == len(due))]


# --------------------------------------------------------------------------- burst
def _burst_once(workdir: Path, count: int, moto: MotoServer, workers: int | None, tag: str,
                delay: float = 0.0) -> float:
    """Seconds from the common due time until the last of ``count`` launches was recorded."""
    moto.reset()
    db = workdir / f"burst-{tag}.json"
    datagen.empty_store(db)
    args = ("--launch-workers", str(workers)) if workers else ()
    proxy = LoggingProxy(moto.port, delays={"RunInstances": delay}) if delay else None
    endpoint = proxy.url if proxy else moto.url
    daemon = Daemon(_daemon_env(endpoint, workdir), db, *args, log=workdir / f"daemon-burst-{tag}.log")
    try:
        daemon.wait_ready()
        at = datetime.now(UTC) + timedelta(seconds=3)
        jobs = datagen.populate(db, [("scheduled", at)] * count)
        launched = _wait_launched(db, count, WAIT_LIMIT + count * (0.5 + delay), daemon)
    finally:
        daemon.stop()
        if proxy:
            proxy.stop()
    if set(launched) != {job.id for job in jobs}:
        raise BenchError(f"burst {tag}: {len(launched)} launches logged for {len(jobs)} jobs")
    _verify_launched(db, len(jobs))
    return max(launched.values()) - jobs[0].date_time.timestamp()


def _moto_alone(moto: MotoServer, count: int, workers: int) -> float:
    """The same RunInstances requests (jobman's user-data, tags, options) straight from boto3, in
    ``workers`` threads, with none of jobman's bookkeeping: the launch floor of this machine."""
    from concurrent.futures import ThreadPoolExecutor

    from jobman_cli.launchers.userdata import callback_url_for, render_user_data

    moto.reset()
    ec2 = moto.client("ec2")
    ami = moto.client("ssm").get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    job = datagen.sample_job()
    user_data = render_user_data(job, callback_url=callback_url_for("http://127.0.0.1:9", job.id),
                                 callback_token="x" * 43)

    def launch(n: int) -> None:
        tags = [{"Key": "Name", "Value": f"jobman-{n}"}, {"Key": "jobman:job-id", "Value": str(n)},
                {"Key": "jobman:attempt", "Value": "1"}, {"Key": "jobman:store", "Value": "floor"}]
        ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1, ClientToken=f"floor-{n}",
                          UserData=user_data, InstanceInitiatedShutdownBehavior="terminate",
                          MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                          TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                                             {"ResourceType": "volume", "Tags": tags}])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(launch, range(count)))
    return time.perf_counter() - start


def burst(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    n = sizes.burst
    parallel, serial, floor8, floor1 = [], [], [], []
    for rep in range(sizes.burst_reps):  # interleaved: pool, one-at-a-time, and the floors
        parallel.append(_burst_once(workdir, n, moto, None, f"pool-{rep}"))
        serial.append(_burst_once(workdir, n, moto, 1, f"one-{rep}"))
        floor8.append(_moto_alone(moto, n, 8))
        floor1.append(_moto_alone(moto, n, 1))
    par, one, f8, f1 = median(parallel), median(serial), median(floor8), median(floor1)
    d = sizes.delayed
    slow_par = _burst_once(workdir, d, moto, None, "delayed-pool", delay=EC2_DELAY)
    slow_one = _burst_once(workdir, d, moto, 1, "delayed-one", delay=EC2_DELAY)
    limit = 10.0  # stated for 500 jobs; --quick keeps it for its smaller burst (informational there)
    return [
        Row(f"{n} jobs due at once: all launched", f"{par:.2f} s (default pool)",
            f"≤ {limit:g} s and ≥ 4 × one-at-a-time",
            f"--launch-workers 1: {one:.2f} s; × {one / par:.1f} faster", par <= limit and one / par >= 4.0),
        Row(f"launch floor: {n} RunInstances from boto3 alone", f"{f8:.2f} s (8 threads)", "none (context)",
            f"1 thread: {f1:.2f} s; × {f1 / f8:.1f} — moto_server's own limit on this machine", None),
        Row(f"{d} jobs due at once, RunInstances held {EC2_DELAY * 1000:.0f} ms (like EC2)",
            f"{slow_par:.2f} s (default pool)", "none (context)",
            f"--launch-workers 1: {slow_one:.2f} s; × {slow_one / slow_par:.1f} faster", None),
    ]


# --------------------------------------------------------------------------- callbacks
def _put(port: int, job_id: int, token: str, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", f"/jobMan/v1.1/jobs/{job_id}/callback", body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, time.perf_counter() - start
    finally:
        conn.close()


def callbacks(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    moto.reset()
    db = workdir / "callbacks.json"
    now = datetime.now(UTC)
    rng = random.Random(5)
    targets = datagen.populate(db, [("running", now)] * sizes.callbacks)
    datagen.populate(db, [("scheduled", now + timedelta(days=rng.randint(1, 30)))
                          for _ in range(sizes.store - sizes.callbacks)])
    expected = {job.id: (("failed", 1 + job.id % 200) if job.id % 10 == 0 else ("finished", 0)) for job in targets}
    work: queue.Queue = queue.Queue()
    for job in targets:
        status, code = expected[job.id]
        body = {"status": status, "exit-code": code} if status == "failed" else {"status": status}
        work.put((job.id, datagen.callback_token(job.id), orjson.dumps(body)))
    daemon = Daemon(_daemon_env(moto.url, workdir), db, "--reconcile-interval", "3600",
                    log=workdir / "daemon-callbacks.log")
    answers: list[tuple[int, int, float]] = []
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                job_id, token, body = work.get_nowait()
            except queue.Empty:
                return
            try:
                status, took = _put(daemon.port, job_id, token, body)
            except OSError:
                status, took = 0, 0.0
            with lock:
                answers.append((job_id, status, took))

    try:
        daemon.wait_ready()
        threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(sizes.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        daemon.stop()
    bad = [a for a in answers if a[1] != 200]
    jobs = datagen.read_jobs(db)
    wrong = [i for i, (status, code) in expected.items()
             if jobs[i].status.value != status or (jobs[i].exit_code or 0) != code]
    rate = len(answers) / elapsed
    took = [a[2] for a in answers if a[1] == 200] or [0.0]
    applied = len(expected) - len(wrong)
    return [Row(f"callbacks: {len(expected):,} from {sizes.clients} clients, {sizes.store:,} jobs stored",
                f"{rate:.0f} callbacks/s; {applied}/{len(expected)} applied",
                "≥ 100/s, every one applied",
                f"{elapsed:.2f} s in all; per request p50 {ms(percentile(took, 50))}, p99 {ms(percentile(took, 99))}; "
                f"{len(bad)} non-200", rate >= 100 and not bad and not wrong and len(answers) == len(expected))]


# --------------------------------------------------------------------------- idle
def _boto_floor_rss() -> int:
    out = subprocess.run([sys.executable, "-c", BOTO_FLOOR], capture_output=True, check=True,
                         env=aws_env("http://127.0.0.1:9"), timeout=60)
    return int(out.stdout.decode().strip()) * 1024


def idle(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    moto.reset()
    db = workdir / "idle.json"
    datagen.future_store(db, sizes.store)
    floor_rss = _boto_floor_rss()
    started = time.monotonic()
    daemon = Daemon(_daemon_env(moto.url, workdir), db, log=workdir / "daemon-idle.log")
    try:
        daemon.wait_ready()
        ready = time.monotonic() - started
        time.sleep(2.0)  # let start-up work (first parse, first reconcile) settle
        cpu0, wall0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(sizes.idle_seconds)
        cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
        rss = rss_bytes(daemon.pid)
        if daemon.proc.poll() is not None:
            raise BenchError("the idle daemon exited")
        launched = daemon.matching(lambda text: "-> launching" in text)
    finally:
        daemon.stop()
    if launched:
        raise BenchError(f"the idle daemon launched jobs: {launched[:3]}")
    share = (cpu1 - cpu0) / (wall1 - wall0) * 100
    mb = 1024 * 1024
    return [
        Row(f"idle daemon, {sizes.store:,} future jobs: CPU", f"{share:.2f} % of one core",
            f"< 1 % over {sizes.idle_seconds:g} s",
            f"{cpu1 - cpu0:.2f} s CPU in {wall1 - wall0:.0f} s (resolution {1 / os.sysconf('SC_CLK_TCK'):g} s)",
            share < 1.0),
        Row("idle daemon: resident memory", f"{rss / mb:.0f} MB", "≤ 150 MB",
            f"python + boto3 + EC2 client alone {floor_rss / mb:.0f} MB; × {rss / floor_rss:.1f}", rss <= 150 * mb),
        Row(f"daemon start-up to ready, {sizes.store:,} jobs", f"{ready:.2f} s", "none (context)",
            "includes moto answering the first reconcile", None),
    ]
