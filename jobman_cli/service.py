"""Use cases: the one place where a request becomes a stored fact.

The CLI and the HTTP API both call :class:`JobService`; neither holds a business rule. Validation
comes from :mod:`validation` / :mod:`timeparse`, state changes from the :class:`~model.Job`
transition methods, persistence from the store port. Field names in error messages follow the
caller (``--image`` on the command line, ``docker-image`` over HTTP) through :class:`FieldNames`.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Collection

from .clock import Clock, SystemClock
from .errors import IdempotencyConflict, InvalidInput, JobmanError
from .model import DEFAULT_START_DEADLINE, DEFAULT_TIMEOUT, Job, JobStatus
from .stores.base import JobStore

if TYPE_CHECKING:  # capacity (and decimal) is imported when a job is scheduled, not by every command
    from .capacity import CapacityDefaults


@dataclass(frozen=True)
class FieldNames:
    """How each input field is called by the front end that received it."""

    title: str = "title"
    when: str = "date-time"
    image: str = "docker-image"
    env: str = "env-variables"
    instance_type: str = "instance-type"
    timeout: str = "timeout"
    start_deadline: str = "start-deadline"
    idempotency_key: str = "idempotency-key"
    tz: str = "tz"
    status: str = "status"
    exit_code: str = "exit-code"
    command: str = "command"
    entrypoint: str = "entrypoint"
    disk_gb: str = "disk-gb"
    secrets: str = "secrets"
    container_imds: str = "container-imds"
    notify: str = "notify"
    notify_on: str = "notify-on"
    subnet_ids: str = "subnet-ids"
    capacity: str = "capacity"
    max_interruptions: str = "max-interruptions"
    max_cost: str = "max-cost"


API_FIELDS = FieldNames()
CLI_FIELDS = FieldNames(
    title="--title", when="--at", image="--image", env="-e/--env-file", instance_type="--instance-type",
    timeout="--timeout", start_deadline="--start-deadline", idempotency_key="--idempotency-key",
    tz="--tz", status="--status", exit_code="--exit-code", command="CMD", entrypoint="--entrypoint",
    disk_gb="--disk-gb", secrets="--secret", container_imds="--container-imds", notify="--notify",
    notify_on="--notify-on", subnet_ids="--subnet-id", capacity="--capacity",
    max_interruptions="--max-interruptions", max_cost="--max-cost",
)

RELATIVE_PREFIXES = ("now", "+", "in ")
#: Idempotency keys only the schedules materializer may use: each run of a schedule is keyed
#: ``schedule-<id>-<occurrence>`` (:func:`jobman_cli.daemon.schedules.occurrence_key`).
RESERVED_KEY = re.compile(r"schedule-[0-9]+-")


@dataclass(frozen=True)
class ScheduleRequest:
    """Raw, unvalidated input of a schedule call, as either front end received it."""

    image: Any
    when: Any
    title: Any = ""
    env: Any = field(default_factory=dict)
    instance_type: Any = None
    timeout: Any = None
    start_deadline: Any = None
    idempotency_key: Any = None
    tz: Any = None
    command: Any = None
    entrypoint: Any = None
    disk_gb: Any = None
    secrets: Any = None
    container_imds: Any = False
    #: None: the service's :attr:`JobService.notify_defaults` (``[notify]`` in config.toml).
    notify: Any = None
    notify_on: Any = None
    #: The launch ladder (DESIGN.md section 13; :mod:`jobman_cli.capacity`). ``capacity`` and
    #: ``max_interruptions`` None: the service's :attr:`JobService.capacity_defaults`.
    subnet_ids: Any = None
    capacity: Any = None
    max_interruptions: Any = None
    max_cost: Any = None
    #: Set by the schedules materializer only (never by a front end): the schedule and the
    #: occurrence (UTC datetime) this job runs for. Copied onto the draft unvalidated.
    schedule_id: Any = None
    occurrence: Any = None


def launch_token_for(store_id: str, job_id: int, attempt: int) -> str:
    """The EC2 ``ClientToken``: deterministic per store, job and attempt, at most 64 ASCII chars."""
    return f"jobman-{store_id[:16]}-{job_id}-{attempt}"


class JobService:
    """The use cases of jobman over one store. Thread-safe as far as the store is."""

    def __init__(self, store: JobStore, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self._listeners: list[Callable[[Job], None]] = []
        #: Targets and ``notify-on`` of a request that names none (the front end reads them from
        #: ``[notify]`` in config.toml: :func:`jobman_cli.notify.settings.default_targets`).
        self.notify_defaults: tuple[tuple[str, ...], str] = ((), "failure")
        #: Capacity and interruption budget of a request that names none (the front end reads them
        #: from ``[ec2]`` in config.toml: :func:`jobman_cli.capacity.config_defaults`). Stored on
        #: the job, so it shows what it will use. None until set or first read: see the property.
        self._capacity_defaults: CapacityDefaults | None = None

    @property
    def capacity_defaults(self) -> CapacityDefaults:
        """Capacity and interruption budget of a request that names none (default: on-demand, 3).
        Made on first use so that commands which schedule nothing (``status``, ``list``) do not
        import :mod:`jobman_cli.capacity` and :mod:`decimal` (~2.6 ms)."""
        if self._capacity_defaults is None:
            from .capacity import CapacityDefaults

            self._capacity_defaults = CapacityDefaults()
        return self._capacity_defaults

    @capacity_defaults.setter
    def capacity_defaults(self, value: CapacityDefaults) -> None:
        self._capacity_defaults = value

    # ------------------------------------------------------------------ notifications
    def subscribe(self, listener: Callable[[Job], None]) -> None:
        """Call ``listener(job)`` after every change of state made through this service (the
        daemon's log line and wake-up); not after a no-op (a repeated cancel or callback)."""
        self._listeners.append(listener)

    def _changed(self, job: Job) -> Job:
        """Tell the listeners that ``job`` changed state (never for a no-op: DESIGN.md section 5
        wants one daemon log line per state *change*, and a listener wakes the loop for it)."""
        for listener in self._listeners:
            listener(job)
        return job

    def _update(self, job_id: int, change: Callable[[Job], Job]) -> tuple[Job, bool]:
        """``store.update``, and whether *this* write changed the job's state. Judged inside the
        compare-and-set, on the version the write was based on: a separate read before the update
        would count another process's change in between as ours, and a new version that only
        records a time (the first ``running`` report of a job already running) is no change."""
        applied: list[tuple[Job, Job]] = []

        def recorded(current: Job) -> Job:
            new = change(current)
            applied.append((current, new))  # the compare-and-set may run it more than once: the last counts
            return new

        after = self.store.update(job_id, recorded)
        current, new = applied[-1]
        return after, new is not current and new.status is not current.status

    # ------------------------------------------------------------------ schedule
    def validate(self, request: ScheduleRequest, names: FieldNames = API_FIELDS) -> Job:
        """Turn a request into a draft job, or raise InvalidInput naming the first bad field."""
        from . import secretrefs, timeparse, validation

        now = self.clock.now()
        image = validation.validate_image(_require_str(request.image, names.image), field=names.image)
        title = validation.validate_title(request.title if request.title is not None else "", field=names.title)
        if request.occurrence is None and not isinstance(request.when, str):
            raise InvalidInput(names.when, "must be a string such as 'now', '+10m' or '2026-12-01 09:00:00'")
        tz = request.tz
        if tz is not None and not isinstance(tz, str):
            raise InvalidInput(names.tz, "must be a time zone name such as 'Europe/Berlin'")
        if request.occurrence is not None:  # a schedule's run (internal): its occurrence, even if past
            date_time = request.occurrence
        else:
            date_time = timeparse.parse_when(request.when, now=now, tz=tz, field=names.when, tz_field=names.tz)
        env = validation.validate_env_mapping(request.env if request.env is not None else {}, field=names.env)
        timeout = (DEFAULT_TIMEOUT if request.timeout is None
                   else validation.parse_duration(request.timeout, field=names.timeout))
        start_deadline = (DEFAULT_START_DEADLINE if request.start_deadline is None
                          else validation.parse_duration(request.start_deadline, field=names.start_deadline))
        from . import capacity as cap

        instance_type = (None if request.instance_type is None
                         else cap.validate_instance_types(request.instance_type, field=names.instance_type))
        subnet_ids = cap.validate_subnet_ids(request.subnet_ids, field=names.subnet_ids)
        defaults = self.capacity_defaults
        capacity = cap.validate_capacity(defaults.capacity if request.capacity is None else request.capacity,
                                         field=names.capacity)
        max_interruptions = cap.parse_max_interruptions(
            defaults.max_interruptions if request.max_interruptions is None else request.max_interruptions,
            field=names.max_interruptions)
        if request.occurrence is None:  # a front end's input (a stored schedule's runs keep running)
            validation.refuse_budget_without_spot(request.capacity, request.max_interruptions, names.capacity,
                                                  names.max_interruptions)
        max_cost = cap.parse_max_cost(request.max_cost, field=names.max_cost)
        key = (None if request.idempotency_key is None
               else validation.validate_idempotency_key(request.idempotency_key, field=names.idempotency_key))
        if key is not None and request.occurrence is None and RESERVED_KEY.match(key):
            # The materializer's key of an occurrence is predictable (schedule id + next-at are
            # public): a front end's job holding it would take that run's place (refused, or adopted).
            raise InvalidInput(names.idempotency_key, f"{key[:80]!r} is reserved: keys that begin "
                                                      "'schedule-<number>-' name the runs of recurring schedules")
        command = validation.validate_command(request.command, field=names.command)
        entrypoint = validation.validate_entrypoint(request.entrypoint, field=names.entrypoint)
        disk_gb = validation.parse_disk_gb(request.disk_gb, field=names.disk_gb)
        secrets = secretrefs.validate_secrets_mapping(request.secrets, field=names.secrets)
        clash = sorted(set(secrets) & set(env))
        if clash:
            raise InvalidInput(names.secrets, f"{clash[0]!r} is also a plain environment variable; "
                                              "give it one way only")
        if not isinstance(request.container_imds, bool):
            raise InvalidInput(names.container_imds, "must be true or false")
        from .notify.targets import validate_notify_on, validate_targets

        notify = (self.notify_defaults[0] if request.notify is None
                  else validate_targets(request.notify, field=names.notify))
        notify_on = validate_notify_on(request.notify_on if request.notify_on is not None
                                       else self.notify_defaults[1], field=names.notify_on)
        if request.notify_on is not None and not notify and request.occurrence is None:
            # Asked for notifications that can never be sent: said now, not discovered at the end.
            # (A schedule's run is not refused here: its template was checked when it was created.)
            raise InvalidInput(names.notify_on, f"there is no target to notify: give {names.notify} TARGET "
                                                "(or set [notify] targets in config.toml)")
        when_text = "" if request.occurrence is not None else request.when.strip().lower()
        # For a relative time ("now", "+10m") a retried cron call names the same *request*, not the
        # same instant, so the idempotency check compares the text; for an absolute time, the instant.
        when_spec = when_text if when_text.startswith(RELATIVE_PREFIXES) else date_time.isoformat()
        draft = Job(
            id=0, title=title, date_time=date_time, docker_image=image, env_variables=env,
            status=JobStatus.SCHEDULED, created_at=now,
            timeout=timeout, start_deadline=start_deadline, instance_type=instance_type,
            idempotency_key=key, updated_at=now, extra={"when-spec": when_spec},
            command=command, entrypoint=entrypoint, disk_gb=disk_gb, secrets=secrets,
            container_imds=request.container_imds, notify=notify, notify_on=notify_on,
            subnet_ids=subnet_ids, capacity=capacity, max_interruptions=max_interruptions, max_cost=max_cost,
            schedule_id=request.schedule_id, occurrence=request.occurrence,
        )
        _check_user_data_size(draft, names)
        from .cost.limits import check_at_schedule  # --max-cost from cached prices (never AWS)

        check_at_schedule(draft, field=names.max_cost)
        return draft

    def schedule(self, request: ScheduleRequest, names: FieldNames = API_FIELDS) -> tuple[Job, bool]:
        """Store a new job; ``(job, False)`` when the idempotency key names an identical job."""
        draft = self.validate(request, names)
        job, created = self.store.add(draft)
        if not created:
            if _idempotency_view(job) != _idempotency_view(draft):
                raise IdempotencyConflict(
                    f"{names.idempotency_key}: {draft.idempotency_key!r} already names job {job.id} "
                    "with different fields (use a new key for a new job)"
                )
            return job, False
        return self._changed(job), True

    # ------------------------------------------------------------------ queries
    def get(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def list(self, statuses: Collection[JobStatus] | None = None, limit: int | None = None,
             since: int | None = None, schedule: int | None = None) -> list[Job]:
        """Newest first; at most ``limit``; only jobs created in the last ``since`` seconds, only
        runs of ``schedule`` (the store answers that without reading every job); the names are
        the API's query parameters: the remote client forwards them as they are."""
        return self.store.list(statuses or None, limit=limit, since=self._since(since), schedule=schedule)

    def _since(self, seconds: int | None) -> datetime | None:
        return None if seconds is None else self.clock.now() - timedelta(seconds=seconds)

    def list_api(self, statuses: Collection[JobStatus] | None = None, limit: int | None = None,
                 since: int | None = None, schedule: int | None = None) -> list[dict[str, Any]]:
        """The public JSON of many jobs, newest first, straight from the stored records."""
        from .errors import StoreError
        from .model import record_to_api

        records = self.store.list_records(statuses or None, limit=limit, since=self._since(since), schedule=schedule)
        try:
            return [record_to_api(record) for record in records]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            bad = next((r for r in records if not _projects(r)), {})
            raise StoreError(f"{self.store.location}: job record {bad.get('id', '?')!r} is malformed "
                             f"({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ housekeeping
    def prune(self, ended_before_seconds: int, dry_run: bool = False) -> tuple[datetime, list[int]]:
        """Delete jobs that ended more than ``ended_before_seconds`` ago (never active ones, never
        one still owing a notification; ids are not reused): the cutoff used and the ids, ascending."""
        cutoff = self.clock.now() - timedelta(seconds=ended_before_seconds)
        return cutoff, self.store.prune(cutoff, dry_run=dry_run)

    # ------------------------------------------------------------------ changes
    def report(self, job_id: int, status: str, exit_code: int | None = None, reason_code: Any = None,
               reason: Any = None) -> Job:
        """The completion callback (HTTP PUT or ``jobman callback``); ``reason_code``/``reason``
        say why a ``failed`` run failed (DESIGN.md section 9)."""
        now = self.clock.now()
        after, moved = self._update(job_id, lambda job: job.reported(status, exit_code, now, reason_code, reason))
        return self._changed(after) if moved else after

    def cancel(self, job_id: int, terminate: Callable[[str], None] | None = None, reason: str | None = None) -> Job:
        """Cancel a job. A launched job's instance is terminated through ``terminate(instance_id)``.
        ``reason``: the job's reason when not the operator's (a schedule's ``overlap replace``).

        The cancellation is stored first, so if terminating fails the daemon's reaper still ends the
        instance (its job is terminal), and a launch in flight sees the cancellation and undoes itself.
        """
        now = self.clock.now()
        job, moved = self._update(
            job_id, lambda current: current.cancelled(now) if reason is None else current.cancelled(now, reason))
        if moved:  # a job already cancelled: an idempotent no-op, nothing to tell
            self._changed(job)
        if job.instance_id and terminate is not None:
            try:
                terminate(job.instance_id)
            except JobmanError as exc:
                raise JobmanError(f"job {job.id} is cancelled, but its instance {job.instance_id} was not terminated "
                                  f"({exc}); the daemon's reaper will terminate it") from None
        return job

    def wait(self, job_id: int, timeout: float | None, poll: float = 0.1) -> Job | None:
        """Block until the job is terminal; None if ``timeout`` seconds pass first.

        Polls the store's cheap change marker and re-reads the job only when it moved. The marker
        is read *before* the job (as the daemon's loop does): a write landing between the two reads
        then moves the marker past the one held, so it is never taken as already seen.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = self.store.change_marker()
        job = self.store.get(job_id)
        while not job.terminal:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
            current = self.store.change_marker()
            if current != marker:
                marker = current
                job = self.store.get(job_id)
        return job


#: A generous stand-in for the daemon's public URL when checking the user-data size at schedule time.
_WORST_CASE_URL = "https://" + "x" * 200 + ".example:65535"


#: ``list --since`` / ``prune --ended-before``: up to ten years (a bound, so a typo is an error).
MAX_WINDOW = 3653 * 86400
MAX_LIST_LIMIT = 10**9


def parse_list_limit(text: Any, field: str = "--limit") -> int:
    """``list --limit N`` / ``?limit=N``: a whole number of jobs, at least 1."""
    value = text.strip() if isinstance(text, str) else text
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 1 <= value <= MAX_LIST_LIMIT:
        shown = repr(text) if isinstance(text, str) else type(text).__name__
        raise InvalidInput(field, f"must be a whole number from 1 to {MAX_LIST_LIMIT} (got {shown[:40]})")
    return value


def parse_list_since(text: Any, field: str = "--since") -> int:
    """``list --since DUR`` / ``?since=DUR``: seconds in (0, ten years] (``30m``, ``7d``, seconds)."""
    from .validation import parse_duration

    return parse_duration(text, field=field, maximum=MAX_WINDOW)


def _check_user_data_size(draft: Job, names: FieldNames) -> None:
    """Refuse at schedule time a job whose user-data would exceed EC2's 16 KiB, not hours later."""
    from .joblogs import size_probe_target
    from .launchers.userdata import WORST_CASE_TOKEN, callback_url_for, render_user_data  # stdlib only: cheap

    probe = replace(draft, id=2**53)
    try:
        render_user_data(probe, callback_url=callback_url_for(_WORST_CASE_URL, probe.id),
                         callback_token=WORST_CASE_TOKEN, logs=size_probe_target())
    except InvalidInput as exc:
        if exc.field == "env-variables":
            raise InvalidInput(names.env, exc.rule) from None
        if exc.field in ("command", "entrypoint", "secrets"):
            raise InvalidInput(getattr(names, exc.field), exc.rule) from None
        raise


def _projects(record: Any) -> bool:
    from .model import record_to_api

    try:
        record_to_api(record)
        return True
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _require_str(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field_name, "is required and must be a string")
    return value


def _idempotency_view(job: Job) -> tuple:
    fingerprint = job.fingerprint()
    return (job.extra.get("when-spec"),) + fingerprint[:1] + fingerprint[2:]


def env_from_cli(assignments: Collection[str], env_file: str | None, names: FieldNames = CLI_FIELDS) -> dict[str, str]:
    """Merge ``--env-file`` then ``-e`` (later wins), as docker does."""
    from . import validation

    env: dict[str, str] = {}
    if env_file:
        env.update(validation.read_env_file(env_file, field="--env-file"))
    env.update(validation.parse_env_assignments(assignments, field="-e"))
    return env
