"""Human output: plain aligned text for pipes and big stores, rich at a terminal."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

from conftest import make_draft

from jobman_cli import render
from jobman_cli.model import JobStatus, ReasonCode

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def jobs(count: int, title: str = "nightly"):
    return [make_draft(id=n, title=f"{title} {n}", date_time=NOW + timedelta(minutes=n)) for n in range(count, 0, -1)]


def test_plain_table_aligns_columns_and_keeps_every_row() -> None:
    out = io.StringIO()
    render.print_job_table(jobs(12), out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() [:2] == ["ID", "STATUS"]
    assert len(lines) == 13
    status_col = lines[0].index("STATUS")
    assert all(line[status_col:].startswith("scheduled") for line in lines[1:])
    assert lines[1].lstrip().startswith("12") and lines[-1].lstrip().startswith("1 ")
    assert "\x1b[" not in out.getvalue()


def test_terminal_gets_rich_and_markup_in_titles_is_shown_literally() -> None:
    out = Terminal()
    render.print_job_table(jobs(3, title="[bold red]not markup[/]"), out)
    text = out.getvalue()
    assert "[bold red]not" in text and "markup[/] 3" in text
    assert "\x1b[" in text, "colour at a terminal"
    assert "2026-11-28T12:03:00Z" in text, "times are never cut"


def test_big_tables_are_plain_even_at_a_terminal() -> None:
    out = Terminal()
    render.print_job_table(jobs(render.RICH_ROW_LIMIT + 1), out)
    assert "\x1b[" not in out.getvalue()
    assert len(out.getvalue().splitlines()) == render.RICH_ROW_LIMIT + 2


def test_sheet_hides_env_values_and_flattens_reasons() -> None:
    job = make_draft(id=7, env_variables={"SECRET": "hunter2", "A": "1"})
    job = job.claimed(NOW, "t").failed("launch error:\nInvalidAMIID.Malformed", NOW, ReasonCode.LAUNCH_FAILED)
    out = io.StringIO()
    render.print_job(job, out)
    text = out.getvalue()
    assert "hunter2" not in text
    assert "env-variables  A, SECRET" in text
    assert "reason         launch error: InvalidAMIID.Malformed" in text
    assert job.status is JobStatus.FAILED


def test_empty_list() -> None:
    out = io.StringIO()
    render.print_job_table([], out)
    assert out.getvalue() == "No jobs.\n"
