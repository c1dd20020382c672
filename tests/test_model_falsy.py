"""The serializer keeps a field set to a falsy value (0, 0.0) as set, never as its default.

``--max-interruptions 0`` (fail at the first spot interruption) and a zero ``--max-cost`` or cost
are real settings, yet ``x or default`` would turn them into 3 or None on the way to JSON or back
from a store. The other model tests compare the serializer's paths with each other, so a default
applied on the shared path (``job_to_api``) would pass them; these pin the values themselves.
"""

from __future__ import annotations

from conftest import make_draft

from jobman_cli.model import as_stored, job_from_record, job_to_api, job_to_record, record_to_api

FALSY = {"max_interruptions": 0, "max_cost": 0.0, "cost": 0.0, "interruptions": 0}


def test_falsy_settings_are_shown_as_set() -> None:
    api = job_to_api(make_draft(id=3, capacity="spot", **FALSY))
    assert (api["max-interruptions"], api["max-cost"], api["cost"], api["interruptions"]) == (0, 0.0, 0.0, 0)


def test_falsy_settings_survive_a_store() -> None:
    job = make_draft(id=3, capacity="spot", **FALSY)
    record = job_to_record(job)
    assert record_to_api(record) == job_to_api(job)  # the bulk path shows what the job shows
    back = job_from_record(record)
    assert (back.max_interruptions, back.max_cost, back.cost, back.interruptions) == (0, 0.0, 0.0, 0)
    assert as_stored(job) == job
