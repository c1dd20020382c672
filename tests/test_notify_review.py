"""Targets, sender and delivery rules after the hostile review of issue 13: what validation
refuses, what the sender does with what it cannot send (an outcome, never an exception), the
attempt's deadline, the address check at send time, redaction of path secrets, the age limit."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from notify_receiver import Receiver
from test_notify import ended

from jobman_cli.errors import InvalidInput
from jobman_cli.notify import deliveries as plan
from jobman_cli.notify.send import Sender
from jobman_cli.notify.targets import redact, target_kind, validate_targets

UTC = timezone.utc
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # test_notify.ended()'s end
POLICY = plan.Policy(backoff_base=10, backoff_max=100, max_age=1000, lease=60)
DATA = {"event-id": "eid-1", "event": "job.failed", "id": 1}




# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("host", [
    "169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
    "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[fd00:ec2::254]", "[fe80::1%25eth0]",
    "[64:ff9b::a9fe:a9fe]",
])
def test_the_metadata_address_is_refused_in_every_spelling(host: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_targets([f"http://{host}/latest"], "--notify")
    assert "link-local" in str(caught.value)


def test_numeric_hosts_elsewhere_and_long_but_valid_labels_are_accepted() -> None:
    ok = ["http://127.1:8080/", "http://2130706433/h", "http://" + "a" * 63 + ".example/h", "https://exämple.com/"]
    assert validate_targets(ok) == tuple(ok)


@pytest.mark.parametrize("target", ["http://" + "a" * 64 + ".example/h", "http://a..example/h"])
def test_a_host_that_cannot_be_encoded_is_refused(target: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_targets([target], "--notify")
    assert "host name is not valid" in str(caught.value)


@pytest.mark.parametrize("pair", [
    ["http://X/a", "http://x/a"], ["http://x/a", "http://x:80/a"], ["https://x/a", "https://X:443/a"],
    ["https://x./a", "https://x/a"], ["HTTP://x/a", "http://x/a"],
])
def test_duplicates_are_compared_normalised(pair: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_targets(pair, "--notify")
    assert "given twice" in str(caught.value)


def test_targets_that_differ_in_path_or_port_are_not_duplicates() -> None:
    assert len(validate_targets(["http://x/a", "http://x/A", "http://x:8080/a"])) == 3


# --------------------------------------------------------------------------- redaction
@pytest.mark.parametrize("target, shown", [
    ("https://discord.com/api/webhooks/123/DISCORDTOKEN", "https://discord.com/api/…"),
    ("https://outlook.office.com/webhook/G@G/IncomingWebhook/SECRET/G", "https://outlook.office.com/webhook/…"),
    ("https://hooks.zapier.com/hooks/catch/123/SECRET/", "https://hooks.zapier.com/hooks/…"),
    ("https://chat.example.com/hooks/MATTERMOSTSECRET", "https://chat.example.com/hooks/…"),
    ("https://example.com/hook;token=SECRET", "https://example.com/hook/…"),
    ("https://example.com:8443/h", "https://example.com:8443/h"),
    ("https://hooks.slack.com/services/T0/B0/SECRET/", "https://hooks.slack.com/services/T0/B0/…"),
    ("https://hooks.slack.com./services/T0/B0/SECRET", "https://hooks.slack.com./services/T0/B0/…"),
    ("slack+https://chat.example.com/hooks/SECRET", "slack+https://chat.example.com/hooks/…"),
])
def test_redaction_hides_path_secrets(target: str, shown: str) -> None:
    assert redact(target) == shown
    assert "SECRET" not in redact(target) and "TOKEN" not in redact(target)


def test_a_slack_host_with_a_trailing_dot_is_slack() -> None:
    assert target_kind("https://hooks.slack.com./services/T0/B0/x") == "slack"


# --------------------------------------------------------------------------- the sender
def test_what_the_sender_cannot_send_is_a_final_outcome_not_an_exception() -> None:
    # stored before validation refused it (or validation missed it): the sender answers, never raises
    outcome = Sender(b"s" * 16, timeout=2).send("http://" + "a" * 64 + ".example/h", DATA)
    assert not outcome.ok and outcome.final and outcome.text.startswith("cannot send: UnicodeError")


def test_a_non_ascii_path_is_percent_encoded() -> None:
    hook = Receiver()
    try:
        outcome = Sender(b"s" * 16, timeout=5).send(f"{hook.url}/caf\u00e9?q=\u00fc", DATA)
        assert outcome.ok
        assert hook.wait_for(1)[0].path == "/caf%C3%A9?q=%C3%BC"
    finally:
        hook.close()


def _trickler() -> tuple[socket.socket, threading.Event]:
    """A receiver that reads the request, then sends one byte of an answer every 0.2 s, forever
    (every read succeeds: a per-read timeout never fires)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100000:
            if stop.wait(0.2):
                break
            try:
                conn.send(bytes([byte]))
            except OSError:
                break
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, stop


