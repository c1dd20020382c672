"""Remote use (DESIGN.md section 15): the CLI's verbs over a daemon's REST API.

:class:`RemoteService` has the methods the CLI calls on :class:`~jobman_cli.service.JobService`
(``schedule``, ``get``, ``list``, ``list_api``, ``report``, ``cancel``, ``wait``) plus
``show_log``, so ``cli.py`` stays the same for both modes: ``State.service()`` returns this when
``--server``/``JOBMAN_SERVER`` is set. Output, ``--json`` shapes and exit codes follow from that:
the server renders jobs with the same :func:`~jobman_cli.model.job_to_api` and the CLI prints the
server's JSON as it came; bad input is checked here first with the CLI's own field names (so the
message and exit 2 are the local ones, and nothing is sent); the server's errors come back as one
line with the exit code its HTTP status means (400 and a schedule's 409 are usage errors, exit 2;
anything else 1), field names translated to the flags.

Standard library only (``http.client`` with an ``ssl`` context): the CLI starts fast and needs no
extra package. GETs are retried on connection errors (idempotent); POST and PUT are sent once on a
fresh connection, so a request is never repeated behind the operator's back. The token is sent only
in the ``Authorization`` header and never appears in a message.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Collection, Sequence
from urllib.parse import quote, urlencode, urlsplit

from .errors import ConfigError, JobmanError, one_line
from .privatefile import read_private_file

PREFIX = "/jobMan/v1.1"  # the same as jobman_cli.api.PREFIX (not imported: that module loads the server)
TOKEN_ENV = "JOBMAN_API_TOKEN"
#: Key of :attr:`Job.extra` holding the server's JSON of a remote job, printed as is by ``--json``.
REMOTE_JSON = "_remote-json"
TIMEOUT = 30.0
GET_ATTEMPTS = 3
WAIT_POLL = 0.5
_TLS_HINT = ("if the daemon uses a self-signed certificate, pass it with --cacert FILE (or JOBMAN_CACERT); "
             "check too that the URL names the host the certificate is for")


class RemoteError(JobmanError):
    """An error answered by (or on the way to) the server, with the exit code local use would give."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotRemote(JobmanError):
    """A command that has no remote form yet (a usage error: run it on the daemon's machine)."""

    exit_code = 2


def read_token(token_file: str | None) -> str:
    """The API token: ``--token-file`` if given, else ``JOBMAN_API_TOKEN``. A token file that group
    or others can read is refused (as the daemon refuses its own): the token must be treated as leaked."""
    if token_file is not None:
        path = Path(token_file)
        data = read_private_file(path, label=str(path), limit=4096, prefix="--token-file: ")
        token, where = data.decode("ascii", "replace").strip(), f"--token-file: {path}"
    else:
        value = os.environ.get(TOKEN_ENV)
        if value is None:
            raise ConfigError(f"remote use needs the daemon's API token: set {TOKEN_ENV} or pass --token-file FILE "
                              "(the token is in $JOBMAN_HOME/api-token on the daemon's machine)")
        token, where = value.strip(), TOKEN_ENV
    if not token:
        raise ConfigError(f"{where} is empty; it must hold the daemon's API token")
    if len(token) > 512 or not all("\x21" <= c <= "\x7e" for c in token):
        raise ConfigError(f"{where} must hold 1 to 512 visible ASCII characters without spaces")
    return token


def _job(api: dict[str, Any]) -> Any:
    """A :class:`~jobman_cli.model.Job` for the renderers, carrying the server's JSON for ``--json``."""
    from .model import job_from_record

    job = job_from_record({**api, "notify-targets": api.get("notify") or ()})
    return replace(job, extra={REMOTE_JSON: api})


def _field_translation() -> list[tuple[str, str]]:
    from .service import API_FIELDS, CLI_FIELDS

    pairs = [(getattr(API_FIELDS, f.name), getattr(CLI_FIELDS, f.name)) for f in fields(API_FIELDS)]
    return sorted(pairs, key=lambda pair: -len(pair[0]))  # "notify-on" before "notify"


