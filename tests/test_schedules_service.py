"""ScheduleService: the template is validated as a job (the caller's field names), next_at, pause and
resume (occurrences while paused are neither run nor recorded), and the run request of an occurrence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobman_cli.clock import FixedClock
from jobman_cli.errors import InvalidInput, ScheduleNotFound
from jobman_cli.schedules.model import Overlap, schedule_from_record, schedule_to_api, schedule_to_record
from jobman_cli.schedules.service import (ScheduleService, request_to_template, template_fields,
                                          template_to_request)
from jobman_cli.service import API_FIELDS, CLI_FIELDS, JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
T = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)  # the day before Berlin's spring-forward


@pytest.fixture()
def clock() -> FixedClock:
    return FixedClock(T)


@pytest.fixture()
def service(tmp_path, clock) -> ScheduleService:
    store = TinyDBStore(tmp_path / "jobs.json")
    yield ScheduleService(JobService(store, clock))
    store.close()


def body(**extra):
    return {"cron": "30 2 * * *", "tz": "Europe/Berlin", "docker-image": "alpine:3.20", **extra}


def test_create_sets_next_at_by_the_dst_rule_and_stores_explicit_zone(service):
    s = service.create(body(title="nightly", timeout="10m", **{"env-variables": {"A": "1"}}))
    assert s.next_at == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 02:30 does not exist: 03:00 CEST
    assert (s.id, s.tz, s.overlap, s.paused, s.created_at) == (1, "Europe/Berlin", Overlap.FORBID, False, T)
    assert s.template == {"docker-image": "alpine:3.20", "title": "nightly", "timeout": 600, "start-deadline": 3600,
                          "env-variables": {"A": "1"}}
    assert service.get(1) == s and service.list() == [s]


def test_without_tz_the_system_zone_is_stored_explicitly(service, monkeypatch):
    monkeypatch.setenv("JOBMAN_TZ", "America/New_York")
    s = service.create({"cron": "@daily", "docker-image": "alpine"})
    assert s.tz == "America/New_York"


def test_a_bad_jobman_tz_is_named_and_a_posix_tz_string_is_not_stored(service, monkeypatch):
    monkeypatch.setenv("JOBMAN_TZ", "Mars/Base")
    with pytest.raises(InvalidInput) as err:
        service.create({"cron": "@daily", "docker-image": "alpine"})
    assert err.value.field == "JOBMAN_TZ"
    monkeypatch.delenv("JOBMAN_TZ")
    monkeypatch.setenv("TZ", "CET-1CEST")  # a POSIX rule: refused (--at would follow it, the schedule could not)
    with pytest.raises(InvalidInput) as err:
        service.create({"cron": "@daily", "docker-image": "alpine"})
    assert err.value.field == "TZ" and service.list() == []


def test_the_template_goes_through_every_job_rule_with_the_callers_names(service):
    with pytest.raises(InvalidInput) as err:
        service.create(body(**{"docker-image": "Bad Image"}), CLI_FIELDS)
    assert err.value.field == "--image"
    with pytest.raises(InvalidInput) as err:
        service.create(body(timeout="forever"), API_FIELDS)
    assert err.value.field == "timeout"
    with pytest.raises(InvalidInput) as err:
        service.create(body(**{"env-variables": {"A": "x" * 20000}}), API_FIELDS)  # user-data would exceed 16 KiB
    assert err.value.field == "env-variables"
    for key, field in (("date-time", "date-time"), ("idempotency-key", "idempotency-key"), ("colour", "colour")):
        with pytest.raises(InvalidInput) as err:
            service.create(body(**{key: "x"}))
        assert err.value.field == field
    assert service.list() == []


@pytest.mark.parametrize("spec,field", [({"cron": "x"}, "cron"), ({"every": "30s"}, "every"), ({"every": 59}, "every"),
                                        ({"cron": "@daily", "tz": "Nowhere/X"}, "tz"),
                                        ({"cron": "@daily", "overlap": "maybe"}, "overlap"),
                                        ({"cron": "@daily", "every": "1h"}, "cron/every"), ({}, "cron/every")])
def test_schedule_fields_are_named_as_the_api_calls_them(service, spec, field):
    with pytest.raises(InvalidInput) as err:
        service.create({"docker-image": "alpine", **spec})
    assert err.value.field == field


def test_every_runs_from_the_minute_of_creation(service, clock):
    clock.set(T + timedelta(seconds=41))
    s = service.create({"every": "15m", "docker-image": "alpine", "tz": "UTC"})
    assert s.every == 900 and s.next_at == T + timedelta(minutes=15)


def test_pause_and_resume_skip_what_passed_while_paused(service, clock):
    s = service.create(body())
    paused = service.pause(s.id)
    assert paused.paused and paused.version == s.version + 1
    assert service.pause(s.id) == paused  # pausing twice writes nothing
    clock.set(T + timedelta(days=3, hours=5))  # three occurrences pass while paused
    resumed = service.resume(s.id)
    assert not resumed.paused and resumed.records == ()
    assert resumed.next_at == datetime(2027, 3, 31, 0, 30, tzinfo=UTC)  # the next 02:30 CEST after now
    assert service.resume(s.id) == resumed
    service.delete(s.id)
    with pytest.raises(ScheduleNotFound):
        service.resume(s.id)


def test_the_run_request_of_an_occurrence_is_what_create_validated(service):
    s = service.create(body(title="t", command=["echo", "hi"], notify=["https://example.com/hook"],
                            **{"start-deadline": "5m", "instance-type": "t3.micro"}))
    occurrence = s.next_at
    request = template_to_request(s.template, when=None, schedule_id=s.id, occurrence=occurrence,
                                  idempotency_key=f"schedule-{s.id}-x")
    job = service.jobs.validate(request)
    assert (job.docker_image, job.title, job.command, job.start_deadline, job.instance_type) == (
        "alpine:3.20", "t", ("echo", "hi"), 300, "t3.micro")
    assert job.date_time == occurrence and job.schedule_id == s.id and job.occurrence == occurrence
    past = template_to_request(s.template, occurrence=occurrence - timedelta(minutes=30), schedule_id=s.id)
    assert service.jobs.validate(past).date_time == occurrence - timedelta(minutes=30)  # a late run's own time
    assert s.start_deadline() == 300


def test_request_to_template_keeps_only_given_fields_and_round_trips():
    request = ScheduleRequest(image="alpine", when=None, title="x", env={"A": "1"}, timeout="10m", tz="UTC",
                              idempotency_key="k", container_imds=False)
    template = request_to_template(request)
    assert template == {"docker-image": "alpine", "title": "x", "env-variables": {"A": "1"}, "timeout": "10m"}
    assert set(template) <= set(template_fields())
    again = template_to_request(template)
    assert (again.image, again.title, again.env, again.timeout, again.idempotency_key) == ("alpine", "x", {"A": "1"},
                                                                                           "10m", None)


def test_api_and_record_shapes(service):
    s = service.create(body())
    assert schedule_from_record(schedule_to_record(s)) == s
    api = schedule_to_api(s)
    assert api["next-at"] == "2027-03-28T01:00:00Z" and api["next-at-local"] == "2027-03-28 03:00:00 CEST (+02:00)"
    assert "version" not in api and set(api) >= {"id", "cron", "every", "tz", "overlap", "template", "records"}


def test_the_public_json_redacts_webhook_secrets_but_the_runs_keep_them(service):
    secret = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    s = service.create(body(notify=[secret, "https://user:pw@example.com/hook?token=abc"]))
    shown = schedule_to_api(s)["template"]["notify"]
    assert not any("secret" in t or "pw" in t or "token" in t for t in shown), shown
    assert template_to_request(service.get(s.id).template).notify == [secret, "https://user:pw@example.com/hook?token=abc"]


def test_preview_stores_nothing_and_validates(service, tmp_path):
    cron, every, tz, found = service.preview("30 2 * * *", None, "Europe/Berlin", T, 2)
    assert found == [datetime(2027, 3, 28, 1, 0, tzinfo=UTC), datetime(2027, 3, 29, 0, 30, tzinfo=UTC)]
    with pytest.raises(InvalidInput) as err:
        service.preview("@daily", None, "UTC", T, 0)
    assert err.value.field == "n"
    assert service.list() == []


def test_recent_runs_is_one_store_query_of_the_schedule_never_a_read_of_every_job():
    """``show``'s runs: the store's query of one schedule's runs, at most 20 (the stores answer it
    without reading every job: tests/test_store_schedule_query.py)."""
    from types import SimpleNamespace

    from jobman_cli.schedules.service import ScheduleService

    runs = [{"id": i, "schedule-id": 2, "occurrence": "o", "status": "finished", "reason": None, "title": "t"}
            for i in range(40, 0, -2)]
    calls: list = []

    def list_records(statuses=None, *, limit=None, since=None, schedule=None):
        calls.append((statuses, limit, since, schedule))
        return runs[:limit]

    service = ScheduleService(SimpleNamespace(store=SimpleNamespace(list_records=list_records), clock=None))
    assert service.recent_runs(2, 20) == [{"id": i, "occurrence": "o", "status": "finished", "reason": None}
                                          for i in range(40, 0, -2)]
    assert calls == [(None, 20, None, 2)]
