"""The user-data script, rendered for real jobs and run for real with bash.

Stub tools (tests/stubtools.py) stand in for docker, dnf, systemctl and shutdown/poweroff; curl,
timeout and sleep are the real ones, and callbacks go to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest

from jobman_cli.errors import InvalidInput
from jobman_cli.launchers.userdata import USER_DATA_LIMIT, callback_url_for, render_user_data
from jobman_cli.model import Job, JobStatus
from stubtools import CallbackRecorder, StubTools

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = "cb-9f86d081884c7d659a2feaa0c55ad015"
FAST = {"JOBMAN_CALLBACK_ATTEMPTS": "3", "JOBMAN_CALLBACK_BACKOFF": "0", "JOBMAN_CURL_RETRIES": "0",
        "JOBMAN_DOCKER_WAIT": "1", "JOBMAN_PULL_BACKOFF": "0", "JOBMAN_STOP_GRACE": "1"}
#: What every `docker run` of job 7 (attempt 0) starts with, before the job's own arguments.
RUN_PREFIX = (b"run", b"--name", b"jobman-7-0", b"--pull=never")

NASTY_ENV = {
    "SPACES": "  two  words  ",
    "SINGLE": "it's",
    "DOUBLE": 'say "hi"',
    "DOLLAR_HOME": "$HOME",
    "BRACED": "${HOME}",
    "BACKTICKS": "`id`",
    "SUBSHELL": "$(id)",
    "SEMICOLON": ";rm -rf / --no-preserve-root",
    "NEWLINES": "line1\nline2",
    "TRAILING_NEWLINE": "ends with newline\n",
    "ONLY_NEWLINES": "\n\n",
    "UNICODE": "✓ naïve 日本語 😀",
    "BACKSLASHES": "C:\\path\\n\\\\ end\\",
    "GLOB": "* ? [a-z]* ~",
    "PERCENT": "100% %s %d %n",
    "EMPTY": "",
    "EQUALS": "a=b=c",
    "QUOTE_MIX": "'\"'\"'",
    "TAB_CR": "a\tb\rc",
    "PLACEHOLDER": "@@IMAGE@@",
    "PATH": "/opt/app/bin:/usr/bin",
    "IFS": ",",
    "UID": "12345",
}


def render(job: Job, *, callback_token: str = TOKEN, **options) -> str:
    """:func:`render_user_data` with this module's callback token unless a test gives its own."""
    return render_user_data(job, callback_token=callback_token, **options)


def make_job(**changes) -> Job:
    fields = dict(id=7, title="nightly report", date_time=NOW, docker_image="alpine:3.19",
                  env_variables={"GREETING": "hello"}, status=JobStatus.LAUNCHING, created_at=NOW,
                  timeout=60)
    fields.update(changes)
    return Job(**fields)


@pytest.fixture
def server():
    with CallbackRecorder() as srv:
        yield srv


def url_of(srv: CallbackRecorder, job_id: int = 7) -> str:
    return callback_url_for(srv.url, job_id)


def run(tools: StubTools, job: Job, url: str, *, env: dict | None = None, **render):
    script = render_user_data(job, callback_url=url, **{"callback_token": TOKEN, **render})
    return tools.run_script(script, env={**FAST, **(env or {})}, timeout=45)


def bodies(srv: CallbackRecorder) -> list:
    return [r.json() for r in srv.requests]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ environment, byte-exact
@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_env_values_reach_the_container_byte_exact(tmp_path, server, locale):
    tools = StubTools(tmp_path)
    mark = tmp_path / "INJECTED"
    env = dict(NASTY_ENV, MARKER=f"$(touch {mark})`touch {mark}`;touch {mark}")
    result = run(tools, make_job(env_variables=env), url_of(server), env={"LC_ALL": locale})

    assert result.returncode == 0, result.stderr
    (docker,) = tools.docker_runs()
    assert docker.env == {k: v.encode("utf-8") for k, v in sorted(env.items())}
    assert [k.decode() for k, _ in docker.env_items] == sorted(env)  # sorted: deterministic
    assert docker.image == b"alpine:3.19"
    assert docker.argv[:len(RUN_PREFIX)] == RUN_PREFIX
    assert not mark.exists()
    assert bodies(server) == [{"status": "running"}, {"status": "finished", "exit-code": 0}]


