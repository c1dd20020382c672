#!/usr/bin/env python3
"""jobman's benchmark runner: ``python tests/benchmarks/run.py [--quick] [--no-fail-on-target] [--only NAME]``.

Builds its own data in a temporary directory, starts its own ``moto_server`` and ``jobman daemon``
processes on 127.0.0.1 (fake AWS credentials, ``AWS_ENDPOINT_URL``), and prints one table:
figure, measured, target, baseline/ratio, pass/fail. Every timing is a median of several runs (or
a percentile over many jobs) set against a floor or baseline measured in the same run, with the
runs of a figure and of its baseline interleaved. See BENCHMARKS.md for what each figure means.

Exit codes: 0 every target met (or ``--no-fail-on-target``), 1 a target missed, 2 the runner
itself failed (a process would not start, a command failed, a result was wrong).

``--quick`` (CI) uses smaller sizes and fewer runs: about 2-3 minutes on 2 cores. Its pass/fail
column is informational; BENCHMARKS.md records a full run (about 10 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cli_figures  # noqa: E402
import daemon_figures  # noqa: E402
import dashboard_figures  # noqa: E402
import housekeeping_figures  # noqa: E402
import log_figures  # noqa: E402
import notify_figures  # noqa: E402
import remote_figures  # noqa: E402
import schedule_figures  # noqa: E402
import throttle_figures  # noqa: E402
from harness import MotoServer  # noqa: E402
from report import Row, Sizes, render  # noqa: E402

CLI_FIGURES: dict[str, Callable[[Path, Sizes], list[Row]]] = {
    "startup": cli_figures.startup,
    "store": cli_figures.store_commands,
    "scaling": cli_figures.scaling,
    "housekeeping": housekeeping_figures.housekeeping,
}
DAEMON_FIGURES: dict[str, Callable[[Path, Sizes, MotoServer], list[Row]]] = {
    "latency": daemon_figures.due_latency,
    "burst": daemon_figures.burst,
    "callbacks": daemon_figures.callbacks,
    "idle": daemon_figures.idle,
    "logs": log_figures.logs,
    "throttle": throttle_figures.throttle,
    "notify": notify_figures.notify,
    "remote": remote_figures.remote,
    "dashboard": dashboard_figures.dashboard,
    "schedules": schedule_figures.schedules,
}
NAMES = [*CLI_FIGURES, *DAEMON_FIGURES]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def code_under_test() -> str:
    """Which jobman was measured: its folder, and its commit when that folder is a git checkout."""
    import subprocess

    import jobman_cli

    folder = Path(jobman_cli.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return str(folder)
    if head.returncode != 0:
        return f"{folder} (not a git checkout)"
    changes = " + uncommitted changes" if dirty.stdout.strip() else ""
    return f"{folder} at commit {head.stdout.strip()}{changes}"


def load() -> str:
    """The 1-minute load average: other work on the machine shows in every number here."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs (CI)")
    parser.add_argument("--no-fail-on-target", action="store_true", help="exit 0 even if a target is missed")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these figures (repeatable or comma-separated): {', '.join(NAMES)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, stores)")
    args = parser.parse_args(argv)
    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    args.names = only or NAMES
    return args


def run(args: argparse.Namespace, workdir: Path, rows: list[Row]) -> None:
    """Append each figure's rows to ``rows`` as it finishes (so a crash still shows the others)."""
    sizes = Sizes.make(args.quick)
    for name in args.names:
        if name in CLI_FIGURES:
            rows += _timed(name, lambda: CLI_FIGURES[name](workdir / name, sizes))
    daemon_names = [n for n in args.names if n in DAEMON_FIGURES]
    if daemon_names:
        moto = MotoServer(workdir)
        try:
            for name in daemon_names:
                rows += _timed(name, lambda: DAEMON_FIGURES[name](workdir / name, sizes, moto))
        finally:
            moto.stop()


def _timed(name: str, figure: Callable[[], list[Row]]) -> list[Row]:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    rows = figure()
    print(f"[bench] {name} done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_before = load()
    workdir = Path(tempfile.mkdtemp(prefix="jobman-bench-"))
    for name in NAMES:
        (workdir / name).mkdir()
    rows: list[Row] = []
    try:
        run(args, workdir, rows)
    except Exception:  # the runner itself failed: exit 2, with everything needed to see why
        if rows:
            print(render(rows))
        traceback.print_exc()
        print(f"[bench] runner failed; its files are in {workdir}", file=sys.stderr)
        return 2
    print(f"jobman benchmarks ({'quick' if args.quick else 'full'} run), {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {machine()}; load average {load_before} at the start, {load()} at the end")
    print(f"code: {code_under_test()}")
    print()
    print(render(rows))
    missed = [r for r in rows if r.ok is False]
    print()
    print(f"{len(rows) - len(missed)} of {len(rows)} rows without a missed target; "
          f"{len(missed)} missed; {time.monotonic() - started:.0f} s")
    if args.keep:
        print(f"files kept in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if missed and not args.no_fail_on_target:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
