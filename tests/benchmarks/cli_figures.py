"""Whole-process CLI figures: start-up, schedule/status/list at 10k jobs, and store scaling.

Each figure is a group of commands run round-robin (see ``harness.interleaved``) together with the
floor it is compared against, so floor and figure see the same machine load. Floors:

* ``python -c "import click"`` — what any Click program pays; ``--version``/``--help`` must stay
  within 1.3x of it (the CLI imports only click at the top).
* ``python -c "import click, tinydb, dateutil.parser, rich"`` — the libraries a store command may
  need; the "import floor" the issue measured at about 78 ms.
* the same ``schedule`` on an empty store — isolates what 10,000 stored jobs cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

import datagen
from harness import BenchError, Cmd, Timing, clean_env, interleaved, jobman_command, median, ms, run_checked
from report import Row, Sizes

PY = sys.executable
IMPORT_FLOOR = "import click, tinydb, dateutil.parser, rich"


def _env(workdir: Path) -> dict[str, str]:
    return clean_env(JOBMAN_HOME=str(workdir / "home"), JOBMAN_TZ="UTC")


def _schedule(db: Path) -> tuple[str, ...]:
    return (*jobman_command(), "--db", str(db), "schedule", "--image", "alpine:3.20", "--at", "+1h",
            "--title", "bench", "-e", "GREETING=hello", "-q")


def _status(db: Path, job_id: int) -> tuple[str, ...]:
    return (*jobman_command(), "--db", str(db), "status", str(job_id))


def _list(db: Path) -> tuple[str, ...]:
    return (*jobman_command(), "--db", str(db), "list", "--json")


def _check_outputs(env: dict[str, str], db: Path, job_id: int, size: int) -> None:
    """Each timed command once with its output read: it must do what it says, not just exit 0."""
    new_id = run_checked(_schedule(db), env).stdout.decode().strip()
    if not new_id.isdigit() or int(new_id) <= size:
        raise BenchError(f"schedule on a {size}-job store printed {new_id!r}, not a new id")
    shown = run_checked(_status(db, job_id), env).stdout.decode()
    if str(job_id) not in shown:
        raise BenchError(f"status {job_id} did not show the job: {shown[:200]!r}")
    listed = orjson.loads(run_checked(_list(db), env).stdout)
    if len(listed) < size or listed[0]["id"] < listed[-1]["id"]:
        raise BenchError(f"list --json gave {len(listed)} jobs (expected at least {size}, newest first)")


def startup(workdir: Path, sizes: Sizes) -> list[Row]:
    env = _env(workdir)
    cmds = [
        Cmd("pass", (PY, "-c", "pass"), env),
        Cmd("click", (PY, "-c", "import click"), env),
        Cmd("version", (*jobman_command(), "--version"), env),
        Cmd("help", (*jobman_command(), "--help"), env),
    ]
    if b"jobman" not in run_checked(cmds[2].argv, env).stdout:
        raise BenchError("jobman --version did not print its name")
    t, cpu = _medians(interleaved(cmds, sizes.runs))
    rows = []
    for name in ("version", "help"):
        ratio = t[name] / t["click"]
        rows.append(Row(f"`jobman --{name}`", ms(t[name]), "≤ 1.3 × import click",
                        f"import click {ms(t['click'])} (python -c pass {ms(t['pass'])}); × {ratio:.2f}; "
                        f"CPU {ms(cpu[name])} vs {ms(cpu['click'])}", ratio <= 1.3))
    return rows


def store_commands(workdir: Path, sizes: Sizes) -> list[Row]:
    env = _env(workdir)
    full, empty = workdir / "cli-10k.json", workdir / "cli-empty.json"
    jobs = datagen.history_store(full, sizes.store)
    datagen.empty_store(empty)
    job_id = jobs[len(jobs) // 2].id
    _check_outputs(env, full, job_id, sizes.store)
    cmds = [
        Cmd("floor", (PY, "-c", IMPORT_FLOOR), env),
        Cmd("schedule", _schedule(full), env),
        Cmd("schedule-empty", _schedule(empty), env),
        Cmd("status", _status(full, job_id), env),
        Cmd("list", _list(full), env),
    ]
    t, cpu = _medians(interleaved(cmds, sizes.runs))
    floor = t["floor"]
    n = f"{sizes.store:,}"
    ratio = t["schedule"] / t["schedule-empty"]
    extra = []
    if not sizes.quick:  # no target; seconds per run at 10k, so only in the full run, 3 runs
        table, _ = _medians(interleaved([Cmd("table", _list(full)[:-1], env)], 3, warmup=0))
        extra.append(Row(f"`jobman list` (rich table), {n} jobs", ms(table["table"]), "none (context)",
                         f"× {table['table'] / t['list']:.0f} the time of `list --json`", None))
    return [
        Row(f"`jobman schedule`, {n} jobs stored", ms(t["schedule"]), "≤ 150 ms and ≤ 1.5 × empty store",
            f"empty store {ms(t['schedule-empty'])}; × {ratio:.2f} (import floor {ms(floor)}); "
            f"CPU {ms(cpu['schedule'])} vs {ms(cpu['schedule-empty'])}",
            t["schedule"] <= 0.150 and ratio <= 1.5),
        Row(f"`jobman status ID`, {n} jobs", ms(t["status"]), "≤ 120 ms",
            f"import floor {ms(floor)}; × {t['status'] / floor:.2f}; CPU {ms(cpu['status'])} vs {ms(cpu['floor'])}",
            t["status"] <= 0.120),
        Row(f"`jobman list --json`, {n} jobs", ms(t["list"]), "≤ 400 ms",
            f"import floor {ms(floor)}; × {t['list'] / floor:.2f}; CPU {ms(cpu['list'])} vs {ms(cpu['floor'])}",
            t["list"] <= 0.400),
    ] + extra


def scaling(workdir: Path, sizes: Sizes) -> list[Row]:
    env = _env(workdir)
    cmds: list[Cmd] = []
    for size in sizes.scaling:
        db = workdir / f"scale-{size}.json"
        jobs = datagen.history_store(db, size)
        job_id = jobs[len(jobs) // 2].id
        _check_outputs(env, db, job_id, size)
        cmds += [Cmd(f"schedule@{size}", _schedule(db), env), Cmd(f"status@{size}", _status(db, job_id), env),
                 Cmd(f"list@{size}", _list(db), env)]
    t, _ = _medians(interleaved(cmds, sizes.scaling_runs))
    rows = []
    smallest = sizes.scaling[0]
    for what, label in (("schedule", "`schedule`"), ("status", "`status ID`"), ("list", "`list --json`")):
        measured = ", ".join(f"{_k(s)}: {ms(t[f'{what}@{s}'])}" for s in sizes.scaling)
        growth = ", ".join(f"{_k(s)}/{_k(smallest)} × {t[f'{what}@{s}'] / t[f'{what}@{smallest}']:.1f}"
                           for s in sizes.scaling[1:])
        per_k = (t[f"{what}@{sizes.scaling[-1]}"] - t[f"{what}@{smallest}"]) / ((sizes.scaling[-1] - smallest) / 1000)
        rows.append(Row(f"store scaling: {label}", measured, "table (how cost grows)",
                        f"{growth}; +{per_k * 1000:.1f} ms per 1k jobs", None))
    return rows


def _medians(times: dict[str, list[Timing]]) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall time and median CPU time of each command."""
    return ({k: median([x.wall for x in v]) for k, v in times.items()},
            {k: median([x.cpu for x in v]) for k, v in times.items()})


def _k(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)
