"""Recurring schedules (DESIGN.md section 14): a real ``jobman daemon`` on a TinyDB store holding 1,000
schedules, against the runner's ``moto_server``.

* idle: /proc/<pid>/stat utime+stime of a daemon whose 1,000 schedules are all hours away, over the
  idle window, against the same daemon on a store without schedules (the baseline, measured right
  before it). What it shows: the daemon does not read or parse its schedules while nothing is due
  (it caches their next occurrences and lists them again only when the store changed).
* materialize: 1,000 schedules whose next occurrence is the same instant T (``every 1h``, stored
  with ``next-at`` = T, 45 s after the store is begun); the daemon wakes ``LEAD`` (5 s) before T and creates the 1,000 jobs. Measured from the store:
  the last job's ``created-at`` minus (T - 5 s), i.e. how long the pass took, against the target
  that it fits in the lead (so their launches can start at T). The first claim after T says when
  launching began (context: the launches themselves are the ``burst`` figure's subject).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import datagen
from harness import BenchError, Daemon, MotoServer, aws_env, cpu_seconds
from report import Row, Sizes

UTC = timezone.utc
SCHEDULES = 1_000
WAIT_LIMIT = 180.0


def _env(endpoint: str, workdir: Path) -> dict[str, str]:
    return aws_env(endpoint, JOBMAN_HOME=str(workdir / "home"), JOBMAN_API_TOKEN="bench-api-token-0123456789abcdef0123")


def _schedule_store(db: Path, count: int, at: datetime | None) -> None:
    """``count`` schedules ``every 1h`` whose next occurrence is ``at`` (None: an empty store)."""
    from jobman_cli.schedules.service import ScheduleService
    from jobman_cli.service import JobService
    from jobman_cli.stores.tinydb import TinyDBStore

    store = TinyDBStore(db)
    try:
        if at is None:
            return
        draft = ScheduleService(JobService(store)).validate(
            {"docker-image": "alpine:3.20", "every": "1h", "tz": "UTC", "overlap": "allow", "title": "bench"})
        draft = dataclasses.replace(draft, next_at=at)  # any instant: no wait for a minute boundary
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # concurrent writers may commit as groups
            list(pool.map(lambda n: store.add_schedule(dataclasses.replace(draft, title=f"bench {n}")),
                          range(count)))
    finally:
        store.close()


def _idle_cpu(workdir: Path, moto: MotoServer, db: Path, seconds: float, label: str) -> float:
    daemon = Daemon(_env(moto.url, workdir), db, log=workdir / f"daemon-{label}.log")
    try:
        daemon.wait_ready()
        time.sleep(2.0)  # start-up work (first listing, first reconcile) settles
        cpu0, wall0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
        if daemon.proc.poll() is not None:
            raise BenchError(f"the idle daemon ({label}) exited")
        if daemon.matching(lambda text: "-> job " in text or "-> launching" in text):
            raise BenchError(f"the idle daemon ({label}) created or launched jobs")
    finally:
        daemon.stop()
    return (cpu1 - cpu0) / (wall1 - wall0) * 100


def _materialize(workdir: Path, moto: MotoServer) -> tuple[float, float, float]:
    """(seconds from T-5s to the last job created, first created after T-5s, first claim after T)."""
    from jobman_cli.daemon.schedules import LEAD

    db = workdir / "due.json"
    at = (datetime.now(UTC) + timedelta(seconds=45)).replace(microsecond=0)
    _schedule_store(db, SCHEDULES, at)
    if (at - datetime.now(UTC)).total_seconds() < 12:
        raise BenchError("building the schedules took too long: their occurrence is too close")
    daemon = Daemon(_env(moto.url, workdir), db, log=workdir / "daemon-due.log")
    try:
        daemon.wait_ready()
        deadline = time.monotonic() + (at - datetime.now(UTC)).total_seconds() + WAIT_LIMIT
        while True:
            jobs = [j for j in datagen.read_jobs(db).values() if j.schedule_id is not None]
            if len(jobs) >= SCHEDULES:
                break
            if daemon.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{len(jobs)} of {SCHEDULES} jobs created:\n{daemon.text()[-1500:]}")
            time.sleep(0.5)
        start = at - LEAD
        while not any(j.claimed_at for j in datagen.read_jobs(db).values()):
            if daemon.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"no job launched:\n{daemon.text()[-1500:]}")
            time.sleep(0.2)
        claims = [j.claimed_at for j in datagen.read_jobs(db).values() if j.claimed_at]
    finally:
        daemon.stop()
    if len({(j.schedule_id, j.occurrence) for j in jobs}) != SCHEDULES or any(j.occurrence != at for j in jobs):
        raise BenchError("the jobs are not one per schedule at T")
    created = sorted(j.created_at for j in jobs)
    return ((created[-1] - start).total_seconds(), (created[0] - start).total_seconds(),
            (min(claims) - at).total_seconds())


def schedules(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    moto.reset()
    later = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=6)  # never due in the window
    empty, stored = workdir / "none.json", workdir / "idle.json"
    _schedule_store(empty, 0, None)
    _schedule_store(stored, SCHEDULES, later)
    base = _idle_cpu(workdir, moto, empty, sizes.idle_seconds, "no-schedules")
    share = _idle_cpu(workdir, moto, stored, sizes.idle_seconds, "schedules")
    moto.reset()
    took, first, claim = _materialize(workdir, moto)
    resolution = 1 / os.sysconf("SC_CLK_TCK")
    return [
        Row(f"idle daemon, {SCHEDULES:,} schedules: CPU", f"{share:.2f} % of one core",
            f"< 1 % over {sizes.idle_seconds:g} s",
            f"without schedules {base:.2f} % (resolution {resolution:g} s CPU)", share < 1.0),
        Row(f"materialize {SCHEDULES:,} occurrences due in one minute", f"{took:.2f} s",
            "≤ 5 s (the lead: launches start on time)",
            f"first job after {first:.2f} s; first launch claimed {claim:+.2f} s from the occurrence", took <= 5.0),
    ]
