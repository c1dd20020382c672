"""Throttling storm: a burst of due jobs larger than EC2's RunInstances token bucket.

EC2 limits RunInstances with a token bucket (AWS: 1,000 instances, refilled at 2 per second); here
the fault proxy (``tests/faultproxy.py``, a separate process in front of ``moto_server``) enforces
a scaled-down one, answering ``RequestLimitExceeded`` (HTTP 503) without forwarding once it is
empty. The daemon is given the same bucket (``--launch-burst``/``--launch-rate``). Every job must
launch, none may fail, and the burst must take about the bucket's own minimum,
``(jobs - capacity) / refill`` seconds: pacing that is much slower wastes the bucket, a daemon that
does not pace fills the proxy's log with refusals (counted).

Measured: the span from the first to the last RunInstances that reached moto (the proxy's own
timestamps), and from the common due time to the last launch stored.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import datagen
from daemon_figures import _daemon_env, _verify_launched, _wait_launched
from harness import BenchError, Daemon, MotoServer
from report import Row, Sizes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the fault proxy
from faultproxy import FaultProxy  # noqa: E402

UTC = timezone.utc


def throttle(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    jobs, capacity, refill = (100, 20, 5.0) if sizes.quick else (300, 50, 5.0)
    minimum = (jobs - capacity) / refill
    moto.reset()
    db = workdir / "throttle.json"
    datagen.empty_store(db)
    rules = [{"action": "RunInstances", "fault": "token_bucket", "capacity": capacity, "refill": refill}]
    with FaultProxy(moto.url, rules, workdir=workdir / "throttle-proxy") as proxy:
        daemon = Daemon(_daemon_env(proxy.url, workdir), db, "--launch-burst", str(capacity), "--launch-rate",
                        f"{refill:g}", log=workdir / "daemon-throttle.log")
        try:
            daemon.wait_ready()
            proxy.set_rules(rules)  # a full bucket at the start of the burst, as in EC2 after a quiet spell
            at = datetime.now(UTC) + timedelta(seconds=3)
            populated = datagen.populate(db, [("scheduled", at)] * jobs)
            launched = _wait_launched(db, jobs, minimum * 2 + 60, daemon)
            failed = "-> failed" in daemon.text()
        finally:
            daemon.stop()
        stats = proxy.action("RunInstances")
        reached = [c["t"] for c in proxy.calls() if c["action"] == "RunInstances" and c["outcome"] == "forwarded"]
    if set(launched) != {job.id for job in populated} or stats["forwarded"] != jobs or failed:
        raise BenchError(f"throttle: {len(launched)} launches stored, {stats['forwarded']} RunInstances reached "
                         f"moto for {jobs} jobs; a failure logged: {failed}")
    _verify_launched(db, jobs)
    span = max(reached) - min(reached)
    total = max(launched.values()) - populated[0].date_time.timestamp()
    ok = total <= minimum * 1.2 and span >= minimum * 0.95 and stats["throttled"] <= jobs * 0.05
    return [Row(f"{jobs} jobs due at once, RunInstances bucket {capacity} + {refill:g}/s (fault proxy)",
                f"{total:.1f} s due → last launch stored", f"≤ 1.2 × the bucket's minimum ({minimum:g} s), none failed",
                f"× {total / minimum:.2f}; first → last RunInstances {span:.1f} s; {stats['requests']} requests, "
                f"{stats['throttled']} refused (RequestLimitExceeded); 0 failed", ok)]