def test_no_environment_runs_plain_docker_run(tmp_path, server):
    tools = StubTools(tmp_path)
    result = run(tools, make_job(env_variables={}), url_of(server))
    assert result.returncode == 0, result.stderr
    (docker,) = tools.docker_runs()
    assert docker.argv == RUN_PREFIX + (b"alpine:3.19",)
    assert docker.command == ()


# ------------------------------------------------------------------ callbacks and exit codes
def test_success_reports_running_then_finished_with_the_bearer_token(tmp_path, server):
    tools = StubTools(tmp_path)
    result = run(tools, make_job(), url_of(server))

    assert result.returncode == 0
    assert [(r.method, r.path) for r in server.requests] == [("PUT", "/jobMan/v1.1/jobs/7/callback")] * 2
    for request in server.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"] == "application/json"
    assert bodies(server) == [{"status": "running"}, {"status": "finished", "exit-code": 0}]
    assert tools.powered_off
    # One line per step on the console (EC2 console log), the container's output included,
    # and never the token.
    out = result.stdout.decode()
    for step in ("starting job 7 (nightly report)", "reported running", "running the container",
                 "stub container: done", "exited with code 0", "reported finished", "powering off"):
        assert step in out
    assert TOKEN not in out + result.stderr.decode()


def test_calls_happen_in_order_and_power_off_is_last(tmp_path, server):
    tools = StubTools(tmp_path)
    run(tools, make_job(), url_of(server))
    sequence = [c.tool for c in tools.calls()]
    assert sequence[0] == "docker" and tools.calls()[0].args == ["info"]
    assert sequence[-1] == "shutdown" and tools.calls()[-1].args == ["-P", "now"]
    assert sequence.count("shutdown") == 1 and "poweroff" not in sequence  # poweroff is the fallback


@pytest.mark.parametrize("code", [1, 3, 124, 125, 137, 255])
def test_nonzero_exit_is_reported_as_failed_with_its_code(tmp_path, server, code):
    """124 and 137 included: a container that exits so by itself is `exited`, not a timeout."""
    tools = StubTools(tmp_path, docker_exit=code)
    result = run(tools, make_job(), url_of(server))
    assert bodies(server) == [{"status": "running"}, {"status": "failed", "exit-code": code, "reason-code": "exited"}]
    assert result.returncode == code
    assert [c.args[0] for c in tools.calls("docker")] == ["info", "pull", "run"] + (["inspect"] if code in (124, 137) else []) + ["rm"]
    assert tools.calls("docker")[-1].args == ["rm", "-f", "jobman-7-0"]  # not left behind (no --rm)
    assert tools.powered_off


def test_timeout_stops_and_removes_the_container_and_reports_timed_out(tmp_path, server):
    tools = StubTools(tmp_path, docker_sleep=30)
    # The 25 s hang guard is shorter than the stub's 30 s sleep: only the timeout can end it in time.
    script = render(make_job(timeout=1), callback_url=url_of(server))
    result = tools.run_script(script, env=FAST, timeout=25)

    (docker,) = tools.docker_runs()
    assert not docker.completed
    assert bodies(server) == [{"status": "running"}, {
        "status": "failed", "reason-code": "timed-out",
        "reason": "after 1s (the job's timeout); the container was stopped and removed"}]
    assert [c.args for c in tools.calls("docker")][-4:] == [
        ["inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", "jobman-7-0"],
        ["stop", "-t", "1", "jobman-7-0"], ["inspect", "-f", "{{.State.ExitCode}}", "jobman-7-0"], ["rm", "-f", "jobman-7-0"]]
    assert "the job's timeout (1s) has passed: stopping the container" in result.stdout.decode()
    assert "stopped: exit code 137" in result.stdout.decode()
    assert result.returncode == 124
    assert tools.powered_off


