"""A real ``moto_server`` process on 127.0.0.1, for tests that run real jobman processes against it.

Use it with ``pytest_plugins = ["tests.moto_server"]`` (from the repository root) or
``from moto_server import moto_server, moto_server_process  # noqa: F401`` in a test module.

* ``moto_server_process`` (session): starts ``moto_server -H 127.0.0.1 -p <free port>``, waits
  until it answers, makes one EC2 call so its lazily loaded backends are warm (the first EC2 call
  costs about a second), yields its URL, and kills it at the end. Its log goes to a file, never to
  a pipe nobody drains (a full pipe would block the server).
* ``moto_server`` (function): the same URL with the state reset (``POST /moto-api/reset``) before
  the test, so every test starts with no instances.
* :func:`aws_env` builds the environment a jobman subprocess needs to talk to it: fake
  credentials, ``us-east-1``, ``AWS_ENDPOINT_URL`` (every botocore client, EC2 and SSM alike), no
  shared config files, no instance metadata lookups, and no ``AWS_*``/``JOBMAN_*`` leaking in from
  the developer's shell.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT = 30.0


#: ``python -c ATOMIC_SERVER -H HOST -p PORT``: moto's server with its DynamoDB writes serialized
#: per call, as AWS applies each item write atomically (moto alone checks a condition and writes
#: without a lock, so racing conditional writes could both pass).
ATOMIC_SERVER = """
import sys, threading
from moto.dynamodb.models import DynamoDBBackend
lock = threading.RLock()
def locked(original):
    def method(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)
    return method
for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))
from moto.server import main
main(sys.argv[1:])
"""


@contextlib.contextmanager
def atomic_dynamodb_server(workdir: Path) -> Iterator[str]:
    """A moto server of its own running :data:`ATOMIC_SERVER` on a free port; yields its URL and
    kills it on exit. Its log goes to ``workdir/moto_server.log`` (never an undrained pipe)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "moto_server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTO_")}
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", ATOMIC_SERVER, "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_up(url, proc, log)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)

def free_port() -> int:
    """A port free now on 127.0.0.1, for a process that binds it a moment later.

    Picked below Linux's ephemeral range (32768-60999): between the pick and the bind, the many
    outgoing connections of the tests (boto3, proxies, curl) take their source ports from that
    range and could take this one; below it only another explicit bind can.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (two calls of :func:`free_port` may pick the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _moto_server_command() -> list[str]:
    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


def reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
                response.read()
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer on {url} within {START_TIMEOUT:g}s")


def aws_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a jobman subprocess that talks to the moto server at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOBMAN_"))}
    env.update({
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    env.update(extra)
    return env


def ec2_client(url: str):
    """A boto3 EC2 client of the moto server (imported lazily: boto3 is slow to import)."""
    import boto3

    return boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def moto_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto-server") / "moto_server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTO_")}
    with open(log, "wb") as sink:
        proc = subprocess.Popen(_moto_server_command() + ["-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_up(url, proc, log)
        ec2_client(url).describe_instances()  # warm the lazily loaded EC2 backend
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def moto_server(moto_server_process: str) -> Iterator[str]:
    reset(moto_server_process)
    yield moto_server_process
    reset(moto_server_process)
