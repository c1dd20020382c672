"""Where jobman keeps its files, and the optional config file.

Precedence is flags, then environment (``JOBMAN_*`` and the standard ``AWS_*``), then
``$JOBMAN_HOME/config.toml``, then built-in defaults. Click resolves flags and environment; this
module supplies the config-file layer and the paths. It imports only the standard library so the
CLI's start-up stays fast.
"""

from __future__ import annotations

import os
import sys
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
    return data


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
