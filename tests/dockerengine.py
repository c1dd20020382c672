"""A private, real Docker engine for tests, and test images built without any registry.

:class:`DockerEngine` starts Debian's ``dockerd`` (package ``docker.io``) on its own socket, data
root and exec root under a short temporary directory, with no bridge, no iptables, no masquerading
and no userland proxy, and a config file of its own (so nothing under ``/etc/docker`` is read or
written); NOTES.md ("A real Docker engine on these machines") has the measured facts. Clients reach
it with ``DOCKER_HOST`` (:meth:`DockerEngine.env`); both this machine's docker CLI and the engine's
own work (:data:`DockerEngine.clis`).

The engine must never reach a public registry. Test images are made with ``docker import`` of a
tarball holding a static busybox (Debian's ``busybox-static``: ``/bin/busybox`` and one symlink per
applet), and the engine's environment carries ``HTTP(S)_PROXY=http://127.0.0.1:1`` (with loopback
excluded): a pull from anything but a registry on 127.0.0.0/8 fails at once with "proxyconnect ...
connection refused" instead of going out, whatever a test asks for.

Use the session fixture (import it into the test module)::

    from dockerengine import docker_engine   # noqa: F401  (a pytest fixture)

    def test_x(docker_engine):
        image = docker_engine.image("exit3", cmd=["sh", "-c", "exit 3"])
        docker_engine.docker("run", "--rm", image)

Where no engine can start (not root, ``dockerd``/busybox missing, the engine does not answer) the
fixture skips with the reason; with ``JOBMAN_REQUIRE_DOCKER=1`` (set by ``.ci/run``) it fails
instead, so CI never silently skips the real-engine tests.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pytest

#: Set to 1 to turn "no engine here" into a test failure (CI).
REQUIRE_ENV = "JOBMAN_REQUIRE_DOCKER"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DOCKER_CLI_CANDIDATES = ("/usr/local/bin/docker", "/usr/bin/docker")
DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
START_TIMEOUT = 30.0
#: Image tags made here live under this repository name (never a name a registry could resolve to
#: something real: an image is only ever looked for locally).
IMAGE_REPO = "jobman-test"


class EngineUnavailable(RuntimeError):
    """No private engine can run on this machine (the message says why)."""


def _first_executable(candidates: Iterable[str], name: str) -> str | None:
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    return found


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a ``PT_INTERP`` program header (needs no loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # ELF64 only (the machines are x86_64/arm64)
            return False
        little = head[5] == 1
        order = "<" if little else ">"
        phoff, = struct.unpack_from(order + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack_from(order + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def busybox_rootfs_tar(busybox: str, extra_files: Mapping[str, tuple[bytes, int]] | None = None) -> bytes:
    """A root filesystem tarball: ``/bin/busybox``, a symlink per applet, ``/tmp``, ``/etc/passwd``
    and ``extra_files`` (absolute path -> (content, mode))."""
    applets = subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        with open(busybox, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            info = tarfile.TarInfo("bin/" + applet)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644)
        made = {"bin", "etc", "tmp", "proc", "sys", "dev"}
        for path, (data, mode) in sorted((extra_files or {}).items()):
            rel = path.lstrip("/")
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    add_dir(d)
                    made.add(d)
            add_file(rel, data, mode)
    return buf.getvalue()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies, even by SIGKILL, so an
    interrupted session leaves no engine running (Linux ``PR_SET_PDEATHSIG``; best effort)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


class DockerEngine:
    """One private ``dockerd`` (see the module docstring). :meth:`start` raises
    :class:`EngineUnavailable` with the reason when it cannot run here."""

    def __init__(self, extra_env: Mapping[str, str] | None = None) -> None:
        #: More variables for dockerd itself, e.g. the AWS credentials its ``awslogs`` driver uses.
        self.extra_env = dict(extra_env or {})
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.cli = _first_executable(DOCKER_CLI_CANDIDATES, "docker") or ""
        #: Every distinct docker CLI on this machine (the machine's own and Debian's), by real path.
        self.clis: list[str] = []
        self.busybox = ""
        self._rootfs: bytes | None = None
        self._images: dict[tuple, str] = {}

    # ------------------------------------------------------------------ life cycle
    def start(self) -> "DockerEngine":
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd needs root and these tests are not running as root")
        dockerd = _first_executable(DOCKERD_CANDIDATES, "dockerd")
        if dockerd is None:
            raise EngineUnavailable("dockerd is not installed (apt-get install docker.io)")
        if not self.cli:
            raise EngineUnavailable("no docker CLI is installed (apt-get install docker.io)")
        seen = set()
        for path in DOCKER_CLI_CANDIDATES + tuple(p for p in [shutil.which("docker")] if p):
            if os.path.isfile(path) and os.access(path, os.X_OK) and os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                self.clis.append(path)
        busybox = _first_executable(BUSYBOX_CANDIDATES, "busybox")
        if busybox is None or not is_static_elf(busybox):
            raise EngineUnavailable("no static busybox to build test images (apt-get install busybox-static)")
        self.busybox = busybox
        # A short path: containerd puts unix sockets under the exec root (108-byte limit).
        self.dir = Path(tempfile.mkdtemp(prefix="jmd", dir="/tmp"))
        config = self.dir / "d.json"
        config.write_text(json.dumps({"deprecated-key-path": str(self.dir / "key.json")}))
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            # Defence in depth: anything but a loopback registry goes to a proxy that refuses.
            "HTTP_PROXY": "http://127.0.0.1:1", "HTTPS_PROXY": "http://127.0.0.1:1",
            "http_proxy": "http://127.0.0.1:1", "https_proxy": "http://127.0.0.1:1",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            **self.extra_env,
        }
        log = open(self.dir / "dockerd.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [dockerd, "--host", f"unix://{self.socket}", "--data-root", str(self.dir / "root"),
                 "--exec-root", str(self.dir / "x"), "--pidfile", str(self.dir / "pid"),
                 "--bridge=none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false",
                 "--config-file", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise EngineUnavailable(f"dockerd exited with {self.proc.returncode} at start: {tail}")
            if self.docker("info", check=False, timeout=10).returncode == 0:
                return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise EngineUnavailable(f"dockerd did not answer within {START_TIMEOUT:.0f}s: {tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Remove every container, stop the engine (SIGTERM, then SIGKILL), delete its directory."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *[i.decode() for i in ids], check=False, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.dir is not None:
            # containerd's leftovers: mounts under the data root must go before the files do.
            subprocess.run(["umount", "-R", "-l", str(self.dir / "root")], capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.dir / "dockerd.log").read_text(errors="replace")  # type: ignore[operator]
        except (OSError, TypeError):
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    # ------------------------------------------------------------------ clients
    @property
    def socket(self) -> Path:
        assert self.dir is not None
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables that point a docker CLI at this engine (and keep the user's config out)."""
        assert self.dir is not None
        env = {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.dir / "cli-config")}
        env.update(extra or {})
        return env

    def docker(self, *args: str, cli: str | None = None, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.dir), **self.env()}
        result = subprocess.run([cli or self.cli, *args], env=env, capture_output=True, timeout=timeout,
                                input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}: {result.stderr.decode(errors='replace')}")
        return result

    # ------------------------------------------------------------------ images and containers
    def rootfs(self) -> bytes:
        """The plain busybox root filesystem tarball (cached)."""
        if self._rootfs is None:
            self._rootfs = busybox_rootfs_tar(self.busybox)
        return self._rootfs

    def rootfs_with(self, files: Mapping[str, tuple[bytes, int]]) -> bytes:
        """The busybox root filesystem plus ``files`` (absolute path -> (content, mode))."""
        return busybox_rootfs_tar(self.busybox, files)

    def image(self, name: str, *, cmd: Sequence[str] | None = None, entrypoint: Sequence[str] | None = None,
              files: Mapping[str, tuple[bytes, int]] | None = None, env: Sequence[str] = ("PATH=/bin",)) -> str:
        """Import a busybox image ``jobman-test/<name>:1`` (once per session per definition)."""
        key = (name, tuple(cmd or ()), tuple(entrypoint or ()), tuple(sorted((files or {}).items())), tuple(env))
        if key in self._images:
            return self._images[key]
        tag = f"{IMAGE_REPO}/{name}:1"
        tarball = self.rootfs() if not files else busybox_rootfs_tar(self.busybox, files)
        changes: list[str] = []
        for item in env:
            changes += ["--change", f"ENV {item}"]
        if cmd is not None:
            changes += ["--change", "CMD " + json.dumps(list(cmd))]
        if entrypoint is not None:
            changes += ["--change", "ENTRYPOINT " + json.dumps(list(entrypoint))]
        self.docker("import", *changes, "-", tag, input=tarball)
        self._images[key] = tag
        return tag

    def containers(self) -> list[str]:
        """Names of every container the engine knows (running or not)."""
        out = self.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode()
        return [line for line in out.splitlines() if line]

    def image_exists(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, check=False).returncode == 0

    def remove_image(self, ref: str) -> None:
        self.docker("rmi", "-f", ref, check=False)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"a real Docker engine is required ({REQUIRE_ENV}=1) but cannot run: {reason}", pytrace=False)
    pytest.skip(f"no private Docker engine here: {reason}")


_ENGINE_FAILURE: list[str] = []


@pytest.fixture(scope="session")
def docker_engine():
    """One private engine for the whole session (started on first use, removed at the end)."""
    if _ENGINE_FAILURE:
        _unavailable(_ENGINE_FAILURE[0])
    engine = DockerEngine()
    try:
        engine.start()
    except EngineUnavailable as exc:
        _ENGINE_FAILURE.append(str(exc))
        _unavailable(str(exc))
    try:
        yield engine
    finally:
        engine.stop()
