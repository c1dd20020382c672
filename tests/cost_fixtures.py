"""Price List answers for the cost tests, shaped like the real ``GetProducts`` answer.

Where the shape comes from: the AWS CLI's documented example output of ``aws pricing get-products``
(aws/aws-cli, ``awscli/examples/pricing/get-products.rst``): ``PriceList`` is a list of JSON
*strings*, each ``{"product": {"productFamily", "attributes", "sku"}, "serviceCode", "terms":
{"OnDemand": {"SKU.OFFER": {"priceDimensions": {"SKU.OFFER.RATE": {"unit", "pricePerUnit":
{"USD": "0.1380000000"}, ...}}, "sku", "effectiveDate", "offerTermCode", "termAttributes"}}},
"version", "publicationDate"}``; instance-hours have the unit ``Hrs``, storage ``GB-Mo``. The
prices below are m7i.large and gp3 in us-east-1 as AWS lists them (USD 0.1008/h, 0.08/GB-month).
"""

from __future__ import annotations

import json
from typing import Any

from jobman_cli.cost.prices_ondemand import instance_filters, volume_filters


def product(sku: str, family: str, attributes: dict[str, str], unit: str, usd: str, description: str) -> str:
    """One ``PriceList`` entry, as the JSON string AWS sends."""
    offer = f"{sku}.JRTCKXETXF"
    rate = f"{offer}.6YS6EN2CT7"
    return json.dumps({
        "product": {"productFamily": family, "attributes": {"servicecode": "AmazonEC2", **attributes}, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {offer: {
            "priceDimensions": {rate: {"unit": unit, "endRange": "Inf", "description": description,
                                       "appliesTo": [], "rateCode": rate, "beginRange": "0",
                                       "pricePerUnit": {"USD": usd}}},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF",
            "termAttributes": {}}}},
        "version": "20261120000000", "publicationDate": "2026-11-20T00:00:00Z",
    })


def instance_answer(instance_type: str = "m7i.large", region: str = "us-east-1",
                    usd: str = "0.1008000000") -> dict[str, Any]:
    attributes = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
                  "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "operation": "RunInstances",
                  "location": "US East (N. Virginia)", "usagetype": f"BoxUsage:{instance_type}"}
    return {"FormatVersion": "aws_v1", "PriceList": [product(
        "8VCNEHQMSCQS4P39", "Compute Instance", attributes, "Hrs", usd,
        f"${float(usd):.4f} per On Demand Linux {instance_type} Instance Hour")]}


def volume_answer(volume_type: str = "gp3", region: str = "us-east-1", usd: str = "0.0800000000") -> dict[str, Any]:
    attributes = {"volumeApiName": volume_type, "regionCode": region, "storageMedia": "SSD-backed",
                  "usagetype": "EBS:VolumeUsage.gp3", "location": "US East (N. Virginia)"}
    return {"FormatVersion": "aws_v1", "PriceList": [product(
        "7U7TWP44UP36AT3R", "Storage", attributes, "GB-Mo", usd,
        f"${float(usd):.2f} per GB-month of General Purpose (gp3) provisioned storage")]}


def instance_params(instance_type: str = "m7i.large", region: str = "us-east-1") -> dict[str, Any]:
    return {"ServiceCode": "AmazonEC2", "Filters": instance_filters(instance_type, region),
            "FormatVersion": "aws_v1", "MaxResults": 100}


def volume_params(volume_type: str = "gp3", region: str = "us-east-1") -> dict[str, Any]:
    return {"ServiceCode": "AmazonEC2", "Filters": volume_filters(volume_type, region),
            "FormatVersion": "aws_v1", "MaxResults": 100}


def stubbed_pricing():
    """A real botocore ``pricing`` client (us-east-1, fake credentials) and its Stubber, activated."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "pricing", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber
