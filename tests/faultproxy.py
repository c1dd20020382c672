"""A fault-injecting HTTP proxy, run as a real separate process in front of ``moto_server``.

Point a jobman process at it (``AWS_ENDPOINT_URL=<proxy url>``) and it forwards every request to
moto unchanged, except where a *rule* says to inject a fault. It exists to prove that jobman's
AWS calls take effect exactly once when the network misbehaves the way real AWS networks do: a
response lost after the request was applied, a slow answer, a 5xx, throttling.

Command line (a separate process, so a fault never shares a GIL or an event loop with the code under
test)::

    python tests/faultproxy.py --upstream http://127.0.0.1:PORT --port 0 --rules rules.json \\
        [--port-file FILE] [--log FILE]

It prints its port on one line of stdout (then never writes stdout again, so an undrained pipe
cannot block it), writes it to ``--port-file`` when given, and logs every injected fault to
``--log`` (default: stderr). ``--rules`` is a JSON list of rules (optional; default none).

From pytest (``from faultproxy import FaultProxy, fault_proxy`` plus the ``moto_server`` fixtures)::

    def test_x(fault_proxy):              # started in front of the (reset) moto_server fixture
        fault_proxy.set_rules([{"action": "RunInstances", "fault": "drop_response", "per": "job_id"}])
        env = aws_env(fault_proxy.url)
        ...
        assert fault_proxy.stats()["by_action"]["RunInstances"]["dropped"] == 50

    with FaultProxy(upstream_url, rules=[...], workdir=tmp_path) as proxy: ...   # or by hand

Control endpoints (never forwarded): ``GET /__faultproxy/stats`` (JSON counters),
``GET /__faultproxy/calls`` (JSON list, one entry per request: ``t``, ``action``, ``key``,
``outcome``, ``status``), ``POST /__faultproxy/rules`` (body: JSON list; replaces the rules and
their counters), ``POST /__faultproxy/reset`` (clears counters and the call list).

Rules (dicts; evaluated in order for each request; the first *terminal* one that applies decides)::

    action   "RunInstances", "PutItem", "TransactWriteItems", "UpdateItem", ... or "*" (any). The
             action is the EC2 query ``Action=`` or the suffix of ``X-Amz-Target`` (DynamoDB).
    fault    "drop_response"  forward to moto, then close the connection without answering
                              (botocore sees the connection closed; it may resend the same
                              request itself). ``reset: true`` closes with a TCP RST instead;
                              ``seconds`` holds the connection that long before closing.
             "drop_request"   close the connection without forwarding (nothing happened).
             "delay"          hold the answer ``seconds`` (``when: "before"`` holds the request
                              before forwarding instead). Not terminal: later rules still apply.
             "error"          answer without forwarding: ``status`` (default 503) and ``code``
                              (default by status and protocol: EC2 ``RequestLimitExceeded``/
                              ``InternalError``, DynamoDB ``ThrottlingException``/
                              ``InternalServerError``), in the protocol's own error format
                              (EC2 XML, DynamoDB JSON), with optional ``message``. With
                              ``forward: true`` the request reaches moto first (a 5xx after the
                              request was applied: the ambiguous kind).
             "client_token"   not a fault: EC2's ``ClientToken`` contract, which moto ignores. A
                              repeat of a token (botocore's resend, the daemon's retry of the
                              same attempt) gets the first answer again without reaching moto;
                              with other parameters it is ``IdempotentParameterMismatch`` (400).
                              Put it in front of the drop rules for RunInstances.
             "token_bucket"   RunInstances only makes sense: ``capacity`` instances, ``refill``
                              per second, starting full. A call asking for more (``MaxCount``)
                              than is left answers EC2 ``RequestLimitExceeded`` (HTTP 503) without
                              forwarding; otherwise it takes its tokens and later rules apply.
    job_ids  apply only to RunInstances requests of these jobs (``jobman:job-id`` tag values).
    params   apply only to EC2 requests whose query parameters have these values (a missing
             parameter is null), e.g. ``{"InstanceType": "m5.large", "SubnetId": "subnet-1",
             "InstanceMarketOptions.MarketType": "spot"}``: one rung of the launch ladder.
    first    apply to the first N matching requests only (default: every matching request).
    until_requests  with "delay": hold the request until N requests of its action have arrived
             (or ``seconds``, default 60, passed): orders two processes' requests by events.
    skip     let the first N matching requests pass this rule untouched (counted before ``first``),
             e.g. ``{"fault": "delay", "skip": 1, "first": 1}`` holds only the second request.
    per      "job_id" | "item_key" | "body": apply to the first ``first`` (default 1) matching
             requests *of each distinct key*, e.g. ``{"action": "RunInstances", "fault":
             "drop_response", "per": "job_id"}`` drops every job's first RunInstances answer and
             lets botocore's resend through. job_id: the ``jobman:job-id`` tag of RunInstances;
             item_key: the DynamoDB key (``key_attrs``, default ``["pk"]``) of the item(s) written
             (PutItem ``Item``, UpdateItem/DeleteItem ``Key``, TransactWriteItems: every item);
             body: the exact request body (a resend is the same body).

Counters (``stats()``): ``requests``, ``forwarded``, ``dropped``, ``throttled`` (token bucket),
``errored``, ``delayed``, ``replayed`` and ``mismatched`` (client tokens), both in total and in
``by_action[action]``, plus ``rules[i]["applied"]``.

The machinery (request parsing, rules, the server) lives in ``tests/faultproxy_server.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from faultproxy_server import CONTROL, COUNTERS, Faults, make_server

__all__ = ["FaultProxy", "fault_proxy", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fault-injecting HTTP proxy in front of moto_server.")
    parser.add_argument("--upstream", required=True, help="the moto_server URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--rules", help="JSON file with a list of rules")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--log", help="log file (default: stderr)")
    args = parser.parse_args(argv)
    rules = json.loads(Path(args.rules).read_text()) if args.rules else []
    log = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr
    faults = Faults(rules, log)
    server = make_server(args.upstream, args.port, faults)
    port = int(server.server_address[1])
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)
    faults.say(f"listening on 127.0.0.1:{port}, upstream {args.upstream}, {len(rules)} rule(s)")
    print(port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- for tests
class FaultProxy:
    """The proxy as a subprocess, for tests: a context manager with the control calls as methods."""

    def __init__(self, upstream: str, rules: list[dict[str, Any]] | None = None, *, workdir: Path) -> None:
        self.upstream, self.rules, self.workdir = upstream, list(rules or []), Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""
        self.log = self.workdir / "faultproxy.log"

    def start(self) -> "FaultProxy":
        self.workdir.mkdir(parents=True, exist_ok=True)
        rules_file, port_file = self.workdir / "faultproxy-rules.json", self.workdir / "faultproxy.port"
        rules_file.write_text(json.dumps(self.rules))
        port_file.unlink(missing_ok=True)
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--upstream", self.upstream, "--port", "0",
                 "--rules", str(rules_file), "--port-file", str(port_file), "--log", str(self.log)],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"faultproxy did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def _control(self, method: str, name: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(f"{self.url}{CONTROL}{name}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._control("GET", "stats")

    def calls(self) -> list[dict[str, Any]]:
        return self._control("GET", "calls")

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        self._control("POST", "rules", rules)

    def reset(self) -> None:
        self._control("POST", "reset")

    def action(self, name: str) -> dict[str, int]:
        """The counters of one action (zeros if it was never seen)."""
        return self.stats()["by_action"].get(name, dict.fromkeys(COUNTERS, 0))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ != "__main__":  # imported by a test module (the script itself never needs pytest)
    import pytest

    @pytest.fixture
    def fault_proxy(moto_server: str, tmp_path: Path) -> Iterator[FaultProxy]:
        """A started proxy (no rules yet) in front of the reset ``moto_server``; ``set_rules`` it.
        The test module must also import the ``moto_server``/``moto_server_process`` fixtures."""
        with FaultProxy(moto_server, workdir=tmp_path / "faultproxy") as proxy:
            yield proxy


if __name__ == "__main__":
    sys.exit(main())
