"""The fixed text of the user-data script: bash reviewed once, with ``@@NAME@@`` holes.

Nothing here is computed. :func:`~jobman_cli.launchers.userdata.render_user_data` fills the holes
with quoted job parameters (:mod:`.userdata_fields`) and with the optional blocks of
:mod:`.userdata_logs`, :mod:`.userdata_ca`, :mod:`.userdata_secrets` and :mod:`.userdata_spot`;
a block that does not apply renders as its empty or neutral variant. Keeping the text apart from
the Python that fills it means a reviewer reads the whole script top to bottom in one place, and
what each step guarantees (and why) is in :mod:`.userdata`'s docstring: change the two together.
Every byte matters: the rendered script must stay the same for the same job (see ``Deterministic``
there).
"""

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
"""The script, with ``@@NAME@@`` placeholders that :func:`~.userdata.render_user_data` fills with
quoted values. Guarantees are listed in :mod:`.userdata`'s docstring; keep the two in step."""

#: The ``@@INSTALL_DOCKER@@`` step of ``ensure_docker``: install Docker with dnf (Amazon Linux), or,
#: for a launcher whose AMI ships Docker (``docker_install=False``), report at once that it is missing.
INSTALL_DOCKER = """\
    log "docker not found; installing it with dnf"
    dnf install -y docker || { problem="dnf could not install docker"; return 1; }"""
NO_INSTALL_DOCKER = """\
    problem="docker not found, and this launcher does not install it"
    return 1"""

