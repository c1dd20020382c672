"""One ended job's receipt from what AWS says about its instances (each run: see :mod:`.runs`).

The facts come from EC2 first and jobman's record second, and the basis names which:

* ``DescribeInstances``: the launch time (``LaunchTime``), type, zone, market
  (``InstanceLifecycle`` = ``spot``) and AMI. A terminated instance stays listed for about an
  hour, so a receipt made when the job ends finds it. When it is gone: the job's ``placement``
  (the rung that launched it), else its first ``--instance-type``, else the daemon's default; the
  start is then jobman's ``launched-at`` (a few seconds after EC2's launch time).
* ``DescribeImages``: the AMI's root volume (size unless ``--disk-gb`` set one, and type).
* The prices: :mod:`.prices_ondemand` or :mod:`.prices_spot`.

The end is the job's ``finished-at`` (its end as jobman recorded it: the container's report, a
cancel, a timeout); the seconds an instance takes to shut down after that are not counted. An
earlier run that a spot interruption ended (``Job.past_runs``) ends when jobman recorded the
interruption; EC2 reclaims the instance up to two minutes after its notice, and those seconds are
not counted either. Each run is priced on its own and the receipt is their sum (:mod:`.runs`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

from ..model import Job
from .prices_ondemand import OnDemandPrices
from .prices_spot import spot_average
from .quote import PriceUnavailable, Quote, from_aws_error
from .receipt import Receipt, RunFacts, compute, unknown
from .runs import Run, combine, label, runs_of

#: A region (``us-east-1``, ``us-gov-west-1``) then a zone's tail: a letter (``us-east-1a``), a Local
#: Zone (``us-east-1-bos-1a``) or a Wavelength Zone (``us-east-1-wl1-bos-wlz-1``).
_ZONE = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)(?:[a-z]+|(?:-[a-z0-9]+)+)$")


def region_of_zone(zone: str | None) -> str | None:
    """``us-east-1a``, ``us-east-1-bos-1a``, ``us-east-1-wl1-bos-wlz-1`` -> ``us-east-1`` (the parent
    region: the Price List lists Local and Wavelength Zone prices under it, by ``location``); None
    when it does not look like a zone name."""
    match = _ZONE.match(zone or "")
    return match.group(1) if match else None


def is_extended_zone(zone: str | None) -> bool:
    """A Local Zone or Wavelength Zone (``us-east-1-bos-1a``): its on-demand prices are its own,
    not its parent region's."""
    region = region_of_zone(zone)
    return region is not None and len(zone or "") > len(region) + 1


def first_type(instance_type: str | None) -> str | None:
    """The first of a preference list (``m7i.large,m6i.large``), or None."""
    first = (instance_type or "").split(",")[0].strip()
    return first or None


