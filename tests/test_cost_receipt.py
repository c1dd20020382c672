"""The cost receipt: the exact figure of a run of known length (arithmetic written out), the facts
read from EC2 (moto) with prices from the Price List (botocore Stubber) or the spot history (moto),
and what is said when a price or a fact is missing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import make_draft
from cost_fixtures import instance_answer, instance_params, stubbed_pricing, volume_answer, volume_params
from jobman_cli.cost.cache import PriceCache
from jobman_cli.cost.pricer import AwsPricer, region_of_zone
from jobman_cli.cost.prices_ondemand import OnDemandPrices
from jobman_cli.cost.quote import PriceUnavailable, Quote
from jobman_cli.cost.receipt import RunFacts, compute, format_usd
from jobman_cli.model import JobStatus, format_time
from jobman_cli.render import sheet_rows

UTC = timezone.utc
FETCHED = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


def facts(seconds: float, **kw) -> RunFacts:
    fields = dict(instance_type="m7i.large", region="us-east-1", zone="us-east-1a", market="on-demand",
                  start=START, start_source="EC2 launch time", end=START + timedelta(seconds=seconds),
                  volume_gb=8, volume_type="gp3")
    fields.update(kw)
    return RunFacts(**fields)


HOURLY = Quote(0.1008, "hour", "Price List", FETCHED)
GP3 = Quote(0.08, "GB-month", "Price List", FETCHED)


def test_a_run_of_known_length_costs_exactly_this():
    receipt = compute(facts(5400), HOURLY, GP3)
    # instance: 5400 s x $0.1008/h / 3600         = 1.5 h x 0.1008          = $0.1512
    # volume:   8 GiB x $0.08/GB-month x 5400 s / (730 h x 3600 s) = 0.64 x 1.5 / 730 = $0.00131506849...
    # total                                                                  = $0.15251506849... -> $0.15
    assert receipt.cost == pytest.approx(0.1512 + 0.64 * 1.5 / 730, abs=1e-12)
    assert round(receipt.cost, 2) == 0.15 and format_usd(receipt.cost) == "$0.15"
    assert receipt.basis == ("on-demand m7i.large us-east-1 $0.1008/h (Price List, fetched 2026-12-03) + "
                             "8 GiB gp3 $0.08/GB-month (Price List, fetched 2026-12-03); 5400 s from EC2 launch time")


def test_ten_hours_on_a_bigger_type_to_the_cent():
    # 36000 s x $1.536/h / 3600 = 10 x 1.536 = $15.36; 100 GiB x $0.08 x 10 / 730 = $0.10958904 -> $15.47
    big = Quote(1.536, "hour", "Price List", FETCHED)
    receipt = compute(facts(36000, instance_type="m7i.8xlarge", volume_gb=100), big, GP3)
    assert format_usd(receipt.cost) == "$15.47"
    assert receipt.cost == pytest.approx(15.36 + 8.0 * 10 / 730, abs=1e-12)


def test_a_run_under_a_minute_is_billed_a_minute():
    receipt = compute(facts(12), HOURLY, GP3)
    # 60 s x 0.1008 / 3600 = 0.00168; 8 x 0.08 x 60 / (730 x 3600) = 0.0000146118...
    assert receipt.cost == pytest.approx(0.00168 + 0.64 * 60 / (730 * 3600), abs=1e-15)
    assert receipt.basis.endswith("; 12 s billed as 60 s from EC2 launch time")
    assert format_usd(receipt.cost) == "$0.0017"


def test_an_unknown_root_volume_is_left_out_and_said():
    receipt = compute(facts(3600, volume_gb=None, volume_type=None, volume_why="the instance's AMI is not known"),
                      HOURLY, None)
    assert receipt.cost == pytest.approx(0.1008)
    assert "root volume not included (the instance's AMI is not known)" in receipt.basis


def test_region_of_zone():
    assert region_of_zone("us-east-1a") == "us-east-1"
    assert region_of_zone("ap-southeast-2c") == "ap-southeast-2"
    assert region_of_zone("us-gov-west-1b") == "us-gov-west-1"
    assert region_of_zone("nonsense") is None and region_of_zone(None) is None
    # Local Zones and Wavelength Zones: their parent region (review finding 12)
    assert region_of_zone("us-east-1-bos-1a") == "us-east-1"
    assert region_of_zone("us-west-2-lax-1b") == "us-west-2"
    assert region_of_zone("us-east-1-wl1-bos-wlz-1") == "us-east-1"
    assert region_of_zone("ap-northeast-1-wl1-nrt-wlz-1") == "ap-northeast-1"
    assert region_of_zone("us-east-1") is None and region_of_zone("use1-az1") is None  # a region, a zone id


# ----------------------------------------------------------------------------- from EC2 (moto)
def _pricer(tmp_path, ec2, pricing) -> AwsPricer:
    ondemand = OnDemandPrices(PriceCache(tmp_path / "prices.json"), lambda: pricing, lambda: FETCHED)
    return AwsPricer(ondemand, lambda: ec2, default_type="t3.micro", default_region="us-east-1", clock=lambda: FETCHED)


def _launch(ec2, **kw) -> dict:
    import boto3

    ami = boto3.client("ssm", "us-east-1").get_parameter(Name=AL2023)["Parameter"]["Value"]
    return ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, **kw)["Instances"][0]


def _ended(instance: dict, seconds: int, **kw):
    launched = instance["LaunchTime"].astimezone(UTC)
    return make_draft(id=7, status=JobStatus.FINISHED, instance_id=instance["InstanceId"], launched_at=launched,
                      finished_at=launched + timedelta(seconds=seconds), **kw)


def test_on_demand_receipt_from_ec2_launch_time_and_the_price_list(tmp_path, mock_ec2):
    instance = _launch(mock_ec2, InstanceType="m7i.large")
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer(), instance_params())
    # moto's AL2023 AMI has a 15 GiB 'standard' root volume; --disk-gb 8 keeps its type
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    receipt = _pricer(tmp_path, mock_ec2, pricing).receipt(_ended(instance, 5400, disk_gb=8))
    stubber.assert_no_pending_responses()
    # 1.5 h x 0.1008 = 0.1512; 8 GiB x 0.05 x 1.5 / 730 = 0.000821917... -> $0.152021917 -> $0.15
    assert receipt.cost == pytest.approx(0.1512 + 8 * 0.05 * 1.5 / 730, abs=1e-12)
    assert format_usd(receipt.cost) == "$0.15"
    assert receipt.basis == ("on-demand m7i.large us-east-1 $0.1008/h (Price List, fetched 2026-12-03) + "
                             "8 GiB standard $0.05/GB-month (Price List, fetched 2026-12-03); "
                             "5400 s from EC2 launch time")


def test_spot_receipt_from_the_spot_price_history(tmp_path, mock_ec2):
    instance = _launch(mock_ec2, InstanceType="m7i.large", InstanceMarketOptions={"MarketType": "spot"})
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    receipt = _pricer(tmp_path, mock_ec2, pricing).receipt(_ended(instance, 5400))
    # spot: moto's history is one price, $0.00001/h: 1.5 h x 0.00001 = 0.000015
    # volume: the AMI's 15 GiB x 0.05 x 1.5 / 730 = 0.0015410958...
    assert receipt.cost == pytest.approx(0.000015 + 15 * 0.05 * 1.5 / 730, abs=1e-12)
    assert receipt.basis.startswith("spot m7i.large us-east-1a $0.00001/h (spot price history, fetched 2026-12-03; "
                                    "time-weighted over 1 price(s)) + 15 GiB standard")


def test_an_instance_ec2_no_longer_lists_uses_jobmans_record_and_says_so(tmp_path, mock_ec2):
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer("m6i.large", usd="0.0960000000"), instance_params("m6i.large"))
    job = make_draft(id=8, status=JobStatus.FAILED, instance_id="i-0123456789abcdef0",
                     instance_type="m7i.large,m6i.large",
                     placement={"instance-type": "m6i.large", "availability-zone": "us-east-1b", "market": "on-demand"},
                     launched_at=START, finished_at=START + timedelta(hours=2))
    receipt = _pricer(tmp_path, mock_ec2, pricing).receipt(job)
    assert receipt.cost == pytest.approx(2 * 0.096)  # the rung that launched, not the first of the list
    assert receipt.basis.startswith("on-demand m6i.large us-east-1 $0.096/h")
    assert "root volume not included (the instance's AMI is not known)" in receipt.basis
    assert receipt.basis.endswith("7200 s from jobman's launched-at (instance i-0123456789abcdef0 is no longer "
                                  "listed by EC2)")


def test_a_price_that_cannot_be_fetched_raises_never_guesses(tmp_path, mock_ec2):
    instance = _launch(mock_ec2, InstanceType="m7i.large")
    pricing, stubber = stubbed_pricing()
    stubber.add_client_error("get_products", "AccessDeniedException", "not allowed: pricing:GetProducts",
                             expected_params=instance_params())
    with pytest.raises(PriceUnavailable, match="AccessDeniedException: not allowed: pricing:GetProducts") as caught:
        _pricer(tmp_path, mock_ec2, pricing).receipt(_ended(instance, 60))
    assert not caught.value.transient


def test_on_demand_in_a_local_zone_is_unknown_not_the_parent_regions_price(tmp_path):
    """A Local Zone's on-demand price is its own: the receipt says unknown rather than pricing the
    run at us-east-1's rate (no Price List call is made: the Stubber has no response)."""
    pricing, stubber = stubbed_pricing()
    job = make_draft(id=10, status=JobStatus.FINISHED, instance_id="i-0123456789abcdef2", instance_type="m7i.large",
                     placement={"instance-type": "m7i.large", "availability-zone": "us-east-1-bos-1a",
                                "market": "on-demand"},
                     launched_at=START, finished_at=START + timedelta(hours=1))

    class NoInstance:
        def describe_instances(self, **kw):
            return {"Reservations": []}

    with pytest.raises(PriceUnavailable, match="on-demand m7i.large in us-east-1-bos-1a: Local and Wavelength Zone "
                                               "prices are not looked up") as caught:
        _pricer(tmp_path, NoInstance(), pricing).receipt(job)
    assert not caught.value.transient


