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

# Every pattern is ASCII-only and unambiguous (no nested repeats: a failed match must cost linear
# time, or one crafted reference would hold the interpreter lock, and so the whole daemon, for hours).
_SEGMENT = r"[A-Za-z0-9_.\-]+"
# SSM: a plain name, or a hierarchy that starts with "/"; "a-zA-Z0-9_.-"; at most 2048 characters.
_SSM_NAME = re.compile(rf"{_SEGMENT}|(?:/{_SEGMENT})+|arn:aws[a-z\-]{{0,20}}:ssm:[a-z0-9\-]{{1,30}}:[0-9]{{12}}:"
                       rf"parameter/{_SEGMENT}(?:/{_SEGMENT})*", re.ASCII)
# Secrets Manager: names use "A-Za-z0-9/_+=.@-"; an ARN adds ":".
_SM_ID = re.compile(r"[A-Za-z0-9/_+=.@\-]{1,512}|arn:aws[a-z\-]{0,20}:secretsmanager:[a-z0-9\-]{1,30}:[0-9]{12}:"
                    r"secret:[A-Za-z0-9/_+=.@\-]{1,512}", re.ASCII)
_JSON_KEY = re.compile(r"[A-Za-z0-9_.\-+@/:= ]{1,256}", re.ASCII)
#: The 6 random characters AWS appends to a secret's name in its ARN.
_SM_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}", re.ASCII)
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
        if self.kind == SSM:
            if self.name.startswith("arn:"):
                return self.name
            path = self.name if self.name.startswith("/") else f"/{self.name}"
            return f"arn:aws:ssm:*:*:parameter{path}"
        if self.name.startswith("arn:"):
            # A complete ARN ends in AWS's 6-character suffix: exactly it. A partial one (the
            # name only): that name plus exactly one such suffix, never a "*" that would also
            # match "app/db-old" for "app/db".
            return self.name if _SM_SUFFIX.search(self.name[-7:]) else f"{self.name}-??????"
        return f"arn:aws:secretsmanager:*:*:secret:{self.name}-??????"


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
                                      "'_', '.', '-' and '/', starts with '/' when it has a '/' (at most "
                                      "2048 characters)")
        if not rest.startswith("arn:"):
            first = rest.lstrip("/").split("/", 1)[0]
            if first.startswith("-") or any(part in (".", "..") for part in rest.split("/")):
                raise InvalidInput(field, f"{what} {_clip(text)!r}: a parameter name cannot start with '-' "
                                          "or hold '.' or '..' as a path part")
            if first.lower().startswith(("aws", "ssm")):
                raise InvalidInput(field, f"{what} {_clip(text)!r}: parameter names starting with 'aws' or "
                                          "'ssm' are reserved by AWS")
        return SecretRef(SSM, rest)
    secret_id, hash_sign, key = rest.partition("#")
    if not _SM_ID.fullmatch(secret_id) or secret_id.startswith("-"):
        raise InvalidInput(field, f"{what} {_clip(text)!r}: a secret id uses letters, digits and "
                                  "'/_+=.@-', not starting with '-' (or is the secret's ARN)")
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