class AwsPricer:
    """``receipt(job)``: the job's :class:`Receipt`, or :class:`PriceUnavailable` with
    ``transient`` set when trying again later may help (the caller retries; a final one it stores
    as ``unknown: <why>``)."""

    def __init__(self, ondemand: OnDemandPrices, ec2_factory: Callable[[], Any], *, default_type: str,
                 default_region: str | None, clock: Callable[[], datetime] | None = None) -> None:
        self.ondemand = ondemand
        self._ec2_factory = ec2_factory
        self._ec2: Any = None
        self.default_type = default_type
        self.default_region = default_region
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._images: dict[str, tuple[int | None, str | None]] = {}

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = self._ec2_factory()
        return self._ec2

    def receipt(self, job: Job) -> Receipt:
        """Every instance the job ran on (earlier runs a spot interruption ended, then the current
        one), each priced on its own, summed; see :mod:`.runs`."""
        runs = runs_of(job)
        if not runs:
            return unknown("the job has no instance")
        receipts = []
        for index, run in enumerate(runs, 1):
            try:
                receipt = self._run(job, run)
            except PriceUnavailable as exc:
                if len(runs) == 1:
                    raise
                raise PriceUnavailable(f"{label(run, index, len(runs))}: {exc.why}", transient=exc.transient) from None
            receipts.append(receipt)
            if receipt.cost is None:
                break  # the whole is unknown (combine names this run): the others need no price
        return combine(runs, receipts) if len(runs) > 1 else receipts[0]

    def _run(self, job: Job, run: Run) -> Receipt:
        """One instance's receipt: EC2's facts when it is still listed, else jobman's record."""
        end = run.end
        if end is None:
            return unknown("the job has no end time" if not run.interrupted else "the run's end is not known")
        if run.instance_id is not None:
            instance, missing = self._instance(run.instance_id)
        else:
            instance, missing = None, "its instance id was not recorded"
        placement = dict(run.placement or {})
        if instance is not None and instance.get("LaunchTime") is not None:
            start = _utc(instance["LaunchTime"])
            start_source = "EC2 launch time"
        elif run.launched_at is not None:
            start = run.launched_at
            start_source = f"jobman's launched-at ({missing})"
        else:
            return unknown(f"{missing}, and jobman recorded no launch time")
        inst = instance or {}
        instance_type = (inst.get("InstanceType") or placement.get("instance-type") or first_type(job.instance_type)
                         or self.default_type)
        zone = (inst.get("Placement") or {}).get("AvailabilityZone") or placement.get("availability-zone")
        if instance is not None:
            market = "spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand"
        else:
            market = str(placement.get("market") or "on-demand")
        region = region_of_zone(zone) or self.default_region or getattr(getattr(self.ec2, "meta", None),
                                                                        "region_name", None)
        if not region:
            return unknown("the instance's region is not known")
        volume_gb, volume_type, volume_why = self._root_volume(job, inst.get("ImageId"))
        facts = RunFacts(instance_type=instance_type, region=region, zone=zone, market=market, start=start,
                         start_source=start_source, end=end, volume_gb=volume_gb, volume_type=volume_type,
                         volume_why=volume_why)
        hourly = self._hourly(facts)
        volume: Quote | None = None
        if volume_gb is not None and volume_type is not None:
            volume = self.ondemand.volume_gb_month(volume_type, region)
        return compute(facts, hourly, volume)

    def _hourly(self, facts: RunFacts) -> Quote:
        if facts.market == "spot":
            if not facts.zone:
                raise PriceUnavailable(f"spot instance of type {facts.instance_type}: its zone is not known")
            return spot_average(self.ec2, facts.instance_type, facts.zone, facts.start, facts.end, self._clock())
        if is_extended_zone(facts.zone):  # priced apart from the region: never the parent region's price
            raise PriceUnavailable(f"on-demand {facts.instance_type} in {facts.zone}: Local and Wavelength Zone "
                                   "prices are not looked up")
        return self.ondemand.instance_hourly(facts.instance_type, facts.region)

    def _instance(self, instance_id: str) -> tuple[dict[str, Any] | None, str]:
        """``(instance, "")`` as DescribeInstances lists it, or ``(None, why not)``."""
        try:
            answer = self.ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
        except Exception as exc:
            error = from_aws_error(exc, f"DescribeInstances {instance_id}")
            if error.transient:
                raise error from None
            return None, f"EC2 refused to describe the instance: {error}"  # e.g. permissions: the basis says so
        for reservation in answer.get("Reservations") or ():
            for instance in reservation.get("Instances") or ():
                if instance.get("InstanceId") == instance_id:
                    return instance, ""
        return None, f"instance {instance_id} is no longer listed by EC2"

    def _root_volume(self, job: Job, image_id: str | None) -> tuple[int | None, str | None, str]:
        """``(GiB, volume type, why unknown)`` of the root volume: size from ``--disk-gb`` or the
        AMI, type from the AMI (EC2 keeps the AMI's volume type when only the size is given)."""
        if not image_id:
            return None, None, "the instance's AMI is not known"
        if image_id not in self._images:
            try:
                images = self.ec2.describe_images(ImageIds=[image_id]).get("Images") or []
            except Exception as exc:
                error = from_aws_error(exc, f"DescribeImages {image_id}")
                if error.transient:
                    raise error from None
                return None, None, error.why
            size: int | None = None
            vtype: str | None = None
            if images:
                image = images[0]
                for mapping in image.get("BlockDeviceMappings") or ():
                    if mapping.get("DeviceName") == image.get("RootDeviceName") and mapping.get("Ebs"):
                        size = mapping["Ebs"].get("VolumeSize")
                        vtype = mapping["Ebs"].get("VolumeType")
            self._images[image_id] = (int(size) if size is not None else None, vtype)
        size, vtype = self._images[image_id]
        if job.disk_gb is not None:
            size = job.disk_gb
        if vtype is None:
            return None, None, f"the root volume of AMI {image_id} is not known"
        if size is None:
            return None, None, f"the root volume size of AMI {image_id} is not known"
        return size, vtype, ""


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc) if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