# ----------------------------------------------------------------------------- shown
def test_status_shows_the_cost_the_unknown_and_the_pending():
    done = make_draft(id=1, status=JobStatus.FINISHED, instance_id="i-1", finished_at=START)
    rows = dict(sheet_rows(done.with_cost(0.152515, "on-demand m7i.large us-east-1 $0.1008/h (...); 5400 s", START)))
    assert rows["cost"] == "$0.15 (on-demand m7i.large us-east-1 $0.1008/h (...); 5400 s)"
    rows = dict(sheet_rows(done.with_cost(None, "unknown: Price List price of ...: AccessDeniedException: no", START)))
    assert rows["cost"] == "unknown: Price List price of ...: AccessDeniedException: no"
    assert dict(sheet_rows(done))["cost"].startswith("pending")
    assert "cost" not in dict(sheet_rows(make_draft(id=2)))  # scheduled: nothing to say yet


def test_ec2_refusing_to_describe_falls_back_to_jobmans_record_and_says_why(tmp_path):
    import boto3
    from botocore.stub import Stubber

    ec2 = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x").client("ec2", region_name="us-east-1")
    ec2_stub = Stubber(ec2)
    ec2_stub.add_client_error("describe_instances", "UnauthorizedOperation", "not allowed: ec2:DescribeInstances")
    ec2_stub.activate()
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", instance_answer(), instance_params())
    job = make_draft(id=9, status=JobStatus.FINISHED, instance_id="i-0123456789abcdef1", instance_type="m7i.large",
                     launched_at=START, finished_at=START + timedelta(hours=1))
    receipt = _pricer(tmp_path, ec2, pricing).receipt(job)
    assert receipt.cost == pytest.approx(0.1008)
    assert receipt.basis.endswith("3600 s from jobman's launched-at (EC2 refused to describe the instance: "
                                  "DescribeInstances i-0123456789abcdef1: UnauthorizedOperation: not allowed: "
                                  "ec2:DescribeInstances)")


