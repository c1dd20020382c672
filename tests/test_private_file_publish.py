"""Two daemons starting at once on one JOBMAN_HOME both make the notification secret / the API
token file if it is missing (CI: the second read the secret file while the first was still
writing it, found it empty and refused to start: "must hold 16 to 4096 bytes"). A file is now
published whole (written and synced under a temporary name, then linked into place), so the
other daemon either makes its own (one link wins) or reads the finished one: both end up with
the same secret, and neither fails."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable

import pytest

from jobman_cli.auth import TOKEN_ENV, load_or_create_api_token
from jobman_cli.notify.settings import load_or_create_secret


def _second_daemon_during_first_write(monkeypatch: pytest.MonkeyPatch, start: Callable[[], Any]) -> list:
    """Just before the first creator writes its file's content (the file, or its temporary twin,
    is open and empty), a second creator runs to the end: its result or error is returned."""
    write, seen = os.write, []

    def write_after_a_rival(fd: int, data: bytes) -> int:
        if not seen:
            seen.append(None)
            try:
                seen[0] = ("ok", start())
            except Exception as exc:  # the failure under test: reported, not raised here
                seen[0] = ("error", exc)
        return write(fd, data)

    monkeypatch.setattr(os, "write", write_after_a_rival)
    return seen


def test_two_daemons_making_the_notify_secret_at_once_share_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("JOBMAN_NOTIFY_SECRET", raising=False)
    monkeypatch.delenv("JOBMAN_NOTIFY_SECRET_FILE", raising=False)
    home = tmp_path / "home"
    rival = _second_daemon_during_first_write(monkeypatch, lambda: load_or_create_secret(home))
    first, _ = load_or_create_secret(home)
    assert rival and rival[0][0] == "ok", rival  # before the fix: ConfigError (the file was empty)
    assert rival[0][1][0] == first and len(first) >= 16
    path = home / "notify-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["notify-secret"]  # no temporary file left


def test_two_daemons_making_the_api_token_at_once_share_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    home = tmp_path / "home"
    rival = _second_daemon_during_first_write(monkeypatch, lambda: load_or_create_api_token(home))
    first = load_or_create_api_token(home)
    assert rival and rival[0][0] == "ok", rival
    assert rival[0][1] == first
