"""Input rules shared by the CLI and the HTTP API, so the two front ends can never disagree.

Every function is pure, imports only the standard library (this module is on the CLI's start-up
path, including shell completion) and reports a broken rule as
:class:`~jobman_cli.errors.InvalidInput` with a one-line message. The ``field`` argument is how the
*caller's* front end names the input (``--image`` on the command line, ``docker-image`` over HTTP),
so the message points at something the user actually typed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import InvalidInput

MAX_ENV_VARS = 100
#: Keys plus values, in UTF-8 bytes. The environment travels inside the EC2 user-data, which EC2
#: caps at 16 KiB together with the script itself.
MAX_ENV_BYTES = 8 * 1024
MAX_ENV_FILE_BYTES = 64 * 1024
MAX_DURATION = 7 * 86400
MAX_TITLE = 200
MAX_JOB_ID = 2**53  # the largest integer a JSON client (JavaScript) can hold exactly
MAX_NAME = 255  # distribution's NameTotalLengthMax: registry + path, without tag and digest

# --------------------------------------------------------------------------- Docker references
# The distribution/reference grammar (github.com/distribution/reference, regexp.go), ASCII only.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|-+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_REFERENCE_FORM = "[registry[:port]/]path[:tag][@sha256:digest]; path components are lowercase"


def _show(value: Any, limit: int = 80) -> str:
    """``repr`` of a user value, shortened; ``repr`` escapes control characters, so one line."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str conversion limit
        return "a huge number"
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _json_type(value: Any) -> str:
    """Name a value the way a JSON client thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def validate_image(ref: Any, field: str = "docker-image") -> str:
    """Return ``ref`` if it is a valid Docker reference, else raise naming the rule it breaks.

    The first path element is taken as a registry only when it contains ``.`` or ``:`` or is
    ``localhost``. Docker also treats an element with uppercase letters as a registry
    (``MyOrg/app``), but that is almost always a mistyped organisation, so it is refused as an
    uppercase path. A leading ``-`` can never pass, so an image can never turn into a docker flag.
    """
    if not isinstance(ref, str):
        raise InvalidInput(field, f"must be a string (got {_json_type(ref)})")

    def bad(detail: str = "") -> InvalidInput:
        extra = f": {detail}" if detail else ""
        return InvalidInput(field, f"{_show(ref)} is not a valid Docker reference ({_REFERENCE_FORM}){extra}")

    if not ref:
        raise InvalidInput(field, "must not be empty (a Docker reference such as 'alpine:3.20')")
    if ref.startswith("-"):
        raise bad("it must not start with '-'")
    if not ref.isascii() or not ref.isprintable() or " " in ref:
        raise bad("no whitespace, control or non-ASCII characters")

    name, at, digest = ref.partition("@")
    if at:
        algorithm, colon, hex_part = digest.partition(":")
        length = _DIGEST_HEX.get(algorithm)
        if not colon or length is None or len(hex_part) != length or not re.fullmatch(r"[0-9a-f]+", hex_part):
            raise bad("the digest must be sha256: followed by 64 lowercase hex digits")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise bad("a tag is 1-128 of letters, digits, '_', '.', '-' and does not start with '.' or '-'")
    if len(name) > MAX_NAME:
        raise bad(f"the name is longer than {MAX_NAME} characters")

    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise bad(f"{first!r} is not a valid registry host[:port]")
        path = rest
    else:
        path = name
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component:
                raise bad(f"path component {component!r} has uppercase letters")
            raise bad(f"path component {component!r} is not lowercase letters and digits joined by '.', '_', '__' or '-'")
    return ref


# --------------------------------------------------------------------------- environment
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_EXPORT = re.compile(r"export[ \t]+")


def validate_env_key(key: Any, field: str = "env-variables") -> str:
    """A shell identifier, so the instance script can export it and the container can read it."""
    if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
        raise InvalidInput(
            field, f"{_show(key)} is not a valid variable name (letters, digits and '_', not starting "
                   "with a digit, at most 128 characters)"
        )
    return key


def validate_env_value(key: str, value: Any, field: str = "env-variables") -> str:
    """Any string reaches the container byte-exact, except NUL, which no environment can carry."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"value of {key!r} must be a string (got {_json_type(value)})")
    if "\x00" in value:
        raise InvalidInput(field, f"value of {key!r} contains a NUL byte, which an environment cannot hold")
    _require_utf8(value, field, f"value of {key!r}")
    return value


