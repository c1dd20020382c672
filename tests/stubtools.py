"""Stub system tools and a callback recorder, for running the REAL user-data script in a test.

The user-data script (``jobman_cli/launchers/userdata.py``) finds every tool through ``PATH``.
:class:`StubTools` builds a directory of stand-ins for the tools that must never really run on a
test machine (``docker``, ``dnf``, ``systemctl``, ``shutdown``, ``poweroff``) plus a directory of
links to the real harmless ones (``timeout``, ``sleep``, ``curl``), and hands you an environment
whose ``PATH`` is exactly those two directories (``JOBMAN_SYSTEM_PATH`` empty, so the script
appends nothing and a real ``docker`` installed on the machine cannot leak in).

Every stub call is recorded (argv as exact bytes). ``docker run`` also records the container's
environment as the real Docker CLI would build it: ``-e KEY=VALUE`` taken from argv, ``-e KEY``
looked up in the stub's own environment, each as exact bytes. Behaviour is set per test::

    from stubtools import CallbackRecorder, StubTools   # tests/ is on sys.path under pytest

    def test_something(tmp_path):
        tools = StubTools(tmp_path, docker_exit=3)            # or docker_installed=False, ...
        with CallbackRecorder() as server:                    # real HTTP on 127.0.0.1
            url = server.url + "/jobMan/v1.1/jobs/7/callback"
            script = render_user_data(job, callback_url=url, callback_token="tok")
            result = tools.run_script(script)                 # bash + the real script
        assert tools.powered_off
        (run,) = tools.docker_runs()
        assert run.env["KEY"] == b"exact bytes"
        assert [r.json() for r in server.requests] == [{"status": "running"}, ...]

Knobs (constructor arguments, or :meth:`StubTools.configure` between runs): ``docker_installed``
(absent until ``dnf install docker`` succeeds), ``docker_running`` (``docker info``/``run`` fail
until ``systemctl start``/``enable --now docker``), ``docker_exit``, ``docker_sleep`` (seconds the
"container" runs; a ``timeout`` kill shows as :attr:`DockerRun.completed` being false),
``pull_failures`` (that many ``docker pull`` calls fail with ``pull_error`` on stderr before one
succeeds; ``-1``: all fail), ``dnf_works``, ``systemctl_works``, ``systemctl_starts_daemon``.
A named stub container (``docker run --name N``) answers ``docker inspect -f '{{.State.Running}}
{{.State.ExitCode}}' N`` with ``true 0`` while it runs (or after ``timeout`` killed the stub CLI,
which is the "container" too) and ``false CODE`` once it exited; ``docker stop N`` kills it and
leaves exit code 137, ``docker rm -f N`` kills and forgets it.

``real_docker=PATH`` leaves ``docker`` unstubbed and links that real CLI instead (point it at an
engine with ``DOCKER_HOST`` in the script's environment; see ``tests/dockerengine.py``).
The stubs are Python scripts whose shebang is this interpreter's absolute path, so they need
nothing from ``PATH`` themselves.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping

STUBBED = ("docker", "dnf", "systemctl", "shutdown", "poweroff")
REAL = ("timeout", "sleep", "curl")

_STUB_SOURCE = r'''
import base64, json, os, sys, time

ROOT = __ROOT__
NAME = os.path.basename(sys.argv[0])
ARGV = [os.fsencode(a) for a in sys.argv[1:]]
CONFIG = json.loads(open(os.path.join(ROOT, "config.json")).read())
DAEMON_UP = os.path.join(ROOT, "state", "docker-daemon-up")
VALUE_FLAGS = {b"-e", b"--env", b"--name", b"--env-file", b"-v", b"--volume", b"-p", b"--publish",
               b"--entrypoint", b"-u", b"--user", b"-w", b"--workdir", b"--network", b"--platform",
               b"--pull", b"-l", b"--label", b"-m", b"--memory", b"--cpus"}

def b64(data):
    return None if data is None else base64.b64encode(data).decode()

def record(**extra):
    line = json.dumps({"tool": NAME, "argv": [b64(a) for a in ARGV], "pid": os.getpid(), **extra})
    fd = os.open(os.path.join(ROOT, "calls.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)

def docker_run(args):
    env, i, image, command = [], 0, None, []
    while i < len(args):
        arg = args[i]
        if not arg.startswith(b"-") or arg == b"-":
            image, command = arg, args[i + 1:]
            break
        name, eq, inline = arg.partition(b"=")
        if name in VALUE_FLAGS and not (eq and name.startswith(b"--")):
            value = args[i + 1] if i + 1 < len(args) else b""
            i += 2
        else:
            value = inline if eq else None
            i += 1
        if name in (b"-e", b"--env") and value is not None:
            key, has, val = value.partition(b"=")
            env.append([b64(key), b64(val if has else os.environb.get(key))])
    return env, image, command

def container_file(name):
    return os.path.join(ROOT, "state", "container-" + name.decode(errors="replace").replace("/", "_"))

if NAME == "docker":
    sub = ARGV[0] if ARGV else b""
    up = os.path.exists(DAEMON_UP)
    if sub == b"run":
        env, image, command = docker_run(ARGV[1:])
        name = next((a.split(b"=", 1)[1] for a in ARGV if a.startswith(b"--name=")), None)
        if name is None and b"--name" in ARGV:
            name = ARGV[ARGV.index(b"--name") + 1]
        record(event="run", daemon_up=up, env=env, image=b64(image), command=[b64(c) for c in command],
               name=b64(name))
        if not up:
            sys.stderr.write("docker (stub): Cannot connect to the Docker daemon\n")
            sys.exit(125)
        if name is not None:
            with open(container_file(name), "w") as f:
                f.write(json.dumps({"pid": os.getpid(), "exit": None}))
        print("stub container: started", flush=True)
        time.sleep(CONFIG["docker_sleep"])
        record(event="completed")
        if name is not None:
            with open(container_file(name), "w") as f:
                f.write(json.dumps({"pid": os.getpid(), "exit": CONFIG["docker_exit"]}))
        print("stub container: done", flush=True)
        sys.exit(CONFIG["docker_exit"])
    record(event=sub.decode(errors="replace"), daemon_up=up)
    if sub == b"info" and not up:
        sys.stderr.write("docker (stub): Cannot connect to the Docker daemon\n")
        sys.exit(1)
    if sub == b"pull":
        pulls = sum(1 for line in open(os.path.join(ROOT, "calls.jsonl")) if '"event": "pull"' in line)
        failing = CONFIG["pull_failures"]
        print("stub: pulling " + ARGV[-1].decode(errors="replace"), flush=True)
        if failing < 0 or pulls <= failing:
            sys.stderr.write(CONFIG["pull_error"] + "\n")
            sys.exit(1)
    if sub in (b"stop", b"rm", b"inspect") and len(ARGV) > 1:
        path = container_file(ARGV[-1])
        try:
            state = json.loads(open(path).read())
        except OSError:
            if sub == b"inspect":
                sys.stderr.write("Error: No such object: " + ARGV[-1].decode(errors="replace") + "\n")
                sys.exit(1)
            sys.exit(0)
        if sub == b"inspect":
            running, code = state["exit"] is None and not state.get("stopped"), state["exit"] or 0
            print(("%s %d" % (str(running).lower(), code)) if b"Running" in ARGV[-2] else "%d" % code)
        elif state["exit"] is None and not state.get("stopped"):
            try:
                os.kill(state["pid"], 9)  # the "container" is the stub's `docker run` process
            except OSError:
                pass
            if sub == b"stop":
                with open(path, "w") as f:
                    f.write(json.dumps(dict(state, exit=137, stopped=True)))
            else:
                os.remove(path)
        elif sub == b"rm":
            os.remove(path)
    sys.exit(0)

record()
if NAME == "dnf":
    if CONFIG["dnf_works"] and b"install" in ARGV and b"docker" in ARGV:
        docker = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "docker")
        with open(sys.argv[0], "rb") as src, open(docker, "wb") as dst:
            dst.write(src.read())
        os.chmod(docker, 0o755)
        sys.exit(0)
    sys.stderr.write("dnf (stub): no match for argument: docker\n")
    sys.exit(1)
if NAME == "systemctl":
    starts = b"start" in ARGV or (b"enable" in ARGV and b"--now" in ARGV)
    if CONFIG["systemctl_works"] and b"docker" in ARGV and starts:
        if CONFIG["systemctl_starts_daemon"]:
            open(DAEMON_UP, "w").close()
        sys.exit(0)
    sys.stderr.write("systemctl (stub): failed\n")
    sys.exit(1)
sys.exit(0)  # shutdown, poweroff: recorded, nothing else
'''


def _decode(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


@dataclass(frozen=True)
class Call:
    """One invocation of a stub tool."""

    tool: str
    argv: tuple[bytes, ...]
    record: Mapping[str, Any] = field(repr=False)

    @property
    def args(self) -> list[str]:
        """argv decoded as UTF-8 (with replacement), for readable assertions."""
        return [a.decode("utf-8", "replace") for a in self.argv]


@dataclass(frozen=True)
class DockerRun:
    """One ``docker run``: the container's environment (exact bytes, in argv order), image, command."""

    argv: tuple[bytes, ...]
    env_items: tuple[tuple[bytes, bytes | None], ...]
    image: bytes | None
    command: tuple[bytes, ...]
    daemon_up: bool
    completed: bool  # the "container" ran to its end (false when `timeout` killed it)
    pid: int
    name: bytes | None = None

    @property
    def env(self) -> dict[str, bytes | None]:
        return {k.decode(): v for k, v in self.env_items}


