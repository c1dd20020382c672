"""``jobman schedules list|show|pause|resume|delete|preview`` and the ``--cron``/``--every`` branch of
``jobman schedule``: parse, call :class:`~jobman_cli.schedules.service.ScheduleService`, render.

Everything is rendered from the public JSON of a schedule (``schedule_to_api``), so a local store
and a remote daemon (``--server``, whose REST API answers that JSON) print alike. Rendering lives
here, not in render.py: schedules have their own columns and their own records.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, TextIO

import click

from .cli_base import State, print_json, store_option

UTC = timezone.utc
PREVIEW_DEFAULT = 10


# ----------------------------------------------------------------------------- the service seam
class _LocalSchedules:
    """ScheduleService over the local store, answering public JSON (as a remote daemon does)."""

    def __init__(self, state: State, *, create: bool) -> None:
        from .schedules.service import ScheduleService

        self.service = ScheduleService(state.service(create=create))

    def create(self, body: dict[str, Any], names: Any) -> dict[str, Any]:
        from .schedules.model import schedule_to_api

        return schedule_to_api(self.service.create(body, names))

    def get(self, schedule_id: int) -> dict[str, Any]:
        return self.service.show_api(schedule_id)

    def list(self) -> list[dict[str, Any]]:
        from .schedules.model import schedule_to_api

        return [schedule_to_api(s, records=False) for s in self.service.list()]

    def pause(self, schedule_id: int) -> dict[str, Any]:
        from .schedules.model import schedule_to_api

        shown = schedule_to_api(self.service.pause(schedule_id))
        shown["runs-still-to-launch"] = self.service.still_to_launch(schedule_id)
        return shown

    def resume(self, schedule_id: int) -> dict[str, Any]:
        from .schedules.model import schedule_to_api

        return schedule_to_api(self.service.resume(schedule_id))

    def delete(self, schedule_id: int) -> dict[str, Any]:
        self.service.get(schedule_id)  # ScheduleNotFound before anything else
        pending = self.service.still_to_launch(schedule_id)
        self.service.delete(schedule_id)
        return {"deleted": schedule_id, "runs-still-to-launch": pending}


def schedule_service(state: State, *, create: bool = False) -> Any:
    """The schedules of this invocation: the local store's, or the daemon's under ``--server``
    (through ``RemoteService.schedules()`` when this client's remote module offers it)."""
    if state.remote:
        remote = state.service()
        factory = getattr(remote, "schedules", None)
        if factory is None:
            from .errors import JobmanError

            raise JobmanError("schedules cannot be managed with --server by this jobman yet; run the command on "
                              "the daemon's host (or against its store with --db/--store)")
        return factory()
    return _LocalSchedules(state, create=create)


def _schedule_id(value: str) -> int:
    from .errors import InvalidInput
    from .validation import parse_job_id

    try:
        return parse_job_id(value, field="ID")
    except InvalidInput as err:
        raise InvalidInput("ID", err.rule.replace("job id", "schedule id")) from None


# ----------------------------------------------------------------------------- jobman schedule --cron
def check_schedule_flags(when: str | None, idempotency_key: str | None, dry_run: bool, cron: str | None,
                         every: str | None, overlap: str | None) -> bool:
    """Whether this ``schedule`` call makes a recurring schedule; usage errors for flags that do
    not go with it (each a one-line error, exit 2, nothing written)."""
    recurring = cron is not None or every is not None
    if not recurring:
        if overlap is not None:
            raise click.UsageError("--overlap needs --cron or --every (it is a recurring schedule's option)")
        if when is None:
            raise click.UsageError("Missing option '--at' (or --cron/--every for a recurring schedule)")
        return False
    if cron is not None and every is not None:
        raise click.UsageError("--cron and --every cannot be used together")
    flag = "--cron" if cron is not None else "--every"
    if when is not None:
        raise click.UsageError(f"--at cannot be used with {flag} (each occurrence is a run's time)")
    if idempotency_key is not None:
        raise click.UsageError(f"--idempotency-key cannot be used with {flag} (each run gets its own key, "
                               "schedule-<id>-<occurrence>)")
    if dry_run:
        raise click.UsageError(f"--dry-run cannot be used with {flag}; see the runs with 'jobman schedules preview'")
    return True


def create_schedule(state: State, request: Any, cron: str | None, every: str | None, tz: str | None,
                    overlap: str | None, as_json: bool, quiet: bool) -> None:
    """``jobman schedule --cron|--every``: the job options become the template (validated as a job)."""
    from .schedules.service import request_to_template
    from .service import CLI_FIELDS

    body: dict[str, Any] = request_to_template(request)
    body.update({k: v for k, v in (("cron", cron), ("every", every), ("tz", tz), ("overlap", overlap))
                 if v is not None})
    created = schedule_service(state, create=True).create(body, CLI_FIELDS)
    if quiet:
        click.echo(created["id"])
    elif as_json:
        print_json(created)
    else:
        click.echo(describe_created(created))


def _spec(s: dict[str, Any]) -> str:
    from .schedules.occurrences import format_every

    return s["cron"] if s.get("cron") else f"every {format_every(s['every'])}"


def describe_created(s: dict[str, Any]) -> str:
    image = (s.get("template") or {}).get("docker-image", "")
    return (f"Created schedule {s['id']}: {_spec(s)} ({s['tz']}), overlap {s['overlap']}; "
            f"next run {_next(s)}: {image}")


def _next(s: dict[str, Any]) -> str:
    if s.get("paused"):
        return "none (paused)"
    if not s.get("next-at"):
        return "none"
    from .model import parse_time
    from .render import relative

    at = parse_time(s["next-at"])
    return f"{s['next-at']} ({s.get('next-at-local') or s['tz']}, {relative(at)})"  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- jobman schedules ...
@click.group(name="schedules")
def schedules() -> None:
    """Recurring schedules: each occurrence becomes an ordinary job (see 'jobman schedule --cron')."""


@schedules.command(name="list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_schedules(state: State, as_json: bool) -> None:
    """All schedules, by id."""
    found = schedule_service(state).list()
    if as_json:
        print_json(found)
    else:
        print_schedule_table(found)


@schedules.command(name="show")
@store_option
@click.argument("schedule_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the schedule (with its records and latest runs) as JSON.")
@click.pass_obj
def show(state: State, schedule_id: str, as_json: bool) -> None:
    """One schedule: its latest runs (jobs) and the occurrences that got none (missed, skipped, refused...)."""
    found = schedule_service(state).get(_schedule_id(schedule_id))
    if as_json:
        print_json(found)
    else:
        print_schedule(found)


@schedules.command(name="pause")
@store_option
@click.argument("schedule_id", metavar="ID")
@click.pass_obj
def pause(state: State, schedule_id: str) -> None:
    """Create no more runs until resumed (a run already created still runs: named in the answer)."""
    s = schedule_service(state).pause(_schedule_id(schedule_id))
    click.echo(f"Paused schedule {s['id']} ({_spec(s)}). Occurrences while paused are not run and not recorded.")
    _still_to_launch(s)


@schedules.command(name="resume")
@store_option
@click.argument("schedule_id", metavar="ID")
@click.pass_obj
def resume(state: State, schedule_id: str) -> None:
    """Create runs again, from the next occurrence after now."""
    s = schedule_service(state).resume(_schedule_id(schedule_id))
    click.echo(f"Resumed schedule {s['id']} ({_spec(s)}); next run {_next(s)}.")


@schedules.command(name="delete")
@store_option
@click.argument("schedule_id", metavar="ID")
@click.pass_obj
def delete(state: State, schedule_id: str) -> None:
    """Delete a schedule. Its jobs stay (a run already created still runs: named in the answer;
    cancel it with 'jobman cancel ID')."""
    number = _schedule_id(schedule_id)
    answer = schedule_service(state).delete(number)
    click.echo(f"Deleted schedule {number}; its jobs stay (see 'jobman list --schedule {number}').")
    _still_to_launch(answer)


def _still_to_launch(answer: Any) -> None:
    """Name each run already created that will still launch (pause/delete do not stop it; an
    older daemon's answer has no such list: nothing said)."""
    runs = answer.get("runs-still-to-launch") if isinstance(answer, dict) else None
    for run in runs if isinstance(runs, list) else ():
        if isinstance(run, dict) and run.get("id") is not None:
            click.echo(f"Job {run['id']} (for {run.get('occurrence')}) was already created and will still run; "
                       f"cancel it with 'jobman cancel {run['id']}'.")


@schedules.command(name="preview")
@click.option("--cron", default=None, metavar="EXPR", help="Five-field cron expression or @hourly/@daily/@weekly/@monthly.")
@click.option("--every", default=None, metavar="DUR", help="A fixed interval instead (at least 1m).")
@click.option("--tz", default=None, metavar="ZONE", help="IANA time zone of the expression. [default: the system's]")
@click.option("--from", "start", default=None, metavar="WHEN",
              help="Start after WHEN (a date, a date-time in --tz, ISO-8601, now, +1d). [default: now]")
@click.option("-n", "count", default=str(PREVIEW_DEFAULT), metavar="N", help=f"How many occurrences. [default: {PREVIEW_DEFAULT}]")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def preview(cron: str | None, every: str | None, tz: str | None, start: str | None, count: str,
            as_json: bool) -> None:
    """The next N occurrences in UTC and local time; stores nothing (no store is opened)."""
    from .model import format_time
    from .schedules.occurrences import local_label, transition_note, upcoming
    from .schedules.service import parse_count, parse_spec
    from .service import CLI_FIELDS

    cron_n, every_n, zone = parse_spec(cron, every, tz, CLI_FIELDS)
    n = parse_count(count, "-n")
    begin = parse_from(start, zone)
    found = upcoming(cron_n, every_n, zone, begin, n, anchor=begin)
    rows = [{"utc": format_time(t), "local": local_label(t, zone), "note": transition_note(t, zone, every_n)} for t in found]
    if as_json:
        print_json({"cron": cron_n, "every": every_n, "tz": zone, "from": format_time(begin), "occurrences": rows})
        return
    spec = _spec({"cron": cron_n, "every": every_n})
    click.echo(f"{spec} in {zone}, after {format_time(begin)}:")
    width = max((len(r["local"]) for r in rows), default=0)
    for r in rows:
        note = f"  {r['note']}" if r["note"] else ""
        click.echo(f"  {r['utc']}  {r['local'].ljust(width)}{note}".rstrip())
    if not rows:
        click.echo("  (no occurrence)")


def parse_from(text: str | None, zone: str) -> datetime:
    """``--from``: any WHEN (a time in the past is fine here: a preview stores nothing), or a bare
    date (local midnight in ``zone``)."""
    import re

    from .errors import InvalidInput
    from .timeparse import parse_when

    now = datetime.now(UTC)
    if text is None:
        return now
    if not isinstance(text, str):
        raise InvalidInput("--from", "must be a date-time")
    spec = text.strip()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", spec):
        spec += " 00:00:00"
    relative = spec.lower().startswith(("now", "+", "in "))
    return parse_when(spec, now=now if relative else datetime(1, 1, 2, tzinfo=UTC), tz=zone, field="--from")


# ----------------------------------------------------------------------------- rendering
COLUMNS = ("ID", "TITLE", "SCHEDULE", "TZ", "OVERLAP", "STATE", "NEXT (UTC)", "NEXT (LOCAL)", "LAST JOB")


def schedule_rows(found: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(str(s["id"]), s.get("title") or "", _spec(s), s["tz"], s["overlap"],
             "paused" if s.get("paused") else "active", "" if s.get("paused") else (s.get("next-at") or "-"),
             "" if s.get("paused") else (s.get("next-at-local") or ""),
             str(s["last-job-id"]) if s.get("last-job-id") is not None else "-") for s in found]


def print_schedule_table(found: list[dict[str, Any]], out: TextIO | None = None) -> None:
    from .render import _wants_rich, plain_table

    out = out or sys.stdout
    if not found:
        out.write("No schedules.\n")
        return
    rows = schedule_rows(found)
    if not _wants_rich(len(rows), out):
        out.write(plain_table(rows, COLUMNS))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("ID", "NEXT (UTC)", "STATE"), overflow="fold")
    for row in rows:
        style = "yellow" if row[5] == "paused" else "green"
        table.add_row(*(escape(c) for c in row[:5]), f"[{style}]{row[5]}[/]", *(escape(c) for c in row[6:]))
    Console(file=out, highlight=False).print(table)


def sheet_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    template = s.get("template") or {}
    rows = [("id", str(s["id"])), ("title", s.get("title") or ""), ("schedule", _spec(s)), ("tz", s["tz"]),
            ("overlap", s["overlap"]), ("state", "paused" if s.get("paused") else "active"),
            ("next run", _next(s)), ("last job", str(s.get("last-job-id") or "-")),
            ("image", str(template.get("docker-image", ""))), ("created", s.get("created-at") or "")]
    for key in sorted(k for k in template if k not in ("docker-image", "title", "env-variables", "secrets")):
        rows.append((key, _short(template[key])))
    if template.get("env-variables"):
        rows.append(("env", ", ".join(sorted(template["env-variables"]))))
    if template.get("secrets"):
        rows.append(("secrets", ", ".join(sorted(template["secrets"]))))
    return rows


def _short(value: Any) -> str:
    import json

    from .errors import one_line

    text = value if isinstance(value, str) else json.dumps(value)
    return one_line(text)[:120]


#: Records ``show`` prints (all of them with --json).
SHOWN_RECORDS = 20


def print_schedule(s: dict[str, Any], out: TextIO | None = None) -> None:
    from .render import plain_sheet, plain_table

    out = out or sys.stdout
    out.write(plain_sheet(sheet_rows(s)))
    runs = list(s.get("runs") or [])
    if runs:
        out.write(f"\nLatest runs (newest first; all: jobman list --schedule {s['id']}):\n")
        out.write(plain_table([(str(r.get("id")), r.get("occurrence") or "", r.get("status") or "",
                                _short(r.get("reason") or "")) for r in runs],
                              ("JOB", "OCCURRENCE (UTC)", "STATUS", "REASON")))
    records = list(s.get("records") or [])
    if not records:
        if not runs:
            out.write("\nNo runs yet.\n")
        return
    shown = records[-SHOWN_RECORDS:]
    more = f" (the last {len(shown)} of {len(records)}; --json for all)" if len(records) > len(shown) else ""
    # a replaced-previous occurrence HAS a run (the one that replaced the previous run): not listed
    # among the occurrences without one ("created": a run recorded by an earlier jobman, likewise)
    without = [r for r in shown if r.get("outcome") not in WITH_A_RUN]
    replaced = [r for r in shown if r.get("outcome") == "replaced-previous"]
    created = [r for r in shown if r.get("outcome") == "created"]
    if without:
        out.write(f"\nOccurrences without a run of their own{more}:\n")
        rows = [(_occurrences(r), r.get("outcome") or "", "" if r.get("job-id") is None else str(r["job-id"]),
                 r.get("detail") or "", _notified(r)) for r in without]
        out.write(plain_table(rows, ("OCCURRENCE (UTC)", "OUTCOME", "JOB", "DETAIL", "NOTIFIED")))
    if replaced:
        out.write(f"\nOccurrences whose run replaced the previous one (overlap replace){more if not without else ''}:\n")
        rows = [(_occurrences(r), "" if r.get("job-id") is None else str(r["job-id"]), r.get("detail") or "")
                for r in replaced]
        out.write(plain_table(rows, ("OCCURRENCE (UTC)", "CANCELLED JOB", "DETAIL")))
    if created:
        out.write("\nRuns recorded by an earlier jobman:\n")
        rows = [(_occurrences(r), "" if r.get("job-id") is None else str(r["job-id"]), r.get("detail") or "")
                for r in created]
        out.write(plain_table(rows, ("OCCURRENCE (UTC)", "JOB", "DETAIL")))


#: Record outcomes whose occurrence has a run (see print_schedule).
WITH_A_RUN = ("replaced-previous", "created")


def _notified(record: dict[str, Any]) -> str:
    """The delivery state of a missed/refused event's notifications ("" when the record sends none:
    no target, or an outage whose first record carries the one notification)."""
    items = record.get("notifications")
    if not isinstance(items, list):
        return ""
    if not items:
        return "pending"
    parts = []
    for item in items:
        if not isinstance(item, dict):
            continue
        text = f"{item.get('target', '?')}: {item.get('state', '?')}"
        attempts = item.get("attempts")
        if attempts:
            text += f" ({attempts} attempt{'s' if attempts != 1 else ''})"
        parts.append(text)
    return "; ".join(parts)


def _occurrences(record: dict[str, Any]) -> str:
    """A record's occurrence, or its range (one record sums up a long outage: ``until``, ``count``)."""
    first = record.get("occurrence") or ""
    if record.get("until") and record.get("until") != first:
        return f"{first} .. {record['until']} ({record.get('count', '?')})"
    return first


COMMANDS = (schedules,)
