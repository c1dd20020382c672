"""Two real ``jobman daemon`` processes on one DynamoDB table (moto with atomic conditional writes):
every event is delivered once (issue 13).

Both daemons see every job end: the ones failed through either daemon's API (its own service pokes
its notifier; the other daemon finds the job in its scan or through its observer) and the ones
failed by a third process writing the table directly (this test, as ``jobman callback`` would),
which both observers see leave the active set at about the same moment. Both then race to claim
the same delivery; the claim is a conditional write of the job, so only one sends. The receiver
counts POSTs per event id.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
from datetime import datetime, timezone

import pytest
from moto_server import moto_server, moto_server_process  # noqa: F401  (fixtures)
from notify_receiver import Receiver
from test_dynamodb_race import TOKEN, daemon_id, dynamodb_server, dynamodb_server_process, env, store  # noqa: F401
from test_e2e_daemon import DaemonProcess, poll

from jobman_cli.model import JobStatus, hash_callback_token
from jobman_cli.service import JobService, ScheduleRequest, launch_token_for

pytestmark = pytest.mark.slow

JOBS = 30
UTC = timezone.utc


def _fail(port: int, job_id: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", f"/jobMan/v1.1/jobs/{job_id}/callback", body=json.dumps({"status": "failed", "exit-code": 1}),
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def test_two_daemons_on_one_table_deliver_each_event_once(store, env):  # noqa: F811
    hook = Receiver(delay=0.05)
    env = {**env, "JOBMAN_NOTIFY_SECRET": "ha-notify-secret-0123456789", "JOBMAN_NOTIFY_SCAN_INTERVAL": "1"}
    daemons = [DaemonProcess(env), DaemonProcess(env)]
    try:
        for daemon in daemons:
            daemon.wait_for(lambda line: " ready;" in line, timeout=60)
        ports = [int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", d.text()).group(1))  # type: ignore[union-attr]
                 for d in daemons]
        now = datetime.now(UTC)
        ids = []
        service = JobService(store)
        for n in range(JOBS):
            job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when="+1d", notify=[f"{hook.url}/{n}"]))
            store.update(job.id, lambda j: j.claimed(now, launch_token_for(store.store_id, j.id, 1),
                                                     hash_callback_token(f"tok-{j.id}")).launched(f"i-{j.id:017x}", now))
            ids.append(job.id)
        for n, job_id in enumerate(ids):
            if n % 3 == 2:  # a third process ends it: both daemons' observers see it go
                store.update(job_id, lambda j: j.reported("failed", 1, datetime.now(UTC)))
            else:
                assert _fail(ports[n % 3], job_id) == 200
        assert poll(lambda: all(store.get(i).deliveries and store.get(i).deliveries[0]["state"] == "delivered"
                                for i in ids), timeout=90), "\n".join(d.text()[-2000:] for d in daemons)
        for daemon in daemons:
            assert daemon.stop() == 0
        per_event = collections.Counter(r.headers["X-Jobman-Event-Id"] for r in hook.requests)
        assert len(per_event) == JOBS and set(per_event.values()) == {1}, per_event.most_common(3)
        assert sorted(r.path for r in hook.requests) == sorted(f"/{n}" for n in range(JOBS))
        senders = collections.Counter(store.get(i).deliveries[0]["attempts"] for i in ids)
        assert senders == {1: JOBS}  # every delivery took one attempt: no claim was lost or doubled
        by_daemon = {daemon_id(d): d.text().count(" notification (failed) to ") for d in daemons}
        print(f"\ndeliveries per daemon: {by_daemon}")
        assert sum(by_daemon.values()) == JOBS
        assert all(store.get(i).status is JobStatus.FAILED for i in ids)
    finally:
        hook.close()
        for daemon in daemons:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
                daemon.proc.wait(timeout=10)
