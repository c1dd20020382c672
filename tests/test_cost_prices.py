"""On-demand prices from the Price List API (botocore Stubber: moto has no ``pricing``), the price
cache and its refresh age, and the spot price history (moto, and the time-weighting by hand)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from cost_fixtures import instance_answer, instance_params, stubbed_pricing, volume_answer, volume_params
from jobman_cli.cost.cache import PriceCache
from jobman_cli.cost.prices_ondemand import OnDemandPrices, instance_filters
from jobman_cli.cost.prices_spot import spot_average, time_weighted
from jobman_cli.cost.quote import PriceUnavailable

UTC = timezone.utc
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def prices(tmp_path, client, clock=None, max_age=7 * 86400):
    return OnDemandPrices(PriceCache(tmp_path / "prices.json", max_age), lambda: client, clock or Clock(NOW))


def test_instance_and_volume_prices_from_the_price_list(tmp_path):
    client, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer(), instance_params())
    stubber.add_response("get_products", volume_answer(), volume_params())
    source = prices(tmp_path, client)
    hourly = source.instance_hourly("m7i.large", "us-east-1")
    volume = source.volume_gb_month("gp3", "us-east-1")
    stubber.assert_no_pending_responses()  # the exact filters were sent (Stubber checks the params)
    assert (hourly.usd, hourly.unit, hourly.source, hourly.fetched_at) == (0.1008, "hour", "Price List", NOW)
    assert (volume.usd, volume.unit) == (0.08, "GB-month")
    fields = {f["Field"]: f["Value"] for f in instance_filters("m7i.large", "us-east-1")}
    assert fields == {"instanceType": "m7i.large", "regionCode": "us-east-1", "operatingSystem": "Linux",
                      "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
                      "operation": "RunInstances"}


def test_the_cache_answers_until_its_refresh_age_then_fetches_again(tmp_path):
    client, stubber = stubbed_pricing()
    clock = Clock(NOW)
    stubber.add_response("get_products", instance_answer(usd="0.1008000000"), instance_params())
    source = prices(tmp_path, client, clock, max_age=7 * 86400)
    assert source.instance_hourly("m7i.large", "us-east-1").usd == 0.1008
    # a second process reads the same file: no call (the Stubber has no response left; a call would fail)
    clock.now = NOW + timedelta(days=7)
    again = prices(tmp_path, client, clock, max_age=7 * 86400).instance_hourly("m7i.large", "us-east-1")
    assert (again.usd, again.fetched_at) == (0.1008, NOW)
    # one second past the age: fetched again, and the new price is cached with its new time
    clock.now = NOW + timedelta(days=7, seconds=1)
    stubber.add_response("get_products", instance_answer(usd="0.1100000000"), instance_params())
    fresh = prices(tmp_path, client, clock, max_age=7 * 86400).instance_hourly("m7i.large", "us-east-1")
    stubber.assert_no_pending_responses()
    assert (fresh.usd, fresh.fetched_at) == (0.11, clock.now)
    stored = json.loads((tmp_path / "prices.json").read_text())
    assert stored["prices"]["on-demand/us-east-1/m7i.large"]["usd"] == 0.11
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # the atomic write left no temp file


def test_a_corrupt_cache_file_is_an_empty_cache(tmp_path):
    (tmp_path / "prices.json").write_text('{"format": 1, "prices": {"on-demand/us-east-1/m7i.large": ')
    client, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer(), instance_params())
    assert prices(tmp_path, client).instance_hourly("m7i.large", "us-east-1").usd == 0.1008


CORRUPT_ENTRIES = [
    {"usd": float("nan")}, {"usd": float("inf")}, {"usd": -1}, {"usd": "0.1"}, {"usd": True}, {"usd": None},
    {"fetched-at": None}, {"fetched-at": "yesterday"}, {"fetched-at": 20261201}, {"fetched-at": "2099-01-01T00:00:00Z"},
    {"unit": None},
]


def _entry(**override):
    entry = {"usd": 0.05, "unit": "hour", "source": "Price List", "fetched-at": "2026-12-02T00:00:00Z"}
    entry.update(override)
    return entry


@pytest.mark.parametrize("override", CORRUPT_ENTRIES, ids=lambda o: repr(o)[:40])
def test_a_corrupt_cache_entry_is_fetched_again_never_used(tmp_path, override):
    """(review finding 9) An entry jobman would never write: NaN, inf, negative or non-number prices,
    a missing, unparseable or future fetch time. Never a traceback, never the entry's price."""
    key = "on-demand/us-east-1/m7i.large"
    # the file as Python's json writes non-finite floats (NaN / Infinity literals)
    (tmp_path / "prices.json").write_text(json.dumps({"format": 1, "prices": {key: _entry(**override)}}))
    cache = PriceCache(tmp_path / "prices.json")
    assert cache.get(key, NOW) is None
    assert cache.get(key) is None  # the schedule-time read (no refresh age) does not use it either
    client, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer(), instance_params())
    assert prices(tmp_path, client).instance_hourly("m7i.large", "us-east-1").usd == 0.1008
    stubber.assert_no_pending_responses()  # fetched again
    assert PriceCache(tmp_path / "prices.json").get(key, NOW).usd == 0.1008  # and the good price replaced it


