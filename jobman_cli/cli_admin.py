"""The commands that act on this machine rather than on one job: ``daemon``, ``prune``, ``store
init`` and ``setup aws``. :mod:`cli` registers them on the ``jobman`` group; like every command,
they parse, call the core and render, and leave error conversion to :class:`~cli_base.JobmanGroup`.
"""

from __future__ import annotations

from typing import Any

import click

from .cli_base import State, print_json, store_option
from .clihints import refuse_once_beside_a_daemon

@click.command()
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


@click.command()
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

        print_json({"dry-run": dry_run, "ended-before": format_time(cutoff), "count": len(ids), "ids": ids})
        return
    verb = "Would remove" if dry_run else "Removed"
    what = f"{len(ids)} job{'' if len(ids) == 1 else 's'} that ended before {cutoff:%Y-%m-%d %H:%M:%S} UTC"
    click.echo(f"{verb} {what}" + (f": {id_ranges(ids)}" if ids else "") + (" (nothing written)" if dry_run else ""))


@click.group()
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


@click.group()
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


ADMIN_COMMANDS = (daemon, prune, store, setup)
