"""The instance side of a job: the bash script EC2 runs as user-data (DESIGN.md section 6).

:func:`render_user_data` turns a job into that script. The script is plain bash with the job's
fields substituted into one "job parameters" block at its top, each value single-quoted with
:func:`shlex.quote` (byte-exact in bash for any string without NUL), so no field can inject shell
code. Everything else in the script is fixed text, reviewed once, in :data:`USER_DATA_TEMPLATE`.

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

import base64
import binascii
import re
import shlex
from datetime import datetime, timezone
from typing import Mapping, Sequence

from ..errors import ConfigError, InvalidInput
from ..joblogs import LogTarget, size_probe_target, stream_name
from ..model import Job, JobStatus
from .userdata_secrets import render_secrets
from .userdata_spot import render_spot

#: EC2's limit on raw (not base64-encoded) user-data, in bytes.
USER_DATA_LIMIT = 16384

#: The path of the callback endpoint under the daemon's public URL (DESIGN.md section 4).
CALLBACK_PATH = "/jobMan/v1.1/jobs/{job_id}/callback"

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_TOKEN = re.compile(r"[!-~]+", re.ASCII)  # printable ASCII, no space: one HTTP header value
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_TITLE_LOG_MAX = 120
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
_PEM_BASE64 = re.compile(r"[A-Za-z0-9+/]{1,76}={0,2}|={1,2}", re.ASCII)

USER_DATA_TEMPLATE = r"""#!/bin/bash
# jobman user-data for job @@JOB_ID@@ (rendered by jobman_cli/launchers/userdata.py; its docstring
# explains every step). Powers off whatever happens. No `set -e`: each failure is handled in place.
job_id=@@JOB_ID@@
job_title=@@TITLE@@
image=@@IMAGE@@
job_timeout=@@TIMEOUT@@
container=@@CONTAINER@@
callback_url=@@CALLBACK_URL@@
callback_token=@@CALLBACK_TOKEN@@
run_args=(@@RUN_ARGS@@)
command_args=(@@COMMAND_ARGS@@)

