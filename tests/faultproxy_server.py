"""The fault proxy's machinery: request parsing, the rules and their counters, the HTTP server.

The interface (rules, counters, command line, the :class:`~faultproxy.FaultProxy` test helper)
is documented in ``tests/faultproxy.py``, which is what tests import and what runs as a process.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length"}
JOB_ID_TAG = "jobman:job-id"
CONTROL = "/__faultproxy/"
TERMINAL = {"drop_response", "drop_request", "error"}
FAULTS = TERMINAL | {"delay", "token_bucket", "client_token"}
COUNTERS = ("requests", "forwarded", "dropped", "throttled", "errored", "delayed", "replayed", "mismatched")
MAX_CALLS = 200_000


# --------------------------------------------------------------------------- requests
class Request:
    """What the rules look at: the action, the protocol and the keys of one request."""

    def __init__(self, headers: Any, body: bytes) -> None:
        self.body = body
        target = headers.get("X-Amz-Target") or ""
        self.json = bool(target)
        self.params: dict[str, list[str]] = {}
        self.document: dict[str, Any] = {}
        if self.json:
            self.action = target.rsplit(".", 1)[-1]
            try:
                self.document = json.loads(body or b"{}")
            except ValueError:
                self.document = {}
        else:
            self.params = parse_qs(body.decode("utf-8", "replace")) if body else {}
            self.action = (self.params.get("Action") or ["?"])[0]

    def job_id(self) -> str | None:
        """The ``jobman:job-id`` tag value of an EC2 request (RunInstances tags its instances)."""
        for key, values in self.params.items():
            if key.startswith("TagSpecification.") and key.endswith(".Key") and values == [JOB_ID_TAG]:
                value = self.params.get(key[:-4] + ".Value")
                return value[0] if value else None
        return None

    def item_key(self, attrs: list[str]) -> str | None:
        """The DynamoDB key(s) this request writes, as canonical JSON."""
        doc = self.document
        items: list[dict[str, Any]] = []
        if "Item" in doc:
            items.append(doc["Item"])
        elif "Key" in doc:
            items.append(doc["Key"])
        for entry in doc.get("TransactItems", []):
            for op in entry.values():
                items.append(op.get("Item") or op.get("Key") or {})
        if not items:
            return None
        keys = [{a: item.get(a) for a in attrs if a in item} for item in items]
        return json.dumps(keys, sort_keys=True)

    def key(self, per: str, rule: dict[str, Any]) -> str | None:
        if per == "job_id":
            return self.job_id()
        if per == "item_key":
            return self.item_key(list(rule.get("key_attrs") or ["pk"]))
        if per == "body":
            return hashlib.sha256(self.body).hexdigest()
        raise ValueError(f"unknown per: {per!r}")

    def instances(self) -> int:
        """How many instances a RunInstances call asks for (``MaxCount``)."""
        try:
            return int((self.params.get("MaxCount") or ["1"])[0])
        except ValueError:
            return 1


def error_answer(request: Request, status: int, code: str | None, message: str | None) -> tuple[int, dict, bytes]:
    """An AWS error in the request's own protocol: EC2 query XML or DynamoDB JSON 1.0."""
    if request.json:
        code = code or {500: "InternalServerError", 503: "ServiceUnavailable"}.get(status, "ThrottlingException")
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}",
                           "message": message or f"injected {code}"}).encode()
        return status, {"Content-Type": "application/x-amz-json-1.0"}, body
    code = code or {500: "InternalError", 503: "RequestLimitExceeded"}.get(status, "InternalError")
    text = message or ("Request limit exceeded." if code == "RequestLimitExceeded" else f"injected {code}")
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{text}</Message></Error></Errors>"
            f"<RequestID>faultproxy-{time.monotonic_ns()}</RequestID></Response>").encode()
    return status, {"Content-Type": "text/xml;charset=UTF-8"}, body


