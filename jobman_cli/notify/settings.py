"""Notification settings: ``[notify]`` in config.toml, ``JOBMAN_NOTIFY_*``, and the signing secret.

=====================  ==============================  ==========================================
config.toml [notify]   environment                     meaning (default)
=====================  ==============================  ==========================================
``targets``            —                               targets of a job scheduled without any (none)
``on``                 —                               ``failure`` or ``end`` for those jobs (failure)
``secret_file``        ``JOBMAN_NOTIFY_SECRET_FILE``   the signing secret's 0600 file
                                                       (``$JOBMAN_HOME/notify-secret``, made on the
                                                       daemon's first start)
—                      ``JOBMAN_NOTIFY_SECRET``        the secret itself (wins over the file)
``max_age``            ``JOBMAN_NOTIFY_MAX_AGE``       stop retrying this long after the event (24h)
``backoff_base``       ``JOBMAN_NOTIFY_BACKOFF_BASE``  first retry after (30s), doubling ...
``backoff_max``        ``JOBMAN_NOTIFY_BACKOFF_MAX``   ... up to (1h)
``timeout``            ``JOBMAN_NOTIFY_TIMEOUT``       one attempt's timeout (10s)
``workers``            ``JOBMAN_NOTIFY_WORKERS``       deliveries in flight at once (32)
``busy_workers``       ``JOBMAN_NOTIFY_BUSY_WORKERS``  ... while callbacks are arriving (4)
``scan_interval``      ``JOBMAN_NOTIFY_SCAN_INTERVAL`` how often the store is searched for deliveries
                                                       no hook announced (60s)
``receipt_wait``       ``JOBMAN_NOTIFY_RECEIPT_WAIT``  how long after a job ended its first notification
                                                       waits for the cost receipt, when this daemon makes
                                                       receipts and the job will get one (60s; 0: never)
=====================  ==============================  ==========================================

Durations are seconds (a number, fractions allowed) or ``30s``/``10m``/``2h``/``1d``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_section, jobman_home
from ..errors import ConfigError, InvalidInput
from ..privatefile import publish_private_file, read_private_file
from .deliveries import Policy
from .targets import DEFAULT_NOTIFY_ON, validate_notify_on, validate_targets

SECRET_ENV = "JOBMAN_NOTIFY_SECRET"
SECRET_FILE_NAME = "notify-secret"
MIN_SECRET = 16
#: Seconds after a job ended that its first notification waits for the cost receipt, when the
#: daemon makes receipts and the job will get one. A receipt is usually written within a second
#: (and at once as "unknown" on a final price error); a transient one is retried with a 30 s
#: backoff, and the news of a failure must not wait for that: 10 s at most.
RECEIPT_WAIT = 10.0
_MAX_SECRET_FILE = 4096


@dataclass(frozen=True)
class NotifySettings:
    policy: Policy = Policy()
    timeout: float = 10.0
    workers: int = 32
    #: Deliveries in flight while callbacks are arriving (the daemon's API changed a job in the
    #: last half second): callbacks come first.
    busy_workers: int = 4
    scan_interval: float = 60.0
    #: See :data:`RECEIPT_WAIT` (tests make it short or long).
    receipt_wait: float = RECEIPT_WAIT


def default_targets(home: Path | None = None) -> tuple[tuple[str, ...], str]:
    """``[notify] targets`` and ``on``: what a job scheduled without ``--notify`` gets."""
    section = config_section("notify", home)
    try:
        targets = validate_targets(section.get("targets"), "config file [notify] targets")
        notify_on = validate_notify_on(section.get("on", DEFAULT_NOTIFY_ON), "config file [notify] on")
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from None
    return targets, notify_on


def _seconds(value: Any, name: str, minimum: float) -> float:
    from ..validation import duration_seconds

    number: float | None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            parsed = duration_seconds(text)
            number = float(parsed) if parsed is not None else None
    if number is None or not number >= minimum:
        raise ConfigError(f"{name}: {value!r} must be a duration of at least {minimum:g} s (e.g. 30s, 10m, 2h)")
    return number


def notify_settings(home: Path | None = None) -> NotifySettings:
    """The daemon's delivery settings by precedence: environment, then ``[notify]``, then defaults."""
    section = config_section("notify", home)

    def get(key: str, default: float, minimum: float) -> float:
        env = f"JOBMAN_NOTIFY_{key.upper()}"
        if os.environ.get(env):
            return _seconds(os.environ[env], env, minimum)
        if key in section:
            return _seconds(section[key], f"config file [notify] {key}", minimum)
        return default

    timeout = get("timeout", 10.0, 0.1)
    policy = Policy(backoff_base=get("backoff_base", 30.0, 0.0), backoff_max=get("backoff_max", 3600.0, 0.0),
                    max_age=get("max_age", 86400.0, 1.0), lease=max(60.0, 4 * timeout))
    return NotifySettings(policy=policy, timeout=timeout, workers=int(get("workers", 32, 1)),
                          busy_workers=int(get("busy_workers", 4, 1)),
                          scan_interval=get("scan_interval", 60.0, 0.1),
                          receipt_wait=get("receipt_wait", RECEIPT_WAIT, 0.0))


def load_or_create_secret(home: Path | None = None) -> tuple[bytes, str]:
    """The webhook signing secret and where it came from (for the daemon's start-up line).

    ``JOBMAN_NOTIFY_SECRET``, else the file (``JOBMAN_NOTIFY_SECRET_FILE``, ``[notify]
    secret_file``, or ``$JOBMAN_HOME/notify-secret``, made 0600 on first use). Like the API token
    file, a secret file that group or others may read is refused, not used: it must be treated as
    leaked (receivers would accept forged notifications)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        secret = from_env.strip()
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"{SECRET_ENV} must be at least {MIN_SECRET} characters "
                              "(e.g. the output of 'openssl rand -hex 32')")
        return secret.encode("utf-8"), SECRET_ENV
    home = Path(home) if home is not None else jobman_home()
    configured = os.environ.get("JOBMAN_NOTIFY_SECRET_FILE") or config_section("notify", home).get("secret_file")
    if configured is not None and not isinstance(configured, str):
        raise ConfigError("config file [notify] secret_file must be a path")
    path = Path(configured).expanduser() if configured else home / SECRET_FILE_NAME
    if not configured and not path.exists() and not path.is_symlink():
        _create(path)
    return _read(path), f"secret file {path}"


def _create(path: Path) -> None:
    """Make the secret file unless another daemon did first (then theirs is read): published
    whole, so a daemon starting at the same moment never reads it half-written."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the notification secret file {path}: {err.strerror or err}") from None
    publish_private_file(path, secrets.token_hex(32) + "\n", label="the notification secret file")


def _read(path: Path) -> bytes:
    data = read_private_file(path, label=f"the notification secret file {path}", limit=_MAX_SECRET_FILE,
                             leaked_hint=", or replace it (and tell your receivers the new secret)")
    secret = data.strip()
    if len(data) > _MAX_SECRET_FILE or len(secret) < MIN_SECRET:
        raise ConfigError(f"the notification secret file {path} must hold {MIN_SECRET} to {_MAX_SECRET_FILE} "
                          "bytes (e.g. the output of 'openssl rand -hex 32')")
    return secret
