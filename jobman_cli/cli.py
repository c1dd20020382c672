"""The ``jobman`` command line: parse, call the core, render. No business rules here.

Start-up time matters (cron scripts, shell completion on every TAB), so this module imports only
click at the top; the store, rich and boto3 are imported inside the commands that need them, and
``schedule``/``list``/``status`` never import boto3. Every core exception becomes a one-line
``Error: ...`` with its exit code in :meth:`cli_base.JobmanGroup.main` — the one place errors are converted.
The job verbs live here; the machine-level commands (daemon, prune, store, setup) in :mod:`cli_admin`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .cli_base import (EXIT_WAIT_TIMEOUT, STATUS_CHOICES, JobmanGroup, State, complete_from, job_id_argument,
                       job_json, print_json, store_option)
from .clihints import no_daemon_note, notify_targets, refuse_repeated_env, wait_with_progress

@click.group(cls=JobmanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="jobman", message="%(prog)s %(version)s")
@click.option("--db", "--store", "location", metavar="PATH|URL", envvar=["JOBMAN_STORE", "JOBMAN_DB"],
              help="Job store: a TinyDB file path or dynamodb://TABLE. "
                   "[env: JOBMAN_STORE, JOBMAN_DB; default: $JOBMAN_HOME/jobs.json]")
@click.option("--server", metavar="URL", envvar="JOBMAN_SERVER",
              help="Use the REST API of a daemon at URL instead of a store (schedule, schedules, list, status, "
                   "callback, cancel, logs, cost). [env: JOBMAN_SERVER]")
@click.option("--token-file", metavar="FILE", default=None,
              help="With --server: file holding the daemon's API token (mode 0600). [default: $JOBMAN_API_TOKEN]")
@click.option("--cacert", metavar="FILE", envvar="JOBMAN_CACERT", default=None,
              help="With --server: PEM certificate(s) to trust, e.g. the daemon's self-signed --tls-cert. [env: JOBMAN_CACERT]")
@click.pass_context
def cli(ctx: click.Context, location: str | None, server: str | None, token_file: str | None,
        cacert: str | None) -> None:
    """Run a Docker image at a given time on a fresh EC2 instance, and know what happened.

    \b
    Quick start:
      jobman setup aws --save  # once: log group, instance role, security group
      jobman schedule --image alpine:3.20 --at "+10m" -e GREETING=hello
      jobman daemon --listen 0.0.0.0:8321 --public-url http://ADDRESS:8321
      jobman list
      jobman status 1 --wait

    \b
    Settings: flags, then JOBMAN_* environment variables, then
    $JOBMAN_HOME/config.toml (tables [daemon], [ec2], [logs], [notify]);
    JOBMAN_HOME defaults to ~/.local/share/jobman on Linux.
    """
    ctx.obj = State(location, server, token_file, cacert)


@cli.command(context_settings={"allow_interspersed_args": False})
@store_option
@click.option("--image", required=True, help="Docker image reference, e.g. alpine:3.20.")
@click.option("--cron", default=None, metavar="EXPR",
              help="Instead of --at: a recurring schedule, five-field cron or @hourly/@daily/@weekly/@monthly, "
                   "in --tz (one job per occurrence; see 'jobman schedules').")
@click.option("--every", default=None, metavar="DUR", help="Instead of --at: a recurring schedule every DUR (at least 1m).")
@click.option("--overlap", default=None, metavar="MODE", shell_complete=complete_from("allow", "forbid", "replace"),
              help="With --cron/--every, when the previous run is still active: allow (run anyway), forbid (skip "
                   "this one) or replace (cancel it). [default: forbid]")
@click.option("--at", "when", required=False, metavar="WHEN",
              help="now, +10m, 'in 2 hours', 'YYYY-MM-DD HH:MM:SS' or ISO-8601 (local time unless an offset is given).")
@click.option("--title", default="", help="A human title.")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable).")
@click.option("--env-file", type=click.Path(dir_okay=True), metavar="FILE", help="File of KEY=VALUE lines.")
@click.option("--instance-type", default=None, metavar="TYPES",
              help="EC2 instance type, or a preference list tried in order (m7i.large,m6i.large). [default: from config]")
@click.option("--subnet-id", "subnet_ids", multiple=True, metavar="SUBNET",
              help="Subnet to launch in, one per availability zone, tried in order (repeatable). [default: from config]")
@click.option("--capacity", default=None, metavar="MARKET",
              shell_complete=complete_from("on-demand", "spot", "spot-then-on-demand"),
              help="on-demand, spot, or spot-then-on-demand (spot on every type and subnet first). [default: on-demand]")
@click.option("--max-interruptions", default=None, metavar="N",
              help="Relaunch a spot job after up to N interruptions, then fail it as interrupted. [default: 3]")
@click.option("--max-cost", default=None, metavar="USD", help="Refuse a launch whose worst-case cost exceeds USD.")
@click.option("--timeout", default=None, metavar="DUR", help="Kill the container after DUR (30s, 10m, 2h, 1h30m). [default: 1h]")
@click.option("--start-deadline", default=None, metavar="DUR", help="Fail instead of launching later than DUR after WHEN. [default: 1h]")
@click.option("--idempotency-key", default=None, metavar="K", help="Retrying with the same key returns the same job.")
@click.option("--tz", default=None, help="Time zone for WHEN without offset, and of --cron. [env: JOBMAN_TZ; default: the system's]")
@click.option("--entrypoint", default=None, metavar="EXE",
              help="The container's entrypoint (one executable; '' clears the image's). [default: the image's]")
@click.option("--disk-gb", default=None, metavar="N", help="Root volume size in GiB. [default: the AMI's]")
@click.option("--secret", "secrets", multiple=True, metavar="NAME=REF",
              help="Secret read on the instance into $NAME: ssm:/path or secretsmanager:ID[#json-key] (repeatable). Only the reference is stored.")
@click.option("--container-imds", is_flag=True, help="Let the container reach the instance metadata service (and the instance role's credentials).")
@click.option("--notify", "notify", multiple=True, metavar="TARGET",
              help="Tell TARGET when the job ends: an http(s):// webhook (signed JSON), a Slack webhook URL "
                   "(or slack+https://...) or sns:ARN (repeatable). [default: [notify] targets in config.toml]")
@click.option("--no-notify", is_flag=True,
              help="Notify nobody, not even the [notify] targets of config.toml (as the API's \"notify\": []).")
@click.option("--notify-on", default=None, metavar="failure|end", shell_complete=complete_from("failure", "end"),
              help="Notify when the job failed, or at every end (finished, failed, cancelled). [default: failure]")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the job id.")
@click.option("--dry-run", is_flag=True,
              help="Write nothing; print the validated job, the RunInstances request the daemon would send "
                   "and the rendered user-data (with --json: one object).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARG]...]")
@click.pass_obj
def schedule(state: State, image: str, when: str | None, cron: str | None, every: str | None, overlap: str | None,
             title: str, env: tuple[str, ...], env_file: str | None,
             instance_type: str | None, subnet_ids: tuple[str, ...], capacity: str | None,
             max_interruptions: str | None, max_cost: str | None, timeout: str | None, start_deadline: str | None,
             idempotency_key: str | None, tz: str | None, entrypoint: str | None, disk_gb: str | None,
             secrets: tuple[str, ...], container_imds: bool, notify: tuple[str, ...], no_notify: bool,
             notify_on: str | None, as_json: bool, quiet: bool, dry_run: bool, command: tuple[str, ...]) -> None:
    """Schedule IMAGE to run at WHEN on a fresh EC2 instance (or, with --cron/--every instead of
    --at, on a recurring schedule: one job per occurrence; see 'jobman schedules').

    Words after -- are the container's command, each passed to Docker as one argument, exactly
    as given (no shell on the way); without them the image's own CMD runs.
    """
    from .secretrefs import parse_secret_assignments
    from .service import CLI_FIELDS, ScheduleRequest, env_from_cli

    if as_json and quiet:
        raise click.UsageError("--json and -q cannot be used together")
    refuse_repeated_env(env)
    from .cli_schedules import check_schedule_flags

    targets = notify_targets(notify, no_notify, notify_on)

    recurring = check_schedule_flags(when, idempotency_key, dry_run, cron, every, overlap)
    request = ScheduleRequest(
        image=image, when=when, title=title, env=env_from_cli(env, env_file), instance_type=instance_type,
        timeout=timeout, start_deadline=start_deadline, idempotency_key=idempotency_key, tz=tz,
        command=list(command) or None, entrypoint=entrypoint, disk_gb=disk_gb,
        secrets=parse_secret_assignments(secrets), container_imds=container_imds,
        notify=targets, notify_on=notify_on,
        subnet_ids=list(subnet_ids) or None, capacity=capacity, max_interruptions=max_interruptions,
        max_cost=max_cost,
    )
    if recurring:
        from .cli_schedules import create_schedule

        create_schedule(state, request, cron, every, tz, overlap, as_json, quiet)
        return
    if dry_run:
        _dry_run(state, request, as_json, quiet)
        return
    service = state.service()
    if targets is None and not state.remote:  # remotely, the daemon's [notify] defaults apply
        from .notify.settings import default_targets

        service.notify_defaults = default_targets()
    if not state.remote:  # remotely, the daemon's [ec2] capacity defaults apply
        from .capacity import config_defaults

        service.capacity_defaults = config_defaults()
    job, created = service.schedule(request, CLI_FIELDS)
    if quiet:
        click.echo(job.id)
    elif as_json:
        print_json(job_json(job))
    else:
        from .render import describe_scheduled

        click.echo(describe_scheduled(job, created))
    if not job.terminal:
        note = None if state.remote else no_daemon_note(state.resolved())  # remotely: the daemon answered
        if note:
            click.echo(note, err=True)


def _dry_run(state: State, request: Any, as_json: bool, quiet: bool) -> None:
    """``schedule --dry-run``: no store opened for writing, no AWS call (jobman_cli.dryrun)."""
    from .dryrun import build_plan, render_text
    from .notify.settings import default_targets
    from .service import CLI_FIELDS, JobService

    if state.remote or quiet:
        raise click.UsageError(f"--dry-run cannot be used with {'--server' if state.remote else '-q'}")
    service = JobService(None)  # type: ignore[arg-type]  # validation only: nothing is stored
    if request.notify is None:
        service.notify_defaults = default_targets()
    from .capacity import config_defaults

    service.capacity_defaults = config_defaults()
    plan = build_plan(service, request, CLI_FIELDS, state.resolved())
    if as_json:
        print_json(plan.to_json())
    else:
        click.echo(render_text(plan), nl=False)


@cli.command(name="list")
@store_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUS_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--limit", default=None, metavar="N", help="Only the N newest jobs (reads only those on a file store).")
@click.option("--since", default=None, metavar="DUR", help="Only jobs created in the last DUR (30m, 2h, 7d).")
@click.option("--schedule", "schedule_id", default=None, metavar="ID", help="Only the runs of schedule ID.")
@click.option("--cost", "with_cost", is_flag=True,
              help="Add a COST column: each ended job's cost receipt ('jobman status ID' shows its basis). "
                   "--json always has cost and cost-basis.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_jobs(state: State, statuses: tuple[str, ...], limit: str | None, since: str | None, as_json: bool,
              schedule_id: str | None, with_cost: bool) -> None:
    """All jobs, newest first."""
    from .model import JobStatus
    from .service import parse_list_limit, parse_list_since
    from .validation import parse_job_id

    window = {"limit": None if limit is None else parse_list_limit(limit),
              "since": None if since is None else parse_list_since(since)}
    window = {name: value for name, value in window.items() if value is not None}  # remote: only what was given
    if schedule_id is not None:  # the store (or the server) answers it: the limit counts the schedule's runs
        window["schedule"] = parse_job_id(schedule_id, field="--schedule")
    service = state.service(create=False)
    wanted = [JobStatus(s) for s in statuses]
    if as_json:
        print_json(service.list_api(wanted, **window))
    else:
        from .render import print_job_table

        print_job_table(service.list(wanted, **window), cost=with_cost)


@cli.command()
@store_option
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("--wait", is_flag=True, help="Block until the job has ended; exit 0 only if it finished.")
@click.option("--wait-timeout", default=None, metavar="DUR",
              help="With --wait: give up after DUR (exit 124). [default: no limit]")
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool, wait: bool, wait_timeout: str | None) -> None:
    """Show one job. With --wait: exit 0 finished, 1 failed or cancelled, 124 timed out."""
    from .model import JobStatus

    state: State = ctx.obj
    number = job_id_argument(job_id)
    if wait_timeout is not None and not wait:
        raise click.UsageError("--wait-timeout needs --wait")
    limit = None
    if wait_timeout is not None:
        from .validation import parse_duration

        limit = parse_duration(wait_timeout, field="--wait-timeout")
    service = state.service(create=False)
    job = service.get(number)
    code = 0
    if wait:
        try:
            ended = service.wait(number, limit) if state.remote else wait_with_progress(
                service, job, limit, state.resolved())
        except KeyboardInterrupt:  # Ctrl-C: 130 as shells expect, never 1 (which means "the job failed")
            job = service.get(number)
            click.echo(f"Interrupted: stopped waiting; job {number} is still {job.status.value} "
                       "(waiting does not affect the job)", err=True)
            ctx.exit(130)
        if ended is None:
            job, code = service.get(number), EXIT_WAIT_TIMEOUT
        else:
            job, code = ended, (0 if ended.status is JobStatus.FINISHED else 1)
    if as_json:
        print_json(job_json(job))
    else:
        from .render import print_job

        print_job(job)
    if code == EXIT_WAIT_TIMEOUT:
        given = str(wait_timeout).strip()  # a bare number is seconds: say so ("after 1s", not "after 1")
        click.echo(f"Error: job {job.id} is still {job.status.value} after {given + 's' if given.isdigit() else given}",
                   err=True)
    ctx.exit(code)


@cli.command()
@store_option
@click.argument("job_id", metavar="ID")
@click.option("--status", "new_status", required=True, type=click.Choice(["running", "finished", "failed"]),
              help="The job's new state: running (the container started), finished (exit code 0) or failed.")
@click.option("--exit-code", default=None, metavar="N", help="The container's exit code (0-255).")
@click.option("--reason-code", default=None, metavar="CODE",
              type=click.Choice(["exited", "timed-out", "image-pull-failed", "docker-unavailable",
                                 "secret-unavailable", "interrupted"]),
              help="With --status failed: why it failed (default: exited).")
@click.option("--reason", default=None, metavar="TEXT", help="With --status failed: a short explanation.")
@click.option("--json", "as_json", is_flag=True, help="Print the updated job as JSON.")
@click.pass_obj
def callback(state: State, job_id: str, new_status: str, exit_code: str | None, reason_code: str | None,
             reason: str | None, as_json: bool) -> None:
    """Report a job's progress, as its instance does over HTTP."""
    from .validation import parse_exit_code

    number = job_id_argument(job_id)
    code = None if exit_code is None else parse_exit_code(exit_code, field="--exit-code")
    from .errors import InvalidInput

    try:
        job = state.service(create=False).report(number, new_status, code, reason_code, reason)
    except InvalidInput as exc:  # the core names the API's fields; a CLI user typed flags
        flag = {"exit-code": "--exit-code", "reason-code": "--reason-code", "reason": "--reason",
                "status": "--status"}.get(exc.field)
        if flag is None:
            raise
        raise InvalidInput(flag, exc.rule.replace("exit-code", "--exit-code").replace("report failed",
                                                                                      "use --status failed")) from None
    if as_json:
        print_json(job_json(job))
    else:
        click.echo(f"Job {job.id} is {job.status.value}" + (f" (exit code {job.exit_code})" if job.exit_code is not None else ""))