# --------------------------------------------------------------------------- rules and state
class Faults:
    """The rules, their counters and the statistics; every method takes the one lock."""

    def __init__(self, rules: list[dict[str, Any]], log: Any) -> None:
        self.lock = threading.Lock()
        self.log = log
        self.rules: list[dict[str, Any]] = []
        self.set_rules(rules)
        self.reset()

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        checked = []
        for rule in rules:
            if rule.get("fault") not in FAULTS:
                raise ValueError(f"unknown fault in rule {rule!r} (known: {sorted(FAULTS)})")
            if rule.get("per") not in (None, "job_id", "item_key", "body"):
                raise ValueError(f"unknown per in rule {rule!r}")
            state = {"applied": 0, "seen": {}, "tokens": float(rule.get("capacity", 0)), "at": time.monotonic()}
            checked.append({**rule, "_state": state})
        with self.lock:
            self.rules = checked

    def reset(self) -> None:
        with self.lock:
            self.totals = dict.fromkeys(COUNTERS, 0)
            self.by_action: dict[str, dict[str, int]] = {}
            self.calls: list[dict[str, Any]] = []
            #: ClientToken -> (the request's parameters, the answer EC2 gave it)
            self.tokens: dict[str, tuple[dict[str, list[str]], tuple[int, list[tuple[str, str]], bytes]]] = {}
            self.token_locks: dict[str, threading.Lock] = {}

    def count(self, action: str, counter: str) -> None:
        with self.lock:
            self.totals[counter] += 1
            self.by_action.setdefault(action, dict.fromkeys(COUNTERS, 0))[counter] += 1

    def requests_of(self, action: str) -> int:
        """How many requests of ``action`` have arrived so far."""
        with self.lock:
            return self.by_action.get(action, {}).get("requests", 0)

    def record(self, request: Request, outcome: str, status: int) -> None:
        with self.lock:
            if len(self.calls) < MAX_CALLS:
                self.calls.append({"t": time.time(), "action": request.action, "outcome": outcome, "status": status,
                                   "key": request.job_id() if not request.json else request.item_key(["pk"])})

    def decide(self, request: Request) -> tuple[dict[str, Any] | None, float, float]:
        """``(terminal rule or None, seconds to hold before forwarding, seconds to hold the answer)``."""
        before = after = 0.0
        with self.lock:
            for rule in self.rules:
                if rule.get("action", "*") not in ("*", request.action):
                    continue
                if "job_ids" in rule and request.job_id() not in {str(j) for j in rule["job_ids"]}:
                    continue
                if any((request.params.get(name) or [None])[0] != value
                       for name, value in (rule.get("params") or {}).items()):
                    continue  # e.g. {"InstanceType": "m5.large", "SubnetId": "subnet-..."}: one rung
                state = rule["_state"]
                if rule["fault"] == "client_token":  # not a fault: see Faults.client_token
                    continue
                if rule["fault"] == "token_bucket":
                    now = time.monotonic()
                    capacity = float(rule.get("capacity", 0))
                    refilled = state["tokens"] + (now - state["at"]) * float(rule.get("refill", 0))
                    state["tokens"] = min(capacity, refilled)
                    state["at"] = now
                    wanted = request.instances()
                    if wanted > state["tokens"]:
                        state["applied"] += 1
                        return {"fault": "error", "status": 503, "code": "RequestLimitExceeded",
                                "_throttle": True, "_state": state}, before, after
                    state["tokens"] -= wanted
                    continue
                if not self._budget(rule, request):
                    continue
                state["applied"] += 1
                if rule["fault"] == "delay":
                    if rule.get("until_requests"):  # held until that many requests of the action arrived
                        request.hold_until = (int(rule["until_requests"]), float(rule.get("seconds", 60)))
                    elif rule.get("when") == "before":
                        before += float(rule.get("seconds", 0))
                    else:
                        after += float(rule.get("seconds", 0))
                    continue
                return rule, before, after
        return None, before, after

    @staticmethod
    def _budget(rule: dict[str, Any], request: Request) -> bool:
        """Whether ``rule`` still applies to this request (``first`` overall, or per key)."""
        state, first = rule["_state"], rule.get("first")
        per = rule.get("per")
        if rule.get("skip") and state.setdefault("skipped", 0) < int(rule["skip"]):
            state["skipped"] += 1
            return False
        if per:
            key = request.key(per, rule)
            if key is None:
                return False
            seen = state["seen"].get(key, 0)
            if seen >= (1 if first is None else int(first)):
                return False
            state["seen"][key] = seen + 1
            return True
        return first is None or state["applied"] < int(first)

    def client_token(self, request: Request) -> str | None:
        """The ``ClientToken`` of an EC2 request whose action has a ``client_token`` rule: the
        proxy then answers a repeated token the way EC2 does (moto ignores the token)."""
        token = (request.params.get("ClientToken") or [""])[0]
        if not token:
            return None
        with self.lock:
            wanted = any(r["fault"] == "client_token" and r.get("action", "*") in ("*", request.action)
                         for r in self.rules)
            return token if wanted else None

    def token_lock(self, token: str) -> threading.Lock:
        """One lock per token: a resend waits for the first request's answer, as on EC2."""
        with self.lock:
            return self.token_locks.setdefault(token, threading.Lock())

    def stats(self) -> dict[str, Any]:
        with self.lock:
            rules = [{k: v for k, v in r.items() if k != "_state"} | {"applied": r["_state"]["applied"]}
                     for r in self.rules]
            return {**self.totals, "by_action": {a: dict(c) for a, c in self.by_action.items()}, "rules": rules}

    def say(self, line: str) -> None:
        self.log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        self.log.flush()


