"""The spot-interruption watcher of the user-data (DESIGN.md sections 6 and 13).

EC2 gives a spot instance a two-minute notice before it reclaims it: IMDS then answers
``GET /latest/meta-data/spot/instance-action`` with ``{"action": "terminate", "time": ...}`` (404
until then). For a job whose capacity includes spot, :func:`render_spot` adds three fixed blocks to
the script (:mod:`.userdata_template` holds only the ``@@SPOT_*@@`` hooks):

* **watch** (after the ``running`` report): a background loop asks IMDSv2 for a session token
  (``PUT /latest/api/token``) and then the instance-action, every ``JOBMAN_SPOT_POLL`` seconds (5,
  as AWS suggests; the notice comes two minutes ahead). On a notice it signals the script
  (``SIGUSR1``; bash's own ``kill``, no tool needed) and prints the notice, then stops asking IMDS
  but signals again every ``JOBMAN_SPOT_POLL`` seconds until the script ends: bash runs a trap
  only between commands, so a signal that lands during a foreground command (the ``aws`` of the
  log flush just before ``docker run``) sets the flag only after the check before the run; the
  next signal then ends the ``wait`` for the container that started anyway. The script's ``EXIT``
  trap ends the watcher first, so no loop outlives the script. IMDS is reached with the instance's
  hop limit of 1, so only the host (not the job's container) sees it; ``JOBMAN_IMDS_URL`` replaces
  ``http://169.254.169.254`` (tests point it at a stub on 127.0.0.1; cloud-init never sets it).
* **check before run**: a notice during Docker start-up or the pull: no container is started.
* **after wait**: the signal ends the script's ``wait`` for the container at once. If the container
  is still running, it is stopped cleanly (``docker stop -t GRACE``: SIGTERM, then SIGKILL after the
  grace, well inside the two minutes), removed, and the job is reported ``failed`` with
  ``reason-code`` ``interrupted``. The daemon relaunches it while its ``--max-interruptions``
  budget lasts. A container that ended by itself before the notice keeps its own result.

On-demand jobs get none of this (the hooks render empty), so their script is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Job

_WATCH = r"""# Spot: watch IMDSv2 spot/instance-action in the background; a notice signals this script.
imds=${JOBMAN_IMDS_URL-http://169.254.169.254}
spot_poll=$(number "${JOBMAN_SPOT_POLL-}" 5)
spot_notice=
trap 'spot_notice=1' USR1
spot_watch() {
  local token action
  trap - EXIT HUP INT TERM USR1
  while :; do
    token=$(curl -fsSg --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
      --url "$imds/latest/api/token" 2>/dev/null </dev/null)
    if [[ -n $token ]]; then
      action=$(curl -fsSg --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
        --url "$imds/latest/meta-data/spot/instance-action" 2>/dev/null </dev/null)
      if [[ -n $action ]]; then
        kill -USR1 "$$" 2>/dev/null || return 0
        say "spot interruption notice: $(json_text "$action")"
        # Again until the script ends: a signal caught during a foreground command is acted on
        # only after it, possibly after the container started; the next one ends its wait.
        while sleep "$spot_poll" </dev/null >/dev/null 2>&1; kill -USR1 "$$" 2>/dev/null; do :; done
        return 0
      fi
    fi
    sleep "$spot_poll" </dev/null >/dev/null 2>&1
  done
}
spot_watch &
spot_watcher=$!
trap 'kill "$spot_watcher" 2>/dev/null; power_off' EXIT
"""

_BEFORE_RUN = """[[ -n $spot_notice ]] && fail 143 interrupted "EC2 sent a spot interruption notice before the container started"
"""

_AFTER_WAIT = r"""if [[ -n $spot_notice ]] && kill -0 "$!" 2>/dev/null; then
  log "spot interruption notice: stopping the container (SIGTERM, then SIGKILL after ${stop_grace}s)"
  timeout "$((stop_grace + 60))s" docker stop -t "$stop_grace" "$container" >/dev/null || log "docker stop failed"
  while kill -0 "$!" 2>/dev/null; do wait "$!"; done  # the watcher's next signal may end a wait early
  timeout 60s docker rm -f "$container" >/dev/null || log "docker rm failed"
  started=
  fail 143 interrupted "EC2 sent a spot interruption notice; the container was stopped and removed"
fi
"""


@dataclass(frozen=True)
class SpotBlocks:
    """The text of the three ``@@SPOT_*@@`` hooks (all empty for an on-demand job)."""

    watch: str = ""
    before_run: str = ""
    after_wait: str = ""


def wants_spot_watcher(job: Job) -> bool:
    """A job that may run on spot (``spot`` or ``spot-then-on-demand``). The attempt's user-data is
    rendered once for every rung, so an on-demand rung of such a job watches too: IMDS answers
    404 there for ever, which costs one local request every few seconds."""
    return job.capacity in ("spot", "spot-then-on-demand")


def render_spot(job: Job) -> SpotBlocks:
    if not wants_spot_watcher(job):
        return SpotBlocks()
    return SpotBlocks(watch=_WATCH, before_run=_BEFORE_RUN, after_wait=_AFTER_WAIT)
