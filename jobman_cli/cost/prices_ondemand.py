"""On-demand prices from the AWS Price List API (``pricing:GetProducts``), through the cache.

The Price List Query API is served from ``us-east-1`` (and two other regions) whatever region the
instances run in; the region of the price is a filter (``regionCode``). Each ``PriceList`` entry
is a JSON *string* (shape: the AWS CLI's documented example for ``aws pricing get-products``, in
aws/aws-cli ``awscli/examples/pricing/get-products.rst``)::

    {"product": {"productFamily": ..., "attributes": {...}, "sku": "SKU"},
     "terms": {"OnDemand": {"SKU.OFFER": {"priceDimensions": {"SKU.OFFER.RATE":
         {"unit": "Hrs" | "GB-Mo", "pricePerUnit": {"USD": "0.1008000000"}, ...}}, ...}}}, ...}

The filters pin one product: Linux, shared tenancy, no pre-installed software, capacity status
``Used`` (the plain on-demand instance-hour, not a reservation's), ``RunInstances`` (Linux without
a licence). Anything else (no product, several with different prices, no USD dimension) is a
final "unknown", never a guess.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any, Callable

from .cache import PriceCache
from .quote import PriceUnavailable, Quote, from_aws_error

SOURCE = "Price List"
PRICING_REGION = "us-east-1"


def instance_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """The GetProducts filters of one on-demand Linux instance-hour."""
    fields = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
              "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "operation": "RunInstances"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def volume_filters(volume_type: str, region: str) -> list[dict[str, str]]:
    """The GetProducts filters of one EBS volume type's GB-month of storage."""
    fields = {"productFamily": "Storage", "volumeApiName": volume_type, "regionCode": region}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def usd_prices(price_list: list[Any], unit: str) -> set[float]:
    """Every on-demand USD price per ``unit`` in a GetProducts ``PriceList`` (strings or dicts)."""
    found: set[float] = set()
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        terms = (product.get("terms") or {}).get("OnDemand") or {}
        for term in terms.values():
            for dimension in (term.get("priceDimensions") or {}).values():
                usd = (dimension.get("pricePerUnit") or {}).get("USD")
                if dimension.get("unit") == unit and usd is not None:
                    found.add(float(usd))
    return found


class OnDemandPrices:
    """Instance-hour and EBS GB-month prices. ``client_factory()`` returns a ``pricing`` client
    (tests pass one wrapped in botocore's Stubber); ``clock()`` returns now (UTC)."""

    def __init__(self, cache: PriceCache, client_factory: Callable[[], Any] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        from datetime import timezone

        self.cache = cache
        self._factory = client_factory or default_pricing_client
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._client: Any = None
        self._lock = threading.Lock()

    def _pricing(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def instance_hourly(self, instance_type: str, region: str) -> Quote:
        return self._quote(f"on-demand/{region}/{instance_type}", "Hrs", "hour",
                           instance_filters(instance_type, region), f"on-demand {instance_type} in {region}")

    def volume_gb_month(self, volume_type: str, region: str) -> Quote:
        return self._quote(f"ebs/{region}/{volume_type}", "GB-Mo", "GB-month",
                           volume_filters(volume_type, region), f"EBS {volume_type} in {region}")

    def cached_instance_hourly(self, instance_type: str, region: str) -> Quote | None:
        """From the cache only (fresh or not): the schedule-time ``--max-cost`` check never calls AWS."""
        return self.cache.get(f"on-demand/{region}/{instance_type}")

    def cached_volume_gb_month(self, volume_type: str, region: str) -> Quote | None:
        return self.cache.get(f"ebs/{region}/{volume_type}")

    def _quote(self, key: str, list_unit: str, unit: str, filters: list[dict[str, str]], what: str) -> Quote:
        now = self._clock()
        cached = self.cache.get(key, now)
        if cached is not None:
            return cached
        try:
            answer = self._pricing().get_products(ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1",
                                                  MaxResults=100)
        except PriceUnavailable:
            raise
        except Exception as exc:  # botocore's errors: sorted into transient or final
            raise from_aws_error(exc, f"Price List price of {what}") from None
        try:
            prices = usd_prices(list(answer.get("PriceList") or ()), list_unit)
        except (ValueError, TypeError, AttributeError) as exc:
            raise PriceUnavailable(f"Price List answer for {what} is not readable: {exc}") from None
        if not prices:
            raise PriceUnavailable(f"the Price List has no on-demand USD price for {what}")
        if len(prices) > 1:
            shown = ", ".join(f"${p:g}" for p in sorted(prices))
            raise PriceUnavailable(f"the Price List has several prices for {what} ({shown})")
        quote = Quote(usd=prices.pop(), unit=unit, source=SOURCE, fetched_at=now)
        try:
            self.cache.put(key, quote)
        except OSError:
            pass  # an unwritable cache costs a fetch next time, not the receipt
        return quote


def default_pricing_client() -> Any:
    """A ``pricing`` client in :data:`PRICING_REGION`, with short timeouts and standard retries."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 3},
                    user_agent_extra="jobman")
    try:
        return boto3.session.Session().client("pricing", region_name=PRICING_REGION, config=config)
    except Exception as exc:
        raise from_aws_error(exc, "cannot configure the Price List client") from None
