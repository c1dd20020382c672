"""The launch ladder (DESIGN.md section 13): which instance types, subnets and markets a job may
launch on, in which order, and the input rules for choosing them.

Pure and boto3-free: ``schedule`` validates with it, ``schedule --dry-run`` prints the ladder, and
the daemon (:mod:`jobman_cli.daemon.launch`) walks it.

The order is: for each market (spot first for ``spot-then-on-demand``), for each instance type in
the job's preference order, for each subnet in the order given. A preferred type is tried in every
zone before a less preferred one, because the user ranked types (a bigger or newer type) and zones
usually do not matter to a batch job; spot is tried on every type and zone before paying
on-demand prices, because that is what "spot, then on-demand" asks for.

A *rung* is one ``RunInstances`` request: the job narrowed to one type, at most one subnet and one
market (:func:`narrowed`), sent with a ``ClientToken`` of its own (:func:`rung_token`): rung 0 keeps
the attempt's launch token, rung ``i`` appends ``-r<i>``, so each rung of each attempt is
idempotent on its own (a lost answer on rung 2 is resent as rung 2, with rung 2's token).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidInput
from .model import Job

ON_DEMAND = "on-demand"
SPOT = "spot"
SPOT_THEN_ON_DEMAND = "spot-then-on-demand"
CAPACITIES = (ON_DEMAND, SPOT, SPOT_THEN_ON_DEMAND)
#: Markets of each capacity choice, in the order they are tried.
MARKETS = {ON_DEMAND: (ON_DEMAND,), SPOT: (SPOT,), SPOT_THEN_ON_DEMAND: (SPOT, ON_DEMAND)}

MAX_TYPES = 10
MAX_SUBNETS = 10
MAX_INTERRUPTIONS = 100
DEFAULT_MAX_INTERRUPTIONS = 3
MAX_COST = Decimal("1000000")

#: EC2 answers that mean "not here, not now": nothing started, so the ladder moves on at once,
#: skipping what the answer rules out for the rest of the pass (:func:`ruled_out`):
#:
#: * ``rung``: only this rung (capacity of one type in one zone and market; ``Unsupported``: the
#:   type is not offered in that zone);
#: * ``subnet``: every rung in this subnet (``InsufficientFreeAddressesInSubnet``: the subnet has
#:   no free IP address, whatever the type or market);
#: * ``market``: every rung of this market (``VcpuLimitExceeded``, ``InstanceLimitExceeded``: an
#:   account quota of on-demand instances, which another type of the same market almost always
#:   shares (a ladder's types are comparable ones, in one vCPU-limit family); spot has quotas of
#:   its own, so ``spot-then-on-demand`` still tries the other market).
#:
#: A later pass (a new attempt, after the back-off) starts again from the first rung: quotas free
#: up when other instances end, and addresses when they are released.
LADDER_SCOPES: dict[str, str] = {
    "InsufficientInstanceCapacity": "rung", "InsufficientCapacity": "rung", "SpotMaxPriceTooLow": "rung",
    "MaxSpotInstanceCountExceeded": "rung", "Unsupported": "rung",
    "InsufficientFreeAddressesInSubnet": "subnet",
    "VcpuLimitExceeded": "market", "InstanceLimitExceeded": "market",
}
LADDER_CODES = frozenset(LADDER_SCOPES)

_SUBNET = re.compile(r"subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def validate_instance_types(text: Any, field: str = "instance-type") -> str:
    """``A`` or a preference list ``A,B,C``: each an EC2 type, no repeats, at most 10. Returned
    normalised (no spaces), because the job stores it as one string."""
    from .validation import validate_instance_type

    if not isinstance(text, str):
        raise InvalidInput(field, f"must be a string such as 'm7i.large' or 'm7i.large,m6i.large' (got {_show(text)})")
    names = [name.strip() for name in text.split(",")]
    if len(names) > MAX_TYPES:
        raise InvalidInput(field, f"names {len(names)} instance types; at most {MAX_TYPES} are allowed")
    for name in names:
        if not name:
            raise InvalidInput(field, f"{_show(text)} has an empty entry (write types separated by commas)")
        validate_instance_type(name, field=field)
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InvalidInput(field, f"{twice!r} is given twice")
    return ",".join(names)


def validate_subnet_ids(value: Any, field: str = "subnet-ids") -> tuple[str, ...]:
    """Subnet ids (one per availability zone, in the order to try them): ``subnet-`` and 8 or 17
    hex digits, no repeats, at most 10. ``None`` or empty: the daemon's default subnet(s)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidInput(field, f"must be an array of subnet ids such as 'subnet-0123abcd' (got {_show(value)})")
    if len(value) > MAX_SUBNETS:
        raise InvalidInput(field, f"names {len(value)} subnets; at most {MAX_SUBNETS} are allowed")
    for item in value:
        if not isinstance(item, str) or not _SUBNET.fullmatch(item):
            raise InvalidInput(field, f"{_show(item)} is not a subnet id such as 'subnet-0123abcd'")
    if len(set(value)) != len(value):
        twice = next(s for s in value if list(value).count(s) > 1)
        raise InvalidInput(field, f"{twice!r} is given twice")
    return tuple(value)


