"""Reading a file that holds a credential (the API token, the notification secret, a client's
``--token-file``): one rule for all of them.

The file must be a regular file that neither group nor others can access: a credential others
could read must be treated as leaked, so it is refused with the ``chmod`` fix rather than used.
The checks run on the open descriptor (``fstat``), so a file swapped between check and read is
not what gets read.
"""

from __future__ import annotations

import os
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
