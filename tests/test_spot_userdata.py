"""The spot watcher of the REAL user-data script (jobman_cli/launchers/userdata_spot.py), run with
bash, stub tools (tests/stubtools.py), a real callback listener and a stub IMDSv2 on 127.0.0.1
(tests/imdsstub.py) that starts serving ``spot/instance-action`` while the container runs.

Ordering is by events (the stub ``docker run`` recorded, the report received), never by sleeps;
the time limits are hang guards only.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from imdsstub import ImdsStub
from stubtools import StubTools
from test_userdata import FAST, bodies, make_job, render, server, url_of  # noqa: F401  (fixture)

SPOT = {**FAST, "JOBMAN_SPOT_POLL": "1"}
INTERRUPTED = {"status": "failed", "reason-code": "interrupted",
               "reason": "EC2 sent a spot interruption notice; the container was stopped and removed"}


@pytest.fixture
def imds():
    with ImdsStub() as stub:
        yield stub


def wait_for(condition, proc, what: str, limit: float = 30.0) -> None:
    """Wait for an event of the script (hang guard ``limit``; the script must still be running)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, f"the script ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {limit}s"
        time.sleep(0.05)


def run_spot_instance(script: str, root, *, interrupt: bool) -> StubTools:
    """Run a spot job's user-data ``script`` as its instance would: bash, stub tools under ``root``
    and a stub IMDSv2 of its own. With ``interrupt``, EC2's notice comes while the container runs
    (its ``docker run`` recorded and a poll of the watcher's seen since: events, not sleeps); the
    container would otherwise run two minutes. Returns the tools, to look at what ran."""
    tools = StubTools(root, docker_sleep=120 if interrupt else 1)
    with ImdsStub() as imds:
        proc = tools.popen_script(script, env={**SPOT, "JOBMAN_IMDS_URL": imds.url})
        try:
            if interrupt:
                wait_for(tools.docker_runs, proc, "docker run")
                polls = imds.polls()
                wait_for(lambda: imds.polls() > polls, proc, "a poll while the container runs")
                imds.arm()
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return tools


def test_a_notice_mid_run_stops_the_container_and_reports_interrupted(tmp_path, server, imds):
    tools = StubTools(tmp_path, docker_sleep=120)  # the "container" would run two minutes
    script = render(make_job(capacity="spot"), callback_url=url_of(server))
    proc = tools.popen_script(script, env={**SPOT, "JOBMAN_IMDS_URL": imds.url})
    try:
        wait_for(tools.docker_runs, proc, "docker run")
        polls = imds.polls()
        wait_for(lambda: imds.polls() > polls, proc, "a poll while the container runs")
        imds.arm()  # EC2's notice: from now on
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert bodies(server) == [{"status": "running"}, INTERRUPTED]
    (run,) = tools.docker_runs()
    assert not run.completed  # stopped, not ended by itself
    docker = [c.args for c in tools.calls("docker")]
    assert ["stop", "-t", "1", "jobman-7-0"] in docker  # stopped cleanly (SIGTERM, then the grace)
    assert docker[-1] == ["rm", "-f", "jobman-7-0"]
    assert tools.powered_off
    assert proc.returncode == 143
    assert imds.notices_served == 1
    assert "spot interruption notice" in out.decode()
    # IMDSv2 only: every metadata read carried the session token.
    assert all(ok for method, _, ok in imds.requests if method == "GET")
    assert ("PUT", "/latest/api/token", True) in imds.requests


def test_a_notice_before_the_container_starts_runs_nothing(tmp_path, server, imds):
    imds.arm()
    tools = StubTools(tmp_path, pull_failures=1)  # the pull's retry gives the watcher time to poll
    script = render(make_job(capacity="spot-then-on-demand"), callback_url=url_of(server))
    tools.configure(pull_error="Error response from daemon: stub transient failure")
    result = tools.run_script(script, env={**SPOT, "JOBMAN_PULL_BACKOFF": "3", "JOBMAN_IMDS_URL": imds.url},
                              timeout=45)
    assert tools.docker_runs() == []
    assert bodies(server) == [{"status": "running"}, {
        "status": "failed", "reason-code": "interrupted",
        "reason": "EC2 sent a spot interruption notice before the container started"}]
    assert result.returncode == 143 and tools.powered_off


