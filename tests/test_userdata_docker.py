"""The user-data script against a REAL Docker engine (DESIGN.md section 6; issue 10).

Only ``shutdown``/``poweroff``, ``dnf`` and ``systemctl`` are stubbed (tests/stubtools.py). The
docker CLI is a real one, pointed with ``DOCKER_HOST`` at a private ``dockerd``
(tests/dockerengine.py); images are pulled for real from a registry on 127.0.0.1
(tests/registry.py) built from a static busybox, never from a public registry; curl is real and
reports to a real listener that records the callback bodies.

Where no engine can start these tests skip with the reason; ``JOBMAN_REQUIRE_DOCKER=1`` (set by
``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import datetime, timezone
from itertools import count

import pytest

from dockerengine import DOCKER_CLI_CANDIDATES, docker_engine  # noqa: F401  (docker_engine: a fixture)
from jobman_cli.launchers.userdata import callback_url_for, render_user_data
from jobman_cli.model import Job, JobStatus
from registry import Registry
from stubtools import CallbackRecorder, StubTools

pytestmark = pytest.mark.slow

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = "cb-0123456789abcdef0123456789abcdef"
#: Small retry delays: a test never waits for production back-offs.
FAST = {"JOBMAN_CALLBACK_ATTEMPTS": "2", "JOBMAN_CALLBACK_BACKOFF": "0", "JOBMAN_CURL_RETRIES": "0",
        "JOBMAN_DOCKER_WAIT": "1", "JOBMAN_PULL_ATTEMPTS": "5", "JOBMAN_PULL_BACKOFF": "0",
        "JOBMAN_STOP_GRACE": "2"}

HOSTILE_ARGS = [
    "", " ", "two  words", "it's", 'say "hi"', "$HOME", "${HOME}", "`id`", "$(id)", ";rm -rf / --no-preserve-root",
    "line1\nline2", "ends with newline\n", "\n", "✓ naïve 日本語 😀", "C:\\path\\n\\\\ end\\", "* ? [a-z]* ~",
    "100% %s %d %n", "-e", "--rm", "--privileged", "-", "--", "a=b=c", "\t\r", "@@IMAGE@@", "'\"'\"'", "&& id ||",
    "|id", ">/tmp/x", "\\", "$'\\x41'", "!", "#comment",
]

NASTY_ENV = {
    "SPACES": "  two  words  ", "SINGLE": "it's", "DOUBLE": 'say "hi"', "DOLLAR_HOME": "$HOME", "BRACED": "${HOME}",
    "BACKTICKS": "`id`", "SUBSHELL": "$(id)", "SEMICOLON": ";rm -rf / --no-preserve-root", "NEWLINES": "line1\nline2",
    "TRAILING_NEWLINE": "ends with newline\n", "ONLY_NEWLINES": "\n\n", "UNICODE": "✓ naïve 日本語 😀",
    "BACKSLASHES": "C:\\path\\n\\\\ end\\", "GLOB": "* ? [a-z]* ~", "PERCENT": "100% %s %d %n", "EMPTY": "",
    "EQUALS": "a=b=c", "QUOTE_MIX": "'\"'\"'", "TAB_CR": "a\tb\rc", "PLACEHOLDER": "@@IMAGE@@",
    "LEADING_DASH": "--privileged", "IFS": ",", "UID": "12345", "DOCKER_HOST": "tcp://203.0.113.1:2375",
    "LD_PRELOAD": "/nonexistent.so",
}

# A script in the test image at a path chosen to be awkward: an entrypoint is one argument, byte-exact.
ODD_ENTRYPOINT = "-jobman argv $(id) 'q' `x` ü"
ARGV_SCRIPT = b"#!/bin/sh\nprintf 'ARGV-BEGIN\\0%s\\0' \"$0\"\nfor a; do printf '%s\\0' \"$a\"; done\nprintf 'ARGV-END\\0'\n"
PRINT_ARGV = 'printf "ARGV-BEGIN\\0"; for a; do printf "%s\\0" "$a"; done; printf "ARGV-END\\0"'
PRINT_ENV = "printf 'ENV-BEGIN\\0'; /bin/cat /proc/1/environ; printf 'ENV-END\\0'"

_ids = count(100)


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="session")
def registry(docker_engine):
    """One registry on 127.0.0.1 for the session, serving every test image (tag -> behaviour)."""
    rootfs = docker_engine.rootfs()
    with Registry(repository="jobman/test") as reg:
        reg.add("exit0", rootfs, cmd=["sh", "-c", "echo hello from the container"])
        reg.add("exit3", rootfs, cmd=["sh", "-c", "echo failing on purpose; exit 3"])
        reg.add("exit124", rootfs, cmd=["sh", "-c", "exit 124"])
        reg.add("sleeper", rootfs, cmd=["sleep", "1000"])  # PID 1 without a handler: ignores SIGTERM
        reg.add("polite", rootfs, cmd=["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done"])
        reg.add("env", rootfs, cmd=["/bin/sh", "-c", PRINT_ENV])
        reg.add("argv", docker_engine.rootfs_with({f"/bin/{ODD_ENTRYPOINT}": (ARGV_SCRIPT, 0o755)}),
                cmd=["sh", "-c", "echo image CMD ran"])
        yield reg


def make_job(image: str, **changes) -> Job:
    fields = dict(id=next(_ids), title="real engine", date_time=NOW, docker_image=image, env_variables={},
                  status=JobStatus.LAUNCHING, created_at=NOW, timeout=60, attempts=1)
    fields.update(changes)
    return Job(**fields)


class Outcome:
    def __init__(self, job: Job, result, bodies: list, elapsed: float, engine) -> None:
        self.job, self.result, self.bodies, self.elapsed = job, result, bodies, elapsed
        self.stdout: bytes = result.stdout
        self.log = result.stdout.decode("utf-8", "replace")
        self.leftovers = [n for n in engine.containers() if n.startswith(f"jobman-{job.id}-")]

    @property
    def final(self) -> dict:
        return self.bodies[-1]


def run_job(tmp_path, engine, job: Job, *, cli: str | None = None, env: dict | None = None,
            hang_guard: float = 90) -> Outcome:
    """Render ``job``'s user-data and run it with bash: real docker CLI, real engine, real curl."""
    tools = StubTools(tmp_path, real_docker=cli or engine.cli)
    with CallbackRecorder() as server:
        script = render_user_data(job, callback_url=callback_url_for(server.url, job.id), callback_token=TOKEN)
        started = time.monotonic()
        result = tools.run_script(script, env={**FAST, **engine.env(), **(env or {})}, timeout=hang_guard)
        elapsed = time.monotonic() - started
    for request in server.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert tools.powered_off, "the script must power off on every path"
    assert [c.tool for c in tools.calls()][-1] == "shutdown"
    assert TOKEN not in result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
    return Outcome(job, result, [r.json() for r in server.requests], elapsed, engine)


