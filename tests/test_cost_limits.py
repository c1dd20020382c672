"""``--max-cost``: the worst case (most expensive rung x timeout + volume), refused at schedule time
from cached prices (never AWS) and at launch time from fetched ones (launch-failed naming the limit)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from conftest import make_draft
from cost_fixtures import instance_answer, instance_params, stubbed_pricing
from jobman_cli.cost.cache import PriceCache
from jobman_cli.cost.limits import check_at_schedule, launch_refusal
from jobman_cli.cost.prices_ondemand import OnDemandPrices
from jobman_cli.cost.quote import Quote
from jobman_cli.errors import InvalidInput

UTC = timezone.utc
FETCHED = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def cache_with(tmp_path, **prices: float) -> PriceCache:
    cache = PriceCache(tmp_path / "prices.json")
    for key, usd in prices.items():
        kind, _, name = key.partition("__")
        unit = "GB-month" if kind == "ebs" else "hour"
        key = f"{kind.replace('_', '-')}/us-east-1/{name.replace('_', '.')}"
        cache.put(key, Quote(usd, unit, "Price List", FETCHED))
    return cache


def cache_only(cache: PriceCache) -> OnDemandPrices:
    def no_network():
        raise AssertionError("the schedule-time check must not call AWS")
    return OnDemandPrices(cache, no_network)


def test_schedule_time_refuses_a_worst_case_over_the_limit_from_the_cache(tmp_path):
    prices = cache_only(cache_with(tmp_path, on_demand__m7i_large=0.1008, on_demand__m6i_large=0.096))
    job = make_draft(instance_type="m6i.large,m7i.large", timeout=36000, max_cost=1.0)
    # worst rung m7i.large: 10 h x $0.1008 = $1.008 > $1.00
    with pytest.raises(InvalidInput) as caught:
        check_at_schedule(job, "--max-cost", prices=prices, region="us-east-1")
    assert str(caught.value) == ("--max-cost: the worst case is $1.01 (m7i.large at $0.1008/h for the 36000 s timeout, "
                                 "on-demand prices in us-east-1 cached 2026-12-01), over the limit of $1.00")
    check_at_schedule(make_draft(instance_type="m6i.large,m7i.large", timeout=36000, max_cost=1.01),
                      "--max-cost", prices=prices, region="us-east-1")  # $1.008 <= $1.01: accepted


def test_schedule_time_counts_the_disk(tmp_path):
    prices = cache_only(cache_with(tmp_path, on_demand__t3_micro=0.0104, ebs__gp3=0.08))
    # 730 h: 730 x 0.0104 = 7.592; 1000 GiB x 0.08 x 730 h / 730 = 80 -> $87.592
    job = make_draft(instance_type="t3.micro", timeout=730 * 3600, disk_gb=1000, max_cost=87.59)
    with pytest.raises(InvalidInput, match=r"the worst case is \$87.5920 \(t3.micro at \$0.0104/h for the 2628000 s "
                                           r"timeout \+ 1000 GiB gp3"):
        check_at_schedule(job, "max-cost", prices=prices, region="us-east-1")
    check_at_schedule(make_draft(instance_type="t3.micro", timeout=730 * 3600, disk_gb=1000, max_cost=87.6),
                      "max-cost", prices=prices, region="us-east-1")


@pytest.mark.parametrize("fields", [
    dict(instance_type="m7i.large,c7i.large"),  # c7i.large not cached: the launch decides
    dict(instance_type=None),                     # the daemon's default type: not known here
    dict(instance_type="m7i.large", disk_gb=100),  # the gp3 price is not cached
])
def test_schedule_time_leaves_what_it_cannot_know_to_the_launch(tmp_path, fields):
    prices = cache_only(cache_with(tmp_path, on_demand__m7i_large=0.1008))
    check_at_schedule(make_draft(timeout=360000, max_cost=0.01, **fields), "max-cost", prices=prices,
                      region="us-east-1")


def test_schedule_time_without_a_region_decides_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("jobman_cli.cost.limits._configured_region", lambda: None)
    prices = cache_only(cache_with(tmp_path, on_demand__m7i_large=0.1008))
    check_at_schedule(make_draft(instance_type="m7i.large", timeout=360000, max_cost=0.01), "max-cost", prices=prices)


def test_launch_time_fetches_prices_and_refuses_naming_the_limit(tmp_path):
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer("m7i.large"), instance_params("m7i.large"))
    stubber.add_response("get_products", instance_answer("m6i.large", usd="0.0960000000"), instance_params("m6i.large"))
    prices = OnDemandPrices(PriceCache(tmp_path / "prices.json"), lambda: pricing)
    job = make_draft(timeout=7200, max_cost=0.2)
    error = launch_refusal(job, ["m7i.large", "m6i.large", "m7i.large"], region="us-east-1", prices=prices)
    # 2 h x $0.1008 = $0.2016 > $0.20
    assert error is not None and not error.retryable and error.code == "MaxCostExceeded"
    assert str(error) == ("MaxCostExceeded: the worst case is $0.2016 (m7i.large at $0.1008/h for the 7200 s timeout, "
                          "on-demand prices in us-east-1), over --max-cost $0.20")
    assert launch_refusal(make_draft(timeout=7200, max_cost=0.21), ["m7i.large", "m6i.large"], region="us-east-1",
                          prices=prices) is None  # from the cache now: the Stubber has no answer left
    stubber.assert_no_pending_responses()


def test_launch_time_without_a_limit_does_nothing():
    class Boom:
        def __getattr__(self, name):
            raise AssertionError("no price lookup for a job without --max-cost")
    assert launch_refusal(make_draft(), ["m7i.large"], Boom(), prices=Boom()) is None


@pytest.mark.parametrize("code, retryable", [("ThrottlingException", True), ("AccessDeniedException", False)])
def test_launch_time_price_unknown_is_retried_or_fails_never_ignored(tmp_path, code, retryable):
    pricing, stubber = stubbed_pricing()
    stubber.add_client_error("get_products", code, "no", expected_params=instance_params("m7i.large"))
    prices = OnDemandPrices(PriceCache(tmp_path / "prices.json"), lambda: pricing)
    error = launch_refusal(make_draft(max_cost=5), ["m7i.large"], region="us-east-1", prices=prices)
    assert error is not None and error.retryable is retryable
    assert error.code == "MaxCostUnchecked"  # (F10a) not "exceeded": nothing says it is over
    assert str(error).startswith(f"MaxCostUnchecked: cannot check --max-cost $5.00: Price List price of on-demand "
                                 f"m7i.large in us-east-1: {code}: no")


def test_the_cache_file_is_what_schedule_reads(tmp_path, monkeypatch):
    """The default source reads $JOBMAN_HOME/prices.json (written by the daemon's receipts)."""
    home = tmp_path / "home"
    monkeypatch.setenv("JOBMAN_HOME", str(home))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    cache_with(home, on_demand__m7i_large=0.1008)
    assert json.loads((home / "prices.json").read_text())["prices"]["on-demand/us-east-1/m7i.large"]["usd"] == 0.1008
    with pytest.raises(InvalidInput, match="over the limit of \\$0.10"):
        check_at_schedule(make_draft(instance_type="m7i.large", timeout=3600, max_cost=0.1), "--max-cost")


@pytest.mark.parametrize("value", [1e-300, 1.5e-06, 0.0000001])
def test_a_json_max_cost_below_a_millionth_is_refused_like_the_string_form(value):
    """(review finding 12) The REST API's JSON number 1e-300 was accepted (the string form allows 6
    decimals); now both are refused, and a millionth is the smallest limit either way."""
    from jobman_cli.capacity import parse_max_cost

    with pytest.raises(InvalidInput, match="at most 6 decimals"):
        parse_max_cost(value)
    with pytest.raises(InvalidInput):
        parse_max_cost(f"{value:.7f}")
    assert parse_max_cost(0.000001) == parse_max_cost("0.000001") == 1e-06
    assert parse_max_cost(2.5) == parse_max_cost("2.50") == 2.5
    assert parse_max_cost(1000.0) == 1000.0
