"""Human output: rich tables and job sheets. Imported only when a person is reading."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from .model import Job, JobStatus, format_time

STATUS_STYLE = {
    JobStatus.SCHEDULED: "cyan",
    JobStatus.LAUNCHING: "yellow",
    JobStatus.RUNNING: "bold yellow",
    JobStatus.FINISHED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "dim",
}


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def relative(when: datetime, now: datetime | None = None) -> str:
    """``in 9m``, ``3h ago``: enough to read a table at a glance."""
    now = now or datetime.now(timezone.utc)
    seconds = int((when - now).total_seconds())
    future = seconds >= 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = f"{seconds // size}{unit}"
            break
    else:
        amount = f"{seconds}s"
    return f"in {amount}" if future else f"{amount} ago"


def describe_scheduled(job: Job, created: bool) -> str:
    verb = "Scheduled" if created else "Already scheduled (same idempotency key):"
    return f"{verb} job {job.id} for {format_time(job.date_time)} ({relative(job.date_time)}): {job.docker_image}"


def print_job_table(jobs: Sequence[Job]) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    if not jobs:
        console.print("No jobs.", style="dim")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "STATUS", "DATE-TIME (UTC)", "IMAGE", "TITLE", "EXIT", "REASON"):
        table.add_column(column, overflow="fold" if column in ("TITLE", "REASON") else "ellipsis",
                         justify="right" if column in ("ID", "EXIT") else "left")
    for job in jobs:
        table.add_row(
            str(job.id),
            f"[{STATUS_STYLE[job.status]}]{job.status.value}[/]",
            format_time(job.date_time),
            escape(job.docker_image),
            escape(job.title),
            "" if job.exit_code is None else str(job.exit_code),
            escape(job.reason or ""),
        )
    console.print(table)


def print_job(job: Job) -> None:
    from rich.markup import escape
    from rich.table import Table

    sheet = Table.grid(padding=(0, 2))
    sheet.add_column(style="bold")
    sheet.add_column()
    rows = [
        ("id", str(job.id)),
        ("title", escape(job.title)),
        ("status", f"[{STATUS_STYLE[job.status]}]{job.status.value}[/]"),
        ("date-time", f"{format_time(job.date_time)} ({relative(job.date_time)})"),
        ("docker-image", escape(job.docker_image)),
        ("env-variables", escape(", ".join(sorted(job.env_variables))) or "-"),
        ("exit-code", "-" if job.exit_code is None else str(job.exit_code)),
        ("reason", escape(job.reason or "-")),
        ("instance-id", job.instance_id or "-"),
        ("attempts", str(job.attempts)),
        ("timeout", f"{job.timeout}s"),
        ("created-at", format_time(job.created_at) or "-"),
        ("launched-at", format_time(job.launched_at) or "-"),
        ("finished-at", format_time(job.finished_at) or "-"),
    ]
    for key, value in rows:
        sheet.add_row(key, value)
    _console().print(sheet)