def test_power_off_falls_back_to_poweroff_when_shutdown_fails(tmp_path, server):
    tools = StubTools(tmp_path)
    (tools.bin / "shutdown").write_text("#!/bin/sh\nexit 1\n")
    run(tools, make_job(), url_of(server))
    assert [c.tool for c in tools.calls()][-1] == "poweroff"


def test_a_killed_script_still_powers_off(tmp_path, server):
    tools = StubTools(tmp_path, docker_sleep=2)
    script = render(make_job(), callback_url=url_of(server))
    proc = tools.popen_script(script, env=FAST)
    try:
        deadline = time.monotonic() + 20
        while not tools.docker_runs():  # wait until the container runs
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert tools.powered_off
    assert bodies(server) == [{"status": "running"}]  # it died before reporting a result
    # the container is removed on the way out (before power-off)
    assert [c.args for c in tools.calls()][-2:] == [["rm", "-f", "jobman-7-0"], ["-P", "now"]]


# ------------------------------------------------------------------ Docker installation
def test_docker_absent_is_installed_with_dnf_and_started(tmp_path, server):
    tools = StubTools(tmp_path, docker_installed=False, docker_running=False)
    run(tools, make_job(), url_of(server))

    assert [c.args for c in tools.calls("dnf")] == [["install", "-y", "docker"]]
    assert [c.args for c in tools.calls("systemctl")] == [["enable", "--now", "docker"]]
    (docker,) = tools.docker_runs()
    assert docker.daemon_up
    assert bodies(server) == [{"status": "running"}, {"status": "finished", "exit-code": 0}]
    assert tools.powered_off


def test_installed_but_stopped_docker_is_started_not_reinstalled(tmp_path, server):
    tools = StubTools(tmp_path, docker_running=False)
    run(tools, make_job(), url_of(server))
    assert tools.calls("dnf") == []
    assert [c.args for c in tools.calls("systemctl")] == [["enable", "--now", "docker"]]
    assert bodies(server)[-1] == {"status": "finished", "exit-code": 0}


def test_running_docker_is_used_as_is(tmp_path, server):
    tools = StubTools(tmp_path)
    run(tools, make_job(), url_of(server))
    assert tools.calls("dnf") == [] and tools.calls("systemctl") == []


@pytest.mark.parametrize("breakage, reason", [
    (dict(docker_installed=False, dnf_works=False), "dnf could not install docker"),
    (dict(docker_running=False, systemctl_works=False), "systemctl could not start docker"),
    (dict(docker_running=False, systemctl_starts_daemon=False),  # started, never answers
     "the docker daemon did not answer within 1s"),
])
def test_docker_that_cannot_be_installed_or_started_reports_docker_unavailable(tmp_path, server, breakage, reason):
    tools = StubTools(tmp_path, **breakage)
    result = run(tools, make_job(), url_of(server))
    assert bodies(server) == [{"status": "failed", "reason-code": "docker-unavailable", "reason": reason}]
    assert tools.docker_runs() == []
    assert [c for c in tools.calls("docker") if c.args[0] == "pull"] == []
    assert result.returncode == 125
    assert tools.powered_off


def test_docker_install_can_be_switched_off(tmp_path, server):
    tools = StubTools(tmp_path, docker_installed=False)
    run(tools, make_job(), url_of(server), docker_install=False)
    assert tools.calls("dnf") == []
    assert bodies(server) == [{"status": "failed", "reason-code": "docker-unavailable",
                               "reason": "docker not found, and this launcher does not install it"}]
    assert tools.powered_off


# ------------------------------------------------------------------ pulls
def pulls(tools: StubTools) -> list:
    return [c for c in tools.calls("docker") if c.args[0] == "pull"]


def test_the_image_is_pulled_before_it_runs(tmp_path, server):
    tools = StubTools(tmp_path)
    run(tools, make_job(), url_of(server))
    assert [c.args for c in tools.calls("docker")][:3] == [["info"], ["pull", "alpine:3.19"], tools.calls("docker")[2].args]
    assert tools.calls("docker")[2].args[0] == "run"