def _require_utf8(text: str, field: str, what: str) -> None:
    """Bytes that are not UTF-8 (a shell passes them as lone surrogates) cannot be stored or sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, f"{what} is not valid UTF-8") from None


def parse_env_assignments(items: Iterable[str], field: str = "-e") -> dict[str, str]:
    """Repeated ``-e KEY=VALUE``: split at the first ``=``; ``KEY=`` is empty; the last repeat wins."""
    env: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidInput(field, f"{_show(item)} must be KEY=VALUE")
        env[validate_env_key(key, field)] = validate_env_value(key, value, field)
    return env


def parse_env_text(text: Any, field: str = "env-variables") -> dict[str, str]:
    """The original service's string form: one ``KEY=VALUE`` per line.

    Blank lines and lines starting with ``#`` are skipped, leading blanks and an ``export `` prefix
    are allowed, and CRLF line ends are accepted. The value is everything after the first ``=``,
    taken literally: quotes are *not* removed and nothing is expanded, so ``A="x"`` sets ``A`` to
    ``"x"`` with the quotes. (Shell-style unquoting would silently change values; literal is the
    one reading that can carry every byte, including quotes.) Values cannot span lines.
    """
    if not isinstance(text, str):
        raise InvalidInput(field, f"must be a string of KEY=VALUE lines (got {_json_type(text)})")
    return _parse_env_lines(text, field, "line")


def _parse_env_lines(text: str, field: str, origin: str) -> dict[str, str]:
    """:func:`parse_env_text`'s loop; ``origin`` prefixes line numbers (``line 3``, ``.env line 3``)."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        stripped = line.lstrip(" \t")
        if not stripped.strip() or stripped.startswith("#"):
            continue
        export = _EXPORT.match(stripped)
        if export:
            stripped = stripped[export.end():]
        key, eq, value = stripped.partition("=")
        try:
            if not eq:
                raise InvalidInput(field, f"{_show(line)} must be KEY=VALUE")
            env[validate_env_key(key, field)] = validate_env_value(key, value, field)
        except InvalidInput as err:
            raise InvalidInput(field, f"{origin} {number}: {err.rule}") from None
    return env


def read_env_file(path: str, field: str = "--env-file") -> dict[str, str]:
    """Read a file in the :func:`parse_env_text` grammar (UTF-8, a leading BOM is allowed).

    At most 64 KiB is read, so ``/dev/zero`` or a log file given by mistake fails fast instead of
    filling memory.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENV_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InvalidInput(field, f"cannot read {path!r}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(field, f"cannot read {path!r}: it is a directory") from None
    except PermissionError:
        raise InvalidInput(field, f"cannot read {path!r}: permission denied") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InvalidInput(field, f"cannot read {path!r}: {getattr(err, 'strerror', None) or err}") from None
    if len(data) > MAX_ENV_FILE_BYTES:
        raise InvalidInput(field, f"{path!r} is larger than {MAX_ENV_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidInput(field, f"{path!r} is not UTF-8 text (bad byte at offset {err.start})") from None
    return _parse_env_lines(text, field, f"{path} line")


def check_env_limits(env: dict[str, str], field: str = "env-variables") -> dict[str, str]:
    """At most 100 variables and 8 KiB of keys and values, so the user-data fits EC2's 16 KiB."""
    if len(env) > MAX_ENV_VARS:
        raise InvalidInput(field, f"has {len(env)} variables; at most {MAX_ENV_VARS} are allowed")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if size > MAX_ENV_BYTES:
        raise InvalidInput(
            field, f"is {size} bytes of keys and values; at most {MAX_ENV_BYTES} (8 KiB) are allowed "
                   "so the instance's user-data stays under EC2's 16 KiB limit"
        )
    return env


