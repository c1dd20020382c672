"""Housekeeping figures (issue 14): "a store of a year of 5-minute cron jobs stays fast".

Two stores built through jobman's own code (``datagen``): a year of a 5-minute cron job, 105,120
ended jobs (one every 5 minutes, each created, claimed, launched and reported at its slot; 1 in 10
failed), and the last 1,000 slots of the same history. On both, whole ``jobman`` processes are
timed round-robin (``harness.interleaved``), and each figure is the ratio of the year to the 1,000:

* ``list --limit 20``: the newest 20 (the TinyDB store reads only their lines from the end);
* ``status ID``: one job from the middle;
* ``schedule``: one new job (the file is rewritten: its size is the cost);
* ``prune``: the daily retention's case, the oldest day (288 jobs) removed. Destructive, so each
  run gets a fresh copy of the store (the copy is not timed, and these runs are not interleaved
  with the others).

Also, for context (no target): the first prune of a year down to its last 30 days.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

import datagen
from harness import BenchError, Cmd, Timing, clean_env, interleaved, jobman_command, median, ms, run_checked, time_once
from report import Row, Sizes

from jobman_cli.model import Job
from jobman_cli.service import JobService, launch_token_for
from jobman_cli.stores.tinydb import TinyDBStore

PY = sys.executable
SLOT = timedelta(minutes=5)
YEAR = 365 * 24 * 12  # 105,120 five-minute slots
SMALL = 1_000
UTC = timezone.utc


def cron_history(path: Path, size: int, now: datetime) -> list[Job]:
    """``size`` ended jobs, one per 5-minute slot, the newest ending a minute before ``now``."""
    with TinyDBStore(path) as store:
        templates = datagen._templates(JobService(store))
        items = []
        for n in range(size):
            at = now - (size - n) * SLOT

            def change(job: Job, at: datetime = at, n: int = n, store_id: str = store.store_id) -> Job:
                job = job.claimed(at, launch_token_for(store_id, job.id, 1))
                job = job.launched(f"i-{job.id:017x}", at + timedelta(seconds=20))
                end = at + timedelta(minutes=4)
                return job.reported("failed", 1, end) if n % 10 == 9 else job.reported("finished", 0, end)

            draft = dataclasses.replace(datagen._draft(templates[:1], n, at, at), title=f"cron #{n}")
            items.append((draft, change))
        return datagen._write(store, items)


def _env(workdir: Path) -> dict[str, str]:
    return clean_env(JOBMAN_HOME=str(workdir / "home"), JOBMAN_TZ="UTC")


def _cmds(db: Path, job_id: int, tag: str, env: dict[str, str]) -> list[Cmd]:
    base = (*jobman_command(), "--db", str(db))
    return [
        Cmd(f"list@{tag}", (*base, "list", "--limit", "20"), env),
        Cmd(f"status@{tag}", (*base, "status", str(job_id)), env),
        Cmd(f"schedule@{tag}", (*base, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q"), env),
    ]


def _check(env: dict[str, str], db: Path, size: int, newest: int) -> None:
    """The timed commands do what they say before they are timed."""
    base = (*jobman_command(), "--db", str(db))
    listed = orjson.loads(run_checked((*base, "list", "--limit", "20", "--json"), env).stdout)
    if [job["id"] for job in listed] != list(range(newest, newest - 20, -1)):
        raise BenchError(f"list --limit 20 on {size} jobs gave ids {[j['id'] for j in listed][:5]}...")
    dry = orjson.loads(run_checked((*base, "prune", "--ended-before", "3653d", "--dry-run", "--json"), env).stdout)
    if dry["count"] != 0:
        raise BenchError(f"prune --dry-run of jobs older than ten years on {size} jobs found {dry['count']}")


def _end_of(now: datetime, size: int, n: int) -> datetime:
    """When job ``n`` (0: the oldest) of :func:`cron_history` ended."""
    return now - (size - n) * SLOT + timedelta(minutes=4)


def _prune_runs(workdir: Path, source: Path, tag: str, env: dict[str, str], runs: int, cutoff: datetime,
                left: int) -> list[Timing]:
    """``prune`` of the jobs that ended before ``cutoff`` (given as seconds ago, computed right
    before each run), timed on a fresh copy of ``source`` each run (the copy is not timed); the
    store must keep exactly ``left`` jobs."""
    target = workdir / f"prune-{tag}.json"
    times = []
    for _ in range(runs + 1):  # the first is a warm-up
        shutil.copyfile(source, target)
        ago = str(int((datetime.now(UTC) - cutoff).total_seconds()))
        times.append(time_once((*jobman_command(), "--db", str(target), "prune", "--ended-before", ago), env))
        kept = target.read_bytes().count(b"\n") - 2  # one line per job, plus the first and the last
        if kept != left:
            raise BenchError(f"prune --ended-before {ago} on {tag} kept {kept} jobs, expected {left}")
    return times[1:]


def housekeeping(workdir: Path, sizes: Sizes) -> list[Row]:
    env = _env(workdir)
    now = datetime.now(UTC)
    year, small = workdir / "year.json", workdir / "small.json"
    built = {}
    for db, size in ((year, YEAR), (small, SMALL)):
        jobs = cron_history(db, size, now)
        built[size] = jobs
        _check(env, db, size, jobs[-1].id)
    # Pristine copies for the prunes (the timed schedules add jobs to the others).
    pristine = {size: workdir / f"pristine-{size}.json" for size in (YEAR, SMALL)}
    shutil.copyfile(year, pristine[YEAR])
    shutil.copyfile(small, pristine[SMALL])
    cmds = (_cmds(year, built[YEAR][YEAR // 2].id, "year", env)
            + _cmds(small, built[SMALL][SMALL // 2].id, "small", env))
    runs = sizes.runs
    times = interleaved(cmds, runs)
    day = 24 * 12  # the oldest day of each store goes, as the daily retention would remove it
    daily = {size: _prune_runs(workdir, pristine[size], str(size), env, max(3, runs // 3),
                               _end_of(now, size, day - 1) + SLOT / 2, size - day)
             for size in (YEAR, SMALL)}
    t = {name: median([x.wall for x in values]) for name, values in times.items()}
    cpu = {name: median([x.cpu for x in values]) for name, values in times.items()}
    t["prune@year"], t["prune@small"] = (median([x.wall for x in daily[YEAR]]), median([x.wall for x in daily[SMALL]]))
    cpu["prune@year"], cpu["prune@small"] = (median([x.cpu for x in daily[YEAR]]),
                                             median([x.cpu for x in daily[SMALL]]))
    size_mb = pristine[YEAR].stat().st_size / 1e6
    rows = []
    targets = {"list": 2.0, "status": 2.0, "schedule": None, "prune": None}
    labels = {"list": "`list --limit 20`", "status": "`status ID`", "schedule": "`schedule`",
              "prune": "daily `prune` (the oldest 288 jobs)"}
    context = {"schedule": "none (context: one write of the whole file)",
               "prune": "none (context: a scan and one write of the whole file)"}
    for what in ("list", "status", "schedule", "prune"):
        ratio = t[f"{what}@year"] / t[f"{what}@small"]
        limit = targets[what]
        rows.append(Row(f"{labels[what]}, a year of 5-min cron jobs ({YEAR:,}, {size_mb:.0f} MB)", ms(t[f"{what}@year"]),
                        f"≤ {limit} × {SMALL:,} jobs" if limit else context[what],
                        f"{SMALL:,} jobs {ms(t[f'{what}@small'])}; × {ratio:.2f}; CPU {ms(cpu[f'{what}@year'])} vs "
                        f"{ms(cpu[f'{what}@small'])}", ratio <= limit if limit else None))
    keep = 30 * day
    first = _prune_runs(workdir, pristine[YEAR], "first", env, 1, _end_of(now, YEAR, YEAR - keep - 1) + SLOT / 2, keep)
    rows.append(Row(f"first `prune` of a year down to its last 30 days ({YEAR - keep:,} jobs removed)",
                    ms(median([x.wall for x in first])), "none (once)", f"CPU {ms(median([x.cpu for x in first]))}",
                    None))
    return rows
