"""The one serializer: a :class:`~jobman_cli.model.job.Job` as public JSON and as a stored record.

The public shape (DESIGN.md section 4) is shared by ``--json`` and the REST API; a stored record is
that shape plus private bookkeeping. Keeping both directions in one module is what guarantees
``job_from_record(job_to_record(job))`` loses nothing, and that :func:`record_to_api` (the fast
path for bulk output) agrees with :func:`job_to_api`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..notify.targets import DEFAULT_NOTIFY_ON, redact
from .job import DEFAULT_START_DEADLINE, DEFAULT_TIMEOUT, Job
from .reasons import ReasonCode, infer_reason_code
from .states import JobStatus
from .times import format_time, parse_time
from .tokens import hash_callback_token

_CODE_VALUES = frozenset(code.value for code in ReasonCode)


def job_to_api(job: Job) -> dict[str, Any]:
    """The public JSON shape (DESIGN.md section 4), shared by ``--json`` and the REST API.

    Secrets (the callback token) and bookkeeping (launch token, version) are never included.
    """
    return {
        "id": job.id,
        "title": job.title,
        "date-time": format_time(job.date_time),
        "docker-image": job.docker_image,
        "env-variables": dict(job.env_variables),
        "status": job.status.value,
        "exit-code": job.exit_code,
        "reason": job.reason,
        "reason-code": job.reason_code.value if job.reason_code is not None else None,
        "instance-id": job.instance_id,
        "attempts": job.attempts,
        "created-at": format_time(job.created_at),
        "launched-at": format_time(job.launched_at),
        "claimed-at": format_time(job.claimed_at),
        "started-at": format_time(job.started_at),
        "finished-at": format_time(job.finished_at),
        "timeout": job.timeout,
        "start-deadline": job.start_deadline,
        "instance-type": job.instance_type,
        "command": list(job.command) if job.command is not None else None,
        "entrypoint": job.entrypoint,
        "disk-gb": job.disk_gb,
        "secrets": dict(job.secrets),
        "container-imds": job.container_imds,
        "notify": [redact(target) for target in job.notify],
        "notify-on": job.notify_on,
        "notifications": [dict(record) for record in job.deliveries],
        "subnet-ids": list(job.subnet_ids),
        "capacity": job.capacity,
        "max-interruptions": job.max_interruptions,
        "interruptions": job.interruptions,
        "max-cost": job.max_cost,
        "placement": dict(job.placement) if job.placement is not None else None,
        "cost": job.cost,
        "cost-basis": job.cost_basis,
        "past-runs": [dict(run) for run in job.past_runs],
        "schedule-id": job.schedule_id,
        "occurrence": format_time(job.occurrence),
    }


#: The public keys, in the order :func:`job_to_api` emits them.
API_KEYS = (
    "id", "title", "date-time", "docker-image", "env-variables", "status", "exit-code", "reason",
    "reason-code", "instance-id", "attempts", "created-at", "launched-at", "claimed-at", "started-at", "finished-at",
    "timeout",
    "start-deadline", "instance-type", "command", "entrypoint", "disk-gb", "secrets", "container-imds",
    "notify", "notify-on", "notifications",
    "subnet-ids", "capacity", "max-interruptions", "interruptions", "max-cost", "placement", "cost", "cost-basis",
    "past-runs", "schedule-id", "occurrence",
)


_STATUS_VALUES = frozenset(status.value for status in JobStatus)


def record_to_api(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`job_to_api` of a stored record, without building the :class:`Job` in between.

    A record is ``job_to_api``'s dict plus private keys (see :func:`job_to_record`), so projecting
    the public keys gives the same JSON. Bulk output (``list --json``, ``GET /jobs``) uses this:
    the round trip through ``Job`` costs ~30 µs a job, 300 ms at 10,000 jobs. Defaults match
    :func:`job_from_record` for records that leave empty fields out.

    Why it is written this way: at 10,000 jobs this function is most of ``list --json``'s own
    time, so the projection is one C-level ``dict(zip(...))`` and each normalisation is skipped
    when the stored value already has its public type (what this jobman writes); anything else
    takes the same conversion as before (same result, same exceptions for malformed records).
    """
    api = dict(zip(API_KEYS, map(record.get, API_KEYS)))
    status = api["status"]
    if type(status) is not str or status not in _STATUS_VALUES:
        JobStatus(status)  # ValueError for a record that is not a job's (the caller names the store)
    if type(api["id"]) is not int:
        api["id"] = int(api["id"])
    if not api["title"]:
        api["title"] = ""
    value = api["env-variables"]
    api["env-variables"] = dict(value) if value else {}
    if type(api["attempts"]) is not int:
        api["attempts"] = int(api["attempts"] or 0)
    value = api["timeout"]
    if type(value) is not int or not value:
        api["timeout"] = int(value or DEFAULT_TIMEOUT)
    value = api["start-deadline"]
    if type(value) is not int or not value:
        api["start-deadline"] = int(value or DEFAULT_START_DEADLINE)
    value = api["secrets"]
    api["secrets"] = dict(value) if value else {}
    if type(api["container-imds"]) is not bool:
        api["container-imds"] = bool(api["container-imds"])
    value = api["notify"]
    api["notify"] = list(value) if value else []
    if not api["notify-on"]:
        api["notify-on"] = DEFAULT_NOTIFY_ON
    value = api["notifications"]
    api["notifications"] = list(value) if value else []
    value = api["subnet-ids"]
    api["subnet-ids"] = list(value) if value else []
    if not api["capacity"]:
        api["capacity"] = "on-demand"
    value = api["max-interruptions"]
    if type(value) is not int:
        api["max-interruptions"] = int(value if value is not None else 3)
    if type(api["interruptions"]) is not int:
        api["interruptions"] = int(api["interruptions"] or 0)
    value = api["past-runs"]
    api["past-runs"] = [dict(run) for run in value if isinstance(run, Mapping)] if value else []
    if api["reason-code"] is None:  # stored before reason codes existed
        code = infer_reason_code(JobStatus(status), api["reason"], api["exit-code"])
        api["reason-code"] = code.value if code is not None else None
    return api