def test_a_failing_pull_is_retried_with_doubling_backoff_then_runs(tmp_path, server):
    tools = StubTools(tmp_path, pull_failures=2)
    result = run(tools, make_job(), url_of(server), env={"JOBMAN_PULL_BACKOFF": "1"})
    assert len(pulls(tools)) == 3 and len(tools.docker_runs()) == 1
    assert re.findall(r"docker pull failed: .* \(attempt (\d) of 5\); retrying in (\d+)s", result.stdout.decode()) == [
        ("1", "1"), ("2", "2")]
    assert bodies(server) == [{"status": "running"}, {"status": "finished", "exit-code": 0}]


def test_a_pull_that_keeps_failing_is_image_pull_failed_with_dockers_last_line(tmp_path, server):
    tools = StubTools(tmp_path, pull_failures=-1, pull_error="Error response from daemon: toomanyrequests: slow down")
    result = run(tools, make_job(), url_of(server), env={"JOBMAN_PULL_ATTEMPTS": "4"})
    assert len(pulls(tools)) == 4 and tools.docker_runs() == []
    assert bodies(server) == [{"status": "running"}, {
        "status": "failed", "reason-code": "image-pull-failed",
        "reason": "Error response from daemon: toomanyrequests: slow down (attempt 4 of 4)"}]
    assert result.returncode == 125 and tools.powered_off


@pytest.mark.parametrize("message", [
    "Error response from daemon: manifest for alpine:nope not found: manifest unknown: manifest unknown",
    "Error response from daemon: pull access denied for nope, repository does not exist or may require 'docker login'",
    "invalid reference format",
])
def test_a_pull_error_that_retrying_cannot_fix_is_not_retried(tmp_path, server, message):
    tools = StubTools(tmp_path, pull_failures=-1, pull_error=message)
    run(tools, make_job(), url_of(server))
    assert len(pulls(tools)) == 1
    assert bodies(server)[-1] == {"status": "failed", "reason-code": "image-pull-failed",
                                  "reason": f"{message} (attempt 1 of 5)"}


def test_pull_retries_stop_at_the_jobs_timeout(tmp_path, server):
    """The timeout covers pull and run: no retry starts whose back-off would end past it."""
    tools = StubTools(tmp_path, pull_failures=-1)
    started = time.monotonic()
    run(tools, make_job(timeout=4), url_of(server), env={"JOBMAN_PULL_BACKOFF": "2", "JOBMAN_PULL_ATTEMPTS": "9"})
    assert time.monotonic() - started < 10
    assert len(pulls(tools)) == 2  # 0 s, then 2 s; a third after 4 more seconds would pass the 4 s timeout
    assert bodies(server)[-1]["reason-code"] == "image-pull-failed"


def test_a_hostile_pull_message_is_reported_as_safe_json(tmp_path, server):
    mark = tmp_path / "INJECTED"
    message = f'Error: "quoted" back\\slash $(touch {mark}) `touch {mark}` tab\there ünïcode 😀 \x01\x7f end'
    tools = StubTools(tmp_path, pull_failures=-1, pull_error=message)
    run(tools, make_job(), url_of(server), env={"JOBMAN_PULL_ATTEMPTS": "1"})
    reason = bodies(server)[-1]["reason"]  # the body parsed as JSON
    assert reason == (f'Error: "quoted" back\\slash $(touch {mark}) `touch {mark}` tab?here ??n??code ???? ?? end'
                      " (attempt 1 of 1)")
    assert not mark.exists()


def test_a_long_pull_message_is_clipped(tmp_path, server):
    tools = StubTools(tmp_path, pull_failures=-1, pull_error="E" * 5000)
    run(tools, make_job(), url_of(server), env={"JOBMAN_PULL_ATTEMPTS": "1"})
    assert bodies(server)[-1]["reason"] == "E" * 400


# ------------------------------------------------------------------ command and entrypoint
HOSTILE_ARGS = ["", " two  words ", "it's", 'say "hi"', "$HOME", "`id`", "$(id)", ";id", "line1\nline2\n",
                "✓ 日本語 😀", "C:\\n\\", "* ?", "-e", "--rm", "--privileged", "-", "--", "@@IMAGE@@", "'\"'\"'"]


