"""The checked-in completion scripts are exactly what the current CLI generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gen_completions  # noqa: E402


@pytest.mark.parametrize("shell,name", sorted(gen_completions.FILES.items()))
def test_checked_in_completion_is_current(shell: str, name: str) -> None:
    checked_in = (ROOT / "completions" / name).read_text()
    assert checked_in == gen_completions.render(shell), (
        f"completions/{name} is stale: run `python scripts/gen_completions.py` and commit the result"
    )


def test_installed_program_prints_the_same_bash_script() -> None:
    """What `_JOBMAN_COMPLETE=bash_source jobman` prints (how users may install it) matches too."""
    env = dict(os.environ, _JOBMAN_COMPLETE="bash_source")
    result = subprocess.run([sys.executable, "-m", "jobman_cli"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (ROOT / "completions" / "jobman.bash").read_text().strip()


def test_completion_offers_subcommands() -> None:
    env = dict(os.environ, _JOBMAN_COMPLETE="bash_complete", COMP_WORDS="jobman sch", COMP_CWORD="1")
    result = subprocess.run([sys.executable, "-m", "jobman_cli"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "schedule" in result.stdout
    assert "list" not in result.stdout.split()
