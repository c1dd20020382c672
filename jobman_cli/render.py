"""Human output: a table of jobs and a sheet for one job.

Two renderers with the same columns. At a terminal, for up to :data:`RICH_ROW_LIMIT` rows, rich
draws them in colour. Everywhere else (pipes, files, cron mail, and big stores) plain aligned
text is printed: rich measures every cell (about 1 ms a row: 10 s for 10,000 jobs) and costs
about 25 ms to import, which would double the time of ``jobman status`` in a script.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Sequence, TextIO

from .errors import one_line
from .model import Job, JobStatus, format_time
from .notify.targets import redact

RICH_ROW_LIMIT = 500
TABLE_COLUMNS = ("ID", "STATUS", "DATE-TIME (UTC)", "IMAGE", "TITLE", "EXIT", "REASON")
#: ``list --cost``: the cost receipt's amount, before the (long) reason.
COST_COLUMNS = ("ID", "STATUS", "DATE-TIME (UTC)", "IMAGE", "TITLE", "EXIT", "COST", "REASON")
RIGHT_ALIGNED = frozenset({"ID", "EXIT", "COST"})

STATUS_STYLE = {
    JobStatus.SCHEDULED: "cyan",
    JobStatus.LAUNCHING: "yellow",
    JobStatus.RUNNING: "bold yellow",
    JobStatus.FINISHED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "dim",
}


def relative(when: datetime, now: datetime | None = None) -> str:
    """``in 9m``, ``3h ago``: enough to read a table at a glance.

    Rounded to the nearest minute first (beyond one), not truncated: a job scheduled ``+10m`` or
    ``+1d`` a few milliseconds ago reads "in 10m" / "in 1d", not "in 9m" / "in 23h"."""
    now = now or datetime.now(timezone.utc)
    exact = (when - now).total_seconds()
    future = exact >= 0
    seconds = round(abs(exact))
    if seconds >= 60:
        seconds = round(seconds / 60) * 60
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


def table_rows(jobs: Sequence[Job], cost: bool = False) -> list[tuple[str, ...]]:
    """The cells of :data:`TABLE_COLUMNS` (``cost``: of :data:`COST_COLUMNS`)."""
    rows = []
    for job in jobs:
        exit_code = "" if job.exit_code is None else str(job.exit_code)
        money = (cost_cell(job),) if cost else ()
        rows.append((str(job.id), job.status.value, format_time(job.date_time) or "", job.docker_image,
                     one_line(job.title), exit_code, *money, one_line(job.reason)))
    return rows


def cost_cell(job: Job) -> str:
    """The COST of ``list --cost``: ``$0.15`` (the receipt), ``unknown`` (no price was found;
    ``status`` says why), ``pending`` (ended, the daemon has not made the receipt yet), or empty
    (nothing to price yet: not ended, or no instance ran)."""
    from .cost.receipt import format_usd

    if job.cost is not None:
        return format_usd(job.cost)
    if job.cost_basis is not None:
        return "unknown"
    return "pending" if job.terminal and job.instance_id else ""


def sheet_rows(job: Job) -> list[tuple[str, str]]:
    """The fields of ``jobman status``. Environment values are not shown (they may be secrets)."""
    rows = [
        ("id", str(job.id)),
        ("title", one_line(job.title) or "-"),
        ("status", job.status.value),
        ("date-time", f"{format_time(job.date_time)} ({relative(job.date_time)})"),
        ("docker-image", job.docker_image),
        ("env-variables", ", ".join(sorted(job.env_variables)) or "-"),
        ("exit-code", "-" if job.exit_code is None else str(job.exit_code)),
        ("reason", one_line(job.reason) or "-"),
        ("reason-code", job.reason_code.value if job.reason_code is not None else "-"),
        ("instance-id", job.instance_id or "-"),
        ("attempts", str(job.attempts)),
        ("timeout", f"{job.timeout}s"),
        ("created-at", format_time(job.created_at) or "-"),
        ("launched-at", format_time(job.launched_at) or "-"),
        ("finished-at", format_time(job.finished_at) or "-"),
    ]
    rows.extend(capacity_rows(job))
    if job.cost_basis is not None or (job.terminal and job.instance_id):
        rows.append(("cost", cost_line(job)))
    if job.notify:
        rows.append(("notify", f"{', '.join(redact(t) for t in job.notify)} (on {job.notify_on})"))
        rows.append(("notification", _last_delivery(job)))
    if job.secrets:  # references only: jobman never holds a secret's value
        rows.insert(6, ("secrets", ", ".join(f"{name}={ref}" for name, ref in sorted(job.secrets.items()))))
    if job.schedule_id is not None:  # a schedule's run: which series, and which of its occurrences
        occurrence = f", occurrence {format_time(job.occurrence)}" if job.occurrence is not None else ""
        rows.insert(4, ("schedule", f"{job.schedule_id}{occurrence} ('jobman schedules show {job.schedule_id}')"))
    return rows


def capacity_rows(job: Job) -> list[tuple[str, str]]:
    """The launch ladder's rows (DESIGN.md section 13): where the current attempt runs (type, zone,
    subnet, market), the market (always) with the choices when they differ from the defaults, and
    spot interruptions."""
    rows = []
    if job.placement:
        p = job.placement
        where = " ".join(str(v) for v in (p.get("instance-type"), p.get("availability-zone")) if v)
        subnet = f", {p['subnet-id']}" if p.get("subnet-id") else ""
        rows.append(("placement", f"{where or '?'} ({p.get('market') or '?'}{subnet})"))
    if job.instance_type and "," in job.instance_type or job.subnet_ids or job.capacity != "on-demand":
        choice = job.instance_type or "the daemon's default type(s)"
        if job.subnet_ids:
            choice += f" in {', '.join(job.subnet_ids)}"
        rows.append(("capacity", f"{job.capacity}: {choice}"))
    else:  # always said: the market's default is configurable ([ec2] capacity), so no row is no answer
        rows.append(("capacity", job.capacity))
    if job.capacity != "on-demand" or job.interruptions:
        rows.append(("interruptions", f"{job.interruptions} of at most {job.max_interruptions}"))
    return rows


def cost_line(job: Job) -> str:
    """``$0.15 (on-demand m7i.large ...)``, ``unknown: why``, or pending (the daemon makes the receipt
    shortly after the end; see :mod:`jobman_cli.daemon.costing`). :mod:`jobman_cli.cost.receipt`
    (~2.4 ms to import) is imported only when there is a figure to format."""
    if job.cost_basis is None:
        return "pending (the daemon works it out after the end)"
    if job.cost is None:
        return one_line(job.cost_basis)
    from .cost.receipt import format_usd

    return one_line(f"{format_usd(job.cost)} ({job.cost_basis})")


def _last_delivery(job: Job) -> str:
    """The latest delivery attempt in words (``status``; ``status --json`` has them all)."""
    latest = None
    for record in job.deliveries:
        history = record.get("history") or []
        at = history[-1].get("at") if history else record.get("claimed-at")
        if latest is None or (at or "") >= (latest[0] or ""):
            latest = (at, record, history[-1].get("outcome") if history else "sending")
    if latest is None:
        return "none sent yet" if job.terminal else "-"
    at, record, outcome = latest
    line = (f"{record.get('state')} to {record.get('target')} ({record.get('event')}; attempt "
            f"{record.get('attempts')}: {outcome} at {at})")
    if record.get("next-attempt-at"):
        line += f"; next attempt {record['next-attempt-at']}"
    return one_line(line)


def _wants_rich(rows: int, out: TextIO) -> bool:
    return rows <= RICH_ROW_LIMIT and out.isatty()


# ----------------------------------------------------------------------------- plain text
def plain_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    widths = [len(c) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(widths[i]) if columns[i] in RIGHT_ALIGNED else cell.ljust(widths[i])
                 for i, cell in enumerate(cells)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(columns), *(line(row) for row in rows)]) + "\n"


def plain_sheet(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "".join(f"{key.ljust(width)}  {value}\n" for key, value in rows)


# ----------------------------------------------------------------------------- entry points
def print_job_table(jobs: Sequence[Job], out: TextIO | None = None, *, cost: bool = False) -> None:
    """``jobman list``; ``cost``: with the COST column (``list --cost``)."""
    out = out or sys.stdout
    if not jobs:
        out.write("No jobs.\n")
        return
    rows = table_rows(jobs, cost)
    columns = COST_COLUMNS if cost else TABLE_COLUMNS
    if not _wants_rich(len(rows), out):
        out.write(plain_table(rows, columns))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        fixed = column in ("ID", "STATUS", "DATE-TIME (UTC)", "EXIT", "COST")  # never cut a time, an id or an amount
        table.add_column(column, no_wrap=fixed, overflow="fold", min_width=len(column) if fixed else None,
                         justify="right" if column in RIGHT_ALIGNED else "left")
    for job, row in zip(jobs, rows):
        table.add_row(row[0], f"[{STATUS_STYLE[job.status]}]{row[1]}[/]", row[2],
                      *(escape(cell) for cell in row[3:]))
    Console(file=out, highlight=False).print(table)


def print_job(job: Job, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = sheet_rows(job)
    if not _wants_rich(1, out):
        out.write(plain_sheet(rows))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    sheet = Table.grid(padding=(0, 2))
    sheet.add_column(style="bold")
    sheet.add_column()
    for key, value in rows:
        sheet.add_row(key, f"[{STATUS_STYLE[job.status]}]{value}[/]" if key == "status" else escape(value))
    Console(file=out, highlight=False).print(sheet)