# ----------------------------------------------------------------------------- several runs (spot interruptions)
def _interrupted_then_relaunched(first: dict, second: dict, *, first_hours: float, second_seconds: int):
    """A spot job the model itself moved through an interruption and a relaunch: the first run's
    facts are in ``past_runs`` (written by ``Job._interrupted``), the second is the current instance."""
    t1 = first["LaunchTime"].astimezone(UTC)
    job = make_draft(id=11, capacity="spot-then-on-demand", max_interruptions=3, instance_type="m7i.large",
                     date_time=t1, created_at=t1)
    job = job.claimed(t1, "tok-1").launched(first["InstanceId"], t1, {
        "instance-type": "m7i.large", "availability-zone": "us-east-1a", "market": "spot"})
    job = job.reported("running", None, t1)
    job = job.reported("failed", None, t1 + timedelta(hours=first_hours), "interrupted", "spot notice")
    assert job.status is JobStatus.SCHEDULED and job.instance_id is None and len(job.past_runs) == 1
    t2 = second["LaunchTime"].astimezone(UTC)
    job = job.claimed(t2, "tok-2").launched(second["InstanceId"], t2, {
        "instance-type": "m7i.large", "availability-zone": "us-east-1a", "market": "on-demand"})
    return job.reported("finished", 0, t2 + timedelta(seconds=second_seconds))