def test_command_and_entrypoint_reach_docker_byte_exact(tmp_path, server):
    mark = tmp_path / "INJECTED"
    command = ("sh", "-c", f"touch {mark}x") + tuple(HOSTILE_ARGS) + (f"$(touch {mark})", f"`touch {mark}`")
    tools = StubTools(tmp_path)
    run(tools, make_job(command=command, entrypoint=f"-x $(touch {mark}) 'q'"), url_of(server))
    (docker,) = tools.docker_runs()
    assert docker.command == tuple(a.encode() for a in command)
    assert docker.image == b"alpine:3.19"
    assert f"--entrypoint=-x $(touch {mark}) 'q'".encode() in docker.argv  # one argument, a value even with "-"
    assert not mark.exists()


def test_an_empty_entrypoint_is_passed_on_and_no_command_means_none(tmp_path, server):
    tools = StubTools(tmp_path)
    run(tools, make_job(env_variables={}, entrypoint=""), url_of(server))
    (docker,) = tools.docker_runs()
    assert docker.argv == RUN_PREFIX + (b"--entrypoint=", b"alpine:3.19")


def test_the_container_is_named_after_job_and_attempt(tmp_path, server):
    tools = StubTools(tmp_path)
    run(tools, make_job(id=12, attempts=3), callback_url_for(server.url, 12))
    (docker,) = tools.docker_runs()
    assert docker.name == b"jobman-12-3"


# ------------------------------------------------------------------ unreachable callback
def test_unreachable_callback_still_runs_the_job_and_powers_off(tmp_path):
    tools = StubTools(tmp_path)
    url = f"http://127.0.0.1:{closed_port()}/jobMan/v1.1/jobs/7/callback"
    result = run(tools, make_job(), url, env={"JOBMAN_CALLBACK_ATTEMPTS": "2"})

    assert len(tools.docker_runs()) == 1
    assert tools.powered_off
    out = result.stdout.decode()
    assert "could not report running after 1 attempt(s)" in out
    assert "could not report finished after 2 attempt(s)" in out
    assert TOKEN not in out + result.stderr.decode()


def test_failed_callbacks_are_retried_by_the_loop(tmp_path):
    tools = StubTools(tmp_path)
    with CallbackRecorder(statuses=[503, 503, 500]) as srv:
        run(tools, make_job(), url_of(srv))
    # running: one attempt (gives up, the job goes on); finished: 503, 500, then 200.
    assert bodies(srv) == [{"status": "running"}] + [{"status": "finished", "exit-code": 0}] * 3
    assert tools.powered_off


def test_curl_itself_retries_transient_errors(tmp_path):
    tools = StubTools(tmp_path)
    with CallbackRecorder(statuses=[503]) as srv:
        result = run(tools, make_job(), url_of(srv), env={"JOBMAN_CURL_RETRIES": "1"})
    assert bodies(srv) == [{"status": "running"}] * 2 + [{"status": "finished", "exit-code": 0}]
    assert "reported running" in result.stdout.decode()


# ------------------------------------------------------------------ injection through other fields
def _payloads(mark) -> list[str]:
    return [f"$(touch${{IFS}}{mark})", f"`touch${{IFS}}{mark}`", f";touch${{IFS}}{mark}",
            f"';touch${{IFS}}{mark};'", f'";touch${{IFS}}{mark};"', f"\\';touch${{IFS}}{mark}"]


def test_image_cannot_inject(tmp_path, server):
    mark = tmp_path / "INJECTED"
    for i, payload in enumerate(_payloads(mark)):
        tools = StubTools(tmp_path / str(i))
        image = "alpine" + payload
        run(tools, make_job(docker_image=image), url_of(server))
        (docker,) = tools.docker_runs()
        assert docker.image == image.encode()
        assert docker.argv[-1] == image.encode()
    assert not mark.exists()


