"""The job's log in the user-data script: shell functions, and the container's ``awslogs`` options.

With a :class:`~jobman_cli.joblogs.LogTarget` (DESIGN.md section 10) the script sends its own lines
and the container's output to the attempt's CloudWatch Logs stream; without one it logs to the
console only. Either way the template calls the same three functions (``log``, ``flush_log``,
``log_note``), so :mod:`.userdata_template` has a single ``@@LOG_FUNCTIONS@@`` hole and no branch.
Why each step is best effort and bounded is in :mod:`.userdata`'s docstring ("The job's log").
"""

from __future__ import annotations

import re
import shlex
from typing import NamedTuple

from ..errors import ConfigError
from ..joblogs import LogTarget, stream_name
from ..model import Job

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

#: Strict shapes for what is spliced into the script and into ``--log-opt`` values: a daemon's
#: misconfiguration is refused here (ConfigError) rather than rendered.
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-[0-9]+", re.ASCII)
_LOG_GROUP = re.compile(r"[A-Za-z0-9._/#-]{1,512}", re.ASCII)


class LogBlocks(NamedTuple):
    """What :func:`render_logs` adds to the script: the ``log``/``flush_log``/``log_note``
    functions, and the ``docker run`` arguments (empty without a log target)."""

    functions: str
    run_args: str


def render_logs(job: Job, attempt: int, logs: LogTarget | None) -> LogBlocks:
    """The script's log functions, and the ``docker run`` arguments that send the container's
    stdout/stderr to the attempt's stream through Docker's ``awslogs`` driver (non-blocking: a log
    that cannot be written never holds up the container; flushed every second)."""
    if logs is None:
        return LogBlocks(_NO_LOGS, "")
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
    return LogBlocks(re.sub(r"@@(LOG_[A-Z]+)@@", lambda m: values[m.group(1)], _LOGS), args)