def test_a_relaunched_spot_job_is_priced_for_every_run_each_named(tmp_path, mock_ec2):
    """(review finding 2) Five hours on spot, interrupted, then ten minutes on demand: both runs are
    billed, each at its own market's price; the receipt was only the ten minutes before."""
    first = _launch(mock_ec2, InstanceType="m7i.large", InstanceMarketOptions={"MarketType": "spot"})
    second = _launch(mock_ec2, InstanceType="m7i.large")
    job = _interrupted_then_relaunched(first, second, first_hours=5, second_seconds=600)
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    stubber.add_response("get_products", instance_answer(), instance_params())  # run 2 (the volume is cached)
    receipt = _pricer(tmp_path, mock_ec2, pricing).receipt(job)
    stubber.assert_no_pending_responses()
    # run 1: spot 5 h x $0.00001 (moto's one price) + 15 GiB x 0.05 x 5 h / 730 = 0.00005 + 0.0051369863
    # run 2: on-demand 600 s x 0.1008 / 3600 = 0.0168 + 15 GiB x 0.05 x (600/3600) h / 730 = 0.000171233
    run1 = 5 * 0.00001 + 15 * 0.05 * 5 / 730
    run2 = 600 * 0.1008 / 3600 + 15 * 0.05 * (600 / 3600) / 730
    assert receipt.cost == pytest.approx(run1 + run2, abs=1e-12)
    assert format_usd(receipt.cost) == "$0.02"
    head, tail = receipt.basis.split(" | ")
    assert head.startswith(f"2 instances: run 1 of 2 ({first['InstanceId']}, ended by a spot interruption): "
                           "$0.01 = spot m7i.large us-east-1a $0.00001/h (spot price history")
    assert head.endswith("18000 s from EC2 launch time")
    assert tail.startswith(f"run 2 of 2 ({second['InstanceId']}): $0.02 = on-demand m7i.large us-east-1 $0.1008/h")
    assert tail.endswith("600 s from EC2 launch time")


def test_a_job_cancelled_before_its_relaunch_is_priced_for_the_interrupted_run(tmp_path, mock_ec2):
    first = _launch(mock_ec2, InstanceType="m7i.large", InstanceMarketOptions={"MarketType": "spot"})
    t1 = first["LaunchTime"].astimezone(UTC)
    job = make_draft(id=12, capacity="spot", date_time=t1, created_at=t1).claimed(t1, "tok-1")
    job = job.launched(first["InstanceId"], t1, {"instance-type": "m7i.large", "availability-zone": "us-east-1a",
                                                 "market": "spot"})
    job = job.reported("failed", None, t1 + timedelta(hours=2), "interrupted", "spot notice")
    job = job.cancelled(t1 + timedelta(hours=2, minutes=1))
    assert job.instance_id is None
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    receipt = _pricer(tmp_path, mock_ec2, pricing).receipt(job)
    assert receipt.cost == pytest.approx(2 * 0.00001 + 15 * 0.05 * 2 / 730, abs=1e-12)
    assert receipt.basis.startswith("spot m7i.large us-east-1a $0.00001/h")  # one run: the basis of one run
    assert receipt.basis.endswith("7200 s from EC2 launch time")


