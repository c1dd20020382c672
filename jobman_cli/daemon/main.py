"""``jobman daemon``, the process: check the flags, open the store and the launcher, start the HTTP
listener, build the :class:`~.wiring.Daemon`, run it until a signal, and clean everything up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..config import config_file_note
from ..errors import ConfigError, InvalidInput
from ..service import JobService
from ..settings import DaemonSettings
from .common import TickReport, stderr_log
from .wiring import Daemon


def emulator_endpoint(ec2: Any) -> str | None:
    """The AWS endpoint override in effect (an emulator such as moto_server), or None for real AWS."""
    return (os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL")
            or getattr(ec2, "endpoint_url", None) or None)


def check_public_url(settings: DaemonSettings, ec2: Any) -> str | None:
    """Refuse, before anything is launched, a callback URL no instance could ever reach.

    Every launched instance calls back to this URL; a loopback or unspecified host there is the
    instance itself, so each job would run and then never report (and time out). Under an endpoint
    override (an emulator: no instance really runs) loopback is allowed; the returned note says so.
    ``--once``/``--no-api`` start no listener, so the URL of the daemon that answers must be given.
    """
    import ipaddress
    from urllib.parse import urlsplit

    from ..launchers.userdata import callback_url_for

    emulator = emulator_endpoint(ec2)
    if not settings.public_url and (settings.once or not settings.serve_api) and not emulator:
        flag = "--once" if settings.once else "--no-api"
        raise InvalidInput("--public-url", f"required with {flag}: this process answers no callbacks, so give "
                                           "the URL of the daemon instances can reach (e.g. http://10.0.0.5:8321)")
    url = settings.effective_public_url
    try:
        callback_url_for(url, 1)
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
        host = parts.hostname or ""
    except InvalidInput as exc:
        raise InvalidInput("--public-url", exc.rule) from None
    except ValueError as exc:
        raise InvalidInput("--public-url", f"{url!r} is not a valid URL: {exc}") from None
    try:
        address = ipaddress.ip_address(host)
        unreachable = address.is_loopback or address.is_unspecified
    except ValueError:
        unreachable = host in ("", "localhost") or host.endswith(".localhost")
    if not unreachable:
        return None
    if emulator:
        return (f"callbacks go to the loopback address {host or url} because an emulator endpoint is "
                f"configured ({emulator}); no real instance runs")
    raise InvalidInput("--public-url", f"instances cannot reach {host or url}; give an address they can reach "
                                       "(e.g. --public-url http://10.0.0.5:8321)")


class DaemonLock:
    """``<db>.daemon.lock``: one daemon per TinyDB file (a second one gets a one-line error).

    ``flock`` is released by the kernel when the process dies, even by SIGKILL, so a crashed daemon
    never blocks its successor.
    """

    def __init__(self, store_path: str) -> None:
        import fcntl

        from ..stores.filelock import ensure_dir

        # The real path: a store reached through a symlink has one lock, not one per name.
        self.path = Path(f"{os.path.realpath(store_path)}.daemon.lock")
        ensure_dir(self.path.parent)  # a fresh host: the store's directory does not exist yet (0700)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the daemon lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"another jobman daemon is already running on {store_path} "
                              f"(it holds {self.path})") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT only call ``stop`` (which sets two events); the loop does the rest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _api_log(message: str) -> None:
    from ..clock import SystemClock
    from ..model import format_time

    stderr_log(f"{format_time(SystemClock().now())} api: {message}")


def start_api(settings: DaemonSettings, service: JobService) -> tuple[Any, str]:
    """Start the HTTP listener if this build has one. Returns ``(server or None, token note)``."""
    try:
        from ..api import ApiServer, load_or_create_api_token
    except ModuleNotFoundError as exc:
        if exc.name != "jobman_cli.api":
            raise
        return None, "HTTP API not available in this build; running without it"
    token, token_path = load_or_create_api_token(settings.home)
    note = f"API token file {token_path}" if token_path else "API token from JOBMAN_API_TOKEN"
    server = ApiServer(service, host=settings.listen_host, port=settings.listen_port, api_token=token,
                       tls_cert=settings.tls_cert, tls_key=settings.tls_key, log=_api_log)
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.listen_host}:{settings.listen_port}: "
                          f"{exc.strerror or exc}") from None
    return server, note


def summary(report: TickReport) -> str:
    counts: dict[str, int] = {}
    for outcome in report.outcomes:
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing to do"


def run_daemon(settings: DaemonSettings, ec2: Any) -> int:
    """Open the store, check credentials, start the listener, run until a signal. Exit code 0.

    Every start-up problem (no credentials, a second daemon on the same file, the port taken, a
    corrupt store) is a :class:`~jobman_cli.errors.JobmanError`, which the CLI prints as one line
    with exit code 1; an unusable ``--public-url`` is a usage error (exit 2).
    """
    from ..joblogs import job_log_target, prepare_log_group
    from ..notify.send import Sender
    from ..notify.settings import default_targets, load_or_create_secret, notify_settings
    from ..capacity import config_defaults
    from ..launchers.ec2 import EC2Launcher
    from ..stores import open_store

    url_note = check_public_url(settings, ec2)  # a usage error (exit 2) before anything else
    launcher = EC2Launcher(ec2)
    launcher.check_credentials()
    exclusive = not settings.store_location.startswith("dynamodb://")
    lock = DaemonLock(settings.store_location) if exclusive else None
    store = server = daemon = None
    try:
        store = open_store(settings.store_location, create=True)
        service = JobService(store)
        service.notify_defaults = default_targets(settings.home)
        service.capacity_defaults = config_defaults(settings.home)  # [ec2] capacity: the API's jobs and schedules' runs
        notify = notify_settings(settings.home)
        secret, secret_origin = load_or_create_secret(settings.home)
        sender = Sender(secret, timeout=notify.timeout)
        note = "HTTP API disabled"
        if settings.serve_api and not settings.once:
            server, note = start_api(settings, service)
            if server is not None:
                settings = dataclasses.replace(settings, listen_port=server.port)
        log_target = job_log_target(ec2)
        daemon = Daemon(store, launcher, settings, service=service, exclusive=exclusive,
                        launch_lease=settings.launch_lease, log_target=log_target, notify=notify,
                        notify_sender=sender)
        # The API's writes are this process's own: through the daemon's recording store, the
        # observer knows each one before it lands and never logs it as another process's.
        service.store = daemon.store
        daemon.log(f"jobman {__version__} daemon {daemon.daemon_id} starting; {config_file_note(settings.home)}")
        daemon.log(f"store {store.location} (store id {store.store_id}; instances tagged "
                   f"{launcher.settings.store_tag_key}={store.store_id})")
        if server is not None:
            scheme = "https" if settings.tls_cert else "http"
            host = f"[{settings.listen_host}]" if ":" in settings.listen_host else settings.listen_host
            daemon.log(f"listening on {scheme}://{host}:{settings.listen_port}")
        daemon.log(f"instances call back to {daemon.public_url}; {note}")
        if url_note:
            daemon.log(url_note)
        daemon.log(prepare_log_group(ec2))
        policy = notify.policy
        daemon.log(f"notifications: webhooks signed with the {secret_origin}; each delivery retried "
                   f"{policy.backoff_base:g}s doubling to {policy.backoff_max:g}s, for up to {policy.max_age:g}s "
                   f"after the job ended; {notify.workers} at once")
        if daemon.schedules is not None:
            daemon.log(daemon.schedules.summary())
        if not exclusive:
            daemon.log(f"shared store: another daemon's claim is taken over once it went {daemon.launch_lease:g}s "
                       "without a renewal (timed on this host's monotonic clock)")
        if settings.once:
            report = daemon.tick(wait_launches=True, reconcile=True)
            if daemon.notifier is not None:
                daemon.notifier.run_once()
            daemon.log(f"one pass done: {summary(report)}")
            return 0
        with stop_on_signals(daemon.stop):
            return daemon.run()
    finally:
        if daemon is not None:
            daemon.close()
        if server is not None:
            server.stop()
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()
