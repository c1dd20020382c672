"""What a notification says: the JSON body (webhooks and SNS), the Slack paragraph, the signature.

The body carries the job's public fields that say what happened — never ``env-variables`` (plain
values may be credentials), never ``secrets`` (not even the references), never the command line
(arguments are a common place for tokens) and never the notification targets themselves (a
webhook URL can be a credential). It is the same for every attempt of one event, so the event id
and the signature of a resent body match the first.

``cost`` and ``cost-basis`` (the job's cost receipt, DESIGN.md section 13) are the one part of the
body that may change after the job ended: the receipt is written on its own thread, usually within
a second, sometimes minutes later (price errors are retried). So they are not read from the job at
each attempt but from the delivery record's ``receipt`` snapshot, taken once by the delivery's
first claim (:func:`~jobman_cli.notify.deliveries.claim`): a retry after the receipt arrived
still sends what the first attempt sent, byte for byte. The daemon holds a first attempt back for
the receipt (at most ``receipt_wait`` after the job ended, see :mod:`jobman_cli.daemon.notifier`)
so that the snapshot usually has it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Mapping

SIGNATURE_HEADER = "X-Jobman-Signature"
EVENT_ID_HEADER = "X-Jobman-Event-Id"
EVENT_HEADER = "X-Jobman-Event"
#: The job fields a notification carries (DESIGN.md section 4 names).
BODY_FIELDS = ("id", "title", "status", "reason-code", "reason", "exit-code", "docker-image", "instance-id",
               "instance-type", "attempts", "date-time", "created-at", "launched-at", "finished-at", "timeout",
               "cost", "cost-basis")
#: What ``placement`` says of the rung that launched.
PLACEMENT_FIELDS = ("instance-type", "availability-zone", "market")
#: The body fields taken from the delivery record's snapshot, not from the job as it is now.
RECEIPT_FIELDS = ("cost", "cost-basis")


def body(job: Any, eid: str, receipt: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The documented JSON body of the event ``eid`` for ``job`` (a terminal job). ``receipt``: the
    delivery record's snapshot of ``cost``/``cost-basis`` (what every attempt of the event sends);
    None: the job's own (a preview, or a record from before the snapshot existed)."""
    from ..model import format_time, job_to_api

    public = job_to_api(job)
    out: dict[str, Any] = {"event": f"job.{job.status.value}", "event-id": eid}
    for key in BODY_FIELDS:
        if key == RECEIPT_FIELDS[0]:  # added later than the others, before the receipt (cost stays last)
            out.update({"placement": placement(job), "schedule-id": job.schedule_id,
                        "occurrence": format_time(job.occurrence)})
        out[key] = public.get(key)
    if receipt is not None:
        out.update({key: receipt.get(key) for key in RECEIPT_FIELDS})
    out["log"] = {"command": f"jobman logs {job.id}",
                  "hint": f"run 'jobman logs {job.id}' where jobman can read this store; "
                          f"'jobman status {job.id}' shows the job"}
    return out


def placement(job: Any) -> dict[str, Any] | None:
    """Where the job ran: the rung that launched its last run (``instance-type`` is the request,
    which may be a whole ladder or null); None if it never launched."""
    where = job.placement
    if where is None and job.past_runs:  # relaunched after an interruption, then ended unlaunched
        where = job.past_runs[-1].get("placement")
    if not isinstance(where, Mapping):
        return None
    return {key: where.get(key) for key in PLACEMENT_FIELDS}


def encode(data: dict[str, Any]) -> bytes:
    """The raw body: compact, key order as built, UTF-8 (the signature covers exactly these bytes)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(raw: bytes, secret: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, as GitHub signs its webhooks."""
    return "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()


def verify(raw: bytes, header: str, secret: bytes) -> bool:
    """What a receiver does (documented in the README; used by the tests)."""
    return hmac.compare_digest(sign(raw, secret), header or "")


def slack_text(data: dict[str, Any]) -> str:
    """One readable paragraph for a Slack channel."""
    if str(data.get("event", "")).startswith("schedule."):
        return _schedule_text(data)
    title = f" \u201c{_clean(data['title'])}\u201d" if data.get("title") else ""
    what = {"job.failed": "failed", "job.finished": "finished", "job.cancelled": "was cancelled"}.get(
        data["event"], data["event"])
    parts = [f"jobman: job {data['id']}{title} ({_clean(data['docker-image'])}) {what}"]
    if data.get("reason"):
        parts[0] += f": {_clean(data['reason'])}"
    parts[0] += "."
    code = f"Reason code {data.get('reason-code')}" if data.get("reason-code") else ""
    if data.get("exit-code") is not None:
        code += f", exit code {data['exit-code']}" if code else f"Exit code {data['exit-code']}"
    if code:
        parts.append(code + ".")
    parts.append(f"Ended {data.get('finished-at') or '?'} after {data.get('attempts', 0)} attempt(s).")
    if isinstance(data.get("cost"), (int, float)):
        from ..cost.receipt import format_usd

        parts.append(f"Cost {format_usd(data['cost'])}.")
    parts.append(f"Log: `{data['log']['command']}`.")
    return " ".join(parts)


def subject(data: dict[str, Any]) -> str:
    """The SNS Subject (at most 100 characters): a job event names the job and its status, a schedule
    event (no job, no status) names the schedule and what happened to its occurrence."""
    if str(data.get("event", "")).startswith("schedule."):
        what = "missed" if data["event"] == "schedule.missed" else "refused"
        text = f"jobman: schedule {data.get('schedule-id', '?')} {what}"
    else:
        text = f"jobman: job {data.get('id', '?')} {data.get('status', '?')}"
    return text[:100]


def _schedule_text(data: dict[str, Any]) -> str:
    """The paragraph of a schedule event (a missed or refused occurrence: no job)."""
    title = f" \u201c{_clean(data['title'])}\u201d" if data.get("title") else ""
    what = "missed" if data["event"] == "schedule.missed" else "refused"
    count = int(data.get("count") or 1)
    when = (f"{count} occurrences {data.get('occurrence')} .. {data.get('until')}" if count > 1
            else f"occurrence {data.get('occurrence')}")
    text = f"jobman: schedule {data['schedule-id']}{title}: {when} {what}"
    if data.get("reason"):
        text += f": {_clean(data['reason'])}"
    return text + f". Reason code {data.get('reason-code')}. See `{data['log']['command']}`."


def _clean(text: Any) -> str:
    """Slack's control characters (<, >, &) escaped, so a title cannot ping @channel or link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
