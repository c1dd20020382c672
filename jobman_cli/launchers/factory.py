"""Build the EC2 launcher's settings from flags, then environment, then ``[ec2]`` in config.toml.

Precedence per setting: a flag given on the command line, then ``JOBMAN_*`` (and for the region the
standard ``AWS_REGION``/``AWS_DEFAULT_REGION``), then the ``[ec2]`` table of
``$JOBMAN_HOME/config.toml``, then the built-in default. Credentials, ``AWS_PROFILE`` and
``AWS_ENDPOINT_URL`` are left to boto3's own chain unless the config file names a ``profile`` or
``endpoint_url``, so the standard AWS environment always works.

Extra tags merge per key (config, then ``JOBMAN_TAGS``, then ``--tag``; the later wins), because a
team-wide cost tag in the config file should survive a one-off ``--tag owner=me``.

``[ec2]`` keys: ``region``, ``instance_type`` (one type, or a preference list: an array or a
comma-separated string), ``ami``, ``subnet_id`` (one subnet or a list, one per availability zone), ``security_group_ids`` (list
or comma-separated string), ``iam_instance_profile``, ``key_name``, ``tags`` (a table, or a list of
``"K=V"``), ``store_tag_key``, ``profile``, ``endpoint_url``.

This module imports no boto3: :func:`ec2_settings` runs on the CLI path before the daemon decides
to talk to AWS.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from ..config import config_section, pick
from ..errors import ConfigError, InvalidInput
from .base import DEFAULT_INSTANCE_TYPE, DEFAULT_STORE_TAG_KEY, EC2Settings

if TYPE_CHECKING:
    from .base import Launcher

MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string (got {value!r})")
    value = value.strip()
    return value or None


def _env_first(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _split_ids(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(f"{name}: must be a list or a comma-separated string (got {value!r})")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{name}: every entry must be a string (got {item!r})")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


def _tag(key: str, value: str, name: str, error: type[Exception]) -> tuple[str, str]:
    key = key.strip()
    problem = None
    if not key:
        problem = f"tag key must not be empty (got {key + '=' + value!r})"
    elif len(key) > MAX_TAG_KEY or len(value) > MAX_TAG_VALUE:
        problem = f"tag {key!r} is too long (EC2 allows keys of {MAX_TAG_KEY} and values of {MAX_TAG_VALUE} characters)"
    elif key.lower().startswith("aws:"):
        problem = f"tag key {key!r} uses the reserved prefix 'aws:'"
    if problem:
        if error is InvalidInput:
            raise InvalidInput(name, problem)
        raise ConfigError(f"{name}: {problem}")
    return key, value


def _parse_assignments(items: Iterable[Any], name: str, error: type[Exception]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            rule = f"must be KEY=VALUE (got {item!r})"
            if error is InvalidInput:
                raise InvalidInput(name, rule)
            raise ConfigError(f"{name}: {rule}")
        key, _, value = item.partition("=")
        key, value = _tag(key, value, name, error)
        tags[key] = value
    return tags


def _config_tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        tags = {}
        for key, item in value.items():
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise ConfigError(f"config file [ec2] tags: the value of {key!r} must be a string")
            k, v = _tag(str(key), str(item), "config file [ec2] tags", ConfigError)
            tags[k] = v
        return tags
    if isinstance(value, list):
        return _parse_assignments(value, "config file [ec2] tags", ConfigError)
    raise ConfigError("config file [ec2] tags: must be a table of KEY = \"VALUE\" or a list of \"KEY=VALUE\"")


def _ladder_default(value: str | None, key: str) -> str | None:
    """The daemon's default instance types / subnets: one, or a comma-separated preference list
    (the launch ladder, :mod:`jobman_cli.capacity`), checked like a job's own."""
    if value is None:
        return None
    from ..capacity import validate_instance_types

    try:
        if key == "instance_type":
            return validate_instance_types(value, field=key)
        # Subnets: only split (a config that worked before stays valid); EC2 judges the ids.
        return ",".join(s.strip() for s in value.split(",") if s.strip()) or None
    except InvalidInput as exc:
        raise ConfigError(f"{key} (flag, JOBMAN_{key.upper()} or [ec2] {key}): {exc.rule}") from None


def ec2_settings(flags: dict[str, Any]) -> EC2Settings:
    """Resolve :class:`EC2Settings`. ``flags`` uses the ``daemon`` command's keys (missing = not given)."""
    section = config_section("ec2")

    def setting(flag_key: str, env: str, key: str) -> str | None:
        value = pick(flags.get(flag_key), env, section, key)
        if key in ("instance_type", "subnet_id") and isinstance(value, list):  # a TOML array: the ladder
            value = ",".join(_split_ids(value, key))
        return _text(value, f"{key}")

    region = _text(flags.get("region"), "--region") or _text(
        _env_first("JOBMAN_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"), "AWS_REGION") or _text(
        section.get("region"), "config file [ec2] region")
    security_groups = flags.get("security_group_ids") or None
    if security_groups is None:
        security_groups = pick(None, "JOBMAN_SECURITY_GROUP_IDS", section, "security_group_ids")
    tags = _config_tags(section.get("tags"))
    if os.environ.get("JOBMAN_TAGS"):
        tags.update(_parse_assignments([t for t in os.environ["JOBMAN_TAGS"].split(",") if t.strip()],
                                       "JOBMAN_TAGS", ConfigError))
    tags.update(_parse_assignments(flags.get("tags") or (), "--tag", InvalidInput))
    return EC2Settings(
        region=region,
        instance_type=_ladder_default(setting("instance_type", "JOBMAN_INSTANCE_TYPE", "instance_type"),
                                      "instance_type") or DEFAULT_INSTANCE_TYPE,
        ami=setting("ami", "JOBMAN_AMI", "ami"),
        subnet_id=_ladder_default(setting("subnet_id", "JOBMAN_SUBNET_ID", "subnet_id"), "subnet_id"),
        security_group_ids=_split_ids(security_groups, "security_group_ids"),
        iam_instance_profile=setting("iam_instance_profile", "JOBMAN_IAM_INSTANCE_PROFILE", "iam_instance_profile"),
        key_name=setting("key_name", "JOBMAN_KEY_NAME", "key_name"),
        extra_tags=tuple(tags.items()),
        store_tag_key=setting("store_tag_key", "JOBMAN_STORE_TAG_KEY", "store_tag_key") or DEFAULT_STORE_TAG_KEY,
        # The standard variables beat the config file; when set, boto3 reads them itself.
        endpoint_url=None if _env_first("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL") else _text(
            section.get("endpoint_url"), "config file [ec2] endpoint_url"),
        profile=None if _env_first("AWS_PROFILE") else _text(section.get("profile"), "config file [ec2] profile"),
    )


def launcher_from_environment() -> "Launcher":
    """The EC2 launcher as ``cancel`` and ``logs`` need it: environment and config file only."""
    from .ec2 import EC2Launcher

    return EC2Launcher(ec2_settings({}))
