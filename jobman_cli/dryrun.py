"""``jobman schedule ... --dry-run``: what would happen, with nothing written and nothing launched.

The plan is built from the same pieces the daemon uses, so it cannot drift from them: the job is
validated by :meth:`JobService.validate` (the same rules and messages as a real ``schedule``), then
claimed for attempt 1 like the daemon claims it (:meth:`Job.claimed`), its user-data rendered by
:func:`~jobman_cli.launchers.userdata.render_user_data` and the request built by
:func:`~jobman_cli.launchers.ec2_params.run_instances_params`, with the daemon settings this machine
would start a daemon with (config.toml and environment; flags given to a running daemon are not
known here). Secrets appear as their references (the user-data reads them on the instance).

What only exists at launch time is a clearly marked placeholder: the attempt's callback token (made
fresh per attempt and never stored), the AMI when it is resolved from SSM, the AMI's root device for
``--disk-gb``, and, without a readable TinyDB store, the store id and the job id. No AWS call is made
and boto3 is not imported (unless no region is configured anywhere but an AWS profile), so a dry
run works without credentials; the store is only read.

The predicted worst case (DESIGN.md section 15) is :func:`jobman_cli.cost.limits.worst_case` over
every rung's type, the same bound the daemon checks ``--max-cost`` against at launch, priced from
the local price cache only (``$JOBMAN_HOME/prices.json``, stale entries included, their date shown):
a dry run must not call the Price List. A price not cached is said to be unknown, with why, rather
than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .model import Job

#: Placeholders for what exists only at launch time (printable, so they render like the real thing).
TOKEN_PLACEHOLDER = "DRY-RUN-PLACEHOLDER-callback-token-made-per-attempt"
STORE_ID_PLACEHOLDER = "DRY-RUN-PLACEHOLDER-store-id"
ROOT_DEVICE_PLACEHOLDER = "DRY-RUN-PLACEHOLDER-root-device-of-the-AMI"
PUBLIC_URL_PLACEHOLDER = "https://DRY-RUN-PLACEHOLDER-public-url.invalid"


@dataclass
class Plan:
    job: Job  #: the validated job as it would be stored (status scheduled, predicted id)
    claimed: Job  #: the same job claimed for attempt 1, as the daemon launches it
    params: dict[str, Any]  #: the RunInstances parameters (UserData in plain text)
    user_data: str
    notes: list[str] = field(default_factory=list)
    ladder: list[str] = field(default_factory=list)  #: every rung, in order (rung 1 is ``params``)
    #: ``{"usd": float | None, "basis": words}``: the predicted worst case (see :func:`worst_case_cost`)
    cost: dict[str, Any] = field(default_factory=lambda: {"usd": None, "basis": "not computed"})
    cost_lines: list[str] = field(default_factory=list)  #: the same for a reader (and the --max-cost verdict)

    def to_json(self) -> dict[str, Any]:
        from .model import job_to_api

        return {"dry-run": True, "job": job_to_api(self.job), "run-instances": self.params,
                "user-data": self.user_data, "notes": list(self.notes),
                "ladder": list(self.ladder), "worst-case-cost": dict(self.cost)}


def _store_facts(location: str) -> tuple[str, int, str | None]:
    """``(store id, next job id, note)`` read from an existing TinyDB store; placeholders otherwise."""
    if location.startswith("dynamodb://"):
        return STORE_ID_PLACEHOLDER, 1, "the store id and job id are placeholders (a DynamoDB store is not read)"
    path = Path(location).expanduser()
    if not path.exists():
        return STORE_ID_PLACEHOLDER, 1, f"the store id is a placeholder ({location} does not exist yet)"
    from .stores.tinydb import TinyDBStore

    with TinyDBStore(path, create=False) as store:
        ids = [int(r["id"]) for r in store.list_records(None)]
        return store.store_id, max(ids, default=0) + 1, None


def build_plan(service: Any, request: Any, names: Any, location: str) -> Plan:
    """Validate ``request`` with ``service`` (its clock and notify defaults) and build the plan."""
    from .config import log_settings
    from .launchers.ec2_params import run_instances_params
    from .launchers.factory import ec2_settings
    from .launchers.userdata import callback_url_for, load_callback_ca, render_user_data
    from .service import launch_token_for
    from .settings import daemon_settings

    draft = service.validate(request, names)
    notes = [f"placeholder {TOKEN_PLACEHOLDER!r}: the daemon makes a new callback token for each attempt "
             "and stores only its hash"]
    store_id, job_id, store_note = _store_facts(location)
    if store_note:
        notes.append(store_note)
    else:
        notes.append(f"job id {job_id} is the next id of {location} now; another schedule first takes it")
    job = replace(draft, id=job_id)
    claimed = job.claimed(service.clock.now(), launch_token_for(store_id, job_id, 1))
    ec2 = ec2_settings({})
    settings = daemon_settings(location, {})
    try:
        public_url = settings.effective_public_url
    except Exception:  # noqa: BLE001  (listening on all interfaces without --public-url)
        public_url = PUBLIC_URL_PLACEHOLDER
        notes.append("the callback URL is a placeholder: set --public-url / JOBMAN_PUBLIC_URL for the daemon")
    callback_ca = load_callback_ca(settings.callback_ca, public_url) if settings.callback_ca else None
    logs = log_target(ec2, log_settings())
    user_data = render_user_data(claimed, callback_url=callback_url_for(public_url, claimed.id),
                                 callback_token=TOKEN_PLACEHOLDER, callback_ca=callback_ca, logs=logs)
    parameter = ec2.ami_parameter
    image_id = f"resolve:ssm:{parameter}" if parameter else str(ec2.ami)
    if parameter:
        notes.append(f"ImageId: the daemon resolves SSM parameter {parameter} at launch")
    root_device = None
    if claimed.disk_gb is not None:
        root_device = ROOT_DEVICE_PLACEHOLDER
        notes.append("BlockDeviceMappings: the daemon reads the AMI's root device name at launch")
    params = run_instances_params(claimed, ec2, user_data, image_id=image_id, store_id=store_id,
                                  root_device=root_device)
    from .capacity import ladder

    steps = ladder(claimed, ec2.instance_type, ec2.subnet_ids)
    rungs = [r.describe() for r in steps]
    if len(rungs) > 1:
        notes.append(f"launch ladder ({len(rungs)} rungs, tried in this order until one launches; the request "
                     f"above is rung 1): " + "; ".join(f"{i}. {r}" for i, r in enumerate(rungs, 1)))
    notes.append("settings from config.toml and the environment; flags of a running daemon are not known here")
    region = ec2.region or getattr(logs, "region", None)  # the latter: a region set in an AWS profile only
    cost, cost_lines = worst_case_cost(job, [r.instance_type for r in steps], region)
    return Plan(job=job, claimed=claimed, params=params, user_data=user_data, notes=notes, ladder=rungs,
                cost=cost, cost_lines=cost_lines)


def worst_case_cost(job: Job, types: list[str], region: str | None,
                    prices: Any = None) -> tuple[dict[str, Any], list[str]]:
    """``({"usd", "basis"}, lines)``: the worst case of ``job`` over ``types`` from cached prices.

    ``types`` are every rung's types (daemon defaults included), as the launch-time ``--max-cost``
    check prices them, so the figure is the one the daemon will hold the job to. ``prices``: a
    source with ``cached_instance_hourly`` / ``cached_volume_gb_month`` (default: the local cache,
    which never calls AWS)."""
    from .cost.limits import VOLUME_TYPE, _cache_only_prices, _limit, _usd, worst_case

    types = list(dict.fromkeys(types))
    usd: float | None = None
    if not types:
        basis = "no instance type: neither --instance-type nor a daemon default ([ec2] instance_type)"
    elif not region:
        basis = "no region configured (AWS_REGION / [ec2] region), so no price can be looked up"
    else:
        prices = prices or _cache_only_prices()
        hourly = {t: prices.cached_instance_hourly(t, region) for t in types}
        missing = [t for t, q in hourly.items() if q is None]
        volume = prices.cached_volume_gb_month(VOLUME_TYPE, region) if job.disk_gb is not None else None
        if missing:
            basis = (f"no cached on-demand price for {', '.join(missing)} in {region}; "
                     "the daemon fetches it at launch")
        elif job.disk_gb is not None and volume is None:
            basis = f"no cached {VOLUME_TYPE} volume price in {region}; the daemon fetches it at launch"
        else:
            quotes = [q for q in hourly.values() if q is not None] + ([volume] if volume is not None else [])
            usd, words = worst_case(job, {t: q for t, q in hourly.items() if q is not None}, volume)
            basis = (f"{words}; on-demand prices in {region}, cached "
                     f"{min(q.fetched_at for q in quotes):%Y-%m-%d}")
    from .cost.receipt import format_usd

    shown = "unknown" if usd is None else _usd(usd, job) if job.max_cost is not None else format_usd(usd)
    lines = [f"worst case: {shown} ({basis})"]
    if job.max_cost is not None:
        if usd is None:
            lines.append(f"--max-cost {_limit(job)}: checked by the daemon at launch, with fetched prices")
        elif usd <= job.max_cost:
            lines.append(f"within --max-cost {_limit(job)}")
        else:  # only a daemon-default rung can be over here: schedule refuses the job's own types
            lines.append(f"over --max-cost {_limit(job)}: the daemon would refuse the launch (launch-failed)")
    return {"usd": round(usd, 6) if usd is not None else None, "basis": basis}, lines


def log_target(ec2: Any, settings: Any) -> Any:
    """:func:`jobman_cli.joblogs.job_log_target` without boto3 when the region is configured."""
    from .joblogs import job_log_target

    if not ec2.region:
        return job_log_target(ec2, settings)  # the region may live in an AWS profile: boto3 reads it
    import os

    from .joblogs import LogTarget

    endpoint = (settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_LOGS") or os.environ.get("AWS_ENDPOINT_URL")
                or None)
    return LogTarget(group=settings.group, region=ec2.region, endpoint_url=endpoint.rstrip("/") if endpoint else None)


def render_text(plan: Plan) -> str:
    """The plan for a reader: the job, the request (user-data shown after it), the user-data."""
    import json

    from .render import sheet_rows

    width = max(len(k) for k, _ in sheet_rows(plan.job))
    job = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in sheet_rows(plan.job))
    size = len(plan.user_data.encode("utf-8"))
    shown = dict(plan.params, UserData=f"<the user-data below: {size} bytes; botocore base64-encodes it>")
    request = json.dumps(shown, indent=2, ensure_ascii=False)
    notes = "\n".join(f"  - {n}" for n in plan.notes)
    cost = "".join(f"  {line}\n" for line in plan.cost_lines)
    return (f"Dry run: nothing was written and nothing was launched.\n\nJob (validated):\n{job}\n\n"
            f"Cost (predicted from the local price cache; no AWS call):\n{cost}\n"
            f"RunInstances request (as the daemon would send it for attempt 1):\n{request}\n\n"
            f"Notes:\n{notes}\n\nUser-data ({size} bytes):\n{plan.user_data.rstrip()}\n")
