"""``--max-cost`` where it acts: ``jobman schedule`` refuses from the price cache (exit 2, one line,
nothing stored) and the daemon fails a launch over the limit as ``launch-failed`` naming the limit,
before any ``RunInstances``."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from jobman_cli.cost.cache import PriceCache
from jobman_cli.cost.prices_ondemand import OnDemandPrices
from jobman_cli.cost.quote import Quote
from test_housekeeping_cli import jobman, one_line_error

UTC = timezone.utc
FETCHED = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def cached(home, **hourly: float) -> PriceCache:
    cache = PriceCache(home / "prices.json")
    for name, usd in hourly.items():
        cache.put(f"on-demand/us-east-1/{name.replace('_', '.')}", Quote(usd, "hour", "Price List", FETCHED))
    return cache


def test_schedule_refuses_a_worst_case_over_the_limit(tmp_path):
    home = tmp_path / "home"
    cached(home, m7i_large=0.1008)
    args = ("schedule", "--image", "alpine:3.20", "--at", "+10m", "--instance-type", "m7i.large", "--timeout", "10h")
    error = one_line_error(jobman(home, *args, "--max-cost", "1", AWS_REGION="us-east-1"), 2)
    assert error.startswith("Error: --max-cost: the worst case is $1.01 (m7i.large at $0.1008/h for the 36000 s "
                            "timeout, on-demand prices in us-east-1 cached 2026-12-01), over the limit of $1.00"), error
    assert json.loads(jobman(home, "list", "--json").stdout or "[]") == []  # nothing stored
    ok = jobman(home, *args, "--max-cost", "1.01", "-q", AWS_REGION="us-east-1")
    assert ok.returncode == 0, ok.stderr
    # a price not in the cache: accepted now, the daemon checks at launch
    later = jobman(home, *args[:-4], "--instance-type", "c7i.large", "--timeout", "10h", "--max-cost", "0.01", "-q",
                   AWS_REGION="us-east-1")
    assert later.returncode == 0, later.stderr


def test_schedule_with_a_corrupt_price_cache_is_no_traceback(tmp_path):
    """(review finding 9) A hand-edited cache: a null fetch time crashed the check (TypeError in
    ``jobman schedule``), a NaN price passed any limit, a negative one made any job fit. Each is
    ignored: the schedule is accepted and the launch decides with a fetched price."""
    home = tmp_path / "home"
    home.mkdir()
    args = ("schedule", "--image", "alpine:3.20", "--at", "+10m", "--instance-type", "m7i.large", "--timeout", "10h",
            "--max-cost", "1", "-q")
    for entry in ({"usd": 0.1008, "fetched-at": None}, {"usd": float("nan"), "fetched-at": "2026-12-01T08:00:00Z"},
                  {"usd": -1, "fetched-at": "2026-12-01T08:00:00Z"}):
        (home / "prices.json").write_text(json.dumps({"format": 1, "prices": {
            "on-demand/us-east-1/m7i.large": {"unit": "hour", "source": "Price List", **entry}}}))
        result = jobman(home, *args, AWS_REGION="us-east-1")
        assert result.returncode == 0 and "rror" not in result.stderr, (entry, result.stderr)


def test_the_daemon_fails_a_launch_over_the_limit_naming_it(tmp_path, mock_ec2, isolated_aws):
    from jobman_cli.clock import FixedClock
    from jobman_cli.daemon import Daemon
    from jobman_cli.launchers.base import EC2Settings
    from jobman_cli.launchers.ec2 import EC2Launcher
    from jobman_cli.model import JobStatus, ReasonCode, format_time
    from jobman_cli.service import JobService, ScheduleRequest
    from jobman_cli.settings import DaemonSettings
    from jobman_cli.stores.tinydb import TinyDBStore

    isolated_aws.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    isolated_aws.setenv("JOBMAN_COST_RECEIPTS", "off")

    def no_network():
        raise AssertionError("the prices are cached")

    isolated_aws.setattr("jobman_cli.cost.limits._prices",
                         OnDemandPrices(cached(tmp_path / "daemon", t3_micro=0.0104, m7i_large=0.1008), no_network))
    # (the daemon's prices, not in this JOBMAN_HOME: at schedule time nothing is cached, so the launch decides)
    now = datetime.now(UTC).replace(microsecond=0)
    clock = FixedClock(now)
    store = TinyDBStore(tmp_path / "jobs.json")
    service = JobService(store, clock)
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url="http://10.1.2.3:8321")
    daemon = Daemon(store, EC2Launcher(EC2Settings(region="us-east-1")), settings, clock=clock, service=service,
                    exclusive=True, log=lambda line: None)
    try:
        # the ladder t3.micro (the job's first) then m7i.large: worst 2 h x $0.1008 = $0.2016 > $0.20
        over, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(now), timeout="2h",
                                                   instance_type="t3.micro,m7i.large", max_cost="0.20"))
        fits, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when=format_time(now), timeout="2h",
                                                   instance_type="t3.micro,m7i.large", max_cost="0.21"))
        daemon.tick(now)
        failed = store.get(over.id)
        assert (failed.status, failed.reason_code) == (JobStatus.FAILED, ReasonCode.LAUNCH_FAILED)
        assert failed.reason == ("launch error: MaxCostExceeded: the worst case is $0.2016 (m7i.large at $0.1008/h "
                                 "for the 7200 s timeout, on-demand prices in us-east-1), over --max-cost $0.20")
        assert failed.instance_id is None
        assert store.get(fits.id).status is JobStatus.RUNNING
        reservations = mock_ec2.describe_instances()["Reservations"]
        assert sum(len(r["Instances"]) for r in reservations) == 1  # only the job that fits was launched
    finally:
        daemon.close()
        store.close()