def validate_capacity(value: Any, field: str = "capacity") -> str:
    """``on-demand`` (None too), ``spot`` or ``spot-then-on-demand``."""
    if value is None:
        return ON_DEMAND
    if value not in CAPACITIES:
        raise InvalidInput(field, f"must be one of {', '.join(CAPACITIES)} (got {_show(value)})")
    return value  # type: ignore[no-any-return]


def parse_max_interruptions(value: Any, field: str = "max-interruptions") -> int:
    """How many spot interruptions a job is relaunched after: a whole number 0 to 100 (default 3)."""
    if value is None:
        return DEFAULT_MAX_INTERRUPTIONS
    number = int(value) if isinstance(value, str) and re.fullmatch(r"0|[1-9][0-9]{0,2}", value) else value
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_INTERRUPTIONS:
        raise InvalidInput(field, f"must be a whole number from 0 to {MAX_INTERRUPTIONS} (got {_show(value)})")
    return number


@dataclass(frozen=True)
class CapacityDefaults:
    """What a job that names no capacity or interruption budget gets: ``[ec2] capacity`` and
    ``[ec2] max_interruptions`` of config.toml (:func:`config_defaults`), else on-demand and 3.

    Resolved when the job is created and stored on it (as the ``[notify]`` defaults are), so
    ``status`` and ``schedule --dry-run`` show what the job will use, and a later change of the
    config file does not change a job already waiting. A schedule's template keeps only what was
    given, so each run takes the default in force when it is created."""

    capacity: str = ON_DEMAND
    max_interruptions: int = DEFAULT_MAX_INTERRUPTIONS


def config_defaults(home: Path | None = None) -> CapacityDefaults:
    """``[ec2] capacity`` / ``max_interruptions`` from config.toml, checked: a bad value is a
    one-line :class:`~jobman_cli.errors.ConfigError` naming the key (TOML has types, so
    ``max_interruptions = "3"`` is a mistake, as ``[logs] retention_days = "30"`` is)."""
    from .config import config_section

    section = config_section("ec2", home)
    capacity = section.get("capacity", ON_DEMAND)
    if capacity not in CAPACITIES:
        raise ConfigError(f"config file [ec2] capacity: must be one of {', '.join(CAPACITIES)} "
                          f"(got {_show(capacity)})")
    budget = section.get("max_interruptions", DEFAULT_MAX_INTERRUPTIONS)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= MAX_INTERRUPTIONS:
        raise ConfigError(f"config file [ec2] max_interruptions: must be a whole number from 0 to "
                          f"{MAX_INTERRUPTIONS} (got {_show(budget)})")
    return CapacityDefaults(capacity, budget)