class RemoteEvent:
    """One log line as the server sent it; the CLI writes ``message`` or ``to_json()``."""

    __slots__ = ("data", "message")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.message = str(data.get("message", ""))

    def to_json(self) -> dict[str, Any]:
        return self.data


class RemoteService:
    """The CLI's service over HTTP(S). ``url`` is the daemon's base URL (http or https)."""

    remote = True

    def __init__(self, url: str, token: str, *, cacert: str | None = None, timeout: float = TIMEOUT) -> None:
        bad = _usage(f"--server: {url!r} is not an http:// or https:// URL such as https://jobs.example:8321")
        try:  # urlsplit refuses a broken [IPv6] host with ValueError; http.client refuses spaces/controls later
            parts = urlsplit(url.strip())
            host = parts.hostname
        except ValueError:
            raise bad from None
        if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment \
                or any(c.isspace() or not c.isprintable() for c in url.strip()):
            raise bad
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise _usage(f"--server: {url!r} has an invalid port") from None
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.host = parts.hostname
        self.base = parts.path.rstrip("/") + PREFIX
        self.timeout = timeout
        self._token = token
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self._context = ssl.create_default_context(cafile=cacert)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(f"--cacert: cannot load {cacert}: "
                                  f"{getattr(err, 'strerror', None) or getattr(err, 'reason', None) or err}") from None
        self._kept: http.client.HTTPConnection | None = None
        self.last_status = 0
        self.notify_defaults: Any = None  # the server's [notify] config applies, not this machine's

    def __getattr__(self, name: str) -> Any:
        raise NotRemote("this command cannot run with --server (JOBMAN_SERVER) yet; run it on the daemon's machine")

    # ------------------------------------------------------------------ HTTP
    def _connect(self) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _send(self, method: str, path: str, body: dict[str, Any] | None, conn: http.client.HTTPConnection
              ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn.request(method, self.base + path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        if response.getheader("connection", "").lower() == "close":
            conn.close()
        return response.status, payload

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One request; GETs reuse a kept connection and are retried on connection errors."""
        if method != "GET":
            conn = self._connect()
            try:
                return self._send(method, path, body, conn)
            except (OSError, http.client.HTTPException) as err:
                raise self._transport_error(err) from None
            finally:
                conn.close()
        for attempt in range(GET_ATTEMPTS):
            conn = self._kept or self._connect()
            self._kept = None
            try:
                answer = self._send(method, path, None, conn)
                self._kept = conn
                return answer
            except (ssl.SSLError, ssl.CertificateError) as err:
                conn.close()
                raise self._transport_error(err) from None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                if attempt == GET_ATTEMPTS - 1 or isinstance(err, (socket.timeout, TimeoutError)):  # slow: not again
                    raise self._transport_error(err) from None
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _transport_error(self, err: BaseException) -> RemoteError:
        if isinstance(err, (ssl.SSLError, ssl.CertificateError)):
            reason = getattr(err, "verify_message", None) or getattr(err, "reason", None) or err
            return RemoteError(f"TLS failure talking to the jobman server at {self.url}: {one_line(reason)}; {_TLS_HINT}")
        if isinstance(err, socket.gaierror):
            reason = f"unknown host {self.host!r}"
        elif isinstance(err, ConnectionRefusedError):
            reason = "connection refused (is `jobman daemon` running there, with its API on this port?)"
        elif isinstance(err, (socket.timeout, TimeoutError)):
            reason = f"no answer within {self.timeout:g} s"
        elif isinstance(err, http.client.RemoteDisconnected) or isinstance(err, ConnectionResetError):
            reason = "the connection was closed without an answer (an https server reached with http://?)"
        else:
            reason = one_line(getattr(err, "strerror", None) or err)
        return RemoteError(f"cannot reach the jobman server at {self.url}: {reason}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              usage_statuses: Collection[int] = (400,), translate: bool = False) -> Any:
        status, payload = self._request(method, path, body)
        self.last_status = status
        if 200 <= status < 300:
            if payload is None:
                raise RemoteError(f"the jobman server at {self.url} answered HTTP {status} without JSON")
            return payload
        message = payload.get("error") if isinstance(payload, dict) and isinstance(payload.get("error"), str) else ""
        message = one_line(message) or f"HTTP {status}"
        if status == 401:
            raise RemoteError(f"the jobman server at {self.url} refused the API token ({message}); use the daemon's "
                              f"token (JOBMAN_API_TOKEN or --token-file; it is $JOBMAN_HOME/api-token on its machine)")
        if translate:
            for api_name, cli_name in _field_translation():
                if message.startswith(api_name + ":"):
                    message = cli_name + message[len(api_name):]
                    break
        if status >= 500 and not message.startswith("job "):
            message = f"the jobman server at {self.url} answered HTTP {status}: {message}"
        raise RemoteError(message, 2 if status in usage_statuses else 1)

    # ------------------------------------------------------------------ the service's methods
    def schedule(self, request: Any, names: Any = None) -> tuple[Any, bool]:
        """Validate here with the CLI's names (the local message, nothing sent), then POST."""
        from .service import CLI_FIELDS, RELATIVE_PREFIXES, JobService

        draft = JobService(None).validate(request, names or CLI_FIELDS)  # type: ignore[arg-type]
        when = request.when.strip()
        # An absolute time without an offset means this machine's zone: send the instant itself.
        sent_when = when if when.lower().startswith(RELATIVE_PREFIXES) else draft.date_time.isoformat()
        body = {"docker-image": request.image, "date-time": sent_when, "title": request.title,
                "env-variables": dict(draft.env_variables), "instance-type": request.instance_type,
                "timeout": request.timeout, "start-deadline": request.start_deadline,
                "idempotency-key": request.idempotency_key, "tz": request.tz, "command": request.command,
                "entrypoint": request.entrypoint, "disk-gb": draft.disk_gb, "secrets": request.secrets or None,
                "notify": request.notify, "notify-on": request.notify_on,
                "subnet-ids": list(draft.subnet_ids) or None, "capacity": request.capacity,
                "max-interruptions": None if request.max_interruptions is None else draft.max_interruptions,
                "max-cost": draft.max_cost}
        body = {k: v for k, v in body.items() if v is not None}
        if request.container_imds:
            body["container-imds"] = True
        api = self._call("POST", "/jobs/schedule", body, usage_statuses=(400, 409), translate=True)
        return _job(api), self.last_status == 201  # 200: the job an idempotency key already named

    def get(self, job_id: int) -> Any:
        return _job(self._call("GET", f"/jobs/{int(job_id)}/status"))

    def schedules(self) -> Any:
        """The daemon's recurring schedules (``jobman --server URL schedules ...``)."""
        from .remote_schedules import RemoteSchedules

        return RemoteSchedules(self)

    def list_api(self, statuses: Collection[Any] | None = None, **filters: Any) -> list[dict[str, Any]]:
        query = [("status", getattr(s, "value", s)) for s in statuses or ()]
        query += [(name, str(value)) for name, value in filters.items() if value is not None]
        path = "/jobs" + (f"?{urlencode(query, quote_via=quote)}" if query else "")
        answer = self._call("GET", path)
        return list(answer.get("jobs") or [])

    def list(self, statuses: Collection[Any] | None = None, **filters: Any) -> list[Any]:
        return [_job(api) for api in self.list_api(statuses, **filters)]

    def report(self, job_id: int, status: str, exit_code: int | None = None, reason_code: Any = None,
               reason: Any = None) -> Any:
        body = {"status": status, "exit-code": exit_code, "reason-code": reason_code, "reason": reason}
        body = {k: v for k, v in body.items() if v is not None}
        return _job(self._call("PUT", f"/jobs/{int(job_id)}/callback", body, translate=True))

    def cancel(self, job_id: int, terminate: Callable[[str], None] | None = None) -> Any:
        """The daemon cancels and terminates the instance with its own credentials (``terminate`` unused)."""
        return _job(self._call("POST", f"/jobs/{int(job_id)}/cancel"))

    def wait(self, job_id: int, timeout: float | None, poll: float = WAIT_POLL) -> Any:
        """Poll the job's status until it is terminal; None if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        while not job.terminal:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
            job = self.get(job_id)
        return job

    def show_log(self, request: Any, *, write: Callable[[Sequence[Any]], None], note: Callable[[str], None],
                 poll: float | None = None, settle: float | None = None) -> int:
        """``jobman logs`` over the API: the daemon reads CloudWatch; following polls with the
        page token, switches to a new attempt and stops as :func:`jobman_cli.joblogs.show_job_log` does."""
        from .joblogs import FOLLOW_POLL, FOLLOW_SETTLE

        poll = FOLLOW_POLL if poll is None else poll
        settle = FOLLOW_SETTLE if settle is None else settle
        query: dict[str, Any] = {}
        if request.attempt is not None:
            query["attempt"] = request.attempt
        if request.since_seconds is not None:
            query["start"] = int((time.time() - request.since_seconds) * 1000)
        if request.follow:
            query["follow"] = 1
        said: set[str] = set()
        ended_at: float | None = None
        received = 0
        last: tuple[str, int] | None = None  # the last line's timestamp and how many lines had it
        skip = 0
        while True:
            try:
                answer = self._call("GET", f"/jobs/{int(request.job_id)}/logs?{urlencode(query)}")
            except RemoteError as err:
                if not (request.follow and "after" in query and self.last_status == 400
                        and str(err).startswith("after:")):
                    raise
                # CloudWatch forgot the page token (a quiet follow of over a day): go on from the last line's
                # instant, without repeating the lines of that millisecond already shown
                query.pop("after")
                if last is not None:
                    query["start"], skip = _epoch_ms(last[0]), last[1]
                continue
            events = [RemoteEvent(e) for e in answer.get("events") or ()]
            while skip and events and last is not None and events[0].data.get("timestamp") == last[0]:
                events.pop(0)
                skip -= 1
            skip = 0 if events else skip
            for event in events:
                stamp = str(event.data.get("timestamp"))
                last = (stamp, last[1] + 1 if last is not None and last[0] == stamp else 1)
            for text in answer.get("notes") or ():
                if text not in said:
                    said.add(text)
                    note(text)
            if events:
                write(events)
            received += len(events)
            if answer.get("next"):
                query["after"] = answer["next"]
            if answer.get("more"):
                continue
            if not request.follow:
                return 0
            job, attempt = answer["job"], int(answer["attempt"])
            query["attempt"] = attempt
            terminal = job["status"] in ("finished", "failed", "cancelled")
            if terminal and not answer.get("waiting"):
                ended_at = ended_at if ended_at is not None else time.monotonic()
                if received == 0 and time.monotonic() - ended_at >= settle:
                    return 0 if job["status"] == "finished" else 1
            if request.attempt is None and int(job["attempts"]) > attempt:
                query.update(attempt=int(job["attempts"]))
                query.pop("after", None)
                note(f"attempt {query['attempt']} of job {job['id']} started; following its log")
            received = 0
            time.sleep(poll)


def _epoch_ms(stamp: str) -> int:
    """Epoch milliseconds of a log line's ``timestamp`` as the API writes it (``...T12:00:00.123Z``)."""
    from datetime import datetime, timezone

    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _usage(message: str) -> JobmanError:
    error = JobmanError(message)
    error.exit_code = 2
    return error
