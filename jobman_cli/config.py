"""Where jobman keeps its files, and the optional config file.

Precedence is flags, then environment (``JOBMAN_*`` and the standard ``AWS_*``), then
``$JOBMAN_HOME/config.toml``, then built-in defaults. Click resolves flags and environment; this
module supplies the config-file layer and the paths. It imports only the standard library so the
CLI's start-up stays fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_FILE_NAME = "config.toml"
DEFAULT_DB_NAME = "jobs.json"
TOKEN_FILE_NAME = "api-token"


def jobman_home() -> Path:
    """``$JOBMAN_HOME``, else the platform's per-user data directory (XDG on Linux)."""
    explicit = os.environ.get("JOBMAN_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "jobman"
    if os.name == "nt":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / "jobman"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobman"


def default_store_location() -> str:
    """``$JOBMAN_STORE``, else ``$JOBMAN_DB``, else the TinyDB file under ``JOBMAN_HOME``."""
    return os.environ.get("JOBMAN_STORE") or os.environ.get("JOBMAN_DB") or str(jobman_home() / DEFAULT_DB_NAME)


def load_config_file(home: Path | None = None) -> dict[str, Any]:
    """The parsed ``config.toml`` (empty when absent). A broken file is a one-line ConfigError."""
    path = (home or jobman_home()) / CONFIG_FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    from .configcheck import check_config

    check_config(path, data)  # a typo or a wrong type is an error, never silently ignored
    return data


def config_file_note(home: Path | None = None) -> str:
    """For the daemon's start-up lines: which config file applies (or that none was found)."""
    path = (home or jobman_home()) / CONFIG_FILE_NAME
    return f"config file {path}" + ("" if path.exists() else " (absent: flags, environment and defaults only)")


def config_section(name: str, home: Path | None = None) -> dict[str, Any]:
    section = load_config_file(home).get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file: [{name}] must be a table")
    return section


def pick(flag: Any, env_name: str | None, section: dict[str, Any], key: str, default: Any = None) -> Any:
    """One setting by precedence: flag, environment, config file, default."""
    if flag is not None and flag != () and flag != "":
        return flag
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    if key in section:
        return section[key]
    return default


# --------------------------------------------------------------------------- job logs (DESIGN.md section 10)
DEFAULT_LOG_GROUP = "jobman"
DEFAULT_LOG_RETENTION_DAYS = 30
#: The retention periods CloudWatch Logs accepts (PutRetentionPolicy), in days.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)
_LOG_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/#")


@dataclass(frozen=True)
class LogSettings:
    """Where job logs go: the CloudWatch Logs group (one stream per job attempt, see
    :func:`jobman_cli.joblogs.stream_name`), its retention, and the Logs endpoint instances use
    (``None``: the region's own; an emulator URL in tests)."""

    group: str = DEFAULT_LOG_GROUP
    retention_days: int = DEFAULT_LOG_RETENTION_DAYS
    endpoint_url: str | None = None


def _log_problem(name: str, rule: str, flag: bool) -> Exception:
    from .errors import InvalidInput

    return InvalidInput(name, rule) if flag else ConfigError(f"{name}: {rule}")


def log_settings(group: str | None = None, retention_days: Any = None, endpoint_url: str | None = None,
                 home: Path | None = None) -> LogSettings:
    """Log settings by precedence: the arguments (flags), ``JOBMAN_LOG_GROUP`` /
    ``JOBMAN_LOG_RETENTION_DAYS`` / ``JOBMAN_LOG_ENDPOINT``, then ``[logs]`` in config.toml
    (``group``, ``retention_days``, ``endpoint_url``), then the defaults. A bad flag is a usage
    error naming it; a bad environment or config value is a ConfigError naming where it came from."""
    section = config_section("logs", home)

    def origin(flag_value: Any, flag: str, env: str, key: str) -> tuple[str, bool]:
        if flag_value is not None and flag_value != "":
            return flag, True
        if os.environ.get(env):
            return env, False
        return f"config file [logs] {key}", False

    name = pick(group, "JOBMAN_LOG_GROUP", section, "group", DEFAULT_LOG_GROUP)
    where, flag = origin(group, "--log-group", "JOBMAN_LOG_GROUP", "group")
    if (not isinstance(name, str) or not 1 <= len(name) <= 512 or not set(name) <= _LOG_GROUP_CHARS
            or name.startswith("aws/")):
        raise _log_problem(where, f"{name!r} is not a CloudWatch Logs group name (1-512 of A-Z a-z 0-9 . _ - / #, "
                                  "not starting with aws/)", flag)
    raw = pick(retention_days, "JOBMAN_LOG_RETENTION_DAYS", section, "retention_days", DEFAULT_LOG_RETENTION_DAYS)
    where, flag = origin(retention_days, "--retention-days", "JOBMAN_LOG_RETENTION_DAYS", "retention_days")
    try:
        days = int(str(raw).strip()) if not isinstance(raw, bool) else None
    except ValueError:
        days = None
    if where.startswith("config file") and not isinstance(raw, int):  # TOML has types: "30" is a mistake
        days = None
    if days not in LOG_RETENTION_DAYS:
        raise _log_problem(where, f"{raw!r} is not a retention CloudWatch Logs accepts "
                                  f"({', '.join(map(str, LOG_RETENTION_DAYS))} days)", flag)
    endpoint = pick(endpoint_url, "JOBMAN_LOG_ENDPOINT", section, "endpoint_url")
    if endpoint is not None:
        where, flag = origin(endpoint_url, "--log-endpoint", "JOBMAN_LOG_ENDPOINT", "endpoint_url")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")) or any(
                c.isspace() or c in "'\"\\`$" for c in endpoint):
            raise _log_problem(where, f"{endpoint!r} must be an http:// or https:// URL", flag)
        endpoint = endpoint.rstrip("/")
    return LogSettings(group=name, retention_days=days, endpoint_url=endpoint)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- writing config.toml
def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string (same escapes)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to config.toml")


def save_config_values(updates: dict[str, dict[str, Any]], home: Path | None = None) -> Path:
    """Set ``key = value`` lines in tables of config.toml, keeping every other line (and comment).

    A key already set in its table (on one line) is replaced in place; a new key goes right under
    its table's header; a missing table is appended. The result is parsed back and must hold the
    new values, else nothing is written. Written atomically (temp file, fsync, rename), mode 0600.
    """
    import re
    import tempfile

    path = (home or jobman_home()) / CONFIG_FILE_NAME
    load_config_file(home)  # a broken file is refused before it is touched
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
    for table, values in updates.items():
        start = next((i for i, line in enumerate(lines) if (m := header.match(line)) and m.group(1) == table), None)
        if start is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines.append(f"[{table}]")
            start = len(lines) - 1
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        for key, value in values.items():
            assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
            line = f"{key} = {_toml_value(value)}"
            found = next((i for i in range(start + 1, end) if assignment.match(lines[i])), None)
            if found is None:
                lines.insert(start + 1, line)
                end += 1
            else:
                lines[found] = line
    text = "\n".join(lines) + "\n"
    import tomllib

    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot update config file {path} safely ({exc}); edit it by hand") from None
    for table, values in updates.items():
        for key, value in values.items():
            if parsed.get(table, {}).get(key) != (list(value) if isinstance(value, tuple) else value):
                raise ConfigError(f"cannot update [{table}] {key} in config file {path} safely; edit it by hand")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=".config.", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return path