def test_a_well_formed_cache_entry_is_used(tmp_path):
    """The other side of the test above: the same file with a valid entry is answered from the cache."""
    key = "on-demand/us-east-1/m7i.large"
    (tmp_path / "prices.json").write_text(json.dumps({"format": 1, "prices": {key: _entry()}}))
    quote = PriceCache(tmp_path / "prices.json").get(key, NOW)
    assert (quote.usd, quote.fetched_at) == (0.05, datetime(2026, 12, 2, tzinfo=UTC))
    (tmp_path / "prices.json").write_text(json.dumps({"format": 1, "prices": {key: _entry(usd=0)}}))
    assert PriceCache(tmp_path / "prices.json").get(key, NOW).usd == 0.0  # zero is a price (not garbage)


@pytest.mark.parametrize("code, status, transient", [
    ("ThrottlingException", 400, True), ("InternalErrorException", 500, True),
    ("AccessDeniedException", 400, False), ("InvalidParameterException", 400, False),
])
def test_a_refused_fetch_says_why_and_whether_to_try_again(tmp_path, code, status, transient):
    client, stubber = stubbed_pricing()
    stubber.add_client_error("get_products", service_error_code=code, service_message="nope",
                             http_status_code=status, expected_params=instance_params())
    with pytest.raises(PriceUnavailable) as caught:
        prices(tmp_path, client).instance_hourly("m7i.large", "us-east-1")
    assert caught.value.transient is transient
    assert str(caught.value) == f"Price List price of on-demand m7i.large in us-east-1: {code}: nope"
    assert not (tmp_path / "prices.json").exists()  # nothing cached from a failure


def test_no_product_or_several_prices_is_unknown_never_a_guess(tmp_path):
    client, stubber = stubbed_pricing()
    stubber.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": []}, instance_params())
    with pytest.raises(PriceUnavailable, match="has no on-demand USD price for on-demand m7i.large") as caught:
        prices(tmp_path, client).instance_hourly("m7i.large", "us-east-1")
    assert not caught.value.transient
    two = instance_answer()
    two["PriceList"] += instance_answer(usd="0.2000000000")["PriceList"]
    stubber.add_response("get_products", two, instance_params())
    with pytest.raises(PriceUnavailable, match=r"several prices .*\(\$0.1008, \$0.2\)"):
        prices(tmp_path, client).instance_hourly("m7i.large", "us-east-1")


def test_an_unreachable_endpoint_is_transient(tmp_path):
    import boto3
    from botocore.config import Config

    client = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x").client(
        "pricing", region_name="us-east-1", endpoint_url="http://127.0.0.1:1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2))
    with pytest.raises(PriceUnavailable, match="EndpointConnectionError") as caught:
        prices(tmp_path, client).instance_hourly("m7i.large", "us-east-1")
    assert caught.value.transient


# ----------------------------------------------------------------------------- spot
def test_time_weighted_average_by_hand():
    t = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    points = [(t - timedelta(hours=1), 0.04), (t + timedelta(minutes=30), 0.06), (t + timedelta(hours=2), 0.5)]
    # run 10:00..11:30: 30 min at 0.04, 60 min at 0.06 -> (0.5*0.04 + 1*0.06) / 1.5 = 0.08/1.5
    average, used, covered = time_weighted(points, t, t + timedelta(minutes=90))
    assert average == pytest.approx((0.5 * 0.04 + 1.0 * 0.06) / 1.5, abs=1e-12)
    assert (used, covered) == (2, True)
    # no price at or before the start: the first one is used back to the launch, and it is said
    average, used, covered = time_weighted(points[1:], t, t + timedelta(hours=1))
    assert (average, covered) == (pytest.approx(0.06), False)


def test_spot_average_from_moto_price_history(mock_ec2):
    start = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    quote = spot_average(mock_ec2, "m7i.large", "us-east-1a", start, start + timedelta(hours=1), NOW)
    # moto answers one Linux/UNIX (Amazon VPC) price of 0.00001 per zone, dated 2006
    assert (quote.usd, quote.unit, quote.source) == (0.00001, "hour", "spot price history")
    assert quote.note == "time-weighted over 1 price(s)"
    with pytest.raises(PriceUnavailable, match="no spot price history for spot m7i.large in us-east-9z"):
        spot_average(mock_ec2, "m7i.large", "us-east-9z", start, start + timedelta(hours=1), NOW)