class StubTools:
    """A stub-tool directory under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, *, docker_installed: bool = True, docker_running: bool = True,
                 docker_exit: int = 0, docker_sleep: float = 0.0, dnf_works: bool = True,
                 systemctl_works: bool = True, systemctl_starts_daemon: bool = True,
                 pull_failures: int = 0, pull_error: str = "Error response from daemon: stub pull failure",
                 real_tools: Iterable[str] = REAL, real_docker: str | None = None) -> None:
        self.root = Path(root)
        self.bin = self.root / "stub-bin"
        self.system = self.root / "system-bin"
        for d in (self.bin, self.system, self.root / "state"):
            d.mkdir(parents=True, exist_ok=True)
        self._config: dict[str, Any] = {}
        self.configure(docker_exit=docker_exit, docker_sleep=docker_sleep, dnf_works=dnf_works,
                       systemctl_works=systemctl_works, systemctl_starts_daemon=systemctl_starts_daemon,
                       pull_failures=pull_failures, pull_error=pull_error)
        source = f"#!{sys.executable}\n" + _STUB_SOURCE.replace("__ROOT__", repr(str(self.root)))
        for name in STUBBED:
            if name == "docker" and (not docker_installed or real_docker is not None):
                continue
            path = self.bin / name
            path.write_text(source)
            path.chmod(0o755)
        self._template = source
        if docker_running:
            (self.root / "state" / "docker-daemon-up").touch()
        for name in real_tools:
            real = shutil.which(name)
            if real is None:
                raise RuntimeError(f"the real {name!r} is needed on this machine to run the script")
            link = self.system / name
            if not link.exists():
                link.symlink_to(real)
        if real_docker is not None:
            (self.system / "docker").symlink_to(real_docker)

    # ------------------------------------------------------------------ set-up
    def configure(self, **changes: Any) -> None:
        self._config.update(changes)
        (self.root / "config.json").write_text(json.dumps(self._config))

    @property
    def path(self) -> str:
        return f"{self.bin}{os.pathsep}{self.system}"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment like cloud-init's: only PATH (stubs first), HOME and a locale."""
        env = {"PATH": self.path, "JOBMAN_SYSTEM_PATH": "", "HOME": str(self.root), "LC_ALL": "C.UTF-8"}
        env.update(extra or {})
        return env

    def run_script(self, script: str, *, env: Mapping[str, str] | None = None, timeout: float = 60,
                   name: str = "user-data.sh") -> subprocess.CompletedProcess[bytes]:
        """Write ``script`` under ``root`` and run it with bash in :meth:`env` (plus ``env``).

        ``timeout`` is a hang guard only (``subprocess.TimeoutExpired`` fails the test).
        """
        path = self.start_script(script, name=name)
        return subprocess.run([_bash(), str(path)], env=self.env(env), cwd=self.root,
                              capture_output=True, timeout=timeout)

    def start_script(self, script: str, *, name: str = "user-data.sh") -> Path:
        path = self.root / name
        path.write_bytes(script.encode("utf-8"))
        path.chmod(0o700)
        return path

    def popen_script(self, script: str, *, env: Mapping[str, str] | None = None,
                     name: str = "user-data.sh") -> subprocess.Popen[bytes]:
        path = self.start_script(script, name=name)
        return subprocess.Popen([_bash(), str(path)], env=self.env(env), cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # ------------------------------------------------------------------ what happened
    def records(self) -> list[dict[str, Any]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def calls(self, tool: str | None = None) -> list[Call]:
        """Stub invocations in order (``docker`` run completions are not separate calls)."""
        out = []
        for rec in self.records():
            if rec.get("event") == "completed":
                continue
            if tool is None or rec["tool"] == tool:
                out.append(Call(rec["tool"], tuple(_decode(a) for a in rec["argv"]), rec))
        return out

    def docker_runs(self) -> list[DockerRun]:
        recs = self.records()
        completed = {r["pid"] for r in recs if r["tool"] == "docker" and r.get("event") == "completed"}
        return [
            DockerRun(
                argv=tuple(_decode(a) for a in r["argv"]),
                env_items=tuple((_decode(k), _decode(v)) for k, v in r["env"]),
                image=_decode(r["image"]),
                command=tuple(_decode(c) for c in r["command"]),
                daemon_up=r["daemon_up"],
                completed=r["pid"] in completed,
                pid=r["pid"],
                name=_decode(r.get("name")),
            )
            for r in recs
            if r["tool"] == "docker" and r.get("event") == "run"
        ]

    @property
    def powered_off(self) -> bool:
        return any(c.tool in ("shutdown", "poweroff") for c in self.calls())


def _bash() -> str:
    bash = shutil.which("bash")
    if bash is None:
        raise RuntimeError("bash is needed to run the user-data script")
    return bash


# ---------------------------------------------------------------------- callback recorder
@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class CallbackRecorder:
    """A real HTTP server on 127.0.0.1 (ephemeral port) that records every request.

    ``statuses`` are answered in order, one per request, then 200 for every later one. Use as a
    context manager; :attr:`url` is ``http://127.0.0.1:PORT``.
    """

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.requests: list[Request] = []
        self._statuses = list(statuses)
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder._lock:
                    recorder.requests.append(Request(self.command, self.path, dict(self.headers.items()), body))
                    status = recorder._statuses.pop(0) if recorder._statuses else 200
                payload = json.dumps({"ok": status < 400}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "CallbackRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
