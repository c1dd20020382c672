"""The daemon's IAM policy (setup_aws.daemon_policy) allows every AWS call a cost receipt makes:
the calls are recorded from a real receipt (moto's EC2, the Price List through botocore's Stubber),
not listed by hand."""

from __future__ import annotations


from cost_fixtures import instance_answer, instance_params, stubbed_pricing, volume_answer, volume_params
from jobman_cli.setup_aws import daemon_policy
from test_cost_receipt import _ended, _launch, _pricer


def allowed_actions() -> set[str]:
    actions: set[str] = set()
    for statement in daemon_policy("aws", "us-east-1", "123456789012", "jobman")["Statement"]:
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def recorded(client, calls: set[str]) -> None:
    prefix = client.meta.service_model.signing_name
    client.meta.events.register_first("before-parameter-build", lambda model, **_: calls.add(f"{prefix}:{model.name}"))


def test_every_call_of_an_on_demand_and_a_spot_receipt_is_in_the_daemon_policy(tmp_path, mock_ec2):
    calls: set[str] = set()
    recorded(mock_ec2, calls)
    pricing, stubber = stubbed_pricing()
    recorded(pricing, calls)
    stubber.add_response("get_products", instance_answer(), instance_params())
    stubber.add_response("get_products", volume_answer("standard", usd="0.0500000000"), volume_params("standard"))
    pricer = _pricer(tmp_path, mock_ec2, pricing)
    on_demand = _launch(mock_ec2, InstanceType="m7i.large")
    spot = _launch(mock_ec2, InstanceType="m7i.large", InstanceMarketOptions={"MarketType": "spot"})
    calls.clear()  # only the receipts' own calls
    assert pricer.receipt(_ended(on_demand, 600)).cost is not None
    assert pricer.receipt(_ended(spot, 600)).cost is not None
    assert calls == {"ec2:DescribeInstances", "ec2:DescribeImages", "ec2:DescribeSpotPriceHistory",
                     "pricing:GetProducts"}
    assert calls <= allowed_actions()
