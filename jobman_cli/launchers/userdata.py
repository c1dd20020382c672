"""The instance side of a job: the bash script EC2 runs as user-data (DESIGN.md section 6).

:func:`render_user_data` turns a job into that script. The script is plain bash with the job's
fields substituted into one "job parameters" block at its top, each value single-quoted with
:func:`shlex.quote` (byte-exact in bash for any string without NUL), so no field can inject shell
code. Everything else in the script is fixed text, reviewed once, in :data:`USER_DATA_TEMPLATE`.

This module is the entry point and the list of guarantees below; the parts, one concern each:

* :mod:`.userdata_template` the fixed bash text with its ``@@NAME@@`` holes (read it beside this list);
* :mod:`.userdata_fields`   each job field checked and quoted for the parameters block;
* :mod:`.userdata_logs`     the ``log``/``flush_log`` functions and the ``awslogs`` options;
* :mod:`.userdata_ca`       the ``--callback-ca`` PEM, validated, and the block that trusts it;
* :mod:`.userdata_secrets`, :mod:`.userdata_spot`: secrets by reference, the spot watcher.

Guarantees, and why:

* **Power-off whatever happens.** ``trap power_off EXIT`` (and HUP/INT/TERM turned into an exit)
  runs ``shutdown -P now``, falling back to ``poweroff``. The launcher starts the instance with
  ``InstanceInitiatedShutdownBehavior=terminate``, so powering off terminates it: no cost leaks,
  even when Docker cannot be installed or the callback is unreachable.
* **Every tool through PATH** (docker, dnf, systemctl, curl, timeout, sleep, shutdown, poweroff,
  aws, and python3 for a job with secrets; never an absolute path; nothing else, not even ``cat`` or ``tr``). A sane system PATH is
  *appended*, so stub tools placed first on PATH by a test win. ``JOBMAN_SYSTEM_PATH`` replaces
  that appended part (tests set it to a directory of chosen tools, so a real ``docker`` on the
  test machine cannot leak in); cloud-init never sets it.
* **Docker.** If ``docker`` is absent it is installed (``dnf install -y docker``); if the daemon
  does not answer ``docker info`` it is started (``systemctl enable --now docker``, falling back to
  ``systemctl start docker``) and waited for. If that fails the job is reported ``failed`` with
  ``reason-code`` ``docker-unavailable`` and what went wrong as ``reason``, and the instance
  powers off.
* **Callbacks.** ``PUT <callback_url>`` with ``Content-Type: application/json`` and
  ``Authorization: Bearer <the attempt's callback token>``: ``{"status":"running"}`` once Docker
  answers, then ``{"status":"finished","exit-code":0}`` (the original body), or ``{"status":
  "failed","exit-code":N,"reason-code":"exited"}``, or ``{"status":"failed","reason-code":C,
  "reason":"..."}`` for ``timed-out``, ``image-pull-failed`` and ``docker-unavailable`` (DESIGN.md
  section 9; no exit code: the container did not end by itself). A reason is made safe for JSON
  inside bash (``json_text``: bytes outside printable ASCII become ``?``, ``\\`` and ``"`` are
  escaped, 400 bytes at most), so docker's words can neither break the body nor inject. curl runs
  with ``-fsS``, ``--globoff`` (``{}``/``[]`` in a URL are not curl globs), ``--max-time`` and
  ``--retry``; the final report also runs inside a loop of attempts with doubling back-off (the
  ``running`` report gets one loop attempt, so an unreachable daemon delays the job only briefly).
  A callback that ultimately fails is logged and the script goes on (to power-off). The response
  body is discarded (it echoes the environment) and the token is never printed.
* **Private CAs.** With ``callback_ca`` (PEM text: the daemon's self-signed ``--tls-cert`` or its
  private CA), the script writes that PEM to ``/run/jobman-callback-ca.pem`` before any callback
  and every curl gets ``--cacert`` with it, so TLS verification succeeds without trusting anything
  else. The PEM is validated strictly (:func:`normalize_callback_ca`: only ``BEGIN/END
  CERTIFICATE`` lines around base64 lines) and embedded in a quoted heredoc read by bash's own
  ``read`` (no ``cat`` needed), so nothing in it is expanded and no line can end the heredoc.
* **Pull first.** ``docker pull`` runs before the container, so a registry problem is reported as
  ``image-pull-failed`` with docker's last line (e.g. ``Error response from daemon: ... connection
  refused``) and the attempt count, never as a container exit code. A failed pull is retried (5
  attempts, back-off 2, 4, 8, 16 s) unless docker says retrying cannot help (``manifest
  unknown``, ``not found``, ``pull access denied``, ``invalid reference format``). The job's
  timeout covers pull and run (counted from the pull), so the instance ends within the daemon's
  own deadline (launch + timeout + grace); no retry starts whose back-off would pass it.
* **The container** runs as ``docker run --name jobman-<job id>-<attempt> --pull=never
  [-e 'K=V'...] [--entrypoint=EXE] '<image>' [CMD ARG...]`` under ``timeout --foreground -s
  KILL <time left>s``, waited for in the background so that a signal to the script is handled at
  once (no ``--rm``: the script removes it with ``docker rm -f`` on every path, a signal
  included). At the deadline ``timeout`` kills the *CLI* (SIGKILL: Docker 28's CLI outlives
  SIGTERM), which does not stop the container (its PID 1 may ignore SIGTERM, as a process without
  a handler does in a PID namespace). So the script asks the engine (``docker inspect``): a
  container that ended by itself keeps its own exit code (a container that exits 124 or 137 is
  ``exited``, not a timeout); one still running is stopped with ``docker stop -t GRACE`` (SIGTERM,
  then the engine's SIGKILL after 30 s), removed, and reported ``timed-out``. The image is quoted
  and refused if it starts with ``-``, so it can never be taken as a flag.
* **Command and entrypoint byte-exact.** The command is one quoted word per element after the
  image, where the Docker CLI stops parsing flags, so leading dashes, spaces, quotes, ``$``,
  backticks, newlines and unicode reach the container's argv as they were; no shell is involved
  unless the command itself names one. The entrypoint is the single argument
  ``--entrypoint=EXE`` (a value even when it starts with ``-``; ``--entrypoint=`` clears the
  image's entrypoint, as Docker defines).
* **Environment values byte-exact.** Each variable is one quoted ``KEY=VALUE`` argument of
  ``docker run -e``; the Docker CLI splits it at the first ``=`` and passes the rest untouched
  (``opts.ValidateEnv``), so spaces, quotes, ``$``, backticks, ``;``, newlines (a trailing one
  too), ``\\``, ``%``, ``*`` and unicode arrive as they were. Passing ``KEY=VALUE`` rather than
  exporting the value and passing ``-e KEY`` keeps the job's variables out of the environment of
  bash and of the Docker CLI itself, where names such as ``PATH``, ``IFS``, ``UID`` (read-only in
  bash), ``LD_PRELOAD``, ``DOCKER_HOST`` or ``GODEBUG`` would change how the script or the CLI
  behaves instead of only reaching the container. Env-file parsing is never involved.
* **Spot interruptions** (a job whose capacity includes spot): a background watcher polls IMDSv2
  ``spot/instance-action``; on EC2's notice the container is stopped cleanly and the job reported
  ``interrupted`` (:mod:`.userdata_spot`; the ``@@SPOT_*@@`` hooks are empty for on-demand jobs).
* **The job's log** (with ``logs``, a :class:`~jobman_cli.joblogs.LogTarget`; DESIGN.md section
  10). The container's stdout/stderr go to the attempt's stream
  (:func:`~jobman_cli.joblogs.stream_name`) through Docker's ``awslogs`` driver: ``awslogs-group``,
  ``-stream``, ``-region``, ``-endpoint`` when one is configured, ``mode=non-blocking`` (a log
  that cannot be written never stops or fails the container) and a 1 s flush interval. The
  script's own lines (start, pull, run, report, power-off) go to the console *and*, prefixed
  ``jobman:``, to the same stream: ``log`` batches them as JSON events (timestamps from
  ``EPOCHREALTIME``, text through ``json_text``) and ``flush_log`` sends them with ``aws logs
  create-log-stream``/``put-log-events`` (the AWS CLI Amazon Linux 2023 ships; credentials from the
  instance role) after ``pulling``, before ``docker run``, before the final report and at
  power-off. Best effort and bounded: each call has ``timeout 30s``, 5 s connect/10 s read
  timeouts and 2 attempts; after a failure only the final flushes try again. Any failure (no AWS
  CLI, no permission, endpoint down) sets ``log_problem``, and the final report carries
  ``log incomplete (<why>)`` as its ``reason`` — on a ``finished`` report too — so the job's
  outcome never depends on its log. Without ``logs`` the script logs to the console only.
* **Secrets by reference** (``job.secrets``; DESIGN.md section 12): read after the pull with the
  instance's role by the AWS CLI and handed to ``docker run`` through its environment only (``-e
  NAME``); a failed read is ``secret-unavailable`` naming the reference. The block, and why it is
  safe, is in :mod:`.userdata_secrets`; without secrets nothing of it is rendered.
* **Deterministic.** The same job and URL always render the same bytes (variables sorted by name,
  no timestamps or randomness), because a retried ``RunInstances`` of the same attempt must send
  the same parameters as the first, or EC2 answers ``IdempotentParameterMismatch``.
* **Small.** About 6.5 KiB (8.5 KiB with ``logs``, 3.4 KiB more with secrets) plus the quoted
  environment, command and secret references; EC2's limit is 16 KiB of raw user-data, and a job
  over it is refused with :class:`~jobman_cli.errors.InvalidInput` naming ``env-variables`` (or
  ``command`` or ``secrets``, whichever takes the most room).

Test-only knobs (absent on EC2, where cloud-init runs the script with a clean environment):
``JOBMAN_SYSTEM_PATH`` (above), and, read as small non-negative integers and otherwise ignored,
``JOBMAN_CALLBACK_ATTEMPTS`` (default 5),
``JOBMAN_CALLBACK_BACKOFF`` (first delay in seconds, default 5), ``JOBMAN_CURL_RETRIES``
(default 3), ``JOBMAN_DOCKER_WAIT`` (seconds to wait for the Docker daemon, default 120),
``JOBMAN_PULL_ATTEMPTS`` (default 5), ``JOBMAN_PULL_BACKOFF`` (first delay, default 2) and
``JOBMAN_STOP_GRACE`` (``docker stop -t``, default 30); ``JOBMAN_CALLBACK_CA_FILE`` replaces the
path the callback CA is written to.
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone

from ..errors import ConfigError, InvalidInput
from ..joblogs import LogTarget, size_probe_target
from ..model import Job, JobStatus
from .userdata_ca import normalize_callback_ca, render_callback_ca
from .userdata_fields import UNPRINTABLE, check_fields, command_args, entrypoint_arg, env_args, loggable_title
from .userdata_logs import render_logs
from .userdata_secrets import render_secrets
from .userdata_spot import render_spot
from .userdata_template import INSTALL_DOCKER, NO_INSTALL_DOCKER, USER_DATA_TEMPLATE

__all__ = ["CALLBACK_PATH", "USER_DATA_LIMIT", "USER_DATA_TEMPLATE", "WORST_CASE_TOKEN", "callback_url_for",
           "load_callback_ca", "normalize_callback_ca", "render_user_data"]

#: EC2's limit on raw (not base64-encoded) user-data, in bytes.
USER_DATA_LIMIT = 16384

#: The path of the callback endpoint under the daemon's public URL (DESIGN.md section 4).
CALLBACK_PATH = "/jobMan/v1.1/jobs/{job_id}/callback"

#: As long as any callback token jobman makes (``secrets.token_urlsafe(32)``), for size checks.
WORST_CASE_TOKEN = "x" * 43


def callback_url_for(public_url: str, job_id: int) -> str:
    """The full callback URL of a job under the daemon's public URL (trailing slashes ignored)."""
    base = public_url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")) or UNPRINTABLE.search(base) or " " in base:
        raise InvalidInput("public-url", f"must be an http:// or https:// URL without spaces (got {base!r})")
    return base + CALLBACK_PATH.format(job_id=int(job_id))


