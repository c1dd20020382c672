"""Callbacks to a daemon with a self-signed certificate: ``render_user_data(..., callback_ca=PEM)``.

The proof: a real :class:`ApiServer` over HTTPS (certificate made here with the openssl CLI) and a
TinyDB store, the REAL rendered user-data run with bash, stub docker/dnf/systemctl/shutdown and the
real curl. With the CA the job ends ``finished`` / ``failed`` (exit code 3); without it curl
refuses the certificate and the job never reports. Plus: the PEM is validated strictly, because it
is embedded in the script (heredoc break-outs, command substitutions, non-base64 are refused), and
the daemon reads the ``--callback-ca`` file once, at start, and passes it to every launch.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.clock import FixedClock
from jobman_cli.daemon import Daemon
from jobman_cli.errors import ConfigError, InvalidInput
from jobman_cli.launchers.userdata import (USER_DATA_LIMIT, callback_url_for, load_callback_ca,
                                           normalize_callback_ca, render_user_data)
from jobman_cli.model import Job, JobStatus, format_time
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.settings import DaemonSettings
from jobman_cli.stores import open_store
from conftest import claim_with_token
from stubtools import StubTools

API_TOKEN = "userdata-tls-api-token"
FAST = {"JOBMAN_CALLBACK_ATTEMPTS": "2", "JOBMAN_CALLBACK_BACKOFF": "0", "JOBMAN_CURL_RETRIES": "0",
        "JOBMAN_DOCKER_WAIT": "1"}

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None
                                or shutil.which("bash") is None, reason="needs the openssl CLI, curl and bash")


def _make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=120)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    return {"server": _make_cert(directory, "server"), "other": _make_cert(directory, "other")}


@pytest.fixture()
def https(certs, tmp_path: Path) -> Iterator[tuple[ApiServer, JobService]]:
    cert, key = certs["server"]
    store = open_store(tmp_path / "jobs.json")
    service = JobService(store)
    log: list[str] = []
    server = ApiServer(service, api_token=API_TOKEN, tls_cert=str(cert), tls_key=str(key),
                       log=log.append, timeout=5.0).start()
    try:
        yield server, service
    finally:
        server.stop()
        store.close()


#: job id -> the claimed attempt's callback token in clear (the store has only its hash)
TOKENS: dict[int, str] = {}


def launching_job(service: JobService) -> Job:
    job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when="+1h", title="tls callback"))
    TOKENS[job.id] = claim_with_token(service.store, job.id, datetime.now(timezone.utc))
    job = service.get(job.id)
    assert job.status is JobStatus.LAUNCHING
    return job


def run_user_data(tmp_path: Path, server: ApiServer, job: Job, ca: str | None, *, docker_exit: int = 0):
    tools = StubTools(tmp_path / f"tools-{job.id}", docker_exit=docker_exit)
    script = render_user_data(job, callback_url=callback_url_for(server.url, job.id), callback_token=TOKENS[job.id],
                              callback_ca=ca)
    ca_file = tmp_path / f"ca-{job.id}.pem"
    result = tools.run_script(script, env={**FAST, "JOBMAN_CALLBACK_CA_FILE": str(ca_file)}, timeout=90)
    return tools, result, ca_file


# ------------------------------------------------------------------ the proof, end to end
@pytest.mark.parametrize("docker_exit, status, code", [(0, "finished", 0), (3, "failed", 3)])
def test_rendered_user_data_reports_over_https_with_the_callback_ca(tmp_path, certs, https, docker_exit, status, code):
    server, service = https
    assert server.url.startswith("https://127.0.0.1:")
    pem = certs["server"][0].read_text()
    job = launching_job(service)
    tools, result, ca_file = run_user_data(tmp_path, server, job, pem, docker_exit=docker_exit)
    after = service.get(job.id)
    assert (after.status.value, after.exit_code) == (status, code), result.stdout.decode() + result.stderr.decode()
    assert ca_file.read_text() == normalize_callback_ca(pem)  # what curl was given, written before any callback
    assert len(tools.docker_runs()) == 1 and tools.powered_off
    assert b"reported running" in result.stdout and f"reported {status}".encode() in result.stdout


def test_without_the_ca_the_job_never_reports(tmp_path, https):
    server, service = https
    job = launching_job(service)
    tools, result, ca_file = run_user_data(tmp_path, server, job, None)
    assert service.get(job.id).status is JobStatus.LAUNCHING
    assert not ca_file.exists()
    assert b"SSL certificate problem" in result.stderr  # curl (60): it is the TLS verification
    assert b"could not report finished" in result.stdout
    assert len(tools.docker_runs()) == 1 and tools.powered_off


def test_a_different_ca_does_not_verify_the_daemon(tmp_path, certs, https):
    server, service = https
    job = launching_job(service)
    _, result, _ = run_user_data(tmp_path, server, job, certs["other"][0].read_text())
    assert service.get(job.id).status is JobStatus.LAUNCHING
    assert b"could not report finished" in result.stdout


def test_an_unwritable_ca_path_is_logged_and_the_instance_still_powers_off(tmp_path, certs, https):
    server, service = https
    job = launching_job(service)
    tools = StubTools(tmp_path / "tools")
    script = render_user_data(job, callback_url=callback_url_for(server.url, job.id), callback_token=TOKENS[job.id],
                              callback_ca=certs["server"][0].read_text())
    result = tools.run_script(script, env={**FAST, "JOBMAN_CALLBACK_CA_FILE": str(tmp_path / "no" / "ca.pem")},
                              timeout=90)
    assert b"could not write the callback CA" in result.stdout
    assert service.get(job.id).status is JobStatus.LAUNCHING and tools.powered_off


# ------------------------------------------------------------------ strict PEM validation
def _body(pem: str) -> list[str]:
    return pem.strip().splitlines()[1:-1]


@pytest.fixture(scope="module")
def pem(certs) -> str:
    return certs["server"][0].read_text()


INJECTIONS = {
    "heredoc end after the block": lambda p: p + "JOBMAN_CA_EOF\ntouch /tmp/pwned\n",
    "heredoc end inside the block": lambda p: p.replace("\n-----END", "\nJOBMAN_CA_EOF\n-----END"),
    "command substitution in the block": lambda p: p.replace("\n-----END", "\n$(touch /tmp/pwned)\n-----END"),
    "backticks before the block": lambda p: "`id`\n" + p,
    "comment line": lambda p: "# my CA\n" + p,
    "openssl bag attributes": lambda p: "Bag Attributes\n    friendlyName: x\n" + p,
    "non-base64 character": lambda p: p.replace(_body(p)[0], _body(p)[0][:-1] + "!"),
    "space inside a base64 line": lambda p: p.replace(_body(p)[0], _body(p)[0][:10] + " " + _body(p)[0][10:]),
    "quote": lambda p: p.replace("\n-----END", "\n'\n-----END"),
    "broken padding": lambda p: p.replace(_body(p)[0], _body(p)[0][:-1]),
    "not DER": lambda p: "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(b"hello world!").decode()
                         + "\n-----END CERTIFICATE-----\n",
    "private key": lambda p: p.replace("CERTIFICATE", "PRIVATE KEY"),
    "text after BEGIN": lambda p: p.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE----- x"),
    "missing END": lambda p: p.replace("-----END CERTIFICATE-----", ""),
    "nested BEGIN": lambda p: p.replace("\n-----END", "\n-----BEGIN CERTIFICATE-----\n-----END"),
    "empty": lambda p: "",
    "only blank lines": lambda p: "\n\n  \n",
    "NUL": lambda p: p + "\x00",
}


@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_pem_validation_refuses(pem, name):
    bad = INJECTIONS[name](pem)
    with pytest.raises(InvalidInput) as err:
        normalize_callback_ca(bad)
    assert err.value.field == "callback-ca"
    job = Job(id=1, title="t", date_time=datetime.now(timezone.utc), docker_image="a", env_variables={},
              status=JobStatus.LAUNCHING, created_at=datetime.now(timezone.utc), timeout=1)
    with pytest.raises(InvalidInput) as err:
        render_user_data(job, callback_url="https://127.0.0.1:1/cb", callback_token="tok", callback_ca=bad)
    assert err.value.field == "callback-ca"


def test_pem_normalization_accepts_crlf_blank_lines_and_several_certificates(certs):
    one, two = certs["server"][0].read_text(), certs["other"][0].read_text()
    messy = ("\r\n" + one.replace("\n", "  \r\n") + "\n\n" + two).rstrip("\n")
    assert normalize_callback_ca(messy) == one + two
    assert normalize_callback_ca(one) == one  # openssl's own output is already canonical


def test_rendered_script_with_a_ca_is_deterministic_valid_bash_and_names_tools_through_path(pem):
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    job = Job(id=7, title="t", date_time=now, docker_image="alpine", env_variables={"A": "b"},
              status=JobStatus.LAUNCHING, created_at=now, timeout=60)
    url = "https://127.0.0.1:1/jobMan/v1.1/jobs/7/callback"
    script = render_user_data(job, callback_url=url, callback_token="tok", callback_ca=pem)
    assert script == render_user_data(job, callback_url=url, callback_token="tok", callback_ca=pem)
    assert subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True).returncode == 0
    assert script.count("<<'JOBMAN_CA_EOF'\n") == 1 and script.count("\nJOBMAN_CA_EOF\n") == 1
    assert '"${curl_tls[@]}"' in script and 'curl_tls=(--cacert "$callback_ca_file")' in script
    assert not re.search(r"/(cat|mktemp|tee)\b|\bcat\b", script)
    plain = render_user_data(job, callback_url=url, callback_token="tok")
    assert "JOBMAN_CA_EOF" not in plain and "--cacert" not in plain


def test_the_ca_counts_toward_the_user_data_limit(pem):
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    base = dict(id=7, title="t", date_time=now, docker_image="alpine", status=JobStatus.LAUNCHING,
                created_at=now, timeout=60)
    url = "https://127.0.0.1:1/cb"
    without = len(render_user_data(Job(env_variables={}, **base), callback_url=url, callback_token="tok").encode())
    with_ca = len(render_user_data(Job(env_variables={}, **base), callback_url=url, callback_token="tok", callback_ca=pem).encode())
    assert with_ca > without + len(pem)
    # an environment that fits alone but not next to the CA
    room = USER_DATA_LIMIT - without
    job = Job(env_variables={"PAD": "x" * (room - 20)}, **base)
    render_user_data(job, callback_url=url, callback_token="tok")
    with pytest.raises(InvalidInput) as err:
        render_user_data(job, callback_url=url, callback_token="tok", callback_ca=pem)
    assert err.value.field == "env-variables" and "callback CA" in err.value.rule


# ------------------------------------------------------------------ daemon start-up
def test_load_callback_ca_errors_are_one_line_config_errors_naming_the_file(tmp_path, pem):
    cases = {
        "missing.pem": None,
        "garbage.pem": "$(reboot)\n",
        "binary.pem": b"\xff\xfe\x00",
        "huge.pem": pem * 16,          # over EC2's limit on its own
        "too-big.pem": pem * 13,        # fits as a file, but no job could launch with it
    }
    assert len(pem * 13) <= USER_DATA_LIMIT < len(pem * 16)
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(ConfigError) as err:
            load_callback_ca(str(path))
        message = str(err.value)
        assert str(path) in message and "\n" not in message, message
    assert "too large" in _message(load_callback_ca, str(tmp_path / "too-big.pem"))
    assert load_callback_ca(str(_write(tmp_path / "ok.pem", pem))) == normalize_callback_ca(pem)


def _message(fn, *args) -> str:
    with pytest.raises(ConfigError) as err:
        fn(*args)
    return str(err.value)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class RecordingLauncher:
    """Only what the daemon's launch path calls: the user-data of each RunInstances."""

    def __init__(self) -> None:
        self.user_data: list[str] = []

    def launch(self, job: Job, *, user_data: str, store_id: str) -> str:
        self.user_data.append(user_data)
        return f"i-{len(self.user_data):017x}"