def between(data: bytes, begin: bytes, end: bytes) -> list[bytes]:
    """The NUL-terminated fields a container printed between two markers."""
    start = data.index(begin + b"\0") + len(begin) + 1
    stop = data.index(end + b"\0", start)
    fields = data[start:stop].split(b"\0")
    assert fields[-1] == b""
    return fields[:-1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_param(path: str):
    label = "machine-cli" if path.startswith("/usr/local/") else "engine-cli"
    return pytest.param(path, id=label)


def require_cli(engine, path: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        # The engine's own CLI comes with docker.io; another one is this machine's extra, optional.
        if path == "/usr/bin/docker" and os.environ.get("JOBMAN_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{path} (Debian's docker CLI) is required but missing")
        pytest.skip(f"{path} is not installed here")
    if path != DOCKER_CLI_CANDIDATES[-1] and os.path.realpath(path) == os.path.realpath(DOCKER_CLI_CANDIDATES[-1]):
        pytest.skip(f"{path} is the same CLI as {DOCKER_CLI_CANDIDATES[-1]}")
    return path


# --------------------------------------------------------------------------- outcomes
def test_exit_0_is_finished_and_the_container_is_removed(tmp_path, docker_engine, registry):
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("exit0")))
    assert out.bodies == [{"status": "running"}, {"status": "finished", "exit-code": 0}]
    assert "hello from the container" in out.log
    assert out.result.returncode == 0
    assert out.leftovers == []