def test_title_cannot_inject_or_break_the_log(tmp_path, server):
    mark = tmp_path / "INJECTED"
    for i, payload in enumerate(_payloads(mark) + [f"x\ntouch {mark}\n", f"x\r\n$(touch {mark})"]):
        tools = StubTools(tmp_path / str(i))
        result = run(tools, make_job(title=payload), url_of(server))
        assert result.returncode == 0
        line = next(ln for ln in result.stdout.decode().splitlines() if "starting job 7" in ln)
        shown = re.sub(r"[\x00-\x1f]", "?", payload)[:100]
        assert f"starting job 7 ({shown}" in line
    assert not mark.exists()


def test_token_cannot_inject_and_arrives_exactly(tmp_path, server):
    mark = tmp_path / "INJECTED"
    for i, payload in enumerate(_payloads(mark)):
        tools = StubTools(tmp_path / str(i))
        token = "tok" + payload
        result = run(tools, make_job(), url_of(server), callback_token=token)
        assert result.returncode == 0
        assert token not in result.stdout.decode() + result.stderr.decode()
    assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer tok{p}" for p in _payloads(mark)}
    assert not mark.exists()


def test_url_cannot_inject_and_is_not_globbed(tmp_path, server):
    mark = tmp_path / "INJECTED"
    for i, payload in enumerate(_payloads(mark)):
        tools = StubTools(tmp_path / str(i))
        url = url_of(server) + "?q=" + payload
        run(tools, make_job(), url)
    paths = [r.path for r in server.requests]
    assert len(paths) == 2 * len(_payloads(mark))
    assert all(p.startswith("/jobMan/v1.1/jobs/7/callback?q=") for p in paths)
    assert any("{IFS}" in p for p in paths)  # curl's {} globbing is off
    assert not mark.exists()


# ------------------------------------------------------------------ the renderer itself
def test_deterministic(server):
    job = make_job(env_variables=NASTY_ENV)
    shuffled = make_job(env_variables=dict(reversed(list(NASTY_ENV.items()))))
    url = url_of(server)
    first = render(job, callback_url=url)
    assert render(job, callback_url=url) == first
    assert render(shuffled, callback_url=url) == first
    assert render(make_job(env_variables=NASTY_ENV), callback_url=url, callback_token="other") != first


def test_a_typical_job_is_small():
    env = {"DATABASE_URL": "postgres://user:pw@db.internal:5432/app", "MODE": "nightly", "LOG_LEVEL": "info",
           "S3_BUCKET": "reports-prod", "REPORT_DATE": "2024-05-01"}
    script = render(make_job(env_variables=env), callback_url=callback_url_for("https://jobman.example.com", 7))
    assert len(script.encode()) < 7 * 1024  # the script is about 6.3 KiB: over 9 KiB stays for env and command


def test_size_limit_is_exact_and_names_the_environment():
    url = callback_url_for("http://127.0.0.1:8080", 7)
    base = len(render(make_job(env_variables={"K": ""}), callback_url=url).encode())
    fits = make_job(env_variables={"K": "x" * (USER_DATA_LIMIT - base)})
    assert len(render(fits, callback_url=url).encode()) == USER_DATA_LIMIT
    with pytest.raises(InvalidInput) as err:
        render(make_job(env_variables={"K": "x" * (USER_DATA_LIMIT - base + 1)}), callback_url=url)
    assert err.value.field == "env-variables"
    assert str(err.value) == (f"env-variables: the job's user-data would be {USER_DATA_LIMIT + 1} bytes; "
                              f"EC2 allows at most {USER_DATA_LIMIT} (shorten the environment)")
    # Quoting counts: 3000 single quotes grow to 15000 bytes in the script.
    with pytest.raises(InvalidInput, match="user-data would be"):
        render(make_job(env_variables={"K": "'" * 3000}), callback_url=url)