def validate_env_mapping(obj: Any, field: str = "env-variables") -> dict[str, str]:
    """The API's ``env-variables``: an object of string to string, or ``KEY=VALUE`` lines.

    ``None`` means no variables. The result also passes :func:`check_env_limits`, so callers that
    merge several sources (``--env-file`` then ``-e``) should pass the merged dict through here.
    """
    if obj is None:
        return {}
    if isinstance(obj, str):
        return check_env_limits(parse_env_text(obj, field), field)
    if not isinstance(obj, dict):
        raise InvalidInput(
            field, f"must be an object of string to string or a string of KEY=VALUE lines (got {_json_type(obj)})"
        )
    env = {validate_env_key(k, field): validate_env_value(k, v, field) for k, v in obj.items()}
    return check_env_limits(env, field)


# --------------------------------------------------------------------------- other fields
# C0, DEL, C1, line/paragraph separators and the bidi overrides that can disguise terminal output.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def validate_title(title: Any, field: str = "title") -> str:
    """Free text shown in tables and logs: one line, no control characters, at most 200 characters.

    Surrounding whitespace is stripped; ``None`` and empty are allowed (a title is optional).
    """
    if title is None:
        return ""
    if not isinstance(title, str):
        raise InvalidInput(field, f"must be a string (got {_json_type(title)})")
    title = title.strip()
    if len(title) > MAX_TITLE:
        raise InvalidInput(field, f"is {len(title)} characters long; at most {MAX_TITLE} are allowed")
    bad = _CONTROL.search(title)
    if bad:
        raise InvalidInput(field, f"must not contain control characters (found {bad.group()!r})")
    _require_utf8(title, field, "the title")
    return title


_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
DURATION_FORMS = "30s, 10m, 2h, 1d, a combination such as 1h30m, or a number of seconds"


def duration_seconds(text: str) -> int | None:
    """The duration grammar alone: seconds (zero allowed), or ``None`` if ``text`` does not fit.

    Units come in descending order, each at most once. Shared with ``timeparse`` (``+1h30m``).
    """
    if len(text) > 32:  # also keeps int() far from Python's digit limit
        return None
    if text.isdigit() and text.isascii():
        return int(text)
    match = _DURATION.fullmatch(text)
    if not text or not match or not text.isascii():
        return None
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return ((d * 24 + h) * 60 + m) * 60 + s


def parse_duration(text: Any, field: str = "timeout", *, maximum: int = MAX_DURATION) -> int:
    """``30s``, ``10m``, ``2h``, ``1d``, ``1h30m`` or bare seconds, as seconds in (0, 7 days].

    An ``int`` (from JSON) is taken as seconds; ``bool`` and ``float`` are refused.
    """
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise InvalidInput(field, f"must be a duration such as {DURATION_FORMS} (got {_json_type(text)})")
    if isinstance(text, int):
        seconds: int | None = text
    else:
        seconds = duration_seconds(text.strip())
        if seconds is None:
            raise InvalidInput(field, f"{_show(text)} is not a duration ({DURATION_FORMS})")
    if seconds <= 0:
        raise InvalidInput(field, f"must be more than 0 seconds (got {_show(text)})")
    if seconds > maximum:
        raise InvalidInput(field, f"must be at most {maximum} seconds ({maximum / 86400:g} days; got {_show(text)})")
    return seconds


_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")


def validate_instance_type(text: Any, field: str = "--instance-type") -> str:
    """An EC2 instance type such as ``t3.micro`` or ``m7g.2xlarge`` (the family.size shape only)."""
    if not isinstance(text, str) or len(text) > 64 or not _INSTANCE_TYPE.fullmatch(text):
        raise InvalidInput(field, f"{_show(text)} is not an EC2 instance type such as 't3.micro' or 'm7g.2xlarge'")
    return text


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")


