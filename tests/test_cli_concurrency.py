"""Many `jobman` processes writing one store at once lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from click.testing import CliRunner

from jobman_cli.cli import cli
from jobman_cli.stores.tinydb import TinyDBStore

WORKER = textwrap.dedent(
    """
    import json, sys
    from click.testing import CliRunner
    from jobman_cli.cli import cli

    db, mode, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.stdin.readline()  # start line: every worker begins at the same moment
    runner = CliRunner()
    outcomes = {}
    for n in range(first, last):
        if mode == "schedule":
            args = ["schedule", "--image", "alpine", "--at", "+1h", "--title", f"w{first}-{n}", "-q"]
        elif mode == "finish":
            args = ["callback", str(n), "--status", "finished"]
        else:
            args = ["cancel", str(n)]
        result = runner.invoke(cli, ["--db", db, *args])
        outcomes[n] = [result.exit_code, result.stdout.strip(), result.stderr.strip()]
    print(json.dumps(outcomes))
    """
)


def start_workers(db: Path, jobs: list[tuple[str, int, int]]) -> list[dict]:
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(db), mode, str(a), str(b)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ))
        for mode, a, b in jobs
    ]
    for proc in procs:  # release them together
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append({int(k): v for k, v in json.loads(out).items()})
    return results


def test_eight_processes_scheduling_fifty_jobs_each(tmp_path: Path) -> None:
    db = tmp_path / "jobs.json"
    results = start_workers(db, [("schedule", w * 1000, w * 1000 + 50) for w in range(8)])
    printed_ids = [int(out[1]) for r in results for out in r.values()]
    assert all(out[0] == 0 for r in results for out in r.values())
    assert len(printed_ids) == 400
    assert len(set(printed_ids)) == 400
    listed = json.loads(CliRunner().invoke(cli, ["--db", str(db), "list", "--json"]).stdout)
    assert len(listed) == 400
    assert sorted(j["id"] for j in listed) == sorted(printed_ids) == list(range(1, 401))
    assert len({j["title"] for j in listed}) == 400


def test_concurrent_callback_and_cancel_never_lose_an_update(tmp_path: Path) -> None:
    """For each job exactly one of `callback finished` / `cancel` wins and the store agrees."""
    db = tmp_path / "jobs.json"
    store = TinyDBStore(db)
    from jobman_cli.service import JobService, ScheduleRequest

    service = JobService(store)
    now = datetime.now(timezone.utc)
    count = 40
    for _ in range(count):
        job, _ = service.schedule(ScheduleRequest(image="alpine", when="+1h"))
        store.update(job.id, lambda j: j.claimed(now, f"t{j.id}"))
    store.close()
    finish, cancel = start_workers(db, [("finish", 1, count + 1), ("cancel", 1, count + 1)])
    listed = {j["id"]: j for j in json.loads(CliRunner().invoke(cli, ["--db", str(db), "list", "--json"]).stdout)}
    for job_id in range(1, count + 1):
        finished_ok = finish[job_id][0] == 0
        cancelled_ok = cancel[job_id][0] == 0
        assert finished_ok != cancelled_ok, (job_id, finish[job_id], cancel[job_id])
        assert listed[job_id]["status"] == ("finished" if finished_ok else "cancelled")
        loser = cancel[job_id] if finished_ok else finish[job_id]
        assert loser[0] == 1 and loser[2].startswith("Error: ")
