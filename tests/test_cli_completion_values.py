"""Shell completion offers the values of the enumerated options of ``schedule`` (``--capacity``,
``--overlap``, ``--notify-on``), as ``cost --by`` does, while a bad value keeps the core's one-line
error (the options stay strings validated by the core, not ``click.Choice``). Completion runs the
installed entry point the way bash does (``_JOBMAN_COMPLETE=bash_complete``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from jobman_cli.cli import cli

CASES = [("--capacity", "", ["on-demand", "spot", "spot-then-on-demand"]),
         ("--capacity", "spot", ["spot", "spot-then-on-demand"]),
         ("--overlap", "", ["allow", "forbid", "replace"]), ("--overlap", "r", ["replace"]),
         ("--notify-on", "", ["failure", "end"]), ("--notify-on", "x", [])]


def complete(words: str, cword: int) -> list[str]:
    env = dict(os.environ, _JOBMAN_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    result = subprocess.run([sys.executable, "-m", "jobman_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]


@pytest.mark.parametrize(("option", "typed", "offered"), CASES, ids=[f"{o}-{t or 'empty'}" for o, t, _ in CASES])
def test_enumerated_options_complete_their_values(option: str, typed: str, offered: list[str]) -> None:
    assert complete(f"jobman schedule --image alpine {option} {typed}", 5) == offered


@pytest.mark.parametrize(("args", "field"), [(["--at", "now", "--capacity", "spotty"], "--capacity"),
                                             (["--cron", "@daily", "--overlap", "never"], "--overlap"),
                                             (["--at", "now", "--notify-on", "always", "--notify", "sns:arn:aws:sns:us-east-1:123456789012:t"],
                                              "--notify-on")],
                         ids=["capacity", "overlap", "notify-on"])
def test_bad_values_keep_the_one_line_error(tmp_path, args: list[str], field: str) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "jobs.json"), "schedule", "--image", "alpine", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {field}: ") and result.output.count("\n") == 1, result.output
