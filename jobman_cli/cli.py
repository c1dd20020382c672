"""The ``jobman`` command line: parse, call the core, render. No business rules here.

Start-up time matters (cron scripts, shell completion on every TAB), so this module imports only
click at the top; the store, rich and boto3 are imported inside the commands that need them, and
``schedule``/``list``/``status`` never import boto3. Every core exception becomes a one-line
``Error: ...`` with its exit code in :meth:`JobmanGroup.main` — the one place errors are converted.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .clihints import no_daemon_note, refuse_once_beside_a_daemon, refuse_repeated_env, wait_with_progress

if TYPE_CHECKING:
    from .service import JobService

STATUS_CHOICES = ("scheduled", "launching", "running", "finished", "failed", "cancelled")
EXIT_WAIT_TIMEOUT = 124


class JobmanGroup(click.Group):
    """Converts every error to one line on stderr with the contract's exit code (0/1/2).

    Click's own usage errors normally print the usage block too; operators and scripts get one line
    that names the problem and where to look instead.
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from .errors import JobmanError, one_line

        try:
            code = super().main(args, prog_name or "jobman", complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `jobman` / `jobman store`: the help, as gh does
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            code = 0
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {one_line(exc.format_message())}{hint}", err=True)
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except JobmanError as exc:
            click.echo(f"Error: {one_line(str(exc))}", err=True)
            code = exc.exit_code
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C: 130 as shells expect, not 1
                click.echo("Interrupted.", err=True)
                code = 130
            else:
                click.echo("Aborted.", err=True)
                code = 1
        except OSError as exc:
            # A broken pipe (``jobman list | head``) is not an error worth a message.
            if exc.errno == 32:
                code = 0
            else:
                click.echo(f"Error: {one_line(str(exc))}", err=True)
                code = 1
        except Exception as exc:  # the last line of defence: never a traceback for a user
            if os.environ.get("JOBMAN_DEBUG"):
                raise
            click.echo(f"Error: internal error: {type(exc).__name__}: {one_line(str(exc))} "
                       "(set JOBMAN_DEBUG=1 for a traceback)", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


class State:
    """Lazily opened store and service, shared by the commands of one invocation."""

    def __init__(self, location: str | None, server: str | None = None, token_file: str | None = None,
                 cacert: str | None = None) -> None:
        self.location = location
        self.server = server or None
        self.token_file = token_file
        self.cacert = cacert
        self._service: JobService | None = None

    @property
    def remote(self) -> bool:
        """True with --server/JOBMAN_SERVER: the verbs go to a daemon's REST API (jobman_cli.remote)."""
        return self.server is not None

    def resolved(self) -> str:
        """The store location (flag, environment or default), refused if it looks like a mistyped URL."""
        from .config import default_store_location
        from .stores import check_location

        location = self.location or default_store_location()
        check_location(location)
        return location

    def service(self, *, create: bool = True) -> "JobService":
        """``create=False`` (every command but ``schedule``): a store file that does not exist is an
        error naming the path, not an empty store, so a typo in --db or JOBMAN_HOME shows at once."""
        if self._service is None and self.server is not None:
            from .remote import RemoteService, read_token

            self._service = RemoteService(self.server, read_token(self.token_file), cacert=self.cacert)  # type: ignore[assignment]
        if self._service is None:
            from .service import JobService
            from .stores import open_store

            location = self.resolved()
            if not create and not location.startswith("dynamodb://"):
                from pathlib import Path

                from .errors import StoreError

                if not Path(location).expanduser().exists():
                    raise StoreError(f"store file {location} does not exist (schedule a job to create it, or check "
                                     "--db/--store, JOBMAN_STORE/JOBMAN_DB and JOBMAN_HOME)")
            store = open_store(location, create=create)
            context = click.get_current_context(silent=True)
            if context is not None:  # release the store (and its parsed file) before interpreter exit
                context.call_on_close(store.close)
            self._service = JobService(store)
        return self._service


def _job_json(job: Any) -> Any:
    """A job's public JSON: a remote job's exactly as the server sent it, a local one rendered."""
    from .model import job_to_api
    from .remote import REMOTE_JSON

    remote = job.extra.get(REMOTE_JSON)
    return remote if remote is not None else job_to_api(job)


def _print_json(data: Any) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _set_location(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.find_object(State).location = value
    return value


def store_option(command: Any) -> Any:
    """``--db``/``--store`` after the subcommand too (``jobman list --db x.json``), as after ``jobman``."""
    return click.option("--db", "--store", "store_location", metavar="PATH|URL", default=None, expose_value=False,
                        callback=_set_location, is_eager=True,
                        help="Job store (same as the global --db/--store).")(command)


def _job_id(value: str) -> int:
    from .validation import parse_job_id

    return parse_job_id(value, field="ID")


@click.group(cls=JobmanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="jobman", message="%(prog)s %(version)s")
@click.option("--db", "--store", "location", metavar="PATH|URL", envvar=["JOBMAN_STORE", "JOBMAN_DB"],
              help="Job store: a TinyDB file path or dynamodb://TABLE. "
                   "[env: JOBMAN_STORE, JOBMAN_DB; default: $JOBMAN_HOME/jobs.json]")
@click.option("--server", metavar="URL", envvar="JOBMAN_SERVER",
              help="Use the REST API of a daemon at URL instead of a store (schedule, list, status, callback, "
                   "cancel, logs). [env: JOBMAN_SERVER]")
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
@click.option("--at", "when", required=True, metavar="WHEN",
              help="now, +10m, 'in 2 hours', 'YYYY-MM-DD HH:MM:SS' or ISO-8601 (local time unless an offset is given).")
@click.option("--title", default="", help="A human title.")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable).")
@click.option("--env-file", type=click.Path(dir_okay=True), metavar="FILE", help="File of KEY=VALUE lines.")
@click.option("--instance-type", default=None, help="EC2 instance type for this job (default from config).")
@click.option("--timeout", default=None, metavar="DUR", help="Kill the container after DUR (30s, 10m, 2h, 1h30m). [default: 1h]")
@click.option("--start-deadline", default=None, metavar="DUR", help="Fail instead of launching later than DUR after WHEN. [default: 1h]")
@click.option("--idempotency-key", default=None, metavar="K", help="Retrying with the same key returns the same job.")
@click.option("--tz", default=None, help="Time zone for WHEN without offset. [env: JOBMAN_TZ; default: the system's]")
@click.option("--entrypoint", default=None, metavar="EXE",
              help="The container's entrypoint (one executable; '' clears the image's). [default: the image's]")
@click.option("--disk-gb", default=None, metavar="N", help="Root volume size in GiB. [default: the AMI's]")
@click.option("--secret", "secrets", multiple=True, metavar="NAME=REF",
              help="Secret read on the instance into $NAME: ssm:/path or secretsmanager:ID[#json-key] (repeatable). Only the reference is stored.")
@click.option("--container-imds", is_flag=True, help="Let the container reach the instance metadata service (and the instance role's credentials).")
@click.option("--notify", "notify", multiple=True, metavar="TARGET",
              help="Tell TARGET when the job ends: an http(s):// webhook (signed JSON), a Slack webhook URL "
                   "(or slack+https://...) or sns:ARN (repeatable). [default: [notify] targets in config.toml]")
@click.option("--notify-on", default=None, metavar="failure|end",
              help="Notify when the job failed, or at every end (finished, failed, cancelled). [default: failure]")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the job id.")
@click.option("--dry-run", is_flag=True,
              help="Write nothing; print the validated job, the RunInstances request the daemon would send "
                   "and the rendered user-data (with --json: one object).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARG]...]")
@click.pass_obj
def schedule(state: State, image: str, when: str, title: str, env: tuple[str, ...], env_file: str | None,
             instance_type: str | None, timeout: str | None, start_deadline: str | None,
             idempotency_key: str | None, tz: str | None, entrypoint: str | None, disk_gb: str | None,
             secrets: tuple[str, ...], container_imds: bool, notify: tuple[str, ...], notify_on: str | None,
             as_json: bool, quiet: bool, dry_run: bool, command: tuple[str, ...]) -> None:
    """Schedule IMAGE to run at WHEN on a fresh EC2 instance.

    Words after -- are the container's command, each passed to Docker as one argument, exactly
    as given (no shell on the way); without them the image's own CMD runs.
    """
    from .secretrefs import parse_secret_assignments
    from .service import CLI_FIELDS, ScheduleRequest, env_from_cli

    if as_json and quiet:
        raise click.UsageError("--json and -q cannot be used together")
    refuse_repeated_env(env)
    request = ScheduleRequest(
        image=image, when=when, title=title, env=env_from_cli(env, env_file), instance_type=instance_type,
        timeout=timeout, start_deadline=start_deadline, idempotency_key=idempotency_key, tz=tz,
        command=list(command) or None, entrypoint=entrypoint, disk_gb=disk_gb,
        secrets=parse_secret_assignments(secrets), container_imds=container_imds,
        notify=list(notify) if notify else None, notify_on=notify_on,
    )
    if dry_run:
        _dry_run(state, request, as_json, quiet)
        return
    service = state.service()
    if not notify and not state.remote:  # remotely, the daemon's [notify] defaults apply
        from .notify.settings import default_targets

        service.notify_defaults = default_targets()
    job, created = service.schedule(request, CLI_FIELDS)
    if quiet:
        click.echo(job.id)
    elif as_json:
        _print_json(_job_json(job))
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
    plan = build_plan(service, request, CLI_FIELDS, state.resolved())
    if as_json:
        _print_json(plan.to_json())
    else:
        click.echo(render_text(plan), nl=False)


@cli.command(name="list")
@store_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUS_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--limit", default=None, metavar="N", help="Only the N newest jobs (reads only those on a file store).")
@click.option("--since", default=None, metavar="DUR", help="Only jobs created in the last DUR (30m, 2h, 7d).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_jobs(state: State, statuses: tuple[str, ...], limit: str | None, since: str | None, as_json: bool) -> None:
    """All jobs, newest first."""
    from .model import JobStatus
    from .service import parse_list_limit, parse_list_since

    window = {"limit": None if limit is None else parse_list_limit(limit),
              "since": None if since is None else parse_list_since(since)}
    window = {name: value for name, value in window.items() if value is not None}  # remote: only what was given
    service = state.service(create=False)
    wanted = [JobStatus(s) for s in statuses]
    if as_json:
        _print_json(service.list_api(wanted, **window))
    else:
        from .render import print_job_table

        print_job_table(service.list(wanted, **window))


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
    number = _job_id(job_id)
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
        _print_json(_job_json(job))
    else:
        from .render import print_job

        print_job(job)
    if code == EXIT_WAIT_TIMEOUT:
        click.echo(f"Error: job {job.id} is still {job.status.value} after {wait_timeout}", err=True)
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

    number = _job_id(job_id)
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
        _print_json(_job_json(job))
    else:
        click.echo(f"Job {job.id} is {job.status.value}" + (f" (exit code {job.exit_code})" if job.exit_code is not None else ""))


@cli.command()
@store_option
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the updated job as JSON.")
@click.pass_obj
def cancel(state: State, job_id: str, as_json: bool) -> None:
    """Cancel a job; a launched job's instance is terminated."""
    number = _job_id(job_id)
    service = state.service(create=False)

    def terminate(instance_id: str) -> None:
        from .launchers.factory import launcher_from_environment

        launcher_from_environment().terminate([instance_id])

    job = service.cancel(number, terminate=terminate)
    if as_json:
        _print_json(_job_json(job))
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
    number = _job_id(job_id)
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


@cli.command()
@store_option
@click.option("--listen", default=None, metavar="HOST:PORT", help="Address of the REST API. [env: JOBMAN_LISTEN; default: 127.0.0.1:8321]")
@click.option("--public-url", default=None, metavar="URL", help="Base URL instances call back to. [env: JOBMAN_PUBLIC_URL]")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False), help="Private key for --tls-cert (PEM).")
@click.option("--callback-ca", default=None, type=click.Path(exists=True, dir_okay=False), metavar="FILE", help="PEM certificate(s) instances trust for callbacks, e.g. your self-signed --tls-cert. [env: JOBMAN_CALLBACK_CA]")
@click.option("--once", is_flag=True, help="Do one pass (launch due jobs, reconcile) and exit.")
@click.option("--no-api", is_flag=True, help="Do not start the HTTP listener.")
@click.option("--reconcile-interval", default=None, type=float, metavar="SECONDS", help="How often running jobs are checked against EC2. [default: 30]")
@click.option("--launch-workers", default=None, type=int, metavar="N", help="Concurrent RunInstances calls. [default: 8]")
@click.option("--max-attempts", default=None, type=int, metavar="N", help="Launch attempts before a job fails. [default: 5]")
@click.option("--timeout-grace", default=None, type=float, metavar="SECONDS", help="Time beyond a job's timeout before the daemon terminates it. [default: 600]")
@click.option("--backoff-max", default=None, type=float, metavar="SECONDS", help="Longest wait between launch attempts. [default: 600]")
@click.option("--watch-interval", default=None, type=float, metavar="SECONDS", help="How often the store is checked for jobs added by other processes. [default: 0.5]")
@click.option("--launch-lease", default=None, type=float, metavar="SECONDS", help="Shared stores: take over another daemon's unfinished launch after this long. [default: 60]")
@click.option("--launch-burst", default=None, type=int, metavar="N", help="RunInstances calls allowed at once before pacing (EC2's token bucket size). [default: 1000]")
@click.option("--retention", default=None, metavar="DUR", help="Once a day, remove jobs that ended more than DUR ago (90d; 'off'). [env: JOBMAN_RETENTION; default: off]")
@click.option("--launch-rate", default=None, type=float, metavar="PER_SECOND", help="RunInstances calls per second once the burst is spent (EC2's refill rate). [default: 2]")
@click.option("--region", default=None, help="AWS region. [env: AWS_REGION]")
@click.option("--instance-type", default=None, help="Default EC2 instance type. [default: t3.micro]")
@click.option("--ami", default=None, help="AMI id or resolve:ssm:PARAMETER. [default: Amazon Linux 2023]")
@click.option("--subnet-id", default=None, help="Subnet to launch into.")
@click.option("--security-group-id", "security_group_ids", multiple=True, help="Security group (repeatable).")
@click.option("--iam-instance-profile", default=None, help="IAM instance profile name or ARN.")
@click.option("--key-name", default=None, help="EC2 key pair name.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Extra instance tag (repeatable).")
@click.pass_obj
def daemon(state: State, **flags: Any) -> None:
    """Launch due jobs on EC2, follow them to the end, and serve the REST API.

    Every flag can also be set as a JOBMAN_* environment variable or in $JOBMAN_HOME/config.toml
    ([daemon] for these flags with underscores, e.g. reconcile_interval = 30; [ec2] for the EC2
    ones); the start-up lines name the config file read.
    """
    from .daemon import run_daemon
    from .launchers.factory import ec2_settings
    from .settings import daemon_settings

    from .errors import InvalidInput

    settings = daemon_settings(state.resolved(), flags)
    ec2 = ec2_settings(flags)
    if settings.once:
        refuse_once_beside_a_daemon(settings.store_location)
    try:
        code = run_daemon(settings, ec2)
    except InvalidInput as exc:
        if exc.field != "--public-url" or settings.public_url or "cannot reach" not in exc.rule:
            raise
        # The default callback address is the --listen address, which only an emulator can reach.
        raise InvalidInput("--public-url", f"{exc.rule.split(';')[0]}; give an address they can reach: no "
                                           "--public-url was given, so callbacks would go to the --listen address "
                                           f"{settings.effective_public_url}; pass e.g. --listen 0.0.0.0:8321 "
                                           "--public-url http://ADDRESS:8321 (ADDRESS: this host as instances "
                                           "see it)") from None
    raise SystemExit(code)


@cli.command()
@store_option
@click.option("--ended-before", "ended_before", required=True, metavar="DUR",
              help="Remove jobs that ended more than DUR ago (12h, 30d, 1d12h).")
@click.option("--dry-run", is_flag=True, help="Only say which jobs would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def prune(state: State, ended_before: str, dry_run: bool, as_json: bool) -> None:
    """Remove finished, failed and cancelled jobs that ended before a cutoff.

    Scheduled and active jobs are never removed, nor a job whose notification is still being
    delivered. Ids are never reused: the next job still gets a new, higher id.
    """
    from .housekeeping import id_ranges
    from .service import MAX_WINDOW
    from .validation import parse_duration

    seconds = parse_duration(ended_before, field="--ended-before", maximum=MAX_WINDOW)
    if state.remote:
        raise click.UsageError("prune works on the store itself: run it where the store is, without --server")
    cutoff, ids = state.service(create=False).prune(seconds, dry_run=dry_run)
    if as_json:
        from .model import format_time

        _print_json({"dry-run": dry_run, "ended-before": format_time(cutoff), "count": len(ids), "ids": ids})
        return
    verb = "Would remove" if dry_run else "Removed"
    what = f"{len(ids)} job{'' if len(ids) == 1 else 's'} that ended before {cutoff:%Y-%m-%d %H:%M:%S} UTC"
    click.echo(f"{verb} {what}" + (f": {id_ranges(ids)}" if ids else "") + (" (nothing written)" if dry_run else ""))


@cli.group()
def store() -> None:
    """Manage the job store (the TinyDB file or a DynamoDB table)."""


@store.command(name="init")
@click.option("--store", "location", default=None, metavar="PATH|URL",
              help="Store to create (overrides the global --store/--db). dynamodb://TABLE creates the table.")
@click.pass_obj
def store_init(state: State, location: str | None) -> None:
    """Create the store if it does not exist; safe to run again.

    For dynamodb://TABLE: the table with its status-due index (on-demand billing) and its meta
    item. An existing table with jobman's design is kept; any other table is an error (exit 1).
    """
    from .config import default_store_location
    from .stores import check_location

    target = location or state.location or default_store_location()
    check_location(target)
    if target.startswith("dynamodb://"):
        from .stores.dynamodb import init_table  # imports boto3

        created, store_id = init_table(target)
        what = f"DynamoDB table {target[len('dynamodb://'):].split('?')[0]}"
    else:
        from pathlib import Path

        from .stores.tinydb import TinyDBStore

        created = not Path(target).exists()
        with TinyDBStore(Path(target), create=True) as opened:
            store_id = opened.store_id
        what = f"store file {target}"
    click.echo(f"Created {what} (store id {store_id})" if created
               else f"{what[0].upper()}{what[1:]} already exists (store id {store_id})")


@cli.group()
def setup() -> None:
    """Create what jobman needs in a cloud account."""


@setup.command(name="aws")
@click.option("--dry-run", is_flag=True, help="Print the calls that would change something; change nothing.")
@click.option("--save", is_flag=True, help="Write the daemon settings into $JOBMAN_HOME/config.toml.")
@click.option("--region", default=None, help="AWS region. [env: AWS_REGION]")
@click.option("--vpc-id", default=None, metavar="VPC", help="VPC of the security group. [default: the default VPC]")
@click.option("--name", default=None, metavar="NAME", help="Name of the IAM role, instance profile and security group. [default: jobman-instance]")
@click.option("--log-group", default=None, metavar="GROUP", help="Job-log group. [env: JOBMAN_LOG_GROUP; default: jobman]")
@click.option("--retention-days", default=None, metavar="DAYS", help="Job-log retention. [env: JOBMAN_LOG_RETENTION_DAYS; default: 30]")
@click.option("--allow-secret", "allow_secrets", multiple=True, metavar="REF",
              help="Let the instances read this secret: ssm:/path, secretsmanager:ID, or a prefix ending in * "
                   "(repeatable; the complete list: the role's secrets policy grants exactly these).")
def setup_aws_command(dry_run: bool, save: bool, region: str | None, vpc_id: str | None, name: str | None,
                      log_group: str | None, retention_days: str | None, allow_secrets: tuple[str, ...]) -> None:
    """Create, idempotently, what a first real run needs: the job-log group with its retention, the
    instances' IAM role and instance profile (write their own log stream, nothing else), and a
    security group without ingress; with --allow-secret, read access to those secrets only. Then
    print the `jobman daemon` flags that use them."""
    from .config import log_settings, save_config_values
    from .launchers.factory import ec2_settings
    from .setup_aws import DEFAULT_NAME, SetupOptions, allowed_secret, setup_aws
    from .joblogs import make_session

    if dry_run and save:
        raise click.UsageError("--dry-run and --save cannot be used together")
    for ref in allow_secrets:  # a bad reference is a usage error before any AWS call
        allowed_secret(ref)
    logs = log_settings(log_group, retention_days)
    ec2 = ec2_settings({"region": region})
    options = SetupOptions(log_group=logs.group, retention_days=logs.retention_days, name=name or DEFAULT_NAME,
                           vpc_id=vpc_id, dry_run=dry_run, allow_secrets=tuple(allow_secrets))
    result = setup_aws(make_session(ec2.region, ec2.profile), options, click.echo)
    if dry_run:
        click.echo(f"Dry run: {len(result.changed)} change(s) would be made; nothing was changed.")
        click.echo(f"Then: jobman daemon {result.daemon_flags()}")
        return
    click.echo("Done: " + (f"{len(result.changed)} change(s) made." if result.changed else "nothing to change."))
    if save:
        saved = {"iam_instance_profile": result.instance_profile, "security_group_ids": [result.security_group_id]}
        if region:
            saved["region"] = region
        path = save_config_values({"ec2": saved, "logs": {"group": logs.group, "retention_days": logs.retention_days}})
        click.echo(f"Saved to {path}: [ec2] iam_instance_profile, security_group_ids; [logs] group, retention_days. "
                   "`jobman daemon` uses them from now on.")
    else:
        click.echo(f"Use them: jobman daemon {result.daemon_flags()}  (or run again with --save)")


from .helptext import add_examples  # noqa: E402  (the commands must exist first)

add_examples(cli)


def main(prog_name: str = "jobman") -> None:
    cli.main(prog_name=prog_name)


if __name__ == "__main__":  # pragma: no cover
    main()
