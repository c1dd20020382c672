"""Process plumbing for the benchmark runner: environments, timed commands, moto_server, daemons.

Everything here runs real processes on 127.0.0.1 only. Nothing is imported from ``tests/`` (those
modules import pytest); the few helpers the runner needs are small enough to own.

Why timings are taken the way they are:

* A command is timed from ``Popen`` to its exit with ``perf_counter`` in the parent, stdout to
  ``/dev/null`` (the cost of the command, not of a pipe reader competing for one of two cores).
  What it prints is checked once, separately, so a fast failure cannot pass as a fast command.
* Groups of commands are run round-robin (A B C, A B C, ...) after one discarded warm-up round,
  so drift of a shared machine hits every member of a group alike, and medians are compared.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0


class BenchError(RuntimeError):
    """Something the benchmark depends on did not work (a crash of the runner, exit 2)."""


# --------------------------------------------------------------------------- small statistics
def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): p99 of 100 values is the 99th smallest."""
    ordered = sorted(values)
    if not ordered:
        raise BenchError("percentile of no values")
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# --------------------------------------------------------------------------- environments
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The runner's environment without anything AWS or jobman from the developer's shell.

    Bytecode: an installed jobman runs from ``.pyc`` files (pip compiles them at install). The
    editable checkout under test has them only if Python may write them, and a shell with
    ``PYTHONDONTWRITEBYTECODE=1`` makes every run recompile every jobman module (about 45 ms on
    the development machine), which is not the product's cost. So that variable is dropped: the
    discarded warm-up round writes ``jobman_cli/**/__pycache__`` (git-ignored), as pip would have.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOBMAN_", "MOTO_"))}
    for name in ("PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONDEVMODE",
                 "PYTHONTRACEMALLOC"):
        env.pop(name, None)
    env.update(extra)
    return env


def aws_env(endpoint: str, **extra: str) -> dict[str, str]:
    """Fake credentials and every botocore client (EC2 and SSM alike) pointed at ``endpoint``."""
    return clean_env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )


def jobman_command() -> list[str]:
    """The installed ``jobman`` script beside this Python, as an operator runs it."""
    script = BIN / "jobman"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jobman_cli"]


# --------------------------------------------------------------------------- timed commands
def run_checked(argv: Sequence[str], env: dict[str, str], *, timeout: float = 120.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds from start to exit, as a user waits for it
    cpu: float  # user + system CPU seconds of the process: what it would cost on an idle machine


def time_once(argv: Sequence[str], env: dict[str, str], *, timeout: float = 120.0) -> Timing:
    """Wall and CPU time of one run, stdout discarded; a non-zero exit is an error, not a timing."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errors)
        killer = threading.Timer(timeout, proc.kill)  # a hung command ends the run, not the machine
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # blocking: no polling noise in the timing
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise BenchError(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                             f"{errors.read().decode(errors='replace').strip()[-500:]}")
    return Timing(elapsed, usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True)
class Cmd:
    """One member of an interleaved group: a name, its argv and environment."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]


def interleaved(cmds: Sequence[Cmd], runs: int, *, warmup: int = 1,
                between: Callable[[], None] | None = None) -> dict[str, list[Timing]]:
    """Run every command ``runs`` times, round-robin, after ``warmup`` discarded rounds.

    The order inside a round rotates, so no command always runs right after the same neighbour.
    """
    times: dict[str, list[Timing]] = {c.name: [] for c in cmds}
    for round_no in range(warmup + runs):
        shift = round_no % len(cmds)
        for cmd in list(cmds[shift:]) + list(cmds[:shift]):
            elapsed = time_once(cmd.argv, cmd.env)
            if round_no >= warmup:
                times[cmd.name].append(elapsed)
            if between is not None:
                between()
    return times


# --------------------------------------------------------------------------- moto_server
def _moto_command() -> list[str]:
    beside = BIN / "moto_server"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("moto_server")
    return [found] if found else [sys.executable, "-m", "moto.server"]


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT``, log to a file (a full pipe would stall it)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto_server.log"
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(_moto_command() + ["-H", "127.0.0.1", "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                         env=clean_env())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"moto_server exited {self.proc.returncode}: {self.log.read_text(errors='replace')[-800:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2) as answer:
                    answer.read()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise BenchError(f"moto_server did not answer on {self.url}") from None
                time.sleep(0.05)
        self._ec2 = None
        self.warm()

    def client(self, service: str = "ec2"):
        import boto3  # only the daemon figures need it; imported once, here

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def warm(self) -> None:
        """Load moto's lazy EC2 and SSM backends (the first call costs about a second)."""
        if self._ec2 is None:
            self._ec2 = self.client("ec2")
            self._ssm = self.client("ssm")
        self._ec2.describe_instances()
        self._ssm.get_parameter(Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        self.warm()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- the daemon
class Daemon:
    """``jobman daemon`` with stderr going to a file, which a thread follows line by line.

    A file, not a pipe: a pipe read by this process would let the runner's own load (50 client
    threads in the callbacks figure) stall the daemon's log writes, and that would be measured as
    the daemon's slowness. Log lines carry the daemon's own millisecond timestamps.
    """

    def __init__(self, env: dict[str, str], store: Path, *args: str, log: Path) -> None:
        self.port = free_port()
        command = jobman_command() + ["--db", str(store), "daemon", "--listen", f"127.0.0.1:{self.port}",
                                      "--public-url", f"http://127.0.0.1:{self.port}", *args]
        self.log_path = log
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=sink)
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._follow, name="daemon-log", daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as handle:
            partial = ""
            while True:
                chunk = handle.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith("\n"):
                        with self._cond:
                            self.lines.append((time.time(), partial.rstrip("\n")))
                            self._cond.notify_all()
                        partial = ""
                    continue
                if self.proc.poll() is not None:  # exited and everything it wrote has been read
                    rest = handle.read()
                    with self._cond:
                        for line in (partial + rest).splitlines():
                            self.lines.append((time.time(), line))
                        self._cond.notify_all()
                    return
                time.sleep(0.02)

    def wait_for(self, predicate: Callable[[str], bool], count: int = 1, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for _, line in self.lines if predicate(line)) < count:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise BenchError(f"daemon exited {self.proc.returncode}:\n{self.text()[-1500:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"timed out waiting for the daemon:\n{self.text()[-1500:]}")
                self._cond.wait(min(left, 0.2))

    def wait_ready(self) -> None:
        """Until the daemon logs that it is ready (its first pass done). If no such line comes
        (the wording changed), its API port accepting connections plus a few seconds will do."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the daemon did not start ({self.proc.poll()}):\n{self.text()[-1500:]}")
            time.sleep(0.05)
        try:
            self.wait_for(lambda line: "ready" in line, timeout=5.0)
        except BenchError:
            if self.proc.poll() is not None:
                raise

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def matching(self, predicate: Callable[[str], bool]) -> list[str]:
        with self._cond:
            return [line for _, line in self.lines if predicate(line)]

    def text(self) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return code


# --------------------------------------------------------------------------- /proc readings
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")