def test_an_attempt_has_one_deadline_however_the_receiver_trickles() -> None:
    server, stop = _trickler()
    result: list = []
    sending = threading.Thread(target=lambda: result.append(
        Sender(b"s" * 16, timeout=1).send(f"http://127.0.0.1:{server.getsockname()[1]}/", DATA)), daemon=True)
    try:
        sending.start()
        sending.join(30)  # generous: the deadline is 1 s; without one this takes 100,000 x 0.2 s
        assert not sending.is_alive()
        assert not result[0].ok and not result[0].final and "within 1 s" in result[0].text
    finally:
        stop.set()
        server.close()


def test_the_name_lookup_is_inside_the_deadline() -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(60)
        return ["127.0.0.1"]

    result: list = []
    sending = threading.Thread(target=lambda: result.append(
        Sender(b"s" * 16, timeout=1, resolve=hanging).send("http://hook.test:9/", DATA)), daemon=True)
    try:
        sending.start()
        sending.join(30)
        assert not sending.is_alive() and not result[0].ok and "within 1 s" in result[0].text
    finally:
        release.set()


def test_every_resolved_address_is_checked_and_the_checked_one_used() -> None:
    hook = Receiver()
    port = hook.url.rsplit(":", 1)[1]
    try:
        bad = Sender(b"s" * 16, timeout=5, resolve=lambda h, p: ["127.0.0.1", "169.254.169.254"])
        refused = bad.send(f"http://metadata.test:{port}/x", DATA)
        assert not refused.ok and refused.final and "link-local" in refused.text
        mapped = Sender(b"s" * 16, timeout=5, resolve=lambda h, p: ["::ffff:169.254.169.254"])
        assert mapped.send(f"http://metadata.test:{port}/x", DATA).final
        good = Sender(b"s" * 16, timeout=5, resolve=lambda h, p: ["127.0.0.1"])
        assert good.send(f"http://hook.test:{port}/y", DATA).ok
        received = hook.wait_for(1)
        assert [r.path for r in received] == ["/y"]  # nothing reached the receiver from the refused ones
        assert received[0].headers["Host"] == f"hook.test:{port}"  # the name, not the address
    finally:
        hook.close()


# --------------------------------------------------------------------------- the age limit
def test_past_max_age_a_delivery_is_given_up_without_an_attempt() -> None:
    job = ended()
    first = plan.settle(plan.claim(job, 0, "failed", T0, "a", POLICY, "eid"), 0, "failed", 1, "a",
                        plan.Outcome(False, "HTTP 500"), T0, POLICY)
    late = T0 + timedelta(days=3)  # the daemon was down meanwhile
    assert plan.due_at(first, 0, "failed", late, POLICY) == late  # due at once, to be closed
    closed = plan.claim(first, 0, "failed", late, "b", POLICY, "eid")
    record = plan.record_of(closed, 0, "failed")
    assert not plan.claimed(closed, 0, "failed", "b")
    assert (record["state"], record["attempts"]) == ("failed", 1)
    assert record["history"][-1]["outcome"] == "gave up: more than 1000 s after the job ended"
    assert plan.next_due(closed, late, POLICY) is None
    never_tried = plan.claim(job, 0, "failed", late, "b", POLICY, "eid")
    assert plan.record_of(never_tried, 0, "failed")["state"] == "failed"
    # a claim left by a daemon that died, found after max_age: its attempt unknown, then given up
    dead = plan.claim(job, 0, "failed", T0, "dead", POLICY, "eid")
    taken = plan.record_of(plan.claim(dead, 0, "failed", late, "b", POLICY, "eid"), 0, "failed")
    assert taken["state"] == "failed" and taken["history"][0]["outcome"].startswith("unknown: dead")


# --------------------------------------------------------------------------- https to a checked address
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is not installed")
def test_https_connects_to_the_checked_address_with_the_names_sni_and_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=hook.test",
                    "-addext", "subjectAltName=DNS:hook.test", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    seen: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen["host"] = self.headers["Host"]
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def sni(sock: object, name: str, ctx: object) -> None:
        seen["sni"] = name

    context.sni_callback = sni
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        sender = Sender(b"s" * 16, timeout=10, resolve=lambda h, p: ["127.0.0.1"])
        sender._tls = ssl.create_default_context(cafile=str(cert))  # trust the test's certificate
        outcome = sender.send(f"https://hook.test:{server.server_address[1]}/x", DATA)
        assert outcome.ok, outcome
        assert seen == {"sni": "hook.test", "host": f"hook.test:{server.server_address[1]}"}
    finally:
        server.server_close()


def test_a_live_claim_is_honoured_past_max_age() -> None:
    sending = plan.claim(ended(), 0, "failed", T0 + timedelta(seconds=990), "a", POLICY, "eid")
    with pytest.raises(plan.NotDue):  # "a" is still within its lease: not given up under its feet
        plan.claim(sending, 0, "failed", T0 + timedelta(seconds=1010), "b", POLICY, "eid")
    done = plan.settle(sending, 0, "failed", 1, "a", plan.Outcome(True, "HTTP 200"), T0 + timedelta(seconds=1010),
                       POLICY)
    assert plan.record_of(done, 0, "failed")["state"] == "delivered"
