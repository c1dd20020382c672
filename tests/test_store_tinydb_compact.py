"""The TinyDB file leaves a job's empty (``None``) fields out, as DynamoDB items do: every reader
takes an absent key as ``None``, so jobs, ``--json`` and the API read exactly the same, and files
written before (with ``null`` for every empty field) read the same too."""

from __future__ import annotations

import orjson

from conftest import make_draft
from jobman_cli.model import job_to_api, job_to_record, record_to_api
from jobman_cli.stores.tinydb import TinyDBStore


def _stored_records(path) -> dict[str, dict]:
    return orjson.loads(path.read_bytes())["jobs"]


def test_no_null_is_written_and_the_job_reads_back_the_same(tmp_path):
    path = tmp_path / "jobs.json"
    with TinyDBStore(path) as store:
        job, _ = store.add(make_draft(extra={"when-spec": "+1h", "future-field": None}))
        assert job.exit_code is None and job.schedule_id is None and job.placement is None
    record = _stored_records(path)[str(job.id)]
    assert None not in [v for k, v in record.items() if k != "future-field"]
    assert "future-field" in record  # an unknown key someone stored, even null, is kept as it was
    assert "exit-code" not in record and "schedule-id" not in record
    with TinyDBStore(path, create=False) as reader:
        again = reader.get(job.id)
        assert again == job
        assert record_to_api(reader.list_records()[0]) == job_to_api(job)


def test_a_file_with_nulls_reads_the_same_as_one_without(tmp_path):
    path = tmp_path / "jobs.json"
    with TinyDBStore(path) as store:
        job, _ = store.add(make_draft())
    doc = orjson.loads(path.read_bytes())
    doc["meta"]["1"].pop("jobs-crc32", None)  # a plain TinyDB document, as older versions wrote it
    doc["jobs"][str(job.id)] = job_to_record(job)  # every empty field as null
    assert None in doc["jobs"][str(job.id)].values()
    old = tmp_path / "old.json"
    old.write_bytes(orjson.dumps(doc))
    old.chmod(0o600)
    with TinyDBStore(old, create=False) as reader:
        assert reader.get(job.id) == job
        assert record_to_api(reader.list_records()[0]) == job_to_api(job)
