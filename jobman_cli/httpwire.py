"""The HTTP/1.1 wire format of the API, without any I/O: limits, parsing, checks, rendering.

Why not ``http.server``: it reads headers with the e-mail parser (up to 100 lines of 64 KiB each,
so 6 MiB per connection), answers errors in HTML, half-supports HTTP/0.9, sends ``100 Continue``
before the application could refuse the request, and bounds a request only per ``recv``. The
listener faces EC2 instances on the network, so the few things it needs are written out here, with
every limit explicit and checked before the bytes it guards are read:

* 8 KiB URL of visible ASCII, 32 KiB and 100 lines of headers, no folded or control-character
  headers, HTTP/1.0 and 1.1 only; bodies need ``Content-Length`` (no chunked), at most 64 KiB,
  ``Content-Type: application/json`` (UTF-8), or the one type the route sets in
  :attr:`Request.body_type` (the dashboard's login form: ``application/x-www-form-urlencoded``);
* every answer is ``application/json`` with ``Content-Length`` (but the dashboard's fixed pages, a
  :class:`RawBody` with its own type); an error is ``{"error": "..."}``.

The connection handling (deadlines, caps, TLS, threads) is :mod:`jobman_cli.httpio`; it feeds
this module lines and asks it for answers' bytes, so each can be read (and tested) alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Callable

MAX_BODY = 64 * 1024
MAX_TARGET = 8 * 1024
MAX_LINE = MAX_TARGET + 64  #: the longest request line read before answering 414
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100

_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")

Log = Callable[[str], None]
Headers = tuple[tuple[str, str], ...]
Answer = tuple[int, Any, Headers]


@dataclass(frozen=True)
class RawBody:
    """A payload sent as is with its own ``Content-Type`` (the dashboard's pages), not as JSON."""

    content_type: str
    data: bytes


class HttpError(Exception):
    """An answer other than success: status, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class TimedOut(Exception):
    """The request (or its body) did not arrive before its deadline: answered 408."""


class Disconnected(Exception):
    """The client went away (EOF, reset, TLS error): there is nobody to answer."""


@dataclass
class Request:
    method: str
    target: str
    path: str  #: the target before ``?``, exactly as sent (never decoded)
    query: str
    version: str
    headers: dict[str, list[str]] = field(default_factory=dict)  #: lowercased name -> values
    #: the one media type the route accepts for its body (set by the application before reading it)
    body_type: str = "application/json"

    def header(self, name: str) -> list[str]:
        return self.headers.get(name, [])

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for value in self.header("connection") for t in value.split(",")}
        return self.version == "HTTP/1.1" and "close" not in tokens

    @property
    def has_body(self) -> bool:
        return bool(self.header("transfer-encoding")) or any(v != "0" for v in self.header("content-length"))

    @property
    def expects_continue(self) -> bool:
        return self.version == "HTTP/1.1" and any(v.lower() == "100-continue" for v in self.header("expect"))


def query_pairs(query: str, max_fields: int, hint: str = "", *, strict: bool = True) -> list[tuple[str, str]]:
    """A query string's ``(name, value)`` pairs, or a 400 that says what is wrong: more than
    ``max_fields`` parameters is said as such (``parse_qsl`` reports it as a ValueError that reads
    like a syntax error), anything else unparseable is "malformed" (``hint``: what is expected)."""
    from urllib.parse import parse_qsl

    count = query.count("&") + 1 if query else 0
    if count > max_fields:
        raise HttpError(400, f"too many query parameters ({count}; at most {max_fields})")
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=strict, max_num_fields=max_fields,
                         encoding="utf-8", errors="strict")
    except ValueError:
        raise HttpError(400, "malformed query string" + (f" (expected {hint})" if hint else "")) from None


def clip(text: str, limit: int = 300) -> str:
    """One line, at most ``limit`` characters (for messages that quote client input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(request: Request | None) -> str:
    """How a log line names a request (never its headers: they may hold a token)."""
    if request is None:
        return "a malformed request"
    return f"{clip(request.method, 20)!r} {clip(request.path, 100)!r}"


# --------------------------------------------------------------------------- parsing
def parse_request_line(line: bytes) -> Request:
    """A request without headers yet, from one line as read (at most :data:`MAX_LINE` bytes)."""
    if not line.endswith(b"\n"):
        if len(line) >= MAX_LINE:
            raise HttpError(414, f"the request line is longer than {MAX_TARGET} bytes")
        raise Disconnected()  # EOF in the middle of the line
    words = line.rstrip(b"\r\n").decode("latin-1").split(" ")
    if len(words) == 2:
        raise HttpError(400, "HTTP/0.9 requests are not supported; use HTTP/1.1")
    if len(words) != 3:
        raise HttpError(400, "malformed request line (expected 'METHOD /path HTTP/1.1')")
    method, target, version = words
    if not _VERSION.fullmatch(version):
        raise HttpError(400, "malformed HTTP version in the request line")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, f"{version} is not supported; use HTTP/1.1")
    if not _TOKEN_CHARS.fullmatch(method):
        raise HttpError(400, "malformed method in the request line")
    if len(target) > MAX_TARGET:
        raise HttpError(414, f"the URL is longer than {MAX_TARGET} bytes")
    if not _VISIBLE_ASCII.fullmatch(target):
        raise HttpError(400, "malformed URL (only visible ASCII characters; percent-encode the rest)")
    path, _, query = target.partition("?")
    return Request(method, target, path, query, version)


def add_header_line(headers: dict[str, list[str]], raw: bytes, total: int) -> bool:
    """Add one header line (``total``: header bytes so far, this line included); False at the
    blank line that ends the head."""
    if raw in (b"\r\n", b"\n"):
        return False
    if total > MAX_HEADER_BYTES:
        raise HttpError(431, f"the request headers are larger than {MAX_HEADER_BYTES // 1024} KiB")
    if not raw.endswith(b"\n"):
        raise Disconnected()
    text = raw.decode("latin-1").rstrip("\r\n")
    if text[:1] in (" ", "\t"):
        raise HttpError(400, "folded header lines are not supported")
    name, colon, value = text.partition(":")
    if not colon or not _TOKEN_CHARS.fullmatch(name):
        raise HttpError(400, "malformed header line (expected 'Name: value')")
    value = value.strip(" \t")
    if _BAD_HEADER_VALUE.search(value):
        raise HttpError(400, f"header {clip(name, 60)} contains control characters")
    headers.setdefault(name.lower(), []).append(value)
    return True


def body_length(request: Request) -> int:
    """The declared body length, after every check that can refuse the body unread."""
    if request.header("transfer-encoding"):
        raise HttpError(411, "Transfer-Encoding (chunked) bodies are not accepted; send a Content-Length")
    lengths = request.header("content-length")
    if not lengths:
        raise HttpError(411, "Content-Length is required")
    if len(set(lengths)) > 1:
        raise HttpError(400, "conflicting Content-Length headers")
    if not re.fullmatch(r"[0-9]+", lengths[0]):
        raise HttpError(400, f"Content-Length must be a non-negative integer (got {clip(lengths[0], 40)!r})")
    length = int(lengths[0]) if len(lengths[0]) <= 18 else MAX_BODY + 1
    if length > MAX_BODY:
        raise HttpError(413, f"the body is over {MAX_BODY // 1024} KiB ({clip(lengths[0], 40)} bytes declared)")
    _check_content_type(request)
    return length


def _check_content_type(request: Request) -> None:
    expected = request.body_type
    values = request.header("content-type")
    if len(values) != 1:
        raise HttpError(415, f"Content-Type must be {expected}")
    media, *params = values[0].split(";")
    if media.strip().lower() != expected:
        raise HttpError(415, f"Content-Type must be {expected} (got {clip(media.strip(), 60)!r})")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HttpError(415, "the body must be UTF-8 (charset=utf-8)")


# --------------------------------------------------------------------------- answers
def encode_json(payload: Any) -> bytes:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a stored string the CLI took from undecodable argv bytes
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


def render(status: int, payload: Any, extra: Headers, *, keep: bool, head_only: bool, server: str) -> bytes:
    """An answer's bytes: JSON with its length; ``Connection: close`` unless ``keep``."""
    raw = isinstance(payload, RawBody)
    body = payload.data if raw else encode_json(payload)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Server: {server}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {payload.content_type if raw else 'application/json'}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in extra),
    ]
    if not keep:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