@cli.command()
@store_option
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the updated job as JSON.")
@click.pass_obj
def cancel(state: State, job_id: str, as_json: bool) -> None:
    """Cancel a job; a launched job's instance is terminated."""
    number = job_id_argument(job_id)
    service = state.service(create=False)

    def terminate(instance_id: str) -> None:
        from .launchers.factory import launcher_from_environment

        launcher_from_environment().terminate([instance_id])

    job = service.cancel(number, terminate=terminate)
    if as_json:
        print_json(job_json(job))
    else:
        suffix = f"; instance {job.instance_id} terminated" if job.instance_id else ""
        click.echo(f"Job {job.id} is cancelled{suffix}")


@cli.command()
@store_option
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing new lines until the job ends; then exit as status --wait does (0 finished, 1 not).")
@click.option("--attempt", type=click.IntRange(min=1), default=None, metavar="N",
              help="Which launch attempt's log. [default: the job's current attempt]")
@click.option("--since", default=None, metavar="DUR", help="Only lines of the last DUR (10m, 2h, 1d).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: timestamp, message, stream.")
@click.pass_context
def logs(ctx: click.Context, job_id: str, follow: bool, attempt: int | None, since: str | None, as_json: bool) -> None:
    """The job's log from CloudWatch Logs: bootstrap lines and container output, also after the
    instance is gone. EC2 console output only for an instance that never reached its log."""
    from .config import log_settings
    from .joblogs import LogRequest, logs_client, show_job_log
    from .validation import parse_duration

    state: State = ctx.obj
    number = job_id_argument(job_id)
    since_seconds = None if since is None else parse_duration(since, field="--since", maximum=3653 * 86400)
    service = state.service(create=False)
    settings = log_settings() if not state.remote else None

    def client() -> Any:
        from .launchers.factory import ec2_settings

        ec2 = ec2_settings({})
        return logs_client(region=ec2.region, profile=ec2.profile, endpoint_url=settings.endpoint_url)  # type: ignore[union-attr]

    def launcher() -> Any:
        from .launchers.factory import launcher_from_environment

        return launcher_from_environment()

    out = sys.stdout.buffer
    if as_json:
        import orjson

        def write(events) -> None:
            out.write(b"".join(orjson.dumps(e.to_json()) + b"\n" for e in events))
            out.flush()
    else:
        def write(events) -> None:
            out.write("".join(e.message + "\n" for e in events).encode("utf-8", "replace"))
            out.flush()

    note = lambda text: click.echo(f"Note: {text}", err=True)  # noqa: E731
    request = LogRequest(number, attempt, since_seconds, follow)
    if state.remote:  # the daemon reads CloudWatch with its credentials
        ctx.exit(service.show_log(request, write=write, note=note))  # type: ignore[attr-defined]
    code = show_job_log(service, request, client=client, group=settings.group,  # type: ignore[union-attr]
                        write=write, note=note, launcher=launcher)
    ctx.exit(code)


from .cli_admin import ADMIN_COMMANDS  # noqa: E402  (registered after the job verbs, in help order)
from .cli_schedules import COMMANDS as SCHEDULE_COMMANDS  # noqa: E402
from .cli_cost import cost as _cost_command  # noqa: E402  (jobman cost: totals of the cost receipts)
from .helptext import add_examples  # noqa: E402  (the commands must exist first)

for _command in (*SCHEDULE_COMMANDS, *ADMIN_COMMANDS):
    cli.add_command(_command)
cli.add_command(_cost_command)
add_examples(cli)


def main(prog_name: str = "jobman") -> None:
    cli.main(prog_name=prog_name)


if __name__ == "__main__":  # pragma: no cover
    main()