def test_one_run_without_a_price_makes_the_whole_receipt_unknown(tmp_path, mock_ec2):
    """Never the spot run's figure presented as the job's: the on-demand run's price is refused, so
    the pricer raises (final), naming the run; the daemon stores ``unknown: run 2 of 2 ...``."""
    first = _launch(mock_ec2, InstanceType="m7i.large", InstanceMarketOptions={"MarketType": "spot"})
    second = _launch(mock_ec2, InstanceType="m7i.large")
    job = _interrupted_then_relaunched(first, second, first_hours=1, second_seconds=60)
    pricing, stubber = stubbed_pricing()
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    stubber.add_client_error("get_products", "AccessDeniedException", "not allowed: pricing:GetProducts",
                             expected_params=instance_params())
    with pytest.raises(PriceUnavailable) as caught:
        _pricer(tmp_path, mock_ec2, pricing).receipt(job)
    assert str(caught.value).startswith(f"run 2 of 2 ({second['InstanceId']}): Price List price of on-demand "
                                        "m7i.large in us-east-1")
    assert "AccessDeniedException" in str(caught.value) and not caught.value.transient


def test_a_run_with_no_start_makes_the_whole_receipt_unknown(tmp_path, mock_ec2):
    """An earlier run EC2 no longer lists and whose launch jobman did not record: no figure at all."""
    second = _launch(mock_ec2, InstanceType="m7i.large")
    t2 = second["LaunchTime"].astimezone(UTC)
    job = make_draft(id=13, status=JobStatus.FINISHED, instance_id=second["InstanceId"], launched_at=t2,
                     finished_at=t2 + timedelta(hours=1), instance_type="m7i.large",
                     past_runs=({"instance-id": "i-0123456789abcdef3", "placement": None, "launched-at": None,
                                 "ended-at": format_time(t2)},))
    pricing, stubber = stubbed_pricing()
    receipt = _pricer(tmp_path, mock_ec2, pricing).receipt(job)
    assert receipt.cost is None
    assert receipt.basis == ("unknown: run 1 of 2 (i-0123456789abcdef3, ended by a spot interruption): instance "
                             "i-0123456789abcdef3 is no longer listed by EC2, and jobman recorded no launch time")


def test_the_runs_of_a_job_whose_interruption_budget_ran_out():
    """max_interruptions=1: the first interruption is kept as a past run and the job relaunched; the
    second ends the job (failed, interrupted) on its own instance: two runs, both ended by EC2."""
    from jobman_cli.cost.runs import label, runs_of
    from jobman_cli.model import ReasonCode

    spot = {"instance-type": "m7i.large", "availability-zone": "us-east-1a", "market": "spot"}
    job = make_draft(id=14, capacity="spot", max_interruptions=1, date_time=START, created_at=START)
    job = job.claimed(START, "tok-1").launched("i-0aaa", START, spot)
    job = job.reported("failed", None, START + timedelta(hours=1), "interrupted", "notice")
    later = START + timedelta(hours=1, minutes=1)
    job = job.claimed(later, "tok-2").launched("i-0bbb", later, spot)
    job = job.reported("failed", None, later + timedelta(hours=2), "interrupted", "notice")
    assert (job.status, job.reason_code) == (JobStatus.FAILED, ReasonCode.INTERRUPTED)
    runs = runs_of(job)
    assert [(r.instance_id, r.launched_at, r.end) for r in runs] == [
        ("i-0aaa", START, START + timedelta(hours=1)), ("i-0bbb", later, later + timedelta(hours=2))]
    assert [label(r, i, 2) for i, r in enumerate(runs, 1)] == [
        "run 1 of 2 (i-0aaa, ended by a spot interruption)", "run 2 of 2 (i-0bbb, ended by a spot interruption)"]