# Tools come from PATH; the system default is appended, so earlier entries win.
system_path=${JOBMAN_SYSTEM_PATH-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
PATH=${PATH:+$PATH${system_path:+:}}$system_path
export PATH

number() { if [[ $1 =~ ^(0|[1-9][0-9]{0,3})$ ]]; then echo "$1"; else echo "$2"; fi; }
callback_attempts=$(number "${JOBMAN_CALLBACK_ATTEMPTS-}" 5)
callback_backoff=$(number "${JOBMAN_CALLBACK_BACKOFF-}" 5)
curl_retries=$(number "${JOBMAN_CURL_RETRIES-}" 3)
docker_wait=$(number "${JOBMAN_DOCKER_WAIT-}" 120)
pull_attempts=$(number "${JOBMAN_PULL_ATTEMPTS-}" 5)
pull_backoff=$(number "${JOBMAN_PULL_BACKOFF-}" 2)
stop_grace=$(number "${JOBMAN_STOP_GRACE-}" 30)
started=

# json_text TEXT: printable ASCII only (other bytes become ?), \ and " escaped, 400 bytes at most.
json_text() (
  LC_ALL=C
  local s=${1:0:400}
  s=${s//[^ -~]/?}
  s=${s//\\/\\\\}
  printf '%s' "${s//\"/\\\"}"
)
say() { printf '%(%Y-%m-%dT%H:%M:%S%z)T jobman[job %s]: %s\n' -1 "$job_id" "$*"; }
@@LOG_FUNCTIONS@@
power_off() {
  [[ -n $started ]] && timeout 60s docker rm -f "$container" >/dev/null 2>&1
  log "powering off"
  flush_log final
  shutdown -P now || poweroff || log "could not power off: neither shutdown nor poweroff worked"
}
trap power_off EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
@@CALLBACK_CA@@
# report STATUS EXIT_CODE REASON_CODE REASON ATTEMPTS (empty = absent); never prints the token.
report() {
  local status=$1 code=$2 rcode=$3 reason=$4 attempts=$5 n=1 delay=$callback_backoff body
  body="{\"status\":\"$status\"${code:+,\"exit-code\":$code}${rcode:+,\"reason-code\":\"$rcode\"}"
  [[ -n $reason ]] && body+=",\"reason\":\"$(json_text "$reason")\""
  body+="}"
  while :; do
    if curl -fsSg -o /dev/null "${curl_tls[@]}" --connect-timeout 10 --max-time 30 \
        --retry "$curl_retries" --retry-connrefused --retry-max-time 120 \
        -X PUT -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $callback_token" \
        --data-binary "$body" --url "$callback_url"; then
      log "reported $status${code:+ (exit code $code)}${rcode:+ ($rcode)}"
      return 0
    fi
    if (( n >= attempts )); then
      log "could not report $status after $n attempt(s); giving up"
      return 1
    fi
    log "reporting $status failed (attempt $n of $attempts); retrying in ${delay}s"
    sleep "$delay"
    n=$((n + 1))
    delay=$((delay * 2))
  done
}

# fail EXIT_STATUS REASON_CODE REASON: report failed, then exit (and power off).
fail() {
  local note reason=$3
  log "failed ($2): $3"
  flush_log final
  note=$(log_note)
  [[ -n $note ]] && reason="${reason:0:200}; $note"
  report failed "" "$2" "$reason" "$callback_attempts"
  exit "$1"
}

docker_ready() { docker info >/dev/null 2>&1; }

ensure_docker() {
  local waited=0
  if ! command -v docker >/dev/null 2>&1; then
@@INSTALL_DOCKER@@
    command -v docker >/dev/null 2>&1 || { problem="docker still not found after installing it"; return 1; }
  fi
  docker_ready && return 0
  log "starting the docker service"
  systemctl enable --now docker || systemctl start docker || { problem="systemctl could not start docker"; return 1; }
  until docker_ready; do
    if (( waited >= docker_wait )); then
      problem="the docker daemon did not answer within ${docker_wait}s"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# pull: docker pull, retried with doubling back-off within the deadline; sets `problem`.
pull() {
  local n=1 delay=$pull_backoff out rc
  while :; do
    out=$(timeout -k 10s "$((deadline > SECONDS ? deadline - SECONDS : 1))s" docker pull "$image" 2>&1 </dev/null)
    rc=$?
    [[ -n $out ]] && printf '%s\n' "$out"
    (( rc == 0 )) && return 0
    out=${out%$'\n'}
    problem=${out##*$'\n'}
    (( rc == 124 || rc == 137 )) && problem="docker pull did not finish within the job's timeout (${job_timeout}s)"
    problem="${problem:-docker pull exited with $rc} (attempt $n of $pull_attempts)"
    (( n >= pull_attempts || rc == 124 || rc == 137 || SECONDS + delay >= deadline )) && return 1
    case $problem in  # retrying cannot help
      *"manifest unknown"*|*"name unknown"*|*" not found"*|*"pull access denied"*|*"invalid reference format"*) return 1 ;;
    esac
    log "docker pull failed: $problem; retrying in ${delay}s"
    sleep "$delay"
    n=$((n + 1))
    delay=$((delay * 2))
  done
}

log "starting job $job_id ($job_title): image $image, timeout ${job_timeout}s"
ensure_docker || fail 125 docker-unavailable "$problem"
report running "" "" "" 1
@@SPOT_WATCH@@log "pulling $image"
flush_log
deadline=$((SECONDS + job_timeout + 1))  # covers pull and run; +1: SECONDS counts whole seconds
pull || fail 125 image-pull-failed "$problem"
@@SECRETS@@@@SPOT_BEFORE_RUN@@log "running the container $container"
flush_log
# At the deadline `timeout` SIGKILLs the CLI (some ignore SIGTERM); the container is stopped below.
# In the background, so a signal to this script is handled at once (the trap removes the container).
started=1
timeout --foreground -s KILL "$((deadline > SECONDS ? deadline - SECONDS : 1))s" \
  @@SECRET_EXEC@@docker run --name "$container" --pull=never "${run_args[@]}" "$image" "${command_args[@]}" @@SECRET_FEED@@</dev/null &
wait $!
rc=$?
@@SPOT_AFTER_WAIT@@if (( rc == 137 || rc == 124 )); then
  # Ask the engine: a container that ended by itself (even with 124 or 137) did not time out.
  state=$(docker inspect -f '{{.State.Running}} {{.State.ExitCode}}' "$container" 2>/dev/null)
  if [[ $state == "false "* ]]; then
    rc=${state#false }
  else
    log "the job's timeout (${job_timeout}s) has passed: stopping the container (SIGTERM, then SIGKILL after ${stop_grace}s)"
    timeout "$((stop_grace + 60))s" docker stop -t "$stop_grace" "$container" >/dev/null || log "docker stop failed"
    log "stopped: exit code $(docker inspect -f '{{.State.ExitCode}}' "$container" 2>&1)"
    timeout 60s docker rm -f "$container" >/dev/null || log "docker rm failed"
    started=
    fail 124 timed-out "after ${job_timeout}s (the job's timeout); the container was stopped and removed"
  fi
fi
timeout 60s docker rm -f "$container" >/dev/null 2>&1
started=
log "the container exited with code $rc"
flush_log final
note=$(log_note)
if (( rc == 0 )); then
  report finished 0 "" "$note" "$callback_attempts"
else
  report failed "$rc" exited "$note" "$callback_attempts"
fi
exit "$rc"
"""
"""The script, with ``@@NAME@@`` placeholders that :func:`render_user_data` fills with quoted
values. Guarantees are listed in the module docstring; keep the two in step."""


_NO_LOGS = """log() { say "$@"; }
flush_log() { :; }
log_note() { :; }
"""
_LOGS = r"""# The job's log: the console, and the attempt's CloudWatch Logs stream (batched; best effort: a
# log that cannot be written changes nothing the job does, and the report says it is incomplete).
log_group=@@LOG_GROUP@@ log_stream=@@LOG_STREAM@@ log_region=@@LOG_REGION@@ log_ep=(@@LOG_ENDPOINT@@)
log_pending= log_ready= log_problem= log_batch=${TMPDIR:-/tmp}/jobman-log-$$.json
log() {
  say "$@"
  local t=${EPOCHREALTIME//[!0-9]/}
  if (( ${#t} >= 13 )); then t=${t:0:13}; else t=$(($(printf '%(%s)T' -1) * 1000)); fi
  log_pending+="${log_pending:+,}{\"timestamp\":$t,\"message\":\"jobman: $(json_text "$*")\"}"
}
aws_logs() {
  AWS_MAX_ATTEMPTS=2 AWS_PAGER= timeout 30s aws logs --region "$log_region" "${log_ep[@]}" \
    --cli-connect-timeout 5 --cli-read-timeout 10 --output text "$@" </dev/null 2>&1
}
# flush_log [final]: put the pending lines; after a failure only a final flush tries again.
flush_log() {
  local out
  [[ -z $log_pending || ( -n $log_problem && $1 != final ) ]] && return 0
  command -v aws >/dev/null || { log_problem="no aws CLI on the instance"; return 1; }
  if [[ -z $log_ready ]]; then
    out=$(aws_logs create-log-stream --log-group-name "$log_group" --log-stream-name "$log_stream") ||
      [[ $out == *ResourceAlreadyExists* ]] || { log_failed "$out"; return; }
    log_ready=1
  fi
  (umask 077 && printf '[%s]' "$log_pending" >"$log_batch") &&
    out=$(aws_logs put-log-events --log-group-name "$log_group" --log-stream-name "$log_stream" \
      --log-events "file://$log_batch") && { log_pending=; return 0; }
  log_failed "$out"
}
log_failed() {
  local m=${1%$'\n'}
  m=${m##*$'\n'}
  log_problem="CloudWatch Logs: ${m:0:150}"
  say "log not delivered: $log_problem"
  return 1
}
log_note() { [[ -n $log_problem ]] && printf 'log incomplete (%s)' "$log_problem"; }
"""

_INSTALL_DOCKER = """\
    log "docker not found; installing it with dnf"
    dnf install -y docker || { problem="dnf could not install docker"; return 1; }"""
_NO_INSTALL_DOCKER = """\
    problem="docker not found, and this launcher does not install it"
    return 1"""

_NO_CALLBACK_CA = """
curl_tls=()  # no --callback-ca: the system's CAs verify an https callback
"""
_CALLBACK_CA = """
# The CA that signed the daemon's certificate: curl trusts it for the callbacks.
callback_ca_file=${JOBMAN_CALLBACK_CA_FILE:-/run/jobman-callback-ca.pem}
IFS= read -r -d '' callback_ca <<'JOBMAN_CA_EOF'
@@PEM@@JOBMAN_CA_EOF
if ! (umask 022 && printf '%s' "$callback_ca" >"$callback_ca_file"); then
  log "could not write the callback CA to $callback_ca_file; https callbacks will fail"
fi
curl_tls=(--cacert "$callback_ca_file")
"""


def callback_url_for(public_url: str, job_id: int) -> str:
    """The full callback URL of a job under the daemon's public URL (trailing slashes ignored)."""
    base = public_url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")) or _UNPRINTABLE.search(base) or " " in base:
        raise InvalidInput("public-url", f"must be an http:// or https:// URL without spaces (got {base!r})")
    return base + CALLBACK_PATH.format(job_id=int(job_id))


def _env_args(env: Mapping[str, str]) -> str:
    """``-e 'KEY=VALUE'`` lines for the ``env_args`` bash array, sorted by key (determinism)."""
    lines = []
    for key in sorted(env):
        value = env[key]
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise InvalidInput("env-variables", f"{key!r} is not a valid shell identifier")
        if not isinstance(value, str):
            raise InvalidInput("env-variables", f"the value of {key} must be a string")
        if "\x00" in value:
            raise InvalidInput("env-variables", f"the value of {key} contains a NUL byte, which no environment can carry")
        _require_utf8("env-variables", value, f"the value of {key}")
        lines.append(f"\n  -e {shlex.quote(key + '=' + value)}")
    return "".join(lines) + ("\n" if lines else "")


def _entrypoint_arg(entrypoint: str | None) -> str:
    """``--entrypoint=VALUE`` (one argument, so a value starting with ``-`` stays a value) for the
    ``run_args`` array; ``""`` when the image's own entrypoint is kept. An empty string is passed
    on: Docker reads ``--entrypoint=`` as "no entrypoint" (the command runs directly)."""
    if entrypoint is None:
        return ""
    _check_text("entrypoint", entrypoint, "the entrypoint")
    return "\n  " + shlex.quote("--entrypoint=" + entrypoint)


def _command_args(command: Sequence[str] | None) -> str:
    """The container's command, one quoted word per element, for the ``command_args`` array."""
    if command is None:
        return ""
    if isinstance(command, (str, bytes)) or not isinstance(command, Sequence):
        raise InvalidInput("command", "must be a list of strings")
    words = []
    for i, word in enumerate(command):
        _check_text("command", word, f"argument {i}")
        words.append("\n  " + shlex.quote(word))
    return "".join(words) + ("\n" if words else "")


def _check_text(field: str, value: object, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(field, f"{what} must be a string")
    if "\x00" in value:
        raise InvalidInput(field, f"{what} contains a NUL byte, which no argument can carry")
    _require_utf8(field, value, what)


def _require_utf8(field: str, value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, f"{what} is not valid unicode (lone surrogate)") from None


def _loggable_title(title: str) -> str:
    """The title as it appears in the console log: one line, printable, shortened."""
    text = _UNPRINTABLE.sub("?", title or "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= _TITLE_LOG_MAX else text[: _TITLE_LOG_MAX - 3] + "..."


def _check_fields(job: Job, callback_url: str, callback_token: str) -> None:
    """Defence in depth: the service validated these already; the renderer refuses to quote
    anything that could still be misread (a flag-like image, a multi-line header)."""
    image = job.docker_image
    if not isinstance(image, str) or not image or image.startswith("-") or re.search(r"[\s\x00-\x1f\x7f]", image):
        raise InvalidInput("docker-image", f"must be a Docker reference, not empty nor starting with '-' (got {image!r})")
    _require_utf8("docker-image", image, "the image")
    timeout = job.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise InvalidInput("timeout", f"must be a positive number of seconds (got {timeout!r})")
    if not isinstance(callback_token, str) or not _TOKEN.fullmatch(callback_token):
        raise InvalidInput("callback-token", "must be non-empty printable ASCII without spaces")
    if (not isinstance(callback_url, str) or not callback_url.startswith(("http://", "https://"))
            or re.search(r"[\s\x00-\x1f\x7f]", callback_url)):
        raise InvalidInput("callback-url", f"must be an http:// or https:// URL without spaces (got {callback_url!r})")
    _require_utf8("callback-url", callback_url, "the callback URL")
    if isinstance(job.id, bool) or not isinstance(job.id, int) or job.id < 0:
        raise InvalidInput("id", f"must be a non-negative integer (got {job.id!r})")


def normalize_callback_ca(pem: str) -> str:
    """``pem`` (one or more PEM certificates) in canonical form: the blocks, ``\\n``-terminated.

    Strict on purpose, because the text is embedded in the user-data script: only
    ``-----BEGIN CERTIFICATE-----`` / ``-----END CERTIFICATE-----`` lines around base64 lines
    (blank lines allowed between blocks, trailing whitespace and CRLF tolerated). Anything else
    (a comment, ``Bag Attributes``, a private key, a heredoc terminator, ``$(...)``) raises
    :class:`InvalidInput` naming ``callback-ca``, so the heredoc can never be broken out of.
    """
    if not isinstance(pem, str):
        raise InvalidInput("callback-ca", "must be PEM text")
    out: list[str] = []
    block: list[str] | None = None
    for number, raw in enumerate(pem.split("\n"), start=1):
        line = raw.rstrip(" \t\r")
        if block is None:
            if line == _PEM_BEGIN:
                block = []
            elif line:
                raise InvalidInput("callback-ca", f"line {number}: only PEM CERTIFICATE blocks are allowed")
        elif line == _PEM_END:
            try:
                der = base64.b64decode("".join(block), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("callback-ca", f"line {number}: the certificate is not valid base64") from None
            if not der.startswith(b"\x30"):
                raise InvalidInput("callback-ca", f"line {number}: the block is not a DER certificate")
            out += [_PEM_BEGIN, *block, _PEM_END]
            block = None
        elif _PEM_BASE64.fullmatch(line):
            block.append(line)
        else:
            raise InvalidInput("callback-ca", f"line {number}: a certificate block may only hold base64 lines")
    if block is not None:
        raise InvalidInput("callback-ca", f"missing {_PEM_END}")
    if not out:
        raise InvalidInput("callback-ca", "no PEM CERTIFICATE block found")
    return "\n".join(out) + "\n"


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


#: As long as any callback token jobman makes (``secrets.token_urlsafe(32)``), for size checks.
WORST_CASE_TOKEN = "x" * 43


_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-[0-9]+", re.ASCII)
_LOG_GROUP = re.compile(r"[A-Za-z0-9._/#-]{1,512}", re.ASCII)


def _log_block(job: Job, attempt: int, logs: LogTarget | None) -> tuple[str, str]:
    """The script's log functions, and the ``docker run`` arguments that send the container's
    stdout/stderr to the attempt's stream through Docker's ``awslogs`` driver (non-blocking: a log
    that cannot be written never holds up the container; flushed every second)."""
    if logs is None:
        return _NO_LOGS, ""
    if not isinstance(logs.group, str) or not _LOG_GROUP.fullmatch(logs.group):
        raise ConfigError(f"log group {logs.group!r} is not a CloudWatch Logs group name")
    if not isinstance(logs.region, str) or not _REGION.fullmatch(logs.region):
        raise ConfigError(f"log region {logs.region!r} is not an AWS region name")
    endpoint = logs.endpoint_url or ""
    if endpoint and (not endpoint.startswith(("http://", "https://")) or re.search(r"[\s\x00-\x1f\x7f'\"\\]", endpoint)):
        raise ConfigError(f"log endpoint {endpoint!r} must be an http:// or https:// URL without spaces or quotes")
    stream = stream_name(job.id, attempt)
    options = [f"awslogs-region={logs.region}", f"awslogs-group={logs.group}", f"awslogs-stream={stream}",
               "mode=non-blocking", "max-buffer-size=4m", "awslogs-force-flush-interval-seconds=1"]
    if endpoint:
        options.append(f"awslogs-endpoint={endpoint}")
    args = "\n  --log-driver=awslogs" + "".join(f"\n  {shlex.quote('--log-opt=' + o)}" for o in options)
    values = {"LOG_GROUP": shlex.quote(logs.group), "LOG_STREAM": shlex.quote(stream),
              "LOG_REGION": shlex.quote(logs.region),
              "LOG_ENDPOINT": f"--endpoint-url {shlex.quote(endpoint)}" if endpoint else ""}
    return re.sub(r"@@(LOG_[A-Z]+)@@", lambda m: values[m.group(1)], _LOGS), args


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
    _check_fields(job, callback_url, callback_token)
    env_args = _env_args(job.env_variables).rstrip("\n")
    entrypoint_arg = _entrypoint_arg(job.entrypoint)
    command_args = _command_args(job.command)
    attempt = job.attempts if isinstance(job.attempts, int) and not isinstance(job.attempts, bool) else 0
    log_functions, log_args = _log_block(job, attempt, logs)
    secrets = render_secrets(job.secrets, logs.region if logs is not None else None)
    spot = render_spot(job)
    run_args = env_args + secrets.run_args + entrypoint_arg + log_args
    ca_block = _NO_CALLBACK_CA
    if callback_ca is not None:
        ca_block = _CALLBACK_CA.replace("@@PEM@@", normalize_callback_ca(callback_ca))
    values = {
        "JOB_ID": str(job.id),
        "TITLE": shlex.quote(_loggable_title(job.title)),
        "IMAGE": shlex.quote(job.docker_image),
        "TIMEOUT": str(job.timeout),
        "CALLBACK_URL": shlex.quote(callback_url),
        "CALLBACK_TOKEN": shlex.quote(callback_token),
        "CONTAINER": shlex.quote(f"jobman-{job.id}-{attempt}"),
        "RUN_ARGS": run_args + ("\n" if run_args else ""),
        "COMMAND_ARGS": command_args,
        "INSTALL_DOCKER": _INSTALL_DOCKER if docker_install else _NO_INSTALL_DOCKER,
        "CALLBACK_CA": ca_block,
        "LOG_FUNCTIONS": log_functions,
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
        sizes = {("env-variables", "the environment"): len(env_args),
                 ("command", "the command"): len(command_args) + len(entrypoint_arg),
                 ("secrets", "the secrets' names and references"): secrets.size}
        field, what = max(sizes, key=lambda k: sizes[k])
        raise InvalidInput(
            field,
            f"the job's user-data would be {size} bytes; EC2 allows at most {USER_DATA_LIMIT} (shorten {what}"
            + (" or the callback CA)" if callback_ca is not None else ")"),
        )
    return script
