"""Build benchmark stores through jobman's own code, fast.

Jobs are made the way the product makes them: a few drafts come from
:meth:`JobService.validate` (the schedule path, with its validation and user-data size check), each
stored job is a copy of one with its own title, time and callback token, and state changes are the
model's own transitions (``claimed``, ``launched``, ``reported``). They are written through the
TinyDB store's add/update path, so the file is exactly what the store writes and accepts.

Speed: one ``add`` per job would rewrite a 10k-job file 10,000 times. The store group-commits
concurrent writers (one lock, one write per batch), so jobs are written in batches of a few
thousand per commit through that same mechanism (``GroupCommit.submit`` with a function that calls
the batch's ``add``/``update`` for each job). If that internal hook is not there (the store changed),
the public ``add``/``update`` are called from a pool of threads instead, which the store batches
itself, only slower.
"""

from __future__ import annotations

import dataclasses
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable

from jobman_cli.model import Job, JobStatus, hash_callback_token
from jobman_cli.service import JobService, ScheduleRequest, launch_token_for
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
CHUNK = 2000

# The share of each kind of job in a "history" store: what an operator's file looks like after a
# while (mostly ended jobs, some waiting, a few running).
HISTORY_MIX = (("finished", 0.6), ("failed", 0.1), ("scheduled", 0.25), ("running", 0.05))


def _templates(service: JobService) -> list[Job]:
    requests = [
        ScheduleRequest(image="alpine:3.20", when="+1d", title="nightly report",
                        env={"GREETING": "hello", "TARGET": "s3://bucket/reports"}),
        ScheduleRequest(image="registry.example.com:5000/team/etl@sha256:" + "a" * 64, when="+2h",
                        title="etl", env={"DB_URL": "postgres://etl@db/warehouse", "BATCH": "500",
                                          "MODE": "incremental"}, timeout="2h"),
        ScheduleRequest(image="python:3.12-slim", when="in 10 minutes", title="", env={}),
    ]
    return [service.validate(r) for r in requests]


def callback_token(job_id: int) -> str:
    """The benchmark's callback token of job ``job_id`` (the store keeps only its hash)."""
    return f"bench-callback-token-{job_id}"


def _draft(templates: list[Job], n: int, when: datetime, now: datetime) -> Job:
    template = templates[n % len(templates)]
    return dataclasses.replace(template, title=f"{template.title or 'job'} #{n}", date_time=when,
                               created_at=now, updated_at=now,
                               extra={"when-spec": when.isoformat()})


def _ended(kind: str, n: int, now: datetime, store_id: str) -> Callable[[Job], Job]:
    """The transitions that take a just-added job to ``kind`` (applied in order by the store)."""

    def change(job: Job) -> Job:
        if kind == "scheduled":
            return job
        job = job.claimed(now, launch_token_for(store_id, job.id, 1), hash_callback_token(callback_token(job.id)))
        job = job.launched(f"i-{job.id:017x}", now)
        if kind == "finished":
            job = job.reported("finished", 0, now)
        elif kind == "failed":
            job = job.reported("failed", 1 + n % 254, now)
        return job

    return change


def _write(store: TinyDBStore, items: list[tuple[Job, Callable[[Job], Job]]]) -> list[Job]:
    """Add and transition ``items`` in as few commits as possible. Returns the stored jobs."""
    commits = getattr(store, "_commits", None)
    if commits is not None and hasattr(commits, "submit"):
        out: list[Job] = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]

            def apply(batch, chunk=chunk):  # runs under the store's lock, once per commit
                done = []
                for draft, change in chunk:
                    job, _ = batch.add(draft)
                    done.append(batch.update(job.id, change))
                return done

            out.extend(commits.submit(apply))
        return out

    def one(item: tuple[Job, Callable[[Job], Job]]) -> Job:
        job, _ = store.add(item[0])
        return store.update(job.id, item[1])

    with ThreadPoolExecutor(max_workers=64) as pool:
        return list(pool.map(one, items))


def populate(path: Path, kinds: Iterable[tuple[str, datetime]], *, now: datetime | None = None) -> list[Job]:
    """Append jobs to the store at ``path`` (created if needed): one per ``(kind, due time)``."""
    now = now or datetime.now(UTC)
    with TinyDBStore(path) as store:
        templates = _templates(JobService(store))
        items = [(_draft(templates, n, when, now), _ended(kind, n, now, store.store_id))
                 for n, (kind, when) in enumerate(kinds)]
        return _write(store, items)


def history_store(path: Path, size: int, *, seed: int = 7) -> list[Job]:
    """``size`` jobs in the :data:`HISTORY_MIX`: ended ones in the past, scheduled ones days ahead."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    kinds = []
    for n in range(size):
        pick, acc = rng.random(), 0.0
        for kind, share in HISTORY_MIX:
            acc += share
            if pick < acc:
                break
        offset = timedelta(seconds=rng.randint(3600, 30 * 86400))
        kinds.append((kind, now + offset if kind == "scheduled" else now - offset))
    return populate(path, kinds, now=now)


def future_store(path: Path, size: int, *, seed: int = 11) -> list[Job]:
    """``size`` scheduled jobs, 1 to 30 days ahead (an idle daemon's store)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return populate(path, [("scheduled", now + timedelta(seconds=rng.randint(86400, 30 * 86400)))
                           for _ in range(size)], now=now)


def sample_job(job_id: int = 1) -> Job:
    """A validated job as the store would hold it (no store needed: validation does not use it)."""
    now = datetime.now(UTC)
    draft = _draft(_templates(JobService(None)), 0, now + timedelta(days=1), now)  # type: ignore[arg-type]
    return dataclasses.replace(draft, id=job_id)


def empty_store(path: Path) -> None:
    """An existing store file with no jobs (what ``jobman store init`` leaves)."""
    TinyDBStore(path).close()


def read_jobs(path: Path) -> dict[int, Job]:
    """Every job in the store, read as the CLI would (read-only handle)."""
    with TinyDBStore(path, create=False) as store:
        return {job.id: job for job in store.list()}


def status_counts(jobs: Iterable[Job]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status.value] = counts.get(job.status.value, 0) + 1
    return counts


__all__ = ["populate", "history_store", "future_store", "empty_store", "read_jobs", "status_counts",
           "JobStatus"]