def load_callback_ca(path: str, public_url: str = "https://127.0.0.1:8321") -> str:
    """Read and validate the ``--callback-ca`` file at daemon start; the canonical PEM text.

    Also renders an empty probe job with it, because service-side size checks do not know the CA:
    a CA so large that no job could launch fails start-up instead of every launch. Every problem
    is a one-line :class:`ConfigError` naming the file.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(USER_DATA_LIMIT + 1)
    except OSError as exc:
        raise ConfigError(f"--callback-ca {path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > USER_DATA_LIMIT:
        raise ConfigError(f"--callback-ca {path}: larger than EC2's {USER_DATA_LIMIT}-byte user-data limit")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"--callback-ca {path}: not a PEM file (non-ASCII bytes)") from None
    try:
        pem = normalize_callback_ca(text)
    except InvalidInput as exc:
        raise ConfigError(f"--callback-ca {path}: {exc.rule}") from None
    now = datetime.now(timezone.utc)
    probe = Job(id=999999999, title="", date_time=now, docker_image="a", env_variables={},
                status=JobStatus.LAUNCHING, created_at=now, timeout=1)
    try:
        render_user_data(probe, callback_url=callback_url_for(public_url, probe.id), callback_token=WORST_CASE_TOKEN,
                         callback_ca=pem, logs=size_probe_target())
    except InvalidInput as exc:
        raise ConfigError(f"--callback-ca {path}: too large to embed in user-data ({exc.rule})") from None
    return pem


def render_user_data(job: Job, *, callback_url: str, callback_token: str, docker_install: bool = True,
                     callback_ca: str | None = None, logs: LogTarget | None = None) -> str:
    """The user-data script for ``job``, reporting to ``callback_url``.

    ``callback_url`` is the full URL (see :func:`callback_url_for`); ``callback_token`` is this
    attempt's bearer token (only its hash is stored, so it exists in clear only here and in the
    claiming daemon's memory). ``docker_install=False`` drops the ``dnf`` install step, for AMIs that
    ship Docker (a missing ``docker`` is then reported as ``docker-unavailable``). The job's
    ``command``/``entrypoint`` (None: the image's) and ``attempts`` (in the container's name) are
    used as they are.
    ``callback_ca``: PEM certificate(s) curl trusts for the callbacks (validated with
    :func:`normalize_callback_ca`; ``None``: the system's public CAs). ``logs``: the CloudWatch
    Logs group (region, endpoint) of the job's log, stream :func:`~jobman_cli.joblogs.stream_name`
    of this attempt (``None``: console only). Raises
    :class:`InvalidInput` for a field that cannot be rendered safely, or when the script would be
    over :data:`USER_DATA_LIMIT` bytes.
    """
    check_fields(job, callback_url, callback_token)
    env_run_args = env_args(job.env_variables).rstrip("\n")
    entrypoint = entrypoint_arg(job.entrypoint)
    command = command_args(job.command)
    attempt = job.attempts if isinstance(job.attempts, int) and not isinstance(job.attempts, bool) else 0
    log = render_logs(job, attempt, logs)
    secrets = render_secrets(job.secrets, logs.region if logs is not None else None)
    spot = render_spot(job)
    run_args = env_run_args + secrets.run_args + entrypoint + log.run_args
    ca_block = render_callback_ca(callback_ca)
    values = {
        "JOB_ID": str(job.id),
        "TITLE": shlex.quote(loggable_title(job.title)),
        "IMAGE": shlex.quote(job.docker_image),
        "TIMEOUT": str(job.timeout),
        "CALLBACK_URL": shlex.quote(callback_url),
        "CALLBACK_TOKEN": shlex.quote(callback_token),
        "CONTAINER": shlex.quote(f"jobman-{job.id}-{attempt}"),
        "RUN_ARGS": run_args + ("\n" if run_args else ""),
        "COMMAND_ARGS": command,
        "INSTALL_DOCKER": INSTALL_DOCKER if docker_install else NO_INSTALL_DOCKER,
        "CALLBACK_CA": ca_block,
        "LOG_FUNCTIONS": log.functions,
        "SECRETS": secrets.block,
        "SECRET_EXEC": secrets.exec_prefix,
        "SECRET_FEED": secrets.feed,
        "SPOT_WATCH": spot.watch,
        "SPOT_BEFORE_RUN": spot.before_run,
        "SPOT_AFTER_WAIT": spot.after_wait,
    }
    # One pass over the placeholders, so a value that happens to contain "@@NAME@@" stays literal.
    script = re.sub(r"@@([A-Z_]+)@@", lambda m: values[m.group(1)], USER_DATA_TEMPLATE)
    size = len(script.encode("utf-8"))
    if size > USER_DATA_LIMIT:
        # Name the field that takes the most room (the environment unless the command is larger).
        sizes = {("env-variables", "the environment"): len(env_run_args),
                 ("command", "the command"): len(command) + len(entrypoint),
                 ("secrets", "the secrets' names and references"): secrets.size}
        field, what = max(sizes, key=lambda k: sizes[k])
        raise InvalidInput(
            field,
            f"the job's user-data would be {size} bytes; EC2 allows at most {USER_DATA_LIMIT} (shorten {what}"
            + (" or the callback CA)" if callback_ca is not None else ")"),
        )
    return script