def job_to_record(job: Job) -> dict[str, Any]:
    """What a store persists: the public shape plus the private bookkeeping fields."""
    record = job_to_api(job)
    record.update(
        {
            "callback-hashes": list(job.callback_hashes),
            "notify-targets": list(job.notify),
            "idempotency-key": job.idempotency_key,
            "launch-token": job.launch_token,
            "rung": job.rung or None,  # None: left out of a DynamoDB item (most jobs never climb)
            "launch-failures": job.launch_failures or None,
            "not-before": format_time(job.not_before),
            "interrupted-at": format_time(job.interrupted_at),
            "updated-at": format_time(job.updated_at),
            "version": job.version,
        }
    )
    if job.extra:
        record.update(job.extra)
    return record


_KNOWN_KEYS = frozenset(API_KEYS) | {
    "callback-hashes", "callback-token", "idempotency-key", "notify-targets", "launch-token", "not-before", "updated-at", "version",
    "interrupted-at", "rung", "launch-failures",
}


def job_from_record(record: Mapping[str, Any]) -> Job:
    """Inverse of :func:`job_to_record`. Unknown keys survive in ``extra`` (forward compatibility)."""
    extra = {k: v for k, v in record.items() if k not in _KNOWN_KEYS}
    status = JobStatus(record["status"])
    hashes = tuple(record.get("callback-hashes") or ())
    if not hashes and record.get("callback-token"):  # stored in clear before 0.2: keep it working
        hashes = (hash_callback_token(record["callback-token"]),)
    code = record.get("reason-code")
    command = record.get("command")
    return Job(
        id=int(record["id"]),
        title=record.get("title") or "",
        date_time=parse_time(record["date-time"]),  # type: ignore[arg-type]
        docker_image=record["docker-image"],
        env_variables=dict(record.get("env-variables") or {}),
        status=status,
        created_at=parse_time(record["created-at"]),  # type: ignore[arg-type]
        timeout=int(record.get("timeout") or DEFAULT_TIMEOUT),
        start_deadline=int(record.get("start-deadline") or DEFAULT_START_DEADLINE),
        instance_type=record.get("instance-type"),
        idempotency_key=record.get("idempotency-key"),
        exit_code=record.get("exit-code"),
        reason=record.get("reason"),
        reason_code=(ReasonCode(code) if code in _CODE_VALUES else  # unknown: a newer jobman wrote it
                     infer_reason_code(status, record.get("reason"), record.get("exit-code"))),
        command=tuple(command) if command is not None else None,
        entrypoint=record.get("entrypoint"),
        disk_gb=int(record["disk-gb"]) if record.get("disk-gb") is not None else None,
        secrets=dict(record.get("secrets") or {}),
        container_imds=bool(record.get("container-imds")),
        notify=tuple(record.get("notify-targets") or ()),
        notify_on=record.get("notify-on") or DEFAULT_NOTIFY_ON,
        deliveries=tuple(dict(r) for r in record.get("notifications") or () if isinstance(r, dict)),
        subnet_ids=tuple(record.get("subnet-ids") or ()),
        capacity=record.get("capacity") or "on-demand",
        max_interruptions=int(record["max-interruptions"]) if record.get("max-interruptions") is not None else 3,
        interruptions=int(record.get("interruptions") or 0),
        max_cost=float(record["max-cost"]) if record.get("max-cost") is not None else None,
        placement=dict(record["placement"]) if isinstance(record.get("placement"), dict) else None,
        cost=float(record["cost"]) if record.get("cost") is not None else None,
        cost_basis=record.get("cost-basis"),
        past_runs=tuple(dict(run) for run in record.get("past-runs") or () if isinstance(run, Mapping)),
        schedule_id=int(record["schedule-id"]) if record.get("schedule-id") is not None else None,
        occurrence=parse_time(record.get("occurrence")),
        callback_hashes=hashes,
        instance_id=record.get("instance-id"),
        attempts=int(record.get("attempts") or 0),
        launch_token=record.get("launch-token"),
        rung=int(record.get("rung") or 0),
        launch_failures=int(record.get("launch-failures") or 0),
        launched_at=parse_time(record.get("launched-at")),
        claimed_at=parse_time(record.get("claimed-at")),
        started_at=parse_time(record.get("started-at")),
        finished_at=parse_time(record.get("finished-at")),
        not_before=parse_time(record.get("not-before")),
        interrupted_at=parse_time(record.get("interrupted-at")),
        updated_at=parse_time(record.get("updated-at")),
        version=int(record.get("version") or 0),
        extra=extra,
    )


def as_stored(job: Job) -> Job:
    """The job exactly as any process reads it back from a store (times keep milliseconds only)."""
    return job_from_record(job_to_record(job))
