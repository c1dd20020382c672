#!/usr/bin/env bash
# The whole life of a job, on this machine alone: no AWS account and no Docker engine needed.
#
# moto_server stands in for AWS (boto3 honours AWS_ENDPOINT_URL), `jobman daemon` launches the job
# on a (mock) EC2 instance, and because moto never boots that instance, this script plays its part:
# it reports back over HTTP exactly as the instance's user-data script would.
#
# Run it from the repository with jobman installed: bash examples/quickstart.sh
set -euo pipefail

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Bold commands on a terminal only: piped into a file or a CI log, no raw escape codes.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '\n%s$ %s%s\n' "$BOLD" "$*" "$PLAIN"; }

export JOBMAN_HOME="${JOBMAN_HOME:-$(mktemp -d)}"        # where jobs.json and api-token live
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
MOTO_PORT="${MOTO_PORT:-$(free_port)}"
API_PORT="${API_PORT:-$(free_port)}"
export AWS_ENDPOINT_URL="http://127.0.0.1:${MOTO_PORT}"  # every AWS call goes to moto_server
API="http://127.0.0.1:${API_PORT}/jobMan/v1.1"

cleanup() { kill "${DAEMON_PID:-}" "${MOTO_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$JOBMAN_HOME"
echo "JOBMAN_HOME=$JOBMAN_HOME"
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$JOBMAN_HOME/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 600); do curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null || { echo "moto_server did not start:"; cat "$JOBMAN_HOME/moto.log"; exit 1; }

step jobman daemon --listen "127.0.0.1:$API_PORT" '&'
jobman daemon --listen "127.0.0.1:$API_PORT" 2>"$JOBMAN_HOME/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 600); do [ -s "$JOBMAN_HOME/api-token" ] && curl -s "$API/jobs" >/dev/null 2>&1 && break; sleep 0.1; done
[ -s "$JOBMAN_HOME/api-token" ] || { echo "jobman daemon did not start:"; cat "$JOBMAN_HOME/daemon.log"; exit 1; }

step jobman schedule --image alpine:3.20 --at now --title hello -e "GREETING=hello world" -q
JOB=$(jobman schedule --image alpine:3.20 --at now --title hello -e "GREETING=hello world" -q)
echo "$JOB"

# The daemon launches it within a second; wait until EC2 (moto) has the instance (up to a
# minute or so on a very busy machine).
for _ in $(seq 300); do
    jobman status "$JOB" --json | grep -q '"status": "running"' && break; sleep 0.1
done
jobman status "$JOB" --json | grep -q '"status": "running"' \
    || { echo "the daemon did not launch job $JOB:"; cat "$JOBMAN_HOME/daemon.log"; exit 1; }
step jobman status "$JOB"
jobman status "$JOB"

# Play the instance: its user-data reports "running", runs the container, reports the exit code.
TOKEN=$(cat "$JOBMAN_HOME/api-token")
step curl -X PUT "$API/jobs/$JOB/callback" -d '{"status":"finished","exit-code":0}' '...'
curl -fsS -X PUT "$API/jobs/$JOB/callback" -H "Authorization: Bearer $TOKEN" \
     -H 'Content-Type: application/json' -d '{"status":"finished","exit-code":0}'
echo

step jobman status "$JOB" --wait --wait-timeout 30s
jobman status "$JOB" --wait --wait-timeout 30s
step jobman list
jobman list

echo
echo "Daemon log ($JOBMAN_HOME/daemon.log):"
cat "$JOBMAN_HOME/daemon.log"
