"""The schedules part of the store contract (``add_schedule`` ... ``delete_schedule`` of the port).

Use like :mod:`store_contract`: subclass :class:`ScheduleContract` with a ``make_store`` fixture
that opens a new handle on one and the same empty store each call (as another process would).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from conftest import T0, make_draft
from jobman_cli.errors import ScheduleNotFound
from jobman_cli.schedules.model import MAX_RECORDS, Overlap, Schedule
from store_contract import run_threads


def make_schedule(**overrides) -> Schedule:
    fields = dict(id=0, title="nightly", cron="30 2 * * *", every=None, tz="Europe/Berlin", overlap=Overlap.FORBID,
                  template={"docker-image": "alpine:3", "env-variables": {"A": "1"}, "start-deadline": 600},
                  paused=False, created_at=T0, next_at=T0 + timedelta(hours=1), updated_at=T0)
    fields.update(overrides)
    return Schedule(**fields)


def append(detail: str):
    """A pure change adding one record: a lost update shows as a missing record."""
    def change(s: Schedule) -> Schedule:
        return s.with_record(T0, T0, "created", job_id=len(s.records) + 1, detail=detail)
    return change


class ScheduleContract:
    @pytest.fixture
    def sstore(self, make_store):
        return make_store()

    def test_add_gives_fresh_ascending_ids_and_get_returns_what_add_returned(self, sstore, make_store):
        first = sstore.add_schedule(make_schedule(id=99))
        second = sstore.add_schedule(make_schedule(title="other", cron=None, every=900, tz="UTC"))
        assert (first.id, second.id) == (1, 2)
        other = make_store()
        assert other.get_schedule(1) == first and other.get_schedule(2) == second
        assert first.template == {"docker-image": "alpine:3", "env-variables": {"A": "1"}, "start-deadline": 600}
        assert second.every == 900 and second.cron is None and first.overlap is Overlap.FORBID

    def test_ids_are_never_reused_after_a_delete(self, sstore, make_store):
        sstore.add_schedule(make_schedule())
        newest = sstore.add_schedule(make_schedule())
        make_store().delete_schedule(newest.id)
        assert sstore.add_schedule(make_schedule()).id == newest.id + 1

    def test_unknown_ids_raise_schedule_not_found(self, sstore):
        sstore.add_schedule(make_schedule())
        for call in (lambda: sstore.get_schedule(7), lambda: sstore.update_schedule(7, append("x")),
                     lambda: sstore.delete_schedule(7), lambda: sstore.get_schedule("abc")):
            with pytest.raises(ScheduleNotFound):
                call()
        sstore.delete_schedule(1)
        with pytest.raises(ScheduleNotFound):
            sstore.delete_schedule(1)
        with pytest.raises(ScheduleNotFound):
            sstore.get_schedule(1)

    def test_list_is_by_id_ascending_and_seen_by_other_handles(self, sstore, make_store):
        assert sstore.list_schedules() == []
        made = [sstore.add_schedule(make_schedule(title=f"s{i}")) for i in range(3)]
        assert make_store().list_schedules() == made

    def test_update_is_compare_and_set_and_bumps_the_version(self, sstore, make_store):
        s = sstore.add_schedule(make_schedule())
        paused = make_store().update_schedule(s.id, lambda cur: dataclasses.replace(cur, paused=True))
        assert paused.paused and paused.version == s.version + 1  # bumped even when the change forgot
        assert sstore.get_schedule(s.id) == paused

    def test_a_change_returning_the_same_object_writes_nothing(self, sstore):
        s = sstore.add_schedule(make_schedule())
        marker = sstore.change_marker()
        assert sstore.update_schedule(s.id, lambda cur: cur) == s
        assert sstore.get_schedule(s.id).version == s.version
        assert sstore.change_marker() == marker

    def test_a_change_that_raises_writes_nothing(self, sstore):
        s = sstore.add_schedule(make_schedule())

        def refuse(cur: Schedule) -> Schedule:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            sstore.update_schedule(s.id, refuse)
        assert sstore.get_schedule(s.id) == s

    def test_a_schedule_write_moves_the_change_marker(self, sstore, make_store):
        sstore.add_schedule(make_schedule())
        marker = sstore.change_marker()
        make_store().update_schedule(1, append("a"))
        assert sstore.change_marker() != marker

    def test_the_schedule_marker_moves_with_every_schedule_write(self, sstore, make_store):
        other = make_store()
        seen = [sstore.schedule_marker()]
        for write in (lambda: other.add_schedule(make_schedule()),
                      lambda: other.update_schedule(1, append("a")),
                      lambda: other.update_schedule(1, lambda cur: dataclasses.replace(cur, paused=True)),
                      lambda: other.delete_schedule(1)):
            write()
            seen.append(sstore.schedule_marker())
            assert seen[-1] != seen[-2]
        with pytest.raises(ScheduleNotFound):
            other.delete_schedule(1)
        assert sstore.schedule_marker() == seen[-1]  # a refused write moves nothing

    def test_records_round_trip_and_are_capped(self, sstore):
        s = sstore.add_schedule(make_schedule())
        many = s
        for i in range(MAX_RECORDS + 3):
            many = many.with_record(T0, T0 + timedelta(minutes=i), "missed" if i % 2 else "created",
                                    job_id=None if i % 2 else i, detail=f"r{i}")
        stored = sstore.update_schedule(s.id, lambda cur: dataclasses.replace(many, version=cur.version + 1))
        assert len(stored.records) == MAX_RECORDS
        assert stored.records[0]["detail"] == "r3" and stored.records[-1]["detail"] == f"r{MAX_RECORDS + 2}"
        assert sstore.get_schedule(s.id).records == stored.records

    def test_concurrent_updates_lose_nothing(self, sstore, make_store):
        s = sstore.add_schedule(make_schedule())
        handles = [make_store() for _ in range(4)]

        def writer(index: int) -> None:
            for n in range(8):
                handles[index].update_schedule(s.id, append(f"w{index}-{n}"))

        run_threads(4, writer)
        final = sstore.get_schedule(s.id)
        assert sorted(r["detail"] for r in final.records) == sorted(f"w{i}-{n}" for i in range(4) for n in range(8))
        assert final.version == s.version + 32
        # every change saw the state before it: the job ids it numbered are 1..32, each once
        assert sorted(r["job-id"] for r in final.records) == list(range(1, 33))

    def test_schedules_and_jobs_are_apart(self, sstore, make_store):
        job, _ = sstore.add(make_draft())
        s = sstore.add_schedule(make_schedule())
        job2, _ = make_store().add(make_draft(schedule_id=s.id, occurrence=T0))
        assert (job.id, s.id, job2.id) == (1, 1, 2)
        assert [j.id for j in sstore.list()] == [2, 1]  # no schedule among the jobs
        sstore.delete_schedule(s.id)
        assert sstore.get(job2.id).schedule_id == s.id  # its jobs stay
        assert make_store().list_schedules() == []
