"""Store backends. :func:`open_store` picks one from a path or URL."""

from __future__ import annotations

import os
from pathlib import Path

from .base import JobStore


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
