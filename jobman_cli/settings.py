"""Daemon settings, resolved from flags, then ``JOBMAN_*`` environment, then ``config.toml``.

Kept apart from the daemon so the CLI can build and validate them without importing the loop,
and tests can construct them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import config_section, jobman_home, pick
from .errors import ConfigError, InvalidInput
from .housekeeping import parse_retention

DEFAULT_LISTEN = "127.0.0.1:8321"


@dataclass(frozen=True)
class DaemonSettings:
    store_location: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8321
    #: The base URL instances call back to; defaults to http(s)://listen address.
    public_url: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: A PEM file of the certificate(s) instances trust for callbacks (a self-signed --tls-cert or
    #: its private CA); None: the instance's public CAs. Read and validated when the daemon starts.
    callback_ca: str | None = None
    home: Path = field(default_factory=jobman_home)
    once: bool = False
    serve_api: bool = True
    reconcile_interval: float = 30.0
    launch_workers: int = 8
    max_attempts: int = 5
    backoff_base: float = 15.0
    backoff_max: float = 600.0
    #: Extra time the daemon grants beyond a job's timeout (boot, docker install, image pull).
    timeout_grace: float = 600.0
    #: How often the store's change marker is polled for jobs added by other processes.
    watch_interval: float = 0.5
    #: On a shared store, how long another daemon's claim is honoured before it is taken over.
    launch_lease: float = 60.0
    #: The client-side token bucket in front of RunInstances (EC2's own: 1,000 instances, refilled
    #: at 2 per second per account and region): at most ``launch_burst`` launches at once, then
    #: ``launch_rate`` per second.
    launch_burst: int = 1000
    launch_rate: float = 2.0
    #: Seconds after its end that a finished/failed/cancelled job is pruned, checked once a day
    #: (:mod:`jobman_cli.daemon.retention`); None: never (the default, see jobman_cli.housekeeping).
    retention: int | None = None

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = self.listen_host
        if host in ("0.0.0.0", "::", ""):
            raise InvalidInput("--public-url", "required when listening on all interfaces "
                               "(instances must know which address reaches this daemon)")
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.listen_port}"


def _usage(name: str, rule: str, flag: bool) -> Exception:
    """A bad flag is a usage error (exit 2, naming the flag); a bad environment variable or config
    file value is a configuration error (exit 1) naming where it came from."""
    return InvalidInput(name, rule) if flag else ConfigError(f"{name}: {rule}")


def parse_listen(value: str, name: str = "--listen", *, flag: bool = True) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8321`` for IPv6); port 0 picks a free port."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _usage(name, f"{value!r} must be HOST:PORT, e.g. {DEFAULT_LISTEN}", flag)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def _number(value: Any, name: str, *, minimum: float = 0.0, flag: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _usage(name, f"{value!r} is not a number", flag) from None
    if not number >= minimum:  # also refuses NaN
        raise _usage(name, f"must be at least {minimum:g} (got {value!r})", flag)
    return number


def _positive(number: float, flags: dict[str, Any], key: str, env: str) -> float:
    """A rate: above zero (zero would never launch anything)."""
    if number > 0:
        return number
    name, flag = _origin(flags, key, env, "--" + key.replace("_", "-"))
    raise _usage(name, f"must be more than 0 (got {number:g})", flag)


def _origin(flags: dict[str, Any], key: str, env: str, cli_name: str) -> tuple[str, bool]:
    """Where a setting came from, for its error message: (name, given as a flag)."""
    import os

    if flags.get(key) is not None and flags.get(key) != "":
        return cli_name, True
    if os.environ.get(env):
        return env, False
    return f"config file [daemon] {key}", False


def _text(value: Any, name: str) -> str | None:
    """A text setting; a number or table in config.toml is a one-line error, not a crash later."""
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{name}: must be a string (got {value!r})")


def daemon_settings(store_location: str, flags: dict[str, Any]) -> DaemonSettings:
    """Resolve every daemon setting by precedence: flag, ``JOBMAN_*`` env, ``[daemon]`` in config."""
    section = config_section("daemon")

    def value(key: str, env: str, default: Any = None) -> Any:
        return pick(flags.get(key), env, section, key, default)

    def number(key: str, env: str, default: float, minimum: float, whole: bool = False) -> float:
        name, flag = _origin(flags, key, env, "--" + key.replace("_", "-"))
        raw = value(key, env, default)
        if name.startswith("config file"):  # TOML has types: "30" or 2.5 workers is a mistake, not a number
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (whole and not isinstance(raw, int)):
                raise ConfigError(f"{name}: must be {'a whole number' if whole else 'a number'} (got {raw!r})")
        return _number(raw, name, minimum=minimum, flag=flag)

    def text(key: str, env: str) -> str | None:
        return _text(value(key, env), _origin(flags, key, env, "--" + key.replace("_", "-"))[0])

    listen_name, listen_flag = _origin(flags, "listen", "JOBMAN_LISTEN", "--listen")
    retention_name, retention_flag = _origin(flags, "retention", "JOBMAN_RETENTION", "--retention")
    host, port = parse_listen(str(value("listen", "JOBMAN_LISTEN", DEFAULT_LISTEN)), listen_name, flag=listen_flag)
    return DaemonSettings(
        store_location=store_location,
        listen_host=host,
        listen_port=port,
        public_url=text("public_url", "JOBMAN_PUBLIC_URL"),
        tls_cert=text("tls_cert", "JOBMAN_TLS_CERT"),
        tls_key=text("tls_key", "JOBMAN_TLS_KEY"),
        callback_ca=text("callback_ca", "JOBMAN_CALLBACK_CA"),
        once=bool(flags.get("once")),
        serve_api=not flags.get("no_api"),
        reconcile_interval=number("reconcile_interval", "JOBMAN_RECONCILE_INTERVAL", 30.0, 0.1),
        launch_workers=int(number("launch_workers", "JOBMAN_LAUNCH_WORKERS", 8, 1, whole=True)),
        max_attempts=int(number("max_attempts", "JOBMAN_MAX_ATTEMPTS", 5, 1, whole=True)),
        backoff_base=number("backoff_base", "JOBMAN_BACKOFF_BASE", 15.0, 0.0),
        backoff_max=number("backoff_max", "JOBMAN_BACKOFF_MAX", 600.0, 0.0),
        timeout_grace=number("timeout_grace", "JOBMAN_TIMEOUT_GRACE", 600.0, 0.0),
        watch_interval=number("watch_interval", "JOBMAN_WATCH_INTERVAL", 0.5, 0.05),
        launch_lease=number("launch_lease", "JOBMAN_LAUNCH_LEASE", 60.0, 1.0),
        launch_burst=int(number("launch_burst", "JOBMAN_LAUNCH_BURST", 1000, 1, whole=True)),
        launch_rate=_positive(number("launch_rate", "JOBMAN_LAUNCH_RATE", 2.0, 0.0), flags, "launch_rate",
                              "JOBMAN_LAUNCH_RATE"),
        retention=parse_retention(value("retention", "JOBMAN_RETENTION"), retention_name, flag=retention_flag),
    )
