"""One delivery attempt, and what its outcome means.

* webhook: POST of the signed JSON body; Slack: POST of ``{"text": paragraph}``. Plain
  :mod:`http.client` with a timeout: redirects are not followed (a POST re-sent elsewhere is not a
  delivery to the configured receiver) and no proxy is used. 2xx delivered; 408, 429 and 5xx, a
  timeout or a connection error: try again (honouring ``Retry-After``); any other answer
  (3xx, 4xx): final — the receiver refused this request and will refuse it again.
* SNS: ``Publish`` of the same JSON body (boto3, imported here only). Throttling, a 5xx or a
  connection error: try again; any other refusal (no such topic, not authorized): final.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from .deliveries import Outcome
from .message import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, encode, sign, slack_text
from .targets import sns_region, target_kind, url_of

RETRYABLE_STATUS = frozenset({408, 429})
_SNS_RETRYABLE = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "InternalError",
                            "InternalFailure", "ServiceUnavailable", "KMSThrottling", "RequestTimeout"})


class Sender:
    """Sends one attempt to one target. Thread-safe (one per daemon, used by its workers)."""

    def __init__(self, secret: bytes, timeout: float = 10.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._sns: dict[str, Any] = {}
        self._sns_lock = threading.Lock()
        self._tls = ssl.create_default_context()

    def send(self, target: str, data: dict[str, Any]) -> Outcome:
        kind = target_kind(target)
        if kind == "sns":
            return self._publish(target, data)
        raw = encode({"text": slack_text(data)} if kind == "slack" else data)
        headers = {"Content-Type": "application/json", "User-Agent": f"jobman/{__version__}",
                   EVENT_ID_HEADER: data["event-id"], EVENT_HEADER: data["event"],
                   SIGNATURE_HEADER: sign(raw, self.secret)}
        return self._post(url_of(target), raw, headers)

    # ------------------------------------------------------------------ HTTP
    def _post(self, url: str, raw: bytes, headers: dict[str, str]) -> Outcome:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if parts.username is not None:
            import base64

            from urllib.parse import unquote

            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers = dict(headers, Authorization="Basic " + base64.b64encode(pair).decode())
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=raw, headers=headers)
            answer = conn.getresponse()
            answer.read(65536)
            status, retry_after = answer.status, answer.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(False, f"no answer: {type(exc).__name__}: {_short(exc)}")
        finally:
            conn.close()
        text = f"HTTP {status}"
        if 200 <= status < 300:
            return Outcome(True, text)
        if status in RETRYABLE_STATUS or status >= 500:
            return Outcome(False, text, retry_after=_seconds(retry_after))
        if 300 <= status < 400:
            return Outcome(False, f"{text} (redirects are not followed; give the final URL)", final=True)
        return Outcome(False, f"{text} (refused: not retried)", final=True)

    # ------------------------------------------------------------------ SNS
    def _client(self, region: str) -> Any:
        with self._sns_lock:
            client = self._sns.get(region)
            if client is None:
                import boto3  # lazily: only a daemon that publishes to SNS pays for it

                client = self._sns[region] = boto3.session.Session().client("sns", region_name=region)
            return client

    def _publish(self, target: str, data: dict[str, Any]) -> Outcome:
        from botocore.exceptions import BotoCoreError, ClientError

        arn = target[len("sns:"):]
        raw = encode(data).decode("utf-8")
        subject = f"jobman: job {data['id']} {data['status']}"
        try:
            answer = self._client(sns_region(target)).publish(
                TopicArn=arn, Message=raw, Subject=subject[:100],
                MessageAttributes={"event-id": {"DataType": "String", "StringValue": data["event-id"]},
                                   "event": {"DataType": "String", "StringValue": data["event"]}})
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            text = f"SNS {code}: {_short(error.get('Message') or '')}"
            if code in _SNS_RETRYABLE or http_status >= 500 or http_status == 429:
                return Outcome(False, text)
            return Outcome(False, f"{text} (refused: not retried)", final=True)
        except BotoCoreError as exc:
            return Outcome(False, f"no answer from SNS: {_short(exc)}")
        return Outcome(True, f"SNS message {answer.get('MessageId', '?')}")


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is ignored: the backoff applies)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _short(exc: Any) -> str:
    return " ".join(str(exc).split())[:200]
