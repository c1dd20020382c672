"""Remote use at 10,000 jobs: ``status ID`` and ``list --json`` over the REST API, against local use.

A real ``jobman daemon`` (moto_server for AWS) serves the 10,000-job history store on 127.0.0.1;
the same commands run as whole processes, once with ``--db`` (local) and once with
``JOBMAN_SERVER`` and ``JOBMAN_API_TOKEN`` (remote), round robin (``harness.interleaved``) so both
see the same load. Each is first run once with its output compared: the remote one must print the
same bytes (``list --json``) and the same job (``status``). The figure is the ratio remote/local;
the target is informational (what a round trip through the daemon costs on one machine: the
client skips the store parse, the daemon pays it from its cache, plus one HTTP request).
"""

from __future__ import annotations

from pathlib import Path

import datagen
from harness import BenchError, Cmd, Daemon, aws_env, clean_env, interleaved, jobman_command, median, ms, run_checked
from report import Row, Sizes

TOKEN = "bench-remote-token-" + "0123456789abcdef" * 2


def remote(workdir: Path, sizes: Sizes, moto) -> list[Row]:
    db = workdir / "remote-10k.json"
    jobs = datagen.history_store(db, sizes.store)
    job_id = jobs[len(jobs) // 2].id
    daemon = Daemon(aws_env(moto.url, JOBMAN_HOME=str(workdir / "home"), JOBMAN_API_TOKEN=TOKEN), db,
                    "--reconcile-interval", "3600", log=workdir / "daemon-remote.log")
    try:
        daemon.wait_ready()
        local_env = clean_env(JOBMAN_HOME=str(workdir / "home"), JOBMAN_TZ="UTC")
        remote_env = clean_env(JOBMAN_HOME=str(workdir / "client"), JOBMAN_TZ="UTC", JOBMAN_SERVER=daemon.url,
                               JOBMAN_API_TOKEN=TOKEN)
        local_status = (*jobman_command(), "--db", str(db), "status", str(job_id), "--json")
        local_list = (*jobman_command(), "--db", str(db), "list", "--json")
        remote_status = (*jobman_command(), "status", str(job_id), "--json")
        remote_list = (*jobman_command(), "list", "--json")
        for local, remote_cmd in ((local_status, remote_status), (local_list, remote_list)):
            here, there = run_checked(local, local_env).stdout, run_checked(remote_cmd, remote_env).stdout
            if here != there:
                raise BenchError(f"remote {' '.join(remote_cmd[-2:])} printed other bytes than local use "
                                 f"({len(there)} vs {len(here)})")
        cmds = [Cmd("status", local_status, local_env), Cmd("remote-status", remote_status, remote_env),
                Cmd("list", local_list, local_env), Cmd("remote-list", remote_list, remote_env)]
        times = interleaved(cmds, sizes.runs)
    finally:
        daemon.stop()
    t = {k: median([x.wall for x in v]) for k, v in times.items()}
    cpu = {k: median([x.cpu for x in v]) for k, v in times.items()}
    n = f"{sizes.store:,}"
    rows = []
    for name, label in (("status", "`status ID --json`"), ("list", "`list --json`")):
        ratio = t[f"remote-{name}"] / t[name]
        rows.append(Row(f"remote {label} (--server, local daemon), {n} jobs", ms(t[f"remote-{name}"]),
                        "none (ratio to local use)",
                        f"local {ms(t[name])}; × {ratio:.2f}; client CPU {ms(cpu[f'remote-{name}'])} vs {ms(cpu[name])}",
                        None))
    return rows