@pytest.mark.parametrize("changes, field", [
    (dict(env_variables={"BAD-KEY": "x"}), "env-variables"),
    (dict(env_variables={"1ABC": "x"}), "env-variables"),
    (dict(env_variables={"A B": "x"}), "env-variables"),
    (dict(env_variables={"$(id)": "x"}), "env-variables"),
    (dict(env_variables={"ÄPFEL": "x"}), "env-variables"),
    (dict(env_variables={"K": "nul\x00byte"}), "env-variables"),
    (dict(env_variables={"K": "lone \udc80 surrogate"}), "env-variables"),
    (dict(docker_image="--privileged"), "docker-image"),
    (dict(docker_image="-v/:/host"), "docker-image"),
    (dict(docker_image=""), "docker-image"),
    (dict(docker_image="alpine\nid"), "docker-image"),
    (dict(timeout=0), "timeout"),
    (dict(timeout=-5), "timeout"),
    (dict(command="echo hi"), "command"),
    (dict(command=["echo", 1]), "command"),
    (dict(command=["a\x00b"]), "command"),
    (dict(command=["lone \udc80"]), "command"),
    (dict(entrypoint=["sh"]), "entrypoint"),
    (dict(entrypoint="a\x00"), "entrypoint"),
    (dict(callback_token=""), "callback-token"),
    (dict(callback_token="two words"), "callback-token"),
    (dict(callback_token="line\nbreak"), "callback-token"),
])
def test_renderer_refuses_what_it_cannot_quote_safely(changes, field):
    token = changes.pop("callback_token", TOKEN)
    with pytest.raises(InvalidInput) as err:
        render(make_job(**changes), callback_url=callback_url_for("http://127.0.0.1:1", 7), callback_token=token)
    assert err.value.field == field


@pytest.mark.parametrize("url", ["ftp://host/x", "127.0.0.1:8080/x", "http://host/a b", "http://host/\n", "-K/etc/passwd"])
def test_renderer_refuses_odd_callback_urls(url):
    with pytest.raises(InvalidInput) as err:
        render(make_job(), callback_url=url)
    assert err.value.field == "callback-url"


def test_callback_url_for():
    assert callback_url_for("http://10.0.0.5:8080", 42) == "http://10.0.0.5:8080/jobMan/v1.1/jobs/42/callback"
    assert callback_url_for("https://jobman.example.com/prefix//", 1) == \
        "https://jobman.example.com/prefix/jobMan/v1.1/jobs/1/callback"
    with pytest.raises(InvalidInput) as err:
        callback_url_for("jobman.example.com", 1)
    assert err.value.field == "public-url"


def test_the_script_names_tools_only_through_path():
    script = render(make_job(), callback_url=callback_url_for("http://127.0.0.1:1", 7))
    body = script.split("\n", 1)[1]  # after the shebang
    for tool in ("docker", "dnf", "systemctl", "curl", "timeout", "shutdown", "poweroff", "sleep"):
        assert not re.search(rf"/{tool}\b", body), tool
    assert "set -e" not in script.replace("No `set -e`", "")
    assert bash_syntax_ok(script)


def test_stubs_first_on_path_beat_the_appended_system_path(tmp_path, server):
    """Without JOBMAN_SYSTEM_PATH the script appends the system dirs (where a real docker may
    live); stubs earlier on PATH must still be the ones that run."""
    tools = StubTools(tmp_path)
    script = render(make_job(), callback_url=url_of(server))
    env = tools.env(FAST)
    del env["JOBMAN_SYSTEM_PATH"]
    path = tools.start_script(script)
    probe = script.replace('log "starting job', 'printf "PATH=%s\\n" "$PATH"; log "starting job', 1)
    path.write_text(probe)
    result = subprocess.run([shutil.which("bash"), str(path)], env=env, capture_output=True, timeout=45)
    assert f"PATH={tools.path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in result.stdout.decode()
    assert len(tools.docker_runs()) == 1 and tools.powered_off


def bash_syntax_ok(script: str) -> bool:
    return subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True).returncode == 0


def test_rendered_script_is_valid_bash_for_nasty_input():
    job = make_job(env_variables=NASTY_ENV, title="t'\"$`\\\n", docker_image="alpine:3.19")
    assert bash_syntax_ok(render(job, callback_url=callback_url_for("http://127.0.0.1:1", 7)))
