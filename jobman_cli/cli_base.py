"""What every ``jobman`` command shares: the error boundary, the per-invocation state, output helpers.

:class:`JobmanGroup` is the one place where core exceptions become one-line errors with the
contract's exit codes; :class:`State` opens the store (or the remote client) lazily, once per
invocation. Only click is imported at the top: start-up time matters (cron, shell completion).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

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
        if location.startswith("dynamodb://"):  # a bad table name or option is a usage error (exit 2), not 1
            from .errors import InvalidInput, StoreError
            from .stores.dynamodb_api import parse_url

            try:
                parse_url(location)
            except StoreError as err:
                raise InvalidInput("--store", str(err)) from None
        return location

    def service(self, *, create: bool = True) -> "JobService":
        """``create=False`` (every command but ``schedule``): a store file that does not exist is an
        error naming the path, not an empty store, so a typo in --db or JOBMAN_HOME shows at once."""
        if self._service is None and self.server is not None:
            from .remote import RemoteService, read_token

            _refuse_db_with_server()

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


def _refuse_db_with_server() -> None:
    """An explicit ``--db/--store`` on the command line with a server (flag or JOBMAN_SERVER) names two
    stores: refused rather than silently reading or writing the daemon's. Both from the
    environment (JOBMAN_DB and JOBMAN_SERVER) is a profile default, not a choice made now: the server wins."""
    from click.core import ParameterSource

    from .errors import InvalidInput

    context = click.get_current_context(silent=True)
    if context is None:
        return
    given = [ctx.get_parameter_source(name) for ctx in (context, context.find_root())
             for name in ("location", "store_location")]
    if ParameterSource.COMMANDLINE not in given:
        return
    server = context.find_root().get_parameter_source("server")
    where = "JOBMAN_SERVER is set" if server is ParameterSource.ENVIRONMENT else "--server is given"
    raise InvalidInput("--db/--store", f"names a local store but {where}, which sends the command to a daemon; use "
                                       "one (unset JOBMAN_SERVER to use the local store)")


def job_json(job: Any) -> Any:
    """A job's public JSON: a remote job's exactly as the server sent it, a local one rendered."""
    from .model import job_to_api
    from .remote import REMOTE_JSON

    remote = job.extra.get(REMOTE_JSON)
    return remote if remote is not None else job_to_api(job)


def print_json(data: Any) -> None:
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


def complete_from(*values: str) -> Any:
    """A ``shell_complete`` offering ``values`` for an option that stays a plain string: the core
    validates it (one rule, the same words as the API's 400), which ``click.Choice`` would replace
    with click's own multi-line "Invalid value" text."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        return [value for value in values if value.startswith(incomplete)]

    return complete


def job_id_argument(value: str) -> int:
    from .validation import parse_job_id

    return parse_job_id(value, field="ID")