def test_exit_3_is_failed_exited_3(tmp_path, docker_engine, registry):
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("exit3")))
    assert out.bodies == [{"status": "running"}, {"status": "failed", "exit-code": 3, "reason-code": "exited"}]
    assert "failing on purpose" in out.log
    assert out.leftovers == []


def test_a_container_exiting_124_by_itself_is_exited_not_timed_out(tmp_path, docker_engine, registry):
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("exit124"), timeout=30))
    assert out.final == {"status": "failed", "exit-code": 124, "reason-code": "exited"}
    assert out.elapsed < 15
    assert out.leftovers == []


def test_timeout_stops_a_sigterm_ignoring_container_within_timeout_plus_grace(tmp_path, docker_engine, registry):
    """PID 1 ``sleep 1000`` ignores SIGTERM: the engine SIGKILLs it after the grace (2 s here)."""
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("sleeper"), timeout=5), hang_guard=60)
    assert out.bodies == [{"status": "running"}, {
        "status": "failed", "reason-code": "timed-out",
        "reason": "after 5s (the job's timeout); the container was stopped and removed"}]
    grace = int(FAST["JOBMAN_STOP_GRACE"])
    assert 5 + grace <= out.elapsed <= 5 + grace + 12, out.elapsed  # the full timeout, the grace, then SIGKILL
    # (measured 8.4 s; the slack is for ~8 docker CLI calls and reports on a loaded machine)
    assert "stopped: exit code 137" in out.log  # SIGKILLed by the engine
    assert out.result.returncode == 124
    assert out.leftovers == []  # `docker ps -a` shows nothing of it
    assert docker_engine.docker("ps", "-a", "-q", "--filter", f"name=jobman-{out.job.id}-").stdout == b""


def test_timeout_sends_sigterm_first(tmp_path, docker_engine, registry):
    """A container that exits on SIGTERM is gone long before a (60 s) grace would have run out."""
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("polite"), timeout=3),
                  env={"JOBMAN_STOP_GRACE": "60"}, hang_guard=120)
    assert out.final["reason-code"] == "timed-out"
    assert "stopped: exit code 42" in out.log, out.log  # its own TERM handler ran
    assert 3 <= out.elapsed < 3 + 30, out.elapsed  # well before the grace (60 s) would have run out (measured 4.3 s)
    assert out.leftovers == []


# --------------------------------------------------------------------------- pulls
def test_a_refused_pull_is_retried_then_image_pull_failed_with_dockers_message(tmp_path, docker_engine):
    image = f"127.0.0.1:{closed_port()}/jobman/x:1"
    out = run_job(tmp_path, docker_engine, make_job(image),
                  env={"JOBMAN_PULL_ATTEMPTS": "3", "JOBMAN_PULL_BACKOFF": "1"})
    assert out.bodies[0] == {"status": "running"}
    final = out.final
    assert set(final) == {"status", "reason-code", "reason"}
    assert final["status"] == "failed" and final["reason-code"] == "image-pull-failed"
    # docker's own words (with its double quotes, escaped into the JSON body), and the count
    assert "connection refused" in final["reason"] and '"http' in final["reason"], final
    assert final["reason"].endswith("(attempt 3 of 3)")
    assert re.findall(r"docker pull failed: .*retrying in (\d+)s", out.log) == ["1", "2"]  # doubling back-off
    assert 3 <= out.elapsed < 20
    assert "running the container" not in out.log


