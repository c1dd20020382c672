"""``jobman status ID`` does not import what it never uses.

``status`` runs in scripts and shell loops, so its time is mostly Python's import time (target
<= 120 ms at 10,000 jobs, import floor ~89 ms). These modules used to be imported at the top of a
module on its path and cost 1.5-4 ms each; they are now imported where they are used:

* ``socket`` (notify/targets.py: only numeric_host resolves a host);
* ``decimal`` and ``jobman_cli.capacity`` (service.py: only scheduling reads capacity defaults);
* ``jobman_cli.cost.receipt`` (render.cost_line: only a job with a figure formats one);
* ``jobman_cli.schedules.model`` (stores/tinydb_schedules.py: TinyDBStore subclasses it);
* ``_hashlib`` (model/tokens.py: status hashes no callback token).

Each check runs the real CLI in a fresh interpreter under ``-X importtime`` and fails when one of
them appears, so a top-level import put back on the path is caught. Modules the bare interpreter
already imports (``python -c pass``: site, sitecustomize, an editable install's finder) are not
counted against jobman. No timing is asserted. (Measured, 10,000-job store, `status 5001`,
interleaved 15 runs each, medians: HEAD 106.2 ms wall / 101.4 ms CPU, these lazy imports
91.5 / 86.5 ms, import floor 66.4 / 63.7 ms; see commit c72f4fa for the loaded-box rounds.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobman_cli.model import hash_callback_token
from jobman_cli.service import JobService, ScheduleRequest, launch_token_for
from jobman_cli.stores.tinydb import TinyDBStore

NOT_ON_STATUS_PATH = (
    "socket",
    "decimal",
    "jobman_cli.capacity",
    "jobman_cli.cost.receipt",
    "jobman_cli.schedules.model",
    "_hashlib",
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBMAN_", "PYTHON"))}
    env["JOBMAN_HOME"] = str(home)
    return env


def _imported(args: list[str], env: dict[str, str]) -> tuple[set[str], str]:
    """The modules a fresh ``python -X importtime ARGS`` imports, and its stdout."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    assert "jobman_cli" in names or args[:1] == ["-c"], proc.stderr[-2000:]  # the parse works
    return names, proc.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store with job 1 scheduled and job 2 ended on an instance, its receipt not made yet (so
    ``status 2`` prints a cost line: "pending")."""
    home = tmp_path_factory.mktemp("home")
    db = home / "jobs.json"
    now = datetime.now(timezone.utc)
    with TinyDBStore(db) as opened:
        service = JobService(opened)
        for _ in range(2):
            service.schedule(ScheduleRequest(image="alpine:3.20", when="2030-01-01 00:00"))

        def end(job):  # the model's own transitions, as the daemon makes them
            job = job.claimed(now, launch_token_for(opened.store_id, job.id, 1), hash_callback_token("t"))
            return job.launched("i-0123456789abcdef0", now).reported("finished", 0, now)

        opened.update(2, end)
    return home, db


@pytest.mark.parametrize("job_id", ["1", "2"], ids=["scheduled", "ended-pending-cost"])
def test_status_does_not_import_unused_modules(store: tuple[Path, Path], job_id: str) -> None:
    home, db = store
    env = _env(home)
    floor, _ = _imported(["-c", "pass"], env)
    names, out = _imported(["-m", "jobman_cli", "--db", str(db), "status", job_id], env)
    assert out.splitlines()[0].split() == ["id", job_id], out
    if job_id == "2":
        assert "pending" in out, out  # cost_line ran: its lazy import is what is checked here
    added = sorted(m for m in NOT_ON_STATUS_PATH if m in names and m not in floor)
    assert added == [], f"`jobman status` imports {added} again (see this file's docstring)"
