"""Bad input across every command: one line naming the field, the right exit code, nothing written.

Each case runs against a store holding a scheduled, a running and a finished job, and the store
file must be byte-identical afterwards.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobman_cli.cli import cli
from jobman_cli.stores.tinydb import TinyDBStore

NOW = datetime.now(timezone.utc)


@pytest.fixture()
def populated(tmp_path: Path) -> Path:
    """jobs.json with job 1 scheduled, job 2 running, job 3 finished."""
    db = tmp_path / "jobs.json"
    runner = CliRunner()
    for title in ("first", "second", "third"):
        result = runner.invoke(cli, ["--db", str(db), "schedule", "--image", "alpine:3.20", "--at", "+1h",
                                     "--title", title, "--idempotency-key", f"key-{title}", "-q"])
        assert result.exit_code == 0, result.output
    store = TinyDBStore(db)
    store.update(2, lambda j: j.claimed(NOW, "tok-2-1"))
    store.update(2, lambda j: j.launched("i-0123456789abcdef0", NOW))
    store.update(3, lambda j: j.claimed(NOW, "tok-3-1"))
    store.update(3, lambda j: j.reported("finished", 0, NOW))
    store.close()
    (tmp_path / "bad.env").write_text("GOOD=1\nthis line has no equals sign\n")
    (tmp_path / "corrupt.json").write_text('{"jobs": {"1": {"id": 1,')
    return db


# (argv, expected exit code, text the one-line error must contain)
CASES: list[tuple[list[str], int, str]] = [
    # schedule: required fields
    (["schedule", "--at", "now"], 2, "--image"),
    (["schedule", "--image", "alpine"], 2, "--at"),
    # schedule: docker image references
    (["schedule", "--image", "Alpine/Upper:1", "--at", "now"], 2, "--image"),
    (["schedule", "--image", "-rm", "--at", "now"], 2, "--image"),
    (["schedule", "--image", "", "--at", "now"], 2, "--image"),
    (["schedule", "--image", "alpine:tag with space", "--at", "now"], 2, "--image"),
    (["schedule", "--image", "alpine@sha256:abc", "--at", "now"], 2, "--image"),
    (["schedule", "--image", "alpine;rm -rf /", "--at", "now"], 2, "--image"),
    # schedule: WHEN grammar
    (["schedule", "--image", "alpine", "--at", "yesterday"], 2, "--at"),
    (["schedule", "--image", "alpine", "--at", "2020-01-01 00:00:00"], 2, "now"),
    (["schedule", "--image", "alpine", "--at", "+5x"], 2, "--at"),
    (["schedule", "--image", "alpine", "--at", "2027-13-01 00:00:00"], 2, "--at"),
    (["schedule", "--image", "alpine", "--at", "2027-03-28 02:30:00", "--tz", "Europe/Berlin"], 2, "--at"),
    (["schedule", "--image", "alpine", "--at", "2027-10-31 02:30:00", "--tz", "Europe/Berlin"], 2, "--at"),
    (["schedule", "--image", "alpine", "--at", "+10m", "--tz", "Mars/Olympus_Mons"], 2, "--tz"),
    # schedule: environment
    (["schedule", "--image", "alpine", "--at", "now", "-e", "1BAD=x"], 2, "-e"),
    (["schedule", "--image", "alpine", "--at", "now", "-e", "NOEQUALS"], 2, "-e"),
    (["schedule", "--image", "alpine", "--at", "now", "-e", "BAD-KEY=x"], 2, "-e"),
    (["schedule", "--image", "alpine", "--at", "now", "--env-file", "{tmp}/missing.env"], 2, "--env-file"),
    (["schedule", "--image", "alpine", "--at", "now", "--env-file", "{tmp}/bad.env"], 2, "--env-file"),
    (["schedule", "--image", "alpine", "--at", "now", "-e", "BIG=" + "x" * 20000], 2, "-e/--env-file"),
    # schedule: durations, instance type, title, key, flags
    (["schedule", "--image", "alpine", "--at", "now", "-e", "A=\udcff"], 2, "-e"),
    (["schedule", "--image", "alpine", "--at", "now", "--title", "t\udcff"], 2, "--title"),
    (["schedule", "--image", "alpine", "--at", "now", "--timeout", "0"], 2, "--timeout"),
    (["schedule", "--image", "alpine", "--at", "now", "--timeout", "abc"], 2, "--timeout"),
    (["schedule", "--image", "alpine", "--at", "now", "--start-deadline", "-5m"], 2, "--start-deadline"),
    (["schedule", "--image", "alpine", "--at", "now", "--instance-type", "T3 MICRO"], 2, "--instance-type"),
    (["schedule", "--image", "alpine", "--at", "now", "--title", "two\nlines"], 2, "--title"),
    (["schedule", "--image", "alpine", "--at", "now", "--title", "t" * 300], 2, "--title"),
    (["schedule", "--image", "alpine", "--at", "now", "--idempotency-key", "has space"], 2, "--idempotency-key"),
    (["schedule", "--image", "busybox", "--at", "+1h", "--title", "first", "--idempotency-key", "key-first"], 2,
     "--idempotency-key"),
    (["schedule", "--image", "alpine", "--at", "now", "--json", "-q"], 2, "-q"),
    (["schedule", "--image", "alpine", "--at", "now", "--frobnicate"], 2, "--frobnicate"),
    # list
    (["list", "--status", "bogus"], 2, "--status"),
    # status
    (["status", "abc"], 2, "ID"),
    (["status", "0"], 2, "ID"),
    (["status", "-1"], 2, "-1"),
    (["status", "999"], 1, "999"),
    (["status", "1", "--wait-timeout", "5s"], 2, "--wait"),
    (["status", "1", "--wait", "--wait-timeout", "soon"], 2, "--wait-timeout"),
    # callback
    (["callback", "2", "--status", "done"], 2, "--status"),
    (["callback", "2", "--status", "failed", "--exit-code", "300"], 2, "--exit-code"),
    (["callback", "2", "--status", "failed", "--exit-code", "abc"], 2, "--exit-code"),
    (["callback", "2", "--status", "finished", "--exit-code", "3"], 2, "exit-code"),
    (["callback", "1", "--status", "finished"], 1, "scheduled"),
    (["callback", "3", "--status", "failed", "--exit-code", "1"], 1, "finished"),
    (["callback", "999", "--status", "running"], 1, "999"),
    # cancel
    (["cancel", "3"], 1, "finished"),
    (["cancel", "abc"], 2, "ID"),
    (["cancel", "999"], 1, "999"),
    # logs
    (["logs", "1"], 1, "no instance"),
    # global
    (["nonsense"], 2, "nonsense"),
    (["--db", "{tmp}/corrupt.json", "list"], 1, "corrupt.json"),
    (["--db", "{tmp}", "list"], 1, "{tmp}"),
]


@pytest.mark.parametrize("argv,code,needle", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(populated: Path, argv: list[str], code: int, needle: str) -> None:
    tmp = populated.parent
    before = {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}
    args = [a.replace("{tmp}", str(tmp)) for a in argv]
    if args[0] != "--db":
        args = ["--db", str(populated)] + args
    result = CliRunner().invoke(cli, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert needle.replace("{tmp}", str(tmp)) in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    after = {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}
    assert after == before, "the store (or another file) changed"


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
