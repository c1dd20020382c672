"""``jobman schedule ... --dry-run`` predicts the worst-case cost (DESIGN.md section 15).

The figure is :func:`jobman_cli.cost.limits.worst_case` over every rung's type, priced from the
local price cache only: each test writes ``$JOBMAN_HOME/prices.json`` (or none) and runs the real
``jobman`` script without credentials, with every AWS endpoint pointing at a closed port, so a dry
run that tried to fetch a price would fail or print a fetched figure instead of the cached one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from jobman_cli.cost.cache import PriceCache
from jobman_cli.cost.quote import Quote
from test_schedule_dry_run import cli_env, jobman

FETCHED = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens on it here
BASE = ("schedule", "--image", "alpine:3.20", "--at", "2030-01-01 00:00Z", "--dry-run")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(tmp_path, AWS_ENDPOINT_URL=CLOSED, **extra)


def cache(tmp_path: Path, **prices: float) -> None:
    """``m5_large=0.096`` -> on-demand hourly price of m5.large; ``gp3=0.08`` -> GB-month of gp3."""
    store = PriceCache(tmp_path / "home" / "prices.json")
    for name, usd in prices.items():
        key = "ebs/us-east-1/gp3" if name == "gp3" else f"on-demand/us-east-1/{name.replace('_', '.')}"
        store.put(key, Quote(usd, "GB-month" if name == "gp3" else "hour", "Price List", FETCHED))


def cost_lines(out: str) -> list[str]:
    """The lines of the text output's cost section."""
    block = out.split("Cost (predicted from the local price cache; no AWS call):\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_cached_prices_give_the_exact_worst_case(tmp_path: Path) -> None:
    cache(tmp_path, m5_large=0.096, t3_micro=0.0104, gp3=0.08)
    env = env_for(tmp_path)
    args = (*BASE, "--instance-type", "m5.large,t3.micro", "--timeout", "1h", "--disk-gb", "8", "--max-cost", "1")
    # the dearest rung for the whole timeout + the volume for the same time:
    # 0.096 $/h x 1 h + 8 GiB x 0.08 $/GB-month x 3600 s / (730 h x 3600 s) = 0.096 + 0.000876712 = 0.096876712
    expected = 0.096 * 1 + 8 * 0.08 / 730
    assert round(expected, 6) == 0.096877
    done = jobman(env, *args)
    assert done.returncode == 0, done.stderr
    assert cost_lines(done.stdout) == [
        "worst case: $0.10 (m5.large at $0.096/h for the 3600 s timeout + 8 GiB gp3; "
        "on-demand prices in us-east-1, cached 2026-12-01)",
        "within --max-cost $1.00"]
    answer = json.loads(jobman(env, *args, "--json").stdout)
    assert answer["worst-case-cost"] == {
        "usd": 0.096877,
        "basis": "m5.large at $0.096/h for the 3600 s timeout + 8 GiB gp3; on-demand prices in us-east-1, "
                 "cached 2026-12-01"}
    # the rest of the answer is unchanged
    assert sorted(answer) == ["dry-run", "job", "ladder", "notes", "run-instances", "user-data", "worst-case-cost"]


def test_a_short_job_is_shown_below_a_cent_not_as_free(tmp_path: Path) -> None:
    cache(tmp_path, t3_micro=0.0104)
    done = jobman(env_for(tmp_path), *BASE, "--instance-type", "t3.micro", "--timeout", "10m")
    # 0.0104 $/h x 600 s / 3600 = 0.0017333...
    assert cost_lines(done.stdout) == ["worst case: $0.0017 (t3.micro at $0.0104/h for the 600 s timeout; "
                                       "on-demand prices in us-east-1, cached 2026-12-01)"], done.stderr


def test_no_cached_price_is_unknown_with_why(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    args = (*BASE, "--instance-type", "m5.large", "--timeout", "1h")
    done = jobman(env, *args, "--max-cost", "1")
    assert done.returncode == 0, done.stderr
    assert cost_lines(done.stdout) == [
        "worst case: unknown (no cached on-demand price for m5.large in us-east-1; the daemon fetches it at launch)",
        "--max-cost $1.00: checked by the daemon at launch, with fetched prices"]
    assert json.loads(jobman(env, *args, "--json").stdout)["worst-case-cost"] == {
        "usd": None, "basis": "no cached on-demand price for m5.large in us-east-1; the daemon fetches it at launch"}
    assert not (tmp_path / "home").exists()  # and the dry run fetched and cached nothing
    # one rung cached, another not: still unknown, naming the one that is missing
    cache(tmp_path, m5_large=0.096)
    done = jobman(env, *BASE, "--instance-type", "m5.large,c7i.large")
    assert cost_lines(done.stdout) == [
        "worst case: unknown (no cached on-demand price for c7i.large in us-east-1; the daemon fetches it at launch)"]
    # --disk-gb without a cached volume price
    done = jobman(env, *BASE, "--instance-type", "m5.large", "--disk-gb", "8")
    assert cost_lines(done.stdout) == [
        "worst case: unknown (no cached gp3 volume price in us-east-1; the daemon fetches it at launch)"]


def test_daemon_default_types_are_priced_and_an_excess_is_said(tmp_path: Path) -> None:
    """Without --instance-type the ladder is the daemon's default types; the schedule-time check
    prices only the job's own types, so the dry run is where an excess over --max-cost shows."""
    cache(tmp_path, m5_large=0.096, t3_micro=0.0104)
    env = env_for(tmp_path, JOBMAN_INSTANCE_TYPE="t3.micro,m5.large")
    done = jobman(env, *BASE, "--timeout", "2h", "--max-cost", "0.1")
    assert done.returncode == 0, done.stderr
    # 0.096 $/h x 2 h = 0.192
    assert cost_lines(done.stdout) == [
        "worst case: $0.19 (m5.large at $0.096/h for the 7200 s timeout; on-demand prices in us-east-1, "
        "cached 2026-12-01)",
        "over --max-cost $0.10: the daemon would refuse the launch (launch-failed)"]
    # the job's own types over the limit: schedule's existing check refuses, dry run or not
    refused = jobman(env, *BASE, "--instance-type", "m5.large", "--timeout", "2h", "--max-cost", "0.1")
    assert refused.returncode == 2 and refused.stderr.startswith("Error: --max-cost: the worst case is $0.19"), \
        refused.stderr


def test_a_region_set_only_in_an_aws_profile_is_used(tmp_path: Path) -> None:
    """No AWS_REGION: the dry run finds the profile's region (as the daemon would) and prices in it."""
    cache(tmp_path, m5_large=0.096)
    profile = tmp_path / "aws-config"
    profile.write_text("[default]\nregion = us-east-1\n")
    env = env_for(tmp_path, AWS_CONFIG_FILE=str(profile))
    del env["AWS_REGION"]
    done = jobman(env, *BASE, "--instance-type", "m5.large", "--timeout", "1h", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["worst-case-cost"] == {
        "usd": 0.096, "basis": "m5.large at $0.096/h for the 3600 s timeout; on-demand prices in us-east-1, "
                               "cached 2026-12-01"}


def test_a_stale_cached_price_is_shown_with_its_date_not_fetched_again(tmp_path: Path) -> None:
    """The daemon would fetch a price older than the cache's max age again; a dry run must not, so it
    shows the stale one with the date it was cached (the reader judges it)."""
    cache(tmp_path, m5_large=0.096)
    done = jobman(env_for(tmp_path, JOBMAN_PRICE_MAX_AGE="1"), *BASE, "--instance-type", "m5.large", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["worst-case-cost"]["usd"] == 0.096


def test_the_cost_needs_no_aws_client(tmp_path: Path) -> None:
    """In-process, with one price cached and one not: no boto3/botocore imported, so no AWS call can
    have been made (a source that fetched the missing price would import botocore)."""
    cache(tmp_path, m5_large=0.096)
    argv = [*BASE, "--instance-type", "m5.large,c7i.large", "--timeout", "1h", "--json"]
    program = ("import sys\nfrom jobman_cli.cli import cli\n"
               f"code = cli.main({argv!r}, standalone_mode=False)\n"
               "print(code, 'boto3' in sys.modules, 'botocore' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", program], env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.stderr.strip().endswith("0 False False"), done.stderr
    assert json.loads(done.stdout)["worst-case-cost"] == {
        "usd": None, "basis": "no cached on-demand price for c7i.large in us-east-1; the daemon fetches it at launch"}