def test_without_a_notice_the_job_ends_normally_and_the_watcher_does_not_outlive_it(tmp_path, server, imds):
    tools = StubTools(tmp_path, docker_sleep=2)
    script = render(make_job(capacity="spot"), callback_url=url_of(server))
    result = tools.run_script(script, env={**SPOT, "JOBMAN_IMDS_URL": imds.url}, timeout=45)
    assert bodies(server) == [{"status": "running"}, {"status": "finished", "exit-code": 0}]
    assert result.returncode == 0 and imds.polls() >= 1
    seen = imds.polls()
    time.sleep(2.5)  # more than two poll intervals: a surviving watcher would poll again
    assert imds.polls() == seen


def test_an_on_demand_job_has_no_watcher():
    script = render(make_job(), callback_url="http://127.0.0.1:1/jobMan/v1.1/jobs/7/callback")
    assert "instance-action" not in script and "USR1" not in script
    spot = render(make_job(capacity="spot"), callback_url="http://127.0.0.1:1/jobMan/v1.1/jobs/7/callback")
    assert "spot/instance-action" in spot and "@@" not in spot


# A stub `aws` (the log flush's CLI): answers at once, except the put-log-events that carries
# "running the container" (the flush just before `docker run`, after the check for a notice),
# which writes its ancestors' pids to `aws-blocked` and waits for the file `aws-release`.
_SLOW_AWS = r'''
import os, sys, time
root = __ROOT__
args = sys.argv[1:]
if "put-log-events" in args:
    batch = args[args.index("--log-events") + 1][len("file://"):]
    if "running the container" in open(batch).read():
        chain, pid = [], os.getppid()
        while pid > 1:
            chain.append(pid)
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        with open(os.path.join(root, "aws-blocked.tmp"), "w") as f:
            f.write(" ".join(map(str, chain)))
        os.rename(os.path.join(root, "aws-blocked.tmp"), os.path.join(root, "aws-blocked"))
        while not os.path.exists(os.path.join(root, "aws-release")):
            time.sleep(0.02)
print("{}")
'''


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[1]) == pid:
                found.append((int(entry), comm))
    return found


def test_a_notice_during_the_flush_just_before_the_run_still_stops_the_container(tmp_path, server, imds):
    """Review finding 5: the notice lands while the script waits for the foreground `aws` of the
    log flush after the check before the run. bash runs the trap only when `aws` returns, the
    container starts anyway; the watcher's next signal must still end its wait, stop it cleanly
    and report interrupted once (it used to signal once and quit, and the container ran to its end)."""
    from jobman_cli.joblogs import LogTarget

    tools = StubTools(tmp_path, docker_sleep=30)
    aws = tools.bin / "aws"
    aws.write_text(f"#!{sys.executable}\n" + _SLOW_AWS.replace("__ROOT__", repr(str(tmp_path))))
    aws.chmod(0o755)
    script = render(make_job(capacity="spot"), callback_url=url_of(server), logs=LogTarget("jobs", "us-east-1"))
    proc = tools.popen_script(script, env={**SPOT, "JOBMAN_IMDS_URL": imds.url})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode() for line in proc.stdout), daemon=True)
    reader.start()
    blocked = tmp_path / "aws-blocked"
    try:
        wait_for(blocked.exists, proc, "the flush before the run")
        assert tools.docker_runs() == []
        ancestors = {int(p) for p in blocked.read_text().split()}
        (watcher,) = [pid for pid, comm in _children(proc.pid) if comm == "bash" and pid not in ancestors]
        imds.arm()  # EC2's notice, while the script is inside `aws`

        def signalled() -> bool:  # the watcher printed the notice and has sent its signal
            if not any("spot interruption notice" in line for line in list(lines)):
                return False
            kids = _children(watcher)
            return not os.path.exists(f"/proc/{watcher}") or any(comm == "sleep" for _, comm in kids)

        wait_for(signalled, proc, "the watcher's signal")
        (tmp_path / "aws-release").touch()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert bodies(server) == [{"status": "running"}, INTERRUPTED]  # once
    (run,) = tools.docker_runs()  # it started (the notice came after the check) ...
    assert not run.completed  # ... and was stopped, not left to run to its end
    assert ["stop", "-t", "1", "jobman-7-0"] in [c.args for c in tools.calls("docker")]
    assert proc.returncode == 143 and tools.powered_off
    assert imds.notices_served == 1  # after the notice the watcher stops asking IMDS
