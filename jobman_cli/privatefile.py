"""Reading a file that holds a credential (the API token, the notification secret, a client's
``--token-file``): one rule for all of them.

The file must be a regular file that neither group nor others can access: a credential others
could read must be treated as leaked, so it is refused with the ``chmod`` fix rather than used.
The checks run on the open descriptor (``fstat``), so a file swapped between check and read is
not what gets read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import ConfigError


def read_private_file(path: Path, *, label: str, limit: int, leaked_hint: str = "", prefix: str = "") -> bytes:
    """Up to ``limit + 1`` bytes of ``path`` (the caller judges the size and the content).

    ``label`` names the file in messages ("the API token file /x"); ``prefix`` goes before every
    message (a flag name such as "--token-file: "); ``leaked_hint`` follows the chmod advice.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise ConfigError(f"{prefix}cannot read {label}: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{prefix}{label} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise ConfigError(f"{prefix}{label} is accessible by group or others (mode "
                              f"{stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}' if it has not leaked"
                              f"{leaked_hint}")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def publish_private_file(path: Path, content: str, *, label: str) -> bool:
    """Create ``path`` (0600) holding ``content`` unless it exists; False if another process made
    it first. Never seen half-written: the content is written and synced under a temporary name,
    then hard-linked into place (which fails if the name exists). Creating ``path`` itself with
    O_EXCL and then writing let a second daemon starting at the same moment find the file empty
    and refuse it as too short (CI, two daemons sharing a home)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temp, flags, 0o600)
        try:
            os.write(fd, content.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError:
            # A filesystem without hard links: create the file itself exclusively instead.
            return _publish_directly(path, content)
        return True
    except OSError as err:
        raise ConfigError(f"cannot create {label} {path}: {err.strerror or err}") from None
    finally:
        try:
            os.unlink(temp)
        except OSError:
            pass


def _publish_directly(path: Path, content: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, content.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True
