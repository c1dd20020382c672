"""Secrets by reference (DESIGN.md section 12): ``NAME=ssm:/path`` or ``NAME=secretsmanager:ID[#key]``.

jobman never sees a secret's value. It stores and shows only the reference; the instance reads the
value with its own instance profile just before ``docker run`` and hands it to the container
through the ``docker`` process's environment. This module only parses and checks references, so
that a malformed one is a usage error at schedule time (exit 2 / HTTP 400) instead of a job that
fails hours later. It imports nothing beyond the standard library: the CLI loads it on every
``schedule``.

The character sets are AWS's own (SSM parameter names; Secrets Manager names and ARNs), narrowed
where AWS is looser than a shell-safe reference needs: the instance script quotes every reference
anyway, so this is about clear errors, not about injection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import InvalidInput

SSM = "ssm"
SECRETS_MANAGER = "secretsmanager"
#: How many secrets one job may reference (each costs one AWS call on the instance).
MAX_SECRETS = 50

# SSM: "a-zA-Z0-9_.-" plus "/" for hierarchies, at most 2048 characters (ARN form included).
_SSM_NAME = re.compile(r"(?:/?[A-Za-z0-9_.\-]+)+|arn:aws[a-z\-]*:ssm:[a-z0-9\-]+:\d{12}:parameter/[A-Za-z0-9_.\-/]+")
# Secrets Manager: names use "A-Za-z0-9/_+=.@-"; an ARN adds ":".
_SM_ID = re.compile(r"[A-Za-z0-9/_+=.@\-]{1,512}|arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:[A-Za-z0-9/_+=.@\-]+")
_JSON_KEY = re.compile(r"[A-Za-z0-9_.\-+@/:= ]{1,256}")
_FORMS = "ssm:/path/to/parameter or secretsmanager:SECRET-ID[#json-key]"


@dataclass(frozen=True)
class SecretRef:
    """One parsed reference. ``str(ref)`` is its canonical text (what is stored and shown)."""

    kind: str  # SSM | SECRETS_MANAGER
    name: str  # the parameter name / the secret id or ARN
    json_key: str | None = None  # Secrets Manager only: one key of a JSON secret string

    def __str__(self) -> str:
        key = f"#{self.json_key}" if self.json_key is not None else ""
        return f"{self.kind}:{self.name}{key}"

    @property
    def iam_resource(self) -> str:
        """The resource of an IAM statement that allows reading exactly this reference."""
        if self.name.startswith("arn:"):
            return self.name if self.kind == SSM else f"{self.name}*"
        if self.kind == SSM:
            path = self.name if self.name.startswith("/") else f"/{self.name}"
            return f"arn:aws:ssm:*:*:parameter{path}"
        return f"arn:aws:secretsmanager:*:*:secret:{self.name}-*"  # AWS appends a 6-character suffix


def parse_secret_ref(text: Any, name: str = "", field: str = "secrets") -> SecretRef:
    """Parse ``ssm:...`` or ``secretsmanager:...[#key]``; InvalidInput naming the field otherwise."""
    what = f"reference of {name!r}" if name else "reference"
    if not isinstance(text, str):
        raise InvalidInput(field, f"{what} must be a string such as {_FORMS}")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in (SSM, SECRETS_MANAGER):
        raise InvalidInput(field, f"{what} {_clip(text)!r} must be {_FORMS}")
    if kind == SSM:
        if "#" in rest:
            raise InvalidInput(field, f"{what} {_clip(text)!r}: '#json-key' applies to secretsmanager: only")
        if len(rest) > 2048 or not _SSM_NAME.fullmatch(rest):
            raise InvalidInput(field, f"{what} {_clip(text)!r}: a parameter name uses letters, digits, "
                                      "'_', '.', '-' and '/' (at most 2048 characters)")
        return SecretRef(SSM, rest)
    secret_id, hash_sign, key = rest.partition("#")
    if not _SM_ID.fullmatch(secret_id):
        raise InvalidInput(field, f"{what} {_clip(text)!r}: a secret id uses letters, digits and "
                                  "'/_+=.@-' (or is the secret's ARN)")
    if hash_sign and not _JSON_KEY.fullmatch(key):
        raise InvalidInput(field, f"{what} {_clip(text)!r}: the JSON key after '#' must be 1-256 letters, "
                                  "digits, spaces or '_.-+@/:='")
    return SecretRef(SECRETS_MANAGER, secret_id, key if hash_sign else None)


def validate_secrets_mapping(obj: Any, field: str = "secrets") -> dict[str, str]:
    """``{"NAME": "ssm:/..."}`` → the same with canonical references; names are env names."""
    from .validation import validate_env_key

    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise InvalidInput(field, "must be an object of NAME to reference, e.g. "
                                  '{"DB_PASSWORD": "ssm:/prod/db/password"}')
    if len(obj) > MAX_SECRETS:
        raise InvalidInput(field, f"at most {MAX_SECRETS} secrets per job (got {len(obj)})")
    return {validate_env_key(name, field): str(parse_secret_ref(ref, name, field)) for name, ref in obj.items()}


def parse_secret_assignments(items: Iterable[str], field: str = "--secret") -> dict[str, str]:
    """``NAME=REFERENCE`` options of the CLI; a name given twice is an error, not "last wins"."""
    secrets: dict[str, str] = {}
    for item in items:
        name, sep, ref = item.partition("=")
        if not sep:
            raise InvalidInput(field, f"{_clip(item)!r} must be NAME=REFERENCE, e.g. DB_PASSWORD=ssm:/prod/db/password")
        if name in secrets:
            raise InvalidInput(field, f"{name!r} is given twice")
        secrets[name] = ref
    return validate_secrets_mapping(secrets, field)


def secret_refs(secrets: Mapping[str, str]) -> dict[str, SecretRef]:
    """The stored ``NAME -> reference text`` mapping, parsed (stored references are canonical)."""
    return {name: parse_secret_ref(ref, name) for name, ref in secrets.items()}


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
