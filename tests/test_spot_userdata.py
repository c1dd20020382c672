"""The spot watcher of the REAL user-data script (jobman_cli/launchers/userdata_spot.py), run with
bash, stub tools (tests/stubtools.py), a real callback listener and a stub IMDSv2 on 127.0.0.1
(tests/imdsstub.py) that starts serving ``spot/instance-action`` while the container runs.

Ordering is by events (the stub ``docker run`` recorded, the report received), never by sleeps;
the time limits are hang guards only.
"""

from __future__ import annotations

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
