"""What ``config.toml`` may hold, checked the moment the file is read.

Why: a typo (``[deamon]``, ``reconcile_intreval``) or a value of the wrong type used to be ignored
silently, so the operator believed a setting was in force that never was. Now an unknown table or
key is a one-line :class:`~jobman_cli.errors.ConfigError` naming the file and the closest known
name. Types and ranges are checked by the code that uses each value (settings.py refuses
``reconcile_interval = "30"``), so a flag can still override a bad value, as precedence says.

The ``[daemon]`` keys are derived from :class:`~jobman_cli.settings.DaemonSettings`, so a new daemon
setting is known here without an edit. Another new table or key: add it to :data:`STATIC_KEYS`.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Tables and keys besides ``[daemon]`` (whose keys come from DaemonSettings).
STATIC_KEYS: dict[str, frozenset[str]] = {
    "ec2": frozenset({"region", "instance_type", "ami", "subnet_id", "security_group_ids", "iam_instance_profile",
                      "key_name", "tags", "store_tag_key", "endpoint_url", "profile", "capacity",
                      "max_interruptions"}),
    "logs": frozenset({"group", "retention_days", "endpoint_url"}),
    "notify": frozenset({"targets", "on", "timeout", "backoff_base", "backoff_max", "max_age", "workers",
                         "busy_workers", "scan_interval", "secret_file", "receipt_wait"}),
    "cost": frozenset({"receipts", "price_max_age"}),
}

#: DaemonSettings fields that are not ``[daemon]`` keys (set by flags or derived).
_NOT_DAEMON_KEYS = {"store_location", "listen_host", "listen_port", "home", "once", "serve_api"}


def known_keys() -> dict[str, frozenset[str]]:
    """Every table config.toml may have, and each one's keys."""
    from .settings import DaemonSettings  # settings imports config; imported late, when a file exists

    daemon = {f.name for f in dataclasses.fields(DaemonSettings) if f.name not in _NOT_DAEMON_KEYS} | {"listen"}
    return {"daemon": frozenset(daemon), **STATIC_KEYS}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_config(path: Path, data: dict[str, Any]) -> None:
    """Refuse (ConfigError naming ``path``) an unknown table or key."""
    schema = known_keys()
    tables = sorted(schema)
    for table, section in data.items():
        if table not in schema:
            raise ConfigError(f"config file {path}: unknown table [{table}]{_suggest(table, tables)} "
                              f"(known: {', '.join(f'[{t}]' for t in tables)})")
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: [{table}] must be a table")
        keys = schema[table]
        for key in section:
            if key not in keys:
                hint = _suggest(key, sorted(keys))
                if not hint:  # a key of another table, or a typo of one: say where it goes
                    others = {k: t for t in tables if t != table for k in schema[t]}
                    close = difflib.get_close_matches(key, sorted(others), n=1, cutoff=0.8)
                    if close:
                        hint = f"; did you mean {close[0]!r} in [{others[close[0]]}]?"
                raise ConfigError(f"config file {path}: unknown key {key!r} in [{table}]{hint}")
