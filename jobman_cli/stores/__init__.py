"""Store backends. :func:`open_store` picks one from a path or URL."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError
from .base import JobStore


class WriteOutcomeUnknown(StoreError):
    """A store write got no answer (every resend's answer lost) and reading the store back could
    not tell whether it was applied. Nothing was guessed: the write may still have happened.

    Retrying is safe: the DynamoDB store's writes are conditional and carry a nonce, so a retry
    either finds the first write (and returns it) or applies once; ``add`` retried with the same
    draft object reuses the same job id, so it cannot make a second job."""


def open_store(location: str | Path, *, create: bool = True) -> JobStore:
    """``dynamodb://TABLE`` opens the DynamoDB backend; anything else is a TinyDB file path."""
    text = str(location)
    if text.startswith("dynamodb://"):
        from .dynamodb import DynamoDBStore  # imports boto3: only when asked for

        return DynamoDBStore.from_url(text)
    from .tinydb import TinyDBStore

    # The real path: the atomic rename would replace a symlink to the file with a copy (a second
    # store with the same id), and the lock files are named after the path.
    return TinyDBStore(Path(os.path.realpath(Path(text).expanduser())), create=create)