# --------------------------------------------------------------------------- the server
def make_server(upstream: str, port: int, faults: Faults) -> ThreadingHTTPServer:
    target = urlsplit(upstream)
    up_host, up_port = target.hostname or "127.0.0.1", target.port or 80
    local = threading.local()

    def connection() -> http.client.HTTPConnection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(up_host, up_port, timeout=120)
        return conn

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, headers: dict[str, str] | list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for key, value in (headers.items() if isinstance(headers, dict) else headers):
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()

        def _drop(self, reset: bool) -> None:
            """Close the client's connection without a byte of answer (RST if ``reset``)."""
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True

        def _control(self, body: bytes) -> None:
            name = self.path[len(CONTROL):]
            try:
                if self.command == "GET" and name == "stats":
                    payload = faults.stats()
                elif self.command == "GET" and name == "calls":
                    with faults.lock:
                        payload = list(faults.calls)
                elif self.command == "POST" and name == "rules":
                    faults.set_rules(json.loads(body or b"[]"))
                    faults.say(f"rules replaced: {body.decode(errors='replace')}")
                    payload = {"ok": True}
                elif self.command == "POST" and name == "reset":
                    faults.reset()
                    payload = {"ok": True}
                else:
                    self._answer(404, {"Content-Type": "application/json"}, b'{"error": "unknown"}')
                    return
            except ValueError as exc:
                self._answer(400, {"Content-Type": "application/json"}, json.dumps({"error": str(exc)}).encode())
                return
            self._answer(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
                upstream = connection()
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    return answer.status, answer.getheaders(), answer.read()
                except (OSError, http.client.HTTPException):
                    upstream.close()
                    local.conn = None
            return None

        def _idempotent(self, request: Request, token: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
            """EC2's ``ClientToken`` contract: the first request with a token runs; a repeat with
            the same parameters gets the same answer without running again; a repeat with other
            parameters is ``IdempotentParameterMismatch`` (HTTP 400)."""
            cached = faults.tokens.get(token)
            if cached is not None and cached[0] != request.params:
                faults.count(request.action, "mismatched")
                faults.say(f"IdempotentParameterMismatch {request.action} ClientToken={token}")
                status, headers, payload = error_answer(request, 400, "IdempotentParameterMismatch",
                                                        "client token reused with different parameters")
                return status, list(headers.items()), payload
            if cached is not None:
                faults.count(request.action, "replayed")
                faults.say(f"replayed {request.action} ClientToken={token} (not forwarded)")
                return cached[1]
            answer = self._forward(request.body)
            if answer is not None:
                faults.count(request.action, "forwarded")
                if answer[0] == 200:
                    faults.tokens[token] = (request.params, answer)
            return answer

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith(CONTROL):
                self._control(body)
                return
            request = Request(self.headers, body)
            faults.count(request.action, "requests")
            rule, before, after = faults.decide(request)
            hold = getattr(request, "hold_until", None)
            if hold is not None:
                faults.count(request.action, "delayed")
                wanted, cap = hold
                deadline = time.monotonic() + cap
                while faults.requests_of(request.action) < wanted and time.monotonic() < deadline:
                    time.sleep(0.01)
            if before:
                faults.count(request.action, "delayed")
                time.sleep(before)
            fault = rule["fault"] if rule else None
            if rule is not None and fault == "error":
                counter = "throttled" if rule.get("_throttle") else "errored"
                if rule.get("forward"):  # applied, but answered with an error: a 5xx "maybe"
                    if self._forward(body) is None:
                        self._answer(502, {}, b"")
                        return
                    faults.count(request.action, "forwarded")
                faults.count(request.action, counter)
                status, headers, payload = error_answer(request, int(rule.get("status", 503)), rule.get("code"),
                                                        rule.get("message"))
                faults.say(f"{counter} {request.action} key={request.job_id() or request.item_key(['pk'])} -> {status}")
                faults.record(request, counter, status)
                self._answer(status, headers, payload)
                return
            if fault == "drop_request":
                faults.count(request.action, "dropped")
                faults.say(f"dropped request {request.action} (not forwarded)")
                faults.record(request, "dropped_request", 0)
                self._drop(bool(rule.get("reset")))  # type: ignore[union-attr]
                return
            token = faults.client_token(request)
            if token is None:
                answer = self._forward(body)
                if answer is not None:
                    faults.count(request.action, "forwarded")
            else:
                with faults.token_lock(token):
                    answer = self._idempotent(request, token)
            if answer is None:
                faults.record(request, "upstream_failed", 502)
                self._answer(502, {}, b"")
                return
            if answer[0] == 400 and b"IdempotentParameterMismatch" in answer[2] and token is not None:
                faults.record(request, "mismatched", 400)
                self._answer(*answer)
                return
            if fault == "drop_response":
                faults.count(request.action, "dropped")
                faults.say(f"dropped response {request.action} key={request.job_id() or request.item_key(['pk'])} "
                           f"(moto answered {answer[0]})")
                faults.record(request, "dropped_response", answer[0])
                if rule.get("seconds"):  # type: ignore[union-attr]
                    time.sleep(float(rule["seconds"]))  # type: ignore[index]
                self._drop(bool(rule.get("reset")))  # type: ignore[union-attr]
                return
            if after:
                faults.count(request.action, "delayed")
                time.sleep(after)
            faults.record(request, "delayed" if after or before else "forwarded", answer[0])
            self._answer(*answer)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # a burst of 300 clients must not overflow the accept queue

    return Server(("127.0.0.1", port), Handler)
