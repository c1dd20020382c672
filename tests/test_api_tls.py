"""The API over HTTPS with a self-signed certificate made here with the openssl CLI.

The callback an instance makes is ``curl --cacert`` doing a PUT with the job's own token; a client
that connects and never completes (or never starts) a TLS handshake must not hold anyone else up:
handshakes run on the listener's event loop with a deadline, and a connection still in its
handshake counts as waiting, so at a connection cap it is closed to make room.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.errors import ConfigError
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores import open_store
from conftest import claim_with_token

TOKEN = "tls-suite-api-token"
API = "/jobMan/v1.1"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is not installed")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=120)
    return cert, key


class Tls:
    def __init__(self, certificate: tuple[Path, Path], tmp_path: Path) -> None:
        self.cert, self.key = certificate
        self.store = open_store(tmp_path / "jobs.json")
        self.service = JobService(self.store)
        self.log: list[str] = []
        self.tokens: dict[int, str] = {}
        self.server = ApiServer(self.service, api_token=TOKEN, tls_cert=str(self.cert), tls_key=str(self.key),
                                log=self.log.append, timeout=5.0).start()

    def running_job(self) -> int:
        job, _ = self.service.schedule(ScheduleRequest(image="alpine:3.20", when="+1h", title="tls"))
        self.tokens[job.id] = claim_with_token(self.store, job.id, datetime.now(timezone.utc))
        return job.id

    def curl(self, *args: str) -> tuple[int, int, Any]:
        """(curl exit code, HTTP status, JSON body)."""
        result = subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
                                capture_output=True, text=True, timeout=60)
        body, _, code = result.stdout.rpartition("\n")
        return result.returncode, int(code or 0), json.loads(body) if body.strip() else None


@pytest.fixture()
def tls(certificate: tuple[Path, Path], tmp_path: Path) -> Iterator[Tls]:
    harness = Tls(certificate, tmp_path)
    yield harness
    harness.server.stop()
    harness.store.close()
    assert harness.log == []


@needs_curl
def test_callback_over_https_with_curl_and_the_jobs_own_token(tls: Tls) -> None:
    assert tls.server.url.startswith("https://127.0.0.1:")
    job_id = tls.running_job()
    job_token = tls.tokens[job_id]
    url = f"{tls.server.url}{API}/jobs/{job_id}/callback"
    common = ["--cacert", str(tls.cert), "-X", "PUT", "-H", "Content-Type: application/json",
              "-H", f"Authorization: Bearer {job_token}"]
    code, status, body = tls.curl(*common, "--data-binary", '{"status":"running"}', url)
    assert (code, status, body["status"]) == (0, 200, "running")
    code, status, body = tls.curl(*common, "--data-binary", '{"status":"failed","exit-code":3}', url)
    assert (code, status, body["status"], body["exit-code"]) == (0, 200, "failed", 3)
    assert tls.service.get(job_id).reason == "exit code 3"


@needs_curl
def test_curl_refuses_the_certificate_without_the_ca(tls: Tls) -> None:
    code, _, _ = tls.curl("-H", f"Authorization: Bearer {TOKEN}", f"{tls.server.url}{API}/jobs")
    assert code == 60  # "SSL certificate problem": it really is TLS with our self-signed certificate


@needs_curl
def test_clients_that_never_handshake_do_not_block_https(tls: Tls) -> None:
    port = tls.server.port
    silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(5)]
    partial = socket.create_connection(("127.0.0.1", port), timeout=30)
    partial.sendall(bytes.fromhex("16030100a5010000a10303") + b"\x00" * 10)  # the start of a ClientHello
    plain = socket.create_connection(("127.0.0.1", port), timeout=30)
    plain.sendall(b"GET /jobMan/v1.1/jobs HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to the TLS port
    try:
        code, status, body = tls.curl("--cacert", str(tls.cert), "-H", f"Authorization: Bearer {TOKEN}",
                                      f"{tls.server.url}{API}/jobs")
        assert (code, status, body) == (0, 200, {"jobs": []})
        assert plain.recv(100) == b""  # not a TLS client: dropped without an answer
        # a handshake that never happens is bounded too: the server ends that connection itself
        assert silent[0].recv(100) == b""
        ending = partial.recv(100)
        assert ending == b"" or ending[:1] == b"\x15"  # closed, perhaps after a TLS alert record
    finally:
        for sock in (*silent, partial, plain):
            sock.close()
    code, status, _ = tls.curl("--cacert", str(tls.cert), "-H", f"Authorization: Bearer {TOKEN}",
                               f"{tls.server.url}{API}/jobs")
    assert (code, status) == (0, 200)


def test_python_https_client_with_keep_alive(tls: Tls) -> None:
    context = ssl.create_default_context(cafile=str(tls.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", tls.server.port, context=context, timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", f"{API}/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {"jobs": []}
        conn.request("GET", f"{API}/jobs", headers={"Authorization": "Bearer wrong"})
        response = conn.getresponse()
        assert response.status == 401 and response.getheader("WWW-Authenticate", "").startswith("Bearer")
        response.read()
    finally:
        conn.close()


def test_bad_certificate_files_are_config_errors(tls: Tls, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        ApiServer(tls.service, api_token=TOKEN, tls_cert=str(tmp_path / "missing.pem"), tls_key=str(tls.key))
    not_a_key = tmp_path / "garbage.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        ApiServer(tls.service, api_token=TOKEN, tls_cert=str(tls.cert), tls_key=str(not_a_key))
    with pytest.raises(ConfigError, match="--tls-key needs --tls-cert"):
        ApiServer(tls.service, api_token=TOKEN, tls_key=str(tls.key))


def test_a_silent_handshake_is_closed_to_make_room_at_the_address_cap(tls: Tls) -> None:
    log: list[str] = []  # (the summary of closed connections may come, or not, before the stop)
    server = ApiServer(tls.service, api_token=TOKEN, tls_cert=str(tls.cert), tls_key=str(tls.key),
                       log=log.append, timeout=60.0, per_address=2).start()
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(2)]
    try:
        context = ssl.create_default_context(cafile=str(tls.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
        conn.request("GET", f"{API}/jobs", headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read()) == {"jobs": []}
        conn.close()
        assert silent[0].recv(100) == b""  # closed to make room, long before its 60 s handshake deadline
    finally:
        for sock in silent:
            sock.close()
        server.stop()
    assert not [line for line in log if "closed or refused at the connection caps" not in line]
