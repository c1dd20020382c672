"""``jobman logs ID`` on a 10,000-line log in moto_server's CloudWatch Logs: the first line, the whole log.

The job is stored through jobman's own store and transitions (launched on an instance that no
longer exists, as long after the run), and its stream ``jobs/1/attempt-1`` holds 10,000 lines of
about 90 characters, written with ``PutLogEvents`` in batches as an instance would. Measured round
robin with their floors, as ``harness.interleaved`` does:

* whole log: ``jobman logs 1`` from start to exit, stdout to ``/dev/null``;
* first line: from start until the first line arrives on a pipe (the process is then drained);
* floors: the same command on a 10-line log (what 10,000 lines add), and ``python -c`` importing
  boto3 and making a Logs client (what any AWS-reading command pays before its first call). The
  targets are relative to them (a shared machine's load moves all three together): the first
  line within 300 ms of the boto3 floor, the whole log within 250 ms of a 10-line log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from harness import BenchError, MotoServer, Timing, aws_env, jobman_command, median, ms, run_checked, time_once
from report import Row, Sizes

PY = sys.executable
LINES = 10_000
BOTO_FLOOR = "import boto3; boto3.session.Session().client('logs')"


def _store(db: Path, jobs: int) -> None:
    """``jobs`` jobs, each launched once on an instance that is gone and finished."""
    from jobman_cli.model import Job, JobStatus
    from jobman_cli.stores.tinydb import TinyDBStore

    now = datetime.now(timezone.utc)
    with TinyDBStore(db) as store:
        for n in range(jobs):
            draft = Job(id=0, title=f"logs bench {n}", date_time=now - timedelta(minutes=5), docker_image="alpine:3.20",
                        env_variables={}, status=JobStatus.SCHEDULED, created_at=now - timedelta(minutes=10))
            job, _ = store.add(draft)
            store.update(job.id, lambda j: j.claimed(now, f"bench-{j.id}"))
            store.update(job.id, lambda j: j.launched(f"i-{j.id:017x}", now))
            store.update(job.id, lambda j: j.reported("finished", 0, now))


def _fill(moto: MotoServer, job_id: int, lines: int) -> None:
    logs = moto.client("logs")
    try:
        logs.create_log_group(logGroupName="jobman")
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"jobs/{job_id}/attempt-1"
    logs.create_log_stream(logGroupName="jobman", logStreamName=stream)
    start = int(time.time() * 1000) - lines
    events = [{"timestamp": start + i, "message": f"{i:05d} processed record batch {i // 100} "
                                                  f"of the nightly import: ok ({i * 7919 % 100000} rows)"}
              for i in range(lines)]
    for chunk in range(0, lines, 2_500):  # PutLogEvents takes at most 10,000 events and 1 MiB
        logs.put_log_events(logGroupName="jobman", logStreamName=stream, logEvents=events[chunk:chunk + 2_500])


def _first_line(argv: tuple[str, ...], env: dict[str, str]) -> Timing:
    """Seconds until the first line is readable on the command's stdout (then drained and checked)."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    rest, errors = proc.communicate(timeout=120)
    if proc.returncode != 0 or not first:
        raise BenchError(f"{' '.join(argv[:4])}... exited {proc.returncode}: {errors.decode(errors='replace')[-500:]}")
    return Timing(elapsed, 0.0)


def logs(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    db = workdir / "jobs.json"
    _store(db, 2)
    _fill(moto, 1, LINES)
    _fill(moto, 2, 10)
    env = aws_env(moto.url, JOBMAN_HOME=str(workdir / "home"), JOBMAN_DB=str(db))
    big = (*jobman_command(), "logs", "1")
    small = (*jobman_command(), "logs", "2")
    printed = run_checked(big, env).stdout.decode().splitlines()
    if len(printed) != LINES or not printed[0].startswith("00000 ") or not printed[-1].startswith(f"{LINES - 1:05d} "):
        raise BenchError(f"jobman logs printed {len(printed)} lines, not the {LINES} stored in order")
    measures: dict[str, Callable[[], Timing]] = {
        "whole": lambda: time_once(big, env), "small": lambda: time_once(small, env),
        "boto": lambda: time_once((PY, "-c", BOTO_FLOOR), env), "first": lambda: _first_line(big, env)}
    times: dict[str, list[Timing]] = {name: [] for name in measures}
    names = list(measures)
    for round_no in range(sizes.runs + 1):  # round robin, rotating; round 0 is a discarded warm-up
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            timing = measures[name]()
            if round_no:
                times[name].append(timing)
    t = {name: median([x.wall for x in values]) for name, values in times.items()}
    first = t["first"]
    cpu = median([x.cpu for x in times["whole"]])
    return [
        Row(f"`jobman logs ID`, {LINES:,}-line log: first line printed", ms(first), "≤ boto3 floor + 300 ms",
            f"import boto3 + Logs client {ms(t['boto'])} (+{ms(first - t['boto'])}); a 10-line log, whole "
            f"{ms(t['small'])}", first - t["boto"] <= 0.3),
        Row(f"`jobman logs ID`, {LINES:,}-line log: whole log", ms(t["whole"]), "≤ 10-line log + 250 ms",
            f"a 10-line log {ms(t['small'])} (+{ms(t['whole'] - t['small'])} for {LINES:,} lines); CPU {ms(cpu)}",
            t["whole"] - t["small"] <= 0.25),
    ]


if __name__ == "__main__":  # python tests/benchmarks/log_figures.py [--quick]: this figure alone
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import render

    folder = Path(tempfile.mkdtemp(prefix="jobman-bench-logs-"))
    server = MotoServer(folder)
    try:
        print(render(logs(folder, Sizes.make("--quick" in sys.argv), server)))
    finally:
        server.stop()
