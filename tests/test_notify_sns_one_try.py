"""An SNS attempt is ONE request (review finding SN8): botocore's own retries (3 to 5 tries, each up
to the timeout) could outlast the 60 s claim lease, and a second daemon would then publish the
event again. jobman retries itself, with its backoff and the claim.

A real listener on 127.0.0.1 that accepts and never answers stands for a slow SNS endpoint; the
connections it got are counted from its backlog once the attempt has returned (no accept thread).
"""

from __future__ import annotations

import socket

from jobman_cli.notify.send import Sender


def test_a_slow_sns_endpoint_gets_one_request_per_attempt(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    accepted: list[socket.socket] = []
    try:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/jobman-test-aws-config")  # no retry_mode from a profile
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", f"http://127.0.0.1:{server.getsockname()[1]}")
        outcome = Sender(b"s" * 32, timeout=0.5).send(
            "sns:arn:aws:sns:us-east-1:123456789012:alerts",
            {"event": "job.failed", "event-id": "e-1", "id": 1, "status": "failed"})
        assert not outcome.ok and not outcome.final and "no answer from SNS" in outcome.text
        server.setblocking(False)  # the handshakes completed before the client's timeout: all queued
        while True:
            try:
                accepted.append(server.accept()[0])
            except BlockingIOError:
                break
        assert len(accepted) == 1
    finally:
        for conn in accepted:
            conn.close()
        server.close()
