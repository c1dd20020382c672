"""The job's fields as bash words: each one checked, then single-quoted for the parameters block.

Every value that reaches the script passes through here, so this is the module that keeps a job
from injecting shell code: :func:`shlex.quote` is byte-exact in bash for any string without NUL,
so the checks refuse NUL, lone surrogates (no UTF-8 form) and anything that could still be
misread once quoted (a flag-like image, a multi-line header). The service validated these
already; this is defence in depth at the last step before EC2.
"""

from __future__ import annotations

import re
import shlex
from typing import Mapping, Sequence

from ..errors import InvalidInput
from ..model import Job

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_TOKEN = re.compile(r"[!-~]+", re.ASCII)  # printable ASCII, no space: one HTTP header value
#: What a title loses in the console log and a public URL may not hold: controls, line and bidi
#: separators/overrides (they would let a field rewrite what an operator sees).
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_TITLE_LOG_MAX = 120


def env_args(env: Mapping[str, str]) -> str:
    """``-e 'KEY=VALUE'`` lines for the ``env_args`` bash array, sorted by key (determinism)."""
    lines = []
    for key in sorted(env):
        value = env[key]
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise InvalidInput("env-variables", f"{key!r} is not a valid shell identifier")
        if not isinstance(value, str):
            raise InvalidInput("env-variables", f"the value of {key} must be a string")
        if "\x00" in value:
            raise InvalidInput("env-variables", f"the value of {key} contains a NUL byte, which no environment can carry")
        _require_utf8("env-variables", value, f"the value of {key}")
        lines.append(f"\n  -e {shlex.quote(key + '=' + value)}")
    return "".join(lines) + ("\n" if lines else "")


def entrypoint_arg(entrypoint: str | None) -> str:
    """``--entrypoint=VALUE`` (one argument, so a value starting with ``-`` stays a value) for the
    ``run_args`` array; ``""`` when the image's own entrypoint is kept. An empty string is passed
    on: Docker reads ``--entrypoint=`` as "no entrypoint" (the command runs directly)."""
    if entrypoint is None:
        return ""
    _check_text("entrypoint", entrypoint, "the entrypoint")
    return "\n  " + shlex.quote("--entrypoint=" + entrypoint)


def command_args(command: Sequence[str] | None) -> str:
    """The container's command, one quoted word per element, for the ``command_args`` array."""
    if command is None:
        return ""
    if isinstance(command, (str, bytes)) or not isinstance(command, Sequence):
        raise InvalidInput("command", "must be a list of strings")
    words = []
    for i, word in enumerate(command):
        _check_text("command", word, f"argument {i}")
        words.append("\n  " + shlex.quote(word))
    return "".join(words) + ("\n" if words else "")


def _check_text(field: str, value: object, what: str) -> None:
    """A command word or the entrypoint: a string that an argv can carry (no NUL) and bash can hold."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"{what} must be a string")
    if "\x00" in value:
        raise InvalidInput(field, f"{what} contains a NUL byte, which no argument can carry")
    _require_utf8(field, value, what)


def _require_utf8(field: str, value: str, what: str) -> None:
    """The script is UTF-8: a lone surrogate has no encoding, so refuse it here, naming the field,
    rather than fail later with an encoder's traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, f"{what} is not valid unicode (lone surrogate)") from None


def loggable_title(title: str) -> str:
    """The title as it appears in the console log: one line, printable, shortened."""
    text = UNPRINTABLE.sub("?", title or "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= _TITLE_LOG_MAX else text[: _TITLE_LOG_MAX - 3] + "..."


def check_fields(job: Job, callback_url: str, callback_token: str) -> None:
    """Defence in depth: the service validated these already; the renderer refuses to quote
    anything that could still be misread (a flag-like image, a multi-line header)."""
    image = job.docker_image
    if not isinstance(image, str) or not image or image.startswith("-") or re.search(r"[\s\x00-\x1f\x7f]", image):
        raise InvalidInput("docker-image", f"must be a Docker reference, not empty nor starting with '-' (got {image!r})")
    _require_utf8("docker-image", image, "the image")
    timeout = job.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise InvalidInput("timeout", f"must be a positive number of seconds (got {timeout!r})")
    if not isinstance(callback_token, str) or not _TOKEN.fullmatch(callback_token):
        raise InvalidInput("callback-token", "must be non-empty printable ASCII without spaces")
    if (not isinstance(callback_url, str) or not callback_url.startswith(("http://", "https://"))
            or re.search(r"[\s\x00-\x1f\x7f]", callback_url)):
        raise InvalidInput("callback-url", f"must be an http:// or https:// URL without spaces (got {callback_url!r})")
    _require_utf8("callback-url", callback_url, "the callback URL")
    if isinstance(job.id, bool) or not isinstance(job.id, int) or job.id < 0:
        raise InvalidInput("id", f"must be a non-negative integer (got {job.id!r})")