def test_the_daemon_reads_the_ca_once_and_passes_it_to_every_launch(tmp_path, pem):
    ca_file = _write(tmp_path / "ca.pem", pem)
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    store = open_store(tmp_path / "jobs.json")
    clock = FixedClock(t0)
    service = JobService(store, clock)
    launcher = RecordingLauncher()
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url="https://jobman.test:8321",
                              callback_ca=str(ca_file))
    daemon = Daemon(store, launcher, settings, clock=clock, service=service, exclusive=True, log=lambda _: None)
    try:
        ca_file.write_text("changed after start: not read again\n")
        job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(t0 + timedelta(minutes=1))))
        clock.set(t0 + timedelta(minutes=1))
        daemon.tick(t0 + timedelta(minutes=1), reconcile=False)
        (user_data,) = launcher.user_data
        assert normalize_callback_ca(pem) in user_data and "--cacert" in user_data
        assert store.get(job.id).instance_id == "i-00000000000000001"
    finally:
        daemon.close()
        store.close()
    other = open_store(tmp_path / "jobs2.json")
    try:
        with pytest.raises(ConfigError) as err:
            Daemon(other, launcher, DaemonSettings(store_location=str(tmp_path / "jobs2.json"),
                                                   callback_ca=str(ca_file)))
        assert str(ca_file) in str(err.value)
    finally:
        other.close()
