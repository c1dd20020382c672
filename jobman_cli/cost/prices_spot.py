"""The spot price of a run: ``DescribeSpotPriceHistory``, time-weighted over launch..end.

A spot instance is billed at the spot price in effect during each second it runs, and that price
changes (rarely, and smoothly, since 2017). AWS answers a start..end query with every change in
the window plus the last change before it (the price in effect at the start), so the average is
exact: each price weighted by the seconds it was in effect within the run. The history goes back
90 days; a run older than that has no spot price (the receipt says so).

The zone is asked with the ``availability-zone`` filter (which moto also honours) and the product
is checked on our side (``Linux/UNIX`` or ``Linux/UNIX (Amazon VPC)``): jobman launches Linux only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from .quote import PriceUnavailable, Quote, from_aws_error

SOURCE = "spot price history"
LINUX = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")


def time_weighted(points: Iterable[tuple[datetime, float]], start: datetime, end: datetime) -> tuple[float, int, bool]:
    """The average price over ``start..end`` of a step function given by ``(time, price)``
    changes: ``(average, changes used, covered)``. ``covered`` is False when no change is at or
    before ``start`` (the first known price is then used back to the start)."""
    ordered = sorted(points)
    if not ordered:
        raise ValueError("no price points")
    if end <= start:
        before = [p for t, p in ordered if t <= start]
        return (before[-1] if before else ordered[0][1]), 1, bool(before)
    covered = ordered[0][0] <= start
    total = 0.0
    used = 0
    for i, (at, price) in enumerate(ordered):
        until = ordered[i + 1][0] if i + 1 < len(ordered) else end
        lo = start if i == 0 else max(at, start)  # the first price also covers any gap before it
        hi = min(until, end)
        if hi > lo:
            total += price * (hi - lo).total_seconds()
            used += 1
    return total / (end - start).total_seconds(), used, covered


def spot_average(ec2: Any, instance_type: str, zone: str, start: datetime, end: datetime,
                 now: datetime | None = None) -> Quote:
    """The time-weighted spot price of ``instance_type`` in ``zone`` over ``start..end``."""
    what = f"spot {instance_type} in {zone}"
    points: list[tuple[datetime, float]] = []
    try:
        pages = ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=[instance_type], StartTime=start, EndTime=end,
            Filters=[{"Name": "availability-zone", "Values": [zone]}])
        for page in pages:
            for item in page.get("SpotPriceHistory") or ():
                if item.get("ProductDescription") not in LINUX or item.get("AvailabilityZone") != zone:
                    continue
                at = item["Timestamp"]
                at = at.astimezone(timezone.utc) if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
                points.append((at, float(item["SpotPrice"])))
    except Exception as exc:
        raise from_aws_error(exc, f"spot price history of {what}") from None
    if not points:
        raise PriceUnavailable(f"no spot price history for {what} over the run (it keeps 90 days)")
    average, used, covered = time_weighted(points, start, end)
    note = f"time-weighted over {used} price(s)"
    if not covered:
        note += "; the earliest price in the history was used back to the launch"
    return Quote(usd=average, unit="hour", source=SOURCE, fetched_at=now or datetime.now(timezone.utc), note=note)
