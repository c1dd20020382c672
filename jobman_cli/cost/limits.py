"""``--max-cost USD``: refuse a launch whose worst case exceeds the limit (DESIGN.md section 13).

The worst case of a job is its most expensive rung for its whole timeout, plus its root volume:

    worst = max(hourly price of each instance type on the ladder) x timeout / 3600
            + disk_gb x gp3 GB-month price x timeout / (730 x 3600)      (only with --disk-gb)

A spot rung is bounded by its type's on-demand price (jobman's spot requests carry no max price,
and EC2's default maximum is the on-demand price), so the on-demand prices are the bound for every
market. The volume part counts only with ``--disk-gb`` (without it the AMI decides the size, which
is not known before the launch) and is priced as gp3 (Amazon Linux 2023's root volume type).

Two moments, two hooks:

* schedule time, :func:`check_at_schedule` (``JobService.validate``): from the price *cache*
  only, never AWS (``schedule`` stays fast and works offline). Only the types the job names are
  checked, in the region of the environment/config (``AWS_REGION``, ``[ec2] region``); a price
  not cached, or no region, leaves the decision to the launch. Over the limit: a usage error.
* launch time, :func:`launch_refusal` (the daemon's launch path, before any ``RunInstances``):
  the full ladder (the daemon's default types included) in the daemon's region, prices fetched if
  not cached. Over the limit: a non-retryable ``LaunchError`` coded :data:`CODE`
  (``MaxCostExceeded``: the job fails ``launch-failed`` and its reason names the limit). A limit
  that cannot be *checked* (a price that cannot be found, no region) is coded :data:`UNCHECKED`
  (``MaxCostUnchecked``: nothing says the job is over it): never silently ignored, the job is not
  launched. Transient (the Price List throttled or down): the launch path gives the attempt back and
  checks again after a back-off, not as a failed launch (no ``RunInstances`` was sent), until the
  start deadline (then ``missed-start-deadline``). Anything else (no price for that type, access
  denied): ``launch-failed`` at once (:func:`jobman_cli.daemon.unlaunched.unchecked`).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable, Sequence

from ..errors import InvalidInput, LaunchError
from ..model import Job
from .quote import PriceUnavailable, Quote
from .receipt import HOURS_PER_MONTH, format_usd

VOLUME_TYPE = "gp3"
CODE = "MaxCostExceeded"
#: The code of a limit that could not be checked (no price, no region): not an excess.
UNCHECKED = "MaxCostUnchecked"


def worst_case(job: Job, hourly: dict[str, Quote], volume: Quote | None) -> tuple[float, str]:
    """``(USD, words)``: the worst case over ``hourly`` (type -> on-demand quote)."""
    top_type = max(sorted(hourly), key=lambda t: hourly[t].usd)
    hours = job.timeout / 3600.0
    usd = hourly[top_type].usd * hours
    words = f"{top_type} at ${hourly[top_type].usd:g}/h for the {job.timeout} s timeout"
    if job.disk_gb is not None and volume is not None:
        usd += job.disk_gb * volume.usd * job.timeout / (HOURS_PER_MONTH * 3600.0)
        words += f" + {job.disk_gb} GiB {VOLUME_TYPE}"
    return usd, words


def _limit(job: Job) -> str:
    return format_usd(job.max_cost) if job.max_cost is not None and job.max_cost >= 0.01 else f"${job.max_cost:g}"


def _usd(usd: float, job: Job) -> str:
    """The worst case in cents, or to four places when cents would read as the limit itself."""
    shown = format_usd(usd)
    return f"${usd:,.4f}" if shown == _limit(job) else shown


def _types(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# --------------------------------------------------------------------------- schedule time
def check_at_schedule(draft: Job, field: str, *, prices: Any = None, region: str | None = None) -> None:
    """Raise :class:`InvalidInput` (exit 2 / HTTP 400) when cached prices already show the worst
    case above ``draft.max_cost``; otherwise return (including "not known yet")."""
    if draft.max_cost is None:
        return
    types = _types(draft.instance_type)
    region = region or _configured_region()
    if not types or not region:
        return
    prices = prices or _cache_only_prices()
    hourly: dict[str, Quote] = {}
    for instance_type in types:
        quote = prices.cached_instance_hourly(instance_type, region)
        if quote is None:
            return  # one rung's price is not known here: the launch checks it
        hourly[instance_type] = quote
    volume = prices.cached_volume_gb_month(VOLUME_TYPE, region) if draft.disk_gb is not None else None
    if draft.disk_gb is not None and volume is None:
        return
    usd, words = worst_case(draft, hourly, volume)
    if usd > draft.max_cost:
        raise InvalidInput(field, f"the worst case is {_usd(usd, draft)} ({words}, on-demand prices in {region} "
                                  f"cached {min(q.fetched_at for q in hourly.values()):%Y-%m-%d}), over the limit "
                                  f"of {_limit(draft)}")


def _configured_region() -> str | None:
    try:
        from ..launchers.factory import ec2_settings

        return ec2_settings({}).region
    except Exception:  # a broken config file is reported by the commands that need it, not here
        return os.environ.get("AWS_REGION") or None


def _cache_only_prices() -> Any:
    from .cache import PriceCache
    from .prices_ondemand import OnDemandPrices

    def refuse() -> Any:
        raise PriceUnavailable("the schedule-time check reads the cache only")

    return OnDemandPrices(PriceCache.default(), refuse)


# --------------------------------------------------------------------------- launch time
_lock = threading.Lock()
_prices: Any = None


def price_source() -> Any:
    """The daemon's on-demand prices (cache, then the Price List), made once per process."""
    global _prices
    with _lock:
        if _prices is None:
            from .cache import PriceCache
            from .prices_ondemand import OnDemandPrices

            _prices = OnDemandPrices(PriceCache.default())
        return _prices


def launch_refusal(job: Job, instance_types: Iterable[str], launcher: Any = None, *, region: str | None = None,
                   prices: Any = None) -> LaunchError | None:
    """None to go ahead; else the :class:`LaunchError` the launch path fails (or retries) the job
    with. ``instance_types``: every rung's type (the ladder, daemon defaults included); the region
    is ``region`` or the launcher's. No work at all for a job without ``--max-cost``."""
    if job.max_cost is None:
        return None
    types: Sequence[str] = list(dict.fromkeys(instance_types))
    region = region or launcher_region(launcher)
    if not region:
        return LaunchError(f"{UNCHECKED}: cannot check --max-cost {_limit(job)}: the daemon's region is not known",
                           retryable=False, code=UNCHECKED)
    prices = prices or price_source()
    try:
        hourly = {t: prices.instance_hourly(t, region) for t in types}
        volume = prices.volume_gb_month(VOLUME_TYPE, region) if job.disk_gb is not None else None
    except PriceUnavailable as exc:
        return LaunchError(f"{UNCHECKED}: cannot check --max-cost {_limit(job)}: {exc}", retryable=exc.transient,
                           code=UNCHECKED)
    usd, words = worst_case(job, hourly, volume)
    if usd > job.max_cost:
        return LaunchError(f"{CODE}: the worst case is {_usd(usd, job)} ({words}, on-demand prices in {region}), "
                           f"over --max-cost {_limit(job)}", retryable=False, code=CODE)
    return None


def launcher_region(launcher: Any) -> str | None:
    """The region the daemon launches in: its EC2 settings, else its client's, else the environment."""
    settings = getattr(launcher, "settings", None)
    region = getattr(settings, "region", None)
    if region:
        return region
    try:
        return launcher._client("ec2").meta.region_name  # the EC2 launcher's own client
    except Exception:
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