def validate_idempotency_key(text: Any, field: str = "--idempotency-key") -> str:
    """1 to 128 printable ASCII characters without whitespace (it is echoed in logs and tables)."""
    if not isinstance(text, str) or not _IDEMPOTENCY_KEY.fullmatch(text):
        raise InvalidInput(field, f"{_show(text)} must be 1 to 128 printable ASCII characters without spaces")
    return text


MAX_COMMAND_ARGS = 1000
#: The largest root volume EBS gives (gp2/gp3: 16 TiB). The lower bound is the AMI's snapshot,
#: which only EC2 knows: a smaller size fails the launch (``launch-failed``, EC2's words).
MAX_DISK_GB = 16384


def validate_command(value: Any, field: str = "command") -> tuple[str, ...] | None:
    """The container's command: a list of strings, each passed to Docker byte-exact as one argument
    (no shell involved). ``None`` or an empty list: the image's own ``CMD``."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(field, f"must be an array of strings (got {_json_type(value)})")
    if len(value) > MAX_COMMAND_ARGS:
        raise InvalidInput(field, f"has {len(value)} arguments; at most {MAX_COMMAND_ARGS} are allowed")
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise InvalidInput(field, f"argument {i} must be a string (got {_json_type(arg)})")
        if "\x00" in arg:
            raise InvalidInput(field, f"argument {i} contains a NUL byte, which no argument can carry")
        _require_utf8(arg, field, f"argument {i}")
    return tuple(value) or None


def validate_entrypoint(value: Any, field: str = "entrypoint") -> str | None:
    """The container's entrypoint: one executable, byte-exact. ``""`` clears the image's own
    entrypoint (Docker's ``--entrypoint ""``); ``None`` keeps it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string (got {_json_type(value)})")
    if "\x00" in value:
        raise InvalidInput(field, "contains a NUL byte, which no argument can carry")
    _require_utf8(value, field, "the entrypoint")
    return value


def parse_disk_gb(value: Any, field: str = "disk-gb") -> int | None:
    """The root volume's size in GiB, 1 to 16384, as an ``int`` (JSON) or decimal string (CLI)."""
    if value is None:
        return None
    number = int(value) if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,5}", value) else value
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_DISK_GB:
        raise InvalidInput(field, f"must be a whole number of GiB from 1 to {MAX_DISK_GB} (got {_show(value)})")
    return number


def parse_exit_code(value: Any, field: str = "exit-code") -> int:
    """An exit status 0-255, as an ``int`` (JSON) or a decimal string (the command line)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InvalidInput(field, f"must be an integer from 0 to 255 (got {_show(value)})")
    return value


def parse_job_id(value: Any, field: str = "id") -> int:
    """A job id from a URL path, a CLI argument or JSON: plain decimal digits, 1 to 2**53.

    Signs, spaces, leading zeros, ``1.0`` and path tricks such as ``1/../2`` are refused, so one
    id has exactly one spelling.
    """
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,15}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_JOB_ID:
        what = "schedule id" if "schedule" in field.lower() else "job id"  # list --schedule, ?schedule=
        raise InvalidInput(field, f"must be a positive integer {what} (got {_show(value)})")
    return value


def refuse_budget_without_spot(capacity: Any, max_interruptions: Any, capacity_field: str,
                               budget_field: str) -> None:
    """A relaunch budget on a job that explicitly asked for on-demand capacity: refused, since an
    on-demand instance is never interrupted and the budget would be silently ignored (a slip:
    ``--capacity spot`` was probably meant). ``0`` ("never relaunch") is what on-demand does anyway,
    so it is accepted, and so is a budget beside a capacity from the config (not chosen now)."""
    if capacity == "on-demand" and max_interruptions is not None and str(max_interruptions) != "0":
        raise InvalidInput(capacity_field, f"on-demand capacity is never interrupted, so {budget_field} does not "
                                           f"apply; use {budget_field} with spot or spot-then-on-demand")
