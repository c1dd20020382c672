"""Daemon settings, resolved from flags, then ``JOBMAN_*`` environment, then ``config.toml``.

Kept apart from the daemon so the CLI can build and validate them without importing the loop,
and tests can construct them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import config_section, jobman_home, pick
from .errors import ConfigError

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

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = self.listen_host
        if host in ("0.0.0.0", "::", ""):
            raise ConfigError("--public-url is required when listening on all interfaces "
                              "(instances must know which address reaches this daemon)")
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.listen_port}"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8321`` for IPv6); port 0 picks a free port."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen: {value!r} must be HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def _number(value: Any, name: str, *, minimum: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if number < minimum:
        raise ConfigError(f"{name}: must be at least {minimum:g}")
    return number


def daemon_settings(store_location: str, flags: dict[str, Any]) -> DaemonSettings:
    """Resolve every daemon setting by precedence: flag, ``JOBMAN_*`` env, ``[daemon]`` in config."""
    section = config_section("daemon")
    host, port = parse_listen(str(pick(flags.get("listen"), "JOBMAN_LISTEN", section, "listen", DEFAULT_LISTEN)))
    return DaemonSettings(
        store_location=store_location,
        listen_host=host,
        listen_port=port,
        public_url=pick(flags.get("public_url"), "JOBMAN_PUBLIC_URL", section, "public_url"),
        tls_cert=pick(flags.get("tls_cert"), "JOBMAN_TLS_CERT", section, "tls_cert"),
        tls_key=pick(flags.get("tls_key"), "JOBMAN_TLS_KEY", section, "tls_key"),
        once=bool(flags.get("once")),
        serve_api=not flags.get("no_api"),
        reconcile_interval=_number(pick(flags.get("reconcile_interval"), "JOBMAN_RECONCILE_INTERVAL", section,
                                        "reconcile_interval", 30.0), "--reconcile-interval", minimum=0.1),
        launch_workers=int(_number(pick(flags.get("launch_workers"), "JOBMAN_LAUNCH_WORKERS", section,
                                        "launch_workers", 8), "--launch-workers", minimum=1)),
        max_attempts=int(_number(pick(flags.get("max_attempts"), "JOBMAN_MAX_ATTEMPTS", section,
                                      "max_attempts", 5), "--max-attempts", minimum=1)),
        backoff_base=_number(pick(flags.get("backoff_base"), "JOBMAN_BACKOFF_BASE", section, "backoff_base", 15.0),
                             "--backoff-base", minimum=0.0),
        backoff_max=_number(pick(flags.get("backoff_max"), "JOBMAN_BACKOFF_MAX", section, "backoff_max", 600.0),
                            "--backoff-max", minimum=0.0),
        timeout_grace=_number(pick(flags.get("timeout_grace"), "JOBMAN_TIMEOUT_GRACE", section, "timeout_grace", 600.0),
                              "--timeout-grace", minimum=0.0),
        watch_interval=_number(pick(flags.get("watch_interval"), "JOBMAN_WATCH_INTERVAL", section, "watch_interval",
                                    0.5), "--watch-interval", minimum=0.05),
        launch_lease=_number(pick(flags.get("launch_lease"), "JOBMAN_LAUNCH_LEASE", section, "launch_lease", 60.0),
                             "--launch-lease", minimum=1.0),
    )