def test_a_registry_that_fails_twice_then_serves_runs_the_job(tmp_path, docker_engine):
    with Registry(docker_engine.rootfs(), repository="jobman/flaky", cmd=["sh", "-c", "echo pulled at last"],
                  fail_first=2, fail_status=503) as flaky:
        out = run_job(tmp_path, docker_engine, make_job(flaky.image), env={"JOBMAN_PULL_BACKOFF": "1"})
        failed = flaky.served(status=503)
    assert len(failed) == 2
    assert out.log.count("docker pull failed: ") == 2 and "503 Service Unavailable" in out.log
    assert out.bodies == [{"status": "running"}, {"status": "finished", "exit-code": 0}]
    assert "pulled at last" in out.log
    docker_engine.remove_image(flaky.image)


def test_a_registry_that_never_answers_is_bounded_by_the_jobs_timeout(tmp_path, docker_engine):
    """A registry that accepts connections and then says nothing: the pull ends at the job's
    timeout (the timeout covers pull and run) and is reported image-pull-failed."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(50)  # never accept()ed: the kernel completes the handshake, nobody answers
    try:
        image = f"127.0.0.1:{silent.getsockname()[1]}/jobman/x:1"
        out = run_job(tmp_path, docker_engine, make_job(image, timeout=4), hang_guard=60)
    finally:
        silent.close()
    assert out.final == {"status": "failed", "reason-code": "image-pull-failed",
                         "reason": "docker pull did not finish within the job's timeout (4s) (attempt 1 of 5)"}
    assert 4 <= out.elapsed < 4 + 15, out.elapsed  # bounded by the timeout, not hanging (measured 5.2 s)


def test_an_unknown_tag_is_not_retried(tmp_path, docker_engine, registry):
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("no-such-tag")))
    assert out.final["reason-code"] == "image-pull-failed"
    assert "manifest unknown" in out.final["reason"] and out.final["reason"].endswith("(attempt 1 of 5)")
    assert "retrying" not in out.log


def test_an_engine_that_never_answers_is_docker_unavailable(tmp_path, docker_engine, registry):
    """The real CLI against a socket nobody serves; `systemctl start docker` (stubbed) changes nothing."""
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("exit0")),
                  env={"DOCKER_HOST": f"unix://{tmp_path}/nobody.sock"})
    assert out.bodies == [{"status": "failed", "reason-code": "docker-unavailable",
                           "reason": "the docker daemon did not answer within 1s"}]
    assert out.result.returncode == 125


# --------------------------------------------------------------------------- byte-exact command, entrypoint, env
@pytest.mark.parametrize("cli", [cli_param(p) for p in DOCKER_CLI_CANDIDATES])
def test_a_hostile_command_arrives_byte_exact(tmp_path, docker_engine, registry, cli):
    cli = require_cli(docker_engine, cli)
    mark = tmp_path / "INJECTED"
    args = HOSTILE_ARGS + [f"$(touch {mark})", f"`touch {mark}`", f";touch {mark}", f"';touch {mark};'"]
    job = make_job(registry.ref("exit0"), command=("sh", "-c", PRINT_ARGV, "sh", *args))
    out = run_job(tmp_path, docker_engine, job, cli=cli)
    assert between(out.stdout, b"ARGV-BEGIN", b"ARGV-END") == [a.encode() for a in args]
    assert out.final == {"status": "finished", "exit-code": 0}
    assert "hello from the container" not in out.log  # the command replaced the image's CMD
    assert not mark.exists()


@pytest.mark.parametrize("cli", [cli_param(p) for p in DOCKER_CLI_CANDIDATES])
def test_an_odd_entrypoint_and_command_arrive_byte_exact(tmp_path, docker_engine, registry, cli):
    cli = require_cli(docker_engine, cli)
    job = make_job(registry.ref("argv"), entrypoint=ODD_ENTRYPOINT, command=tuple(HOSTILE_ARGS))
    out = run_job(tmp_path, docker_engine, job, cli=cli)
    argv0, *rest = between(out.stdout, b"ARGV-BEGIN", b"ARGV-END")
    assert argv0 == f"/bin/{ODD_ENTRYPOINT}".encode()
    assert rest == [a.encode() for a in HOSTILE_ARGS]
    assert out.final == {"status": "finished", "exit-code": 0}


def test_an_entrypoint_without_a_command_runs_it_bare(tmp_path, docker_engine, registry):
    """An entrypoint replaces the image's CMD too (Docker's rule): the script gets no arguments."""
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("argv"), entrypoint=ODD_ENTRYPOINT))
    assert between(out.stdout, b"ARGV-BEGIN", b"ARGV-END") == [f"/bin/{ODD_ENTRYPOINT}".encode()]


@pytest.mark.parametrize("cli", [cli_param(p) for p in DOCKER_CLI_CANDIDATES])
def test_env_values_arrive_byte_exact(tmp_path, docker_engine, registry, cli):
    cli = require_cli(docker_engine, cli)
    env = dict(NASTY_ENV, PATH="/opt/app/bin:/usr/bin")  # the job's PATH wins over the image's
    out = run_job(tmp_path, docker_engine, make_job(registry.ref("env"), env_variables=env), cli=cli)
    got = dict(item.split(b"=", 1) for item in between(out.stdout, b"ENV-BEGIN", b"ENV-END"))
    assert {k: got.get(k.encode()) for k in env} == {k: v.encode() for k, v in env.items()}
    assert out.final == {"status": "finished", "exit-code": 0}
    # DOCKER_HOST and LD_PRELOAD went to the container only: the CLI still reached the engine.
    assert out.leftovers == []


# --------------------------------------------------------------------------- the fixture's own guard
def test_the_engine_cannot_reach_a_non_loopback_registry(docker_engine):
    """Defence in depth: the private engine sends anything but 127.0.0.0/8 to a refusing proxy."""
    result = docker_engine.docker("pull", "registry.invalid/jobman/x:1", check=False)
    assert result.returncode != 0
    assert b"proxyconnect" in result.stderr and b"127.0.0.1:1" in result.stderr


@pytest.mark.parametrize("require, outcome", [("", "1 skipped"), ("1", "1 error")])
def test_no_engine_skips_with_the_reason_unless_required(tmp_path, require, outcome):
    """Without dockerd the fixture skips and says why; JOBMAN_REQUIRE_DOCKER=1 (CI) makes it an error."""
    import subprocess
    import sys

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    (tmp_path / "test_probe.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {tests_dir!r})\n"
        "import dockerengine\n"
        "dockerengine.DOCKERD_CANDIDATES = ('/nonexistent/dockerd',)\n"
        "from dockerengine import docker_engine\n"
        "def test_probe(docker_engine):\n"
        "    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "JOBMAN_REQUIRE_DOCKER"}
    env.update(PATH=str(tmp_path), JOBMAN_REQUIRE_DOCKER=require)  # no dockerd on PATH either
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_probe.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in result.stdout, result.stdout
    assert "dockerd is not installed (apt-get install docker.io)" in result.stdout
    if require:
        assert "a real Docker engine is required (JOBMAN_REQUIRE_DOCKER=1)" in result.stdout


def test_a_script_killed_mid_run_removes_the_container_and_powers_off(tmp_path, docker_engine, registry):
    """SIGTERM to the script (as at shutdown) while the container runs: handled at once, not at the
    job's timeout; the container is removed before power-off."""
    job = make_job(registry.ref("sleeper"), timeout=600)
    tools = StubTools(tmp_path, real_docker=docker_engine.cli)
    with CallbackRecorder() as server:
        script = render_user_data(job, callback_url=callback_url_for(server.url, job.id), callback_token=TOKEN)
        proc = tools.popen_script(script, env={**FAST, **docker_engine.env()})
        try:
            deadline = time.monotonic() + 60
            while f"jobman-{job.id}-1" not in docker_engine.containers():
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            time.sleep(0.5)
            killed = time.monotonic()
            proc.send_signal(15)
            proc.communicate(timeout=60)
            took = time.monotonic() - killed
        finally:
            if proc.poll() is None:
                proc.kill()
        assert [r.json() for r in server.requests] == [{"status": "running"}]
    assert proc.returncode == 143
    assert took < 15, took
    assert [n for n in docker_engine.containers() if n.startswith(f"jobman-{job.id}-")] == []
    assert tools.powered_off
