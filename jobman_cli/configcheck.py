"""What ``config.toml`` may hold, checked the moment the file is read.

Why: a typo (``[deamon]``, ``reconcile_intreval``) or a value of the wrong type used to be ignored
silently, so the operator believed a setting was in force that never was. Now an unknown table or
key is a one-line :class:`~jobman_cli.errors.ConfigError` naming the file and the closest known
name, and a value of the wrong TOML type (``reconcile_interval = "30"``) is refused the same way.
Range rules stay with the code that uses each value (settings.py, launchers/factory.py, ...).

The ``[daemon]`` keys are derived from :class:`~jobman_cli.settings.DaemonSettings`, so a new daemon
setting is known here without an edit. Another new table or key: add it to :data:`STATIC_KEYS`.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: kind names -> (test, words for the error message)
_KINDS: dict[str, tuple[Any, str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "duration": (lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool),
                 "a number of seconds or a duration like \"10m\""),
    "strs": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v)),
             "a string or a list of strings"),
    "tags": (lambda v: isinstance(v, (dict, list)), "a table of KEY = \"VALUE\" or a list of \"KEY=VALUE\""),
}

#: Tables and keys besides ``[daemon]`` (which comes from DaemonSettings), with their kinds.
STATIC_KEYS: dict[str, dict[str, str]] = {
    "ec2": {"region": "str", "instance_type": "str", "ami": "str", "subnet_id": "str",
            "security_group_ids": "strs", "iam_instance_profile": "str", "key_name": "str", "tags": "tags",
            "store_tag_key": "str", "endpoint_url": "str", "profile": "str"},
    "logs": {"group": "str", "retention_days": "int", "endpoint_url": "str"},
    "notify": {"targets": "strs", "on": "str", "timeout": "duration", "backoff_base": "duration",
               "backoff_max": "duration", "max_age": "duration", "workers": "int", "scan_interval": "duration",
               "secret_file": "str"},
}

#: DaemonSettings fields that are not ``[daemon]`` keys (set by flags or derived).
_NOT_DAEMON_KEYS = {"store_location", "listen_host", "listen_port", "home", "once", "serve_api"}


def _kind_of(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    if text.startswith("bool"):
        return "bool"
    if text.startswith("int"):
        return "int"
    if text.startswith("float"):
        return "number"
    if "tuple" in text or "list" in text:
        return "strs"
    return "str"


def known_keys() -> dict[str, dict[str, str]]:
    """Every table config.toml may have, and each one's keys with their kinds."""
    from .settings import DaemonSettings  # settings imports config; imported late, when a file exists

    daemon = {f.name: _kind_of(f.type) for f in dataclasses.fields(DaemonSettings) if f.name not in _NOT_DAEMON_KEYS}
    daemon["listen"] = "str"
    return {"daemon": daemon, **STATIC_KEYS}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_config(path: Path, data: dict[str, Any]) -> None:
    """Refuse (ConfigError naming ``path``) an unknown table or key, or a value of the wrong type."""
    schema = known_keys()
    tables = sorted(schema)
    for table, section in data.items():
        if table not in schema:
            raise ConfigError(f"config file {path}: unknown table [{table}]{_suggest(table, tables)} "
                              f"(known: {', '.join(f'[{t}]' for t in tables)})")
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: [{table}] must be a table")
        keys = schema[table]
        for key, value in section.items():
            if key not in keys:
                hint = _suggest(key, sorted(keys))
                if not hint:  # a key of another table, or a typo of one: say where it goes
                    others = {k: t for t in tables if t != table for k in schema[t]}
                    close = difflib.get_close_matches(key, sorted(others), n=1, cutoff=0.8)
                    if close:
                        hint = f"; did you mean {close[0]!r} in [{others[close[0]]}]?"
                raise ConfigError(f"config file {path}: unknown key {key!r} in [{table}]{hint}")
            test, words = _KINDS[keys[key]]
            if not test(value):
                raise ConfigError(f"config file {path}: [{table}] {key} must be {words} (got {value!r})")
