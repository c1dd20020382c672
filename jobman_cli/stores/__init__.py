"""Store backends. :func:`open_store` picks one from a path or URL."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InvalidInput, StoreError
from .base import JobStore


class WriteOutcomeUnknown(StoreError):
    """A store write got no answer (every resend's answer lost) and reading the store back could
    not tell whether it was applied. Nothing was guessed: the write may still have happened.

    Retrying is safe: the DynamoDB store's writes are conditional and carry a nonce, so a retry
    either finds the first write (and returns it) or applies once; ``add`` retried with the same
    draft object reuses the same job id, so it cannot make a second job."""


#: ``scheme:`` at the start of a location: two letters or more, so a Windows drive (``C:``) is a path.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def check_location(text: str) -> None:
    """Refuse a location that looks like a mistyped URL (``dynamodb:/t``, ``dynamo://t``), which would
    otherwise silently become a local file named like that. A file whose name really starts with
    ``word:`` is still reachable as ``./word:...``."""
    if text.startswith("dynamodb://"):
        if not text[len("dynamodb://"):].split("?")[0]:
            raise InvalidInput("--store", f"{text!r} names no table; use dynamodb://TABLE")
        return
    if _SCHEME.match(text):
        scheme, _, rest = text.partition(":")
        if "dynamo" in scheme.lower() and rest.strip("/"):
            raise InvalidInput("--store", f"{text!r} is not a store URL; did you mean dynamodb://{rest.strip('/')}?")
        raise InvalidInput("--store", f"{text!r} looks like a URL, but the only URL store is dynamodb://TABLE "
                                      f"(for a local file named like that, write ./{text})")


def open_store(location: str | Path, *, create: bool = True) -> JobStore:
    """``dynamodb://TABLE`` opens the DynamoDB backend; anything else is a TinyDB file path."""
    text = str(location)
    check_location(text)
    if text.startswith("dynamodb://"):
        from .dynamodb import DynamoDBStore  # imports boto3: only when asked for

        return DynamoDBStore.from_url(text)
    from .tinydb import TinyDBStore

    # The real path: the atomic rename would replace a symlink to the file with a copy (a second
    # store with the same id), and the lock files are named after the path.
    return TinyDBStore(Path(os.path.realpath(Path(text).expanduser())), create=create)
