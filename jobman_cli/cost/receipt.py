"""The receipt's arithmetic and words (pure: no AWS, no clock), so a test can check it to the cent.

    cost = billed_seconds x hourly / 3600  +  volume_GiB x GB_month / 730 / 3600 x billed_seconds

``billed_seconds`` is the instance's running time (EC2's ``LaunchTime`` to the job's end), at
least 60: AWS bills Linux instances and EBS volumes per second with a one-minute minimum. 730 is
the hours of a month in AWS's own monthly figures (the Price List's GB-month; AWS prorates by the
calendar month, so in a 31-day month the volume part is about 2 % lower than this). The stored
cost is the exact float (USD); only :func:`format_usd` rounds, for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .quote import Quote

MIN_BILLED_SECONDS = 60
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class RunFacts:
    """What was billed: the instance's type, region, zone, market and run, and its root volume.

    ``start_source``: where ``start`` came from (EC2's launch time, or jobman's own record when the
    instance is no longer listed). ``volume_gb``/``volume_type`` None: unknown, ``volume_why`` says why."""

    instance_type: str
    region: str
    zone: str | None
    market: str
    start: datetime
    start_source: str
    end: datetime
    volume_gb: int | None = None
    volume_type: str | None = None
    volume_why: str = ""


@dataclass(frozen=True)
class Receipt:
    cost: float | None
    basis: str


def unknown(why: str) -> Receipt:
    """A receipt without a figure: never a made-up number."""
    return Receipt(None, f"unknown: {' '.join(why.split())}")


def format_usd(usd: float | None) -> str:
    """``$1.23``; under a cent, four places (``$0.0042``) so a short job does not read as free."""
    if usd is None:
        return "unknown"
    if 0 < abs(usd) < 0.005:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def _price(usd: float) -> str:
    return f"${usd:.6f}".rstrip("0").rstrip(".") if usd else "$0"


def _when(quote: Quote) -> str:
    return f"{quote.source}, fetched {quote.fetched_at:%Y-%m-%d}"


def billed_seconds(start: datetime, end: datetime) -> tuple[float, float]:
    """``(running seconds, billed seconds)``: the run, and the run with the one-minute minimum."""
    seconds = max(0.0, (end - start).total_seconds())
    return seconds, max(float(MIN_BILLED_SECONDS), seconds)


def compute(facts: RunFacts, hourly: Quote, volume: Quote | None) -> Receipt:
    """The receipt of one run. ``volume`` None: the root volume is left out, and the basis says why."""
    seconds, billed = billed_seconds(facts.start, facts.end)
    cost = billed * hourly.usd / 3600.0
    where = facts.zone if facts.market == "spot" and facts.zone else facts.region
    parts = [f"{facts.market} {facts.instance_type} {where} {_price(hourly.usd)}/h ({_when(hourly)}"
             + (f"; {hourly.note})" if hourly.note else ")")]
    if volume is not None and facts.volume_gb is not None:
        cost += facts.volume_gb * volume.usd * billed / (HOURS_PER_MONTH * 3600.0)
        parts.append(f"{facts.volume_gb} GiB {facts.volume_type} {_price(volume.usd)}/GB-month ({_when(volume)})")
    else:
        parts.append(f"root volume not included ({facts.volume_why or 'its size is unknown'})")
    run = f"{seconds:.0f} s" if billed == seconds else f"{seconds:.0f} s billed as {MIN_BILLED_SECONDS} s"
    return Receipt(cost, f"{' + '.join(parts)}; {run} from {facts.start_source}")