def parse_max_cost(value: Any, field: str = "max-cost") -> float | None:
    """A limit in USD: a positive decimal (``2``, ``0.50``), at most 1,000,000; None: no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(field, f"must be a positive amount in USD such as 2.50 (got {_show(value)})")
    text = value.strip() if isinstance(value, str) else repr(value)
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,7}(\.[0-9]{1,6})?|\.[0-9]{1,6}", text):
        raise InvalidInput(field, f"must be a positive amount in USD such as 2.50 (got {_show(value)})")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(field, f"must be a positive amount in USD such as 2.50 (got {_show(value)})") from None
    if amount.is_finite() and amount.normalize().as_tuple().exponent < -6:  # a JSON 1e-300: as the string form
        raise InvalidInput(field, f"must be an amount in USD with at most 6 decimals such as 2.50 (got {_show(value)})")
    if not amount.is_finite() or amount <= 0 or amount > MAX_COST:
        raise InvalidInput(field, f"must be more than 0 and at most {MAX_COST} USD (got {_show(value)})")
    return float(amount)


# --------------------------------------------------------------------------- the ladder
@dataclass(frozen=True)
class Rung:
    """One way to launch: an instance type, a subnet (None: EC2's default for the account) and a market."""

    index: int
    instance_type: str
    subnet_id: str | None
    market: str

    def describe(self) -> str:
        where = f" in {self.subnet_id}" if self.subnet_id else ""
        return f"{self.instance_type}{where} ({self.market})"


def split_types(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def ladder(job: Job, default_types: str, default_subnets: tuple[str, ...] = ()) -> list[Rung]:
    """Every rung of ``job``, in the order they are tried (see the module doc). The job's own types
    and subnets win; else the daemon's defaults (``[ec2] instance_type`` / ``subnet_id``, each of
    which may be a list too)."""
    types = split_types(job.instance_type) or split_types(default_types)
    subnets: tuple[str | None, ...] = tuple(job.subnet_ids) or tuple(default_subnets) or (None,)
    markets = MARKETS.get(job.capacity, (ON_DEMAND,))
    rungs = [(t, s, m) for m in markets for t in types for s in subnets]
    return [Rung(i, t, s, m) for i, (t, s, m) in enumerate(rungs)]


def ruled_out(rung: Rung, code: str) -> tuple[str, Any]:
    """What a refusal of ``rung`` with ``code`` (one of :data:`LADDER_CODES`) rules out for the rest
    of the pass: ``("rung", index)``, ``("subnet", subnet_id)`` or ``("market", market)``."""
    scope = LADDER_SCOPES.get(code, "rung")
    if scope == "subnet":
        return scope, rung.subnet_id
    if scope == "market":
        return scope, rung.market
    return "rung", rung.index


def next_rung(rungs: list[Rung], current: int, excluded: set[tuple[str, Any]]) -> int | None:
    """The first rung after ``current`` that nothing in ``excluded`` (:func:`ruled_out` values)
    rules out, or None: the pass has no rung left to try."""
    for rung in rungs[current + 1:]:
        if not excluded & {("rung", rung.index), ("subnet", rung.subnet_id), ("market", rung.market)}:
            return rung.index
    return None


def rung_token(launch_token: str, index: int) -> str:
    """The ``ClientToken`` of rung ``index`` of an attempt (rung 0: the attempt's own token)."""
    return launch_token if index == 0 else f"{launch_token}-r{index}"


def narrowed(job: Job, rung: Rung) -> Job:
    """``job`` as rung ``rung`` launches it: one type, at most one subnet, one market, the rung's
    token. Only handed to the launcher; never stored."""
    token = rung_token(job.launch_token, rung.index) if job.launch_token else None
    return dataclasses.replace(job, instance_type=rung.instance_type,
                               subnet_ids=(rung.subnet_id,) if rung.subnet_id else (),
                               capacity=rung.market, launch_token=token)


def spot_options() -> dict[str, Any]:
    """``InstanceMarketOptions`` of a spot rung: a one-time request (nothing relaunches it behind
    jobman's back) that terminates on interruption (the job is relaunched by the daemon)."""
    return {"MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}


def placement_of(rung: Rung, availability_zone: str | None) -> dict[str, Any]:
    """What ``Job.placement`` records of the rung that launched."""
    return {"instance-type": rung.instance_type, "availability-zone": availability_zone,
            "subnet-id": rung.subnet_id, "market": rung.market}
