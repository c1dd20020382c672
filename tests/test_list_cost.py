"""``jobman list --cost`` (DESIGN.md section 13: "``status`` shows it, ``list`` can"): a COST column
with each job's cost receipt; without the flag the table is unchanged; ``--json`` has ``cost`` and
``cost-basis`` with or without it. The same output locally (a real TinyDB file) and over
``--server`` (a real API server on 127.0.0.1 over the same store).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import T0, make_draft
from jobman_cli.cli import cli
from jobman_cli.model import JobStatus
from jobman_cli.render import TABLE_COLUMNS, print_job_table
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore
from test_api import TOKEN, Api

ENDED = dict(finished_at=T0, updated_at=T0, launched_at=T0)
#: (job fields, the COST cell): priced (over and under a cent), priced at zero, no price found,
#: ended but the receipt not made yet, ended without an instance, still scheduled.
JOBS = [
    (dict(status=JobStatus.FINISHED, exit_code=0, instance_id="i-0000000000000000a", cost=0.152515,
          cost_basis="on-demand m7i.large us-east-1 $0.1008/h (...); 5400 s", **ENDED), "$0.15"),
    (dict(status=JobStatus.FAILED, exit_code=3, instance_id="i-0000000000000000b", cost=0.0042,
          cost_basis="spot m7i.large us-east-1a $0.0382/h (...)", reason="exit code 3", **ENDED), "$0.0042"),
    (dict(status=JobStatus.FINISHED, exit_code=0, instance_id="i-0000000000000000c", cost=0.0,
          cost_basis="on-demand ...", **ENDED), "$0.00"),
    (dict(status=JobStatus.FINISHED, exit_code=0, instance_id="i-0000000000000000d", cost=None,
          cost_basis="unknown: Price List price of m7i.large: AccessDeniedException", **ENDED), "unknown"),
    (dict(status=JobStatus.FINISHED, exit_code=0, instance_id="i-0000000000000000e", **ENDED), "pending"),
    (dict(status=JobStatus.CANCELLED, reason="cancelled by operator", finished_at=T0, updated_at=T0), ""),
    (dict(status=JobStatus.SCHEDULED), ""),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.json"
    with TinyDBStore(path) as store:
        for fields, _ in JOBS:
            store.add(make_draft(**fields))
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def cells(table: str, column: str) -> list[str]:
    """One column of a plain table, cut by its header's span (right-aligned cells end where it ends)."""
    header, *rows = table.splitlines()
    start = header.index(column)
    end = start + len(column)
    left = header[:start].rstrip()
    begin = len(left) + 2 if left else 0  # the gap of two after the previous column
    return [row[begin:end].strip() for row in rows]


def test_without_the_flag_the_table_is_unchanged(db: Path) -> None:
    out = run("--db", str(db), "list")
    assert out.splitlines()[0].split() == "ID STATUS DATE-TIME (UTC) IMAGE TITLE EXIT REASON".split()
    assert "COST" not in out and "$" not in out
    assert TABLE_COLUMNS == ("ID", "STATUS", "DATE-TIME (UTC)", "IMAGE", "TITLE", "EXIT", "REASON")


def test_with_the_flag_each_job_has_its_cost_before_the_reason(db: Path) -> None:
    out = run("--db", str(db), "list", "--cost")
    header = out.splitlines()[0]
    assert header.split() == "ID STATUS DATE-TIME (UTC) IMAGE TITLE EXIT COST REASON".split()
    ids = [int(i) for i in cells(out, "ID")]
    expected = {i + 1: cell for i, (_, cell) in enumerate(JOBS)}
    assert dict(zip(ids, cells(out, "COST"))) == expected
    assert sorted(ids, reverse=True) == ids  # newest first, as without the flag
    # The reason still comes last and whole.
    assert re.search(r"\$0\.0042\s+exit code 3$", out, re.M), out
    # The other columns are what plain ``list`` shows.
    plain = run("--db", str(db), "list")
    for column in ("ID", "STATUS", "IMAGE", "EXIT", "REASON"):
        assert cells(out, column) == cells(plain, column)


def test_json_has_cost_and_basis_with_or_without_the_flag(db: Path) -> None:
    plain = json.loads(run("--db", str(db), "list", "--json"))
    assert json.loads(run("--db", str(db), "list", "--json", "--cost")) == plain
    by_id = {job["id"]: job for job in plain}
    assert (by_id[1]["cost"], by_id[1]["cost-basis"]) == (0.152515, JOBS[0][0]["cost_basis"])
    assert by_id[4]["cost"] is None and by_id[4]["cost-basis"].startswith("unknown: ")
    assert (by_id[5]["cost"], by_id[5]["cost-basis"]) == (None, None)


def test_the_same_over_server(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TinyDBStore(db, create=False)
    api = Api(JobService(store), db)
    try:
        monkeypatch.setenv("JOBMAN_API_TOKEN", TOKEN)
        url = f"http://127.0.0.1:{api.server.port}"
        for args in (["list", "--cost"], ["list"], ["list", "--cost", "--status", "finished", "--limit", "2"]):
            assert run("--server", url, *args) == run("--db", str(db), *args), args
        assert "unknown" in run("--server", url, "list", "--cost")
    finally:
        api.server.stop()
        store.close()
    assert api.log == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_rich_table_at_a_terminal_has_the_column_too() -> None:
    jobs = [make_draft(id=i + 1, **fields) for i, (fields, _) in enumerate(JOBS)]
    out = Terminal()
    print_job_table(jobs, out, cost=True)
    text = out.getvalue()
    assert "COST" in text and "$0.0042" in text and "pending" in text
    out = Terminal()
    print_job_table(jobs, out)
    assert "COST" not in out.getvalue() and "$0.15" not in out.getvalue()
