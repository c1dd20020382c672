"""The REST API's credentials: the API token (its file), bearer-header parsing, constant-time checks.

Two kinds of token open the API (DESIGN.md section 4):

* the **API token**, for every endpoint: ``JOBMAN_API_TOKEN`` if set, else the file
  ``$JOBMAN_HOME/api-token``, made on the daemon's first start. Like ssh with a private key, a
  token file that group or others may read is refused rather than silently used or "fixed": if
  someone else could read it, the token must be treated as leaked, and only the operator can decide
  that;
* a job attempt's own **callback token** (embedded in that attempt's user-data; the store keeps only
  its hash, ``Job.callback_hashes``), which
  only opens that job's ``PUT .../callback``. The API handler decides which token a request may use;
  this module only parses the header and compares.

Every comparison goes through :func:`tokens_match` (``hmac.compare_digest``), so the time a wrong
guess takes says nothing about how much of it was right. Stdlib only.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Sequence

from .config import TOKEN_FILE_NAME
from .errors import ConfigError
from .privatefile import publish_private_file, read_private_file

TOKEN_ENV = "JOBMAN_API_TOKEN"
#: Visible ASCII, no spaces: what fits in ``Authorization: Bearer <token>`` without quoting. (A
#: superset of RFC 6750's b64token, so tokens an operator made with ``openssl rand -hex`` fit.)
_TOKEN = re.compile(r"[\x21-\x7e]{1,512}")
_MAX_TOKEN_FILE = 4096
#: The shortest API token the daemon accepts. 32 characters of ``openssl rand -hex 32`` carry 128
#: bits; anything much shorter (``JOBMAN_API_TOKEN=x``) can be guessed over the network.
MIN_API_TOKEN = 32
_TOO_SHORT = (f"must be at least {MIN_API_TOKEN} characters (e.g. the output of 'openssl rand -hex 32'); "
              "a short token can be guessed")


class BadCredentials(Exception):
    """The Authorization header is missing or malformed; ``str(err)`` is a one-line reason (HTTP 401)."""


def new_token() -> str:
    """32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def tokens_match(presented: str, expected: str) -> bool:
    """Constant-time equality. An empty ``expected`` never matches (a job without a token has none).

    Both sides are encoded losslessly first (``compare_digest`` refuses non-ASCII ``str``), so a
    header with odd bytes is simply a mismatch, never an exception.
    """
    if not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "backslashreplace"),
                               expected.encode("utf-8", "backslashreplace"))


def bearer_token(values: Sequence[str]) -> str:
    """The token of the request's one ``Authorization: Bearer <token>`` header.

    The scheme is case-insensitive (RFC 7235); exactly one header, one scheme word and one token
    are accepted. Raises :class:`BadCredentials` saying what is wrong, without echoing the value
    (it may be a real token sent to the wrong place).
    """
    if not values:
        raise BadCredentials("missing Authorization header (send 'Authorization: Bearer <token>')")
    if len(values) > 1:
        raise BadCredentials("more than one Authorization header")
    parts = values[0].split()
    if len(parts) == 1 and parts[0].lower() == "bearer":  # curl -H "Authorization: Bearer $TOKEN" with TOKEN unset
        raise BadCredentials("the bearer token is empty (is the variable holding it set?)")
    if not parts:
        raise BadCredentials("the Authorization header is empty (send 'Authorization: Bearer <token>')")
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise BadCredentials("the Authorization header must be 'Bearer <token>'")
    if not _TOKEN.fullmatch(parts[1]):
        raise BadCredentials("the bearer token has characters a token cannot have")
    return parts[1]


def load_or_create_api_token(home: Path) -> tuple[str, Path | None]:
    """The API token and the file it came from (``None`` when it came from ``JOBMAN_API_TOKEN``).

    Without the variable, ``<home>/api-token`` is read, or created on first use (mode 0600; a newly
    made ``home`` gets 0700). Two daemons starting at once agree on one token: the new file is
    written completely under a temporary name and then hard-linked into place, which fails if the
    other got there first, so nobody ever reads a half-written token. Raises :class:`ConfigError`
    (one line) for an empty or malformed token, or a file that group or others can access.
    """
    from_env = os.environ.get(TOKEN_ENV)
    if from_env is not None:
        token = from_env.strip()
        if not token:
            raise ConfigError(f"{TOKEN_ENV} is set but empty (unset it to use the token file)")
        if not _TOKEN.fullmatch(token):
            raise ConfigError(f"{TOKEN_ENV} must be 1 to 512 visible ASCII characters without spaces")
        if len(token) < MIN_API_TOKEN:
            raise ConfigError(f"{TOKEN_ENV} {_TOO_SHORT}")
        return token, None

    home = Path(home)
    path = home / TOKEN_FILE_NAME
    if not path.exists() and not path.is_symlink():
        _create_home(home)
        token = new_token()
        if _publish(path, token):
            return token, path
    return _read_token_file(path), path


def _create_home(home: Path) -> None:
    if home.is_dir():
        return
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {home}: {err.strerror or err}") from None


def _publish(path: Path, token: str) -> bool:
    """Write ``token`` to ``path`` unless it exists; False if another process made it first."""
    return publish_private_file(path, token + "\n", label="the API token file")


def _read_token_file(path: Path) -> str:
    data = read_private_file(path, label=f"the API token file {path}", limit=_MAX_TOKEN_FILE,
                             leaked_hint=", or delete it to have a new token made")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = None
    if len(data) > _MAX_TOKEN_FILE or token is None or (token and not _TOKEN.fullmatch(token)):
        raise ConfigError(f"the API token file {path} does not hold a token (1 to 512 visible ASCII characters)")
    if not token:
        raise ConfigError(f"the API token file {path} is empty; delete it to have a new token made on the next start")
    if len(token) < MIN_API_TOKEN:
        raise ConfigError(f"the API token in {path} {_TOO_SHORT}; delete the file to have a new one made")
    return token
