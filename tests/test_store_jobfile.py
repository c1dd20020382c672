"""The TinyDB store's file itself: the one-job-per-line layout (and files in other layouts), file
modes, the id counter, files that are not ours (damaged, foreign, unreadable, vanished, swapped),
and what writes the file and what must not. What a handle does over time (snapshots, caching, group
commit, racing threads and processes) is in test_store_tinydb.py."""

from __future__ import annotations

import json
import os
import stat
import zlib
from pathlib import Path

import orjson
import pytest
from tinydb import TinyDB

from conftest import make_draft
from jobman_cli.errors import JobNotFound, StoreError, TransitionNotAllowed
from jobman_cli.model import job_to_record
from jobman_cli.stores import jobfile
from jobman_cli.stores.tinydb import TinyDBStore
from store_contract import NOW, bump


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "home" / "jobs.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _count_full_parses(monkeypatch) -> list[int]:
    """Record every full parse of the store file (the slow path the line layout exists to avoid)."""
    calls: list[int] = []
    real = jobfile.decode
    monkeypatch.setattr(jobfile, "decode", lambda *a: calls.append(1) or real(*a))
    return calls


# --------------------------------------------------------------------------- format and files
def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def test_the_file_is_a_plain_tinydb_document_with_one_job_per_line(db_path):
    store = TinyDBStore(db_path)
    first, _ = store.add(make_draft(title="one"))
    store.add(make_draft(title="two"))
    data = db_path.read_bytes()
    doc = json.loads(data)
    assert set(doc) == {"jobs", "meta"}
    lines = data.split(b"\n")
    assert lines[0] == b'{"jobs":{' and lines[-1] == b""  # a text file: it ends with a newline
    assert lines[1] == b'"1":' + orjson.dumps(doc["jobs"]["1"]) + b","
    assert lines[2] == b'"2":' + orjson.dumps(doc["jobs"]["2"])
    assert lines[3] == b'},"meta":' + orjson.dumps(doc["meta"]) + b"}" and len(lines) == 5
    crc = zlib.crc32(b"\n".join(lines[1:3]) + b"\n")  # the job lines, newlines included
    assert doc["meta"] == {"1": {"format": "jobman", "schema": 1, "store-id": store.store_id, "next-id": 3,
                                 "jobs-crc32": crc}}
    assert len(store.store_id) == 32 and int(store.store_id, 16) >= 0
    assert doc["jobs"]["1"]["title"] == "one" and doc["jobs"]["2"]["id"] == 2
    with TinyDB(db_path, access_mode="r") as plain:
        assert plain.table("jobs").get(doc_id=first.id)["title"] == "one"
        assert len(plain.table("jobs")) == 2


def test_an_empty_store_file(db_path):
    TinyDBStore(db_path)
    lines = _lines(db_path)
    assert lines[0] == b'{"jobs":{' and lines[1].startswith(b'},"meta":{"1":{"format":"jobman"') and len(lines) == 3
    assert json.loads(db_path.read_bytes())["meta"]["1"]["jobs-crc32"] == 0
    with TinyDB(db_path, access_mode="r") as plain:
        assert len(plain.table("jobs")) == 0


def test_splicing_writes_exactly_what_a_full_encode_would(db_path):
    store = TinyDBStore(db_path)
    for n in range(5):
        store.add(make_draft(title=f"job {n} ✓", env_variables={"N": str(n), "Q": '"\\n\n'}))
        data = db_path.read_bytes()
        assert data == jobfile.encode(orjson.loads(data)).data
    store.update(2, bump)
    store.update(5, bump)  # the last line
    store.add(make_draft(idempotency_key="k"))
    data = db_path.read_bytes()
    assert data == jobfile.encode(orjson.loads(data)).data
    assert [job.id for job in TinyDBStore(db_path).list()] == [6, 5, 4, 3, 2, 1]


def test_a_file_last_written_by_plain_tinydb_is_still_extended_correctly(db_path):
    store = TinyDBStore(db_path)
    store.add(make_draft(title="one"))
    with TinyDB(db_path, indent=2) as plain:  # a different layout: spaces, newlines
        plain.table("jobs").update({"title": "renamed"}, doc_ids=[1])
        plain.table("notes").insert({"text": "an operator's own table"})
    assert TinyDBStore(db_path, create=False).get(1).title == "renamed"
    job, _ = store.add(make_draft(title="two"))
    data = db_path.read_bytes()
    doc = json.loads(data)
    assert doc["jobs"]["1"]["title"] == "renamed" and doc["jobs"][str(job.id)]["title"] == "two"
    assert doc["meta"]["1"]["next-id"] == job.id + 1
    assert doc["notes"] == {"1": {"text": "an operator's own table"}}  # other tables are kept
    assert data == jobfile.encode(doc).data  # and the file is in the line layout again
    store.update(job.id, bump)
    assert json.loads(db_path.read_bytes())["notes"] == doc["notes"]


def _legacy(path: Path, count: int) -> None:
    """A store as jobman wrote it before the line layout: one line, no CRC."""
    jobs = {str(i): job_to_record(make_draft(id=i, title=f"old {i}", idempotency_key=f"key-{i}"))
            for i in range(1, count + 1)}
    meta = {"format": "jobman", "schema": 1, "store-id": "a" * 32, "next-id": count + 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"jobs": jobs, "meta": {"1": meta}}))


def test_a_one_line_file_is_read_and_the_next_write_rewrites_it_one_job_per_line(db_path, monkeypatch):
    _legacy(db_path, 30)
    assert TinyDBStore(db_path).add(make_draft(idempotency_key="key-3")) == (TinyDBStore(db_path).get(3), False)
    before = db_path.read_bytes()
    assert before.count(b"\n") == 0
    reader = TinyDBStore(db_path, create=False)
    assert reader.get(17).title == "old 17" and [j.id for j in reader.list()][:2] == [30, 29]
    with pytest.raises(JobNotFound):
        reader.get(31)
    assert db_path.read_bytes() == before  # reading never rewrites
    job, created = TinyDBStore(db_path).add(make_draft(title="new"))
    assert created and job.id == 31
    lines = _lines(db_path)
    assert len(lines) == 31 + 3 and lines[0] == b'{"jobs":{' and lines[31].startswith(b'"31":{"id":31,')
    decodes = _count_full_parses(monkeypatch)
    fresh = TinyDBStore(db_path, create=False)
    assert fresh.get(17).title == "old 17" and fresh.get(31).title == "new"
    assert decodes == []  # now in the line layout: the fast path, no full parse
    assert reader.get(31) == job  # the old handle notices the rewrite


def test_a_valid_hand_edit_inside_the_line_layout_is_read_and_the_next_write_restamps_it(db_path, monkeypatch):
    store = TinyDBStore(db_path)
    for n in range(3):
        store.add(make_draft(title=f"job {n}"))
    db_path.write_bytes(db_path.read_bytes().replace(b'"title":"job 1"', b'"title":"edited by hand"'))
    assert jobfile.Lines.parse(db_path.read_bytes()) is None  # the CRC no longer matches
    decodes = _count_full_parses(monkeypatch)
    assert TinyDBStore(db_path, create=False).get(2).title == "edited by hand"
    assert decodes == [1]  # not refused: read by the full parse
    store.update(3, bump)  # the writer parses it all too, then writes it in the layout again
    assert len(decodes) == 2
    data = db_path.read_bytes()
    assert jobfile.Lines.parse(data) is not None and b'"title":"edited by hand"' in data
    assert TinyDBStore(db_path, create=False).get(2).title == "edited by hand" and len(decodes) == 2


def test_strings_that_look_like_the_layout_do_not_confuse_the_line_search(db_path, monkeypatch):
    tricky = ['\n"5":{', '"1":', "}", '\n},"meta":{"1":{}}}\n', "\\n\"2\":{\"id\":2}", "日本語 🚀 é",
              '"idempotency-key":"k"', "\r\n\t\u2028\u2029\x00", "line\n" * 50]
    store = TinyDBStore(db_path)
    jobs = [store.add(make_draft(title=text, env_variables={"V": text, "W": f"{n}\n\"{n + 1}\":"}))[0]
            for n, text in enumerate(tricky)]
    store.update(jobs[1].id, bump)
    assert len(_lines(db_path)) == len(jobs) + 3  # one line per job, whatever their strings hold
    decodes = _count_full_parses(monkeypatch)
    for job in jobs:
        fresh = TinyDBStore(db_path, create=False)
        assert fresh.get(job.id) == (store.get(job.id))
        assert fresh.get(job.id).title == job.title and dict(fresh.get(job.id).env_variables)["V"] == job.title
    assert decodes == []
    for missing in (0, len(jobs) + 1, 10**6):
        with pytest.raises(JobNotFound):
            TinyDBStore(db_path, create=False).get(missing)
    # idempotency: a title holding the key's JSON is not that key
    assert TinyDBStore(db_path).add(make_draft(idempotency_key="k"))[1] is True


def test_every_id_is_found_by_binary_search_with_gaps_between_them(db_path, monkeypatch):
    store = TinyDBStore(db_path)
    for n in range(40):
        store.add(make_draft(title=f"job {n}"))
    with TinyDB(db_path) as plain:  # gaps, by hand; the next write puts the file back in the layout
        plain.table("jobs").remove(doc_ids=[1, 2, 7, 8, 9, 20, 39])
    store.add(make_draft(title="after the gaps"))
    present = {job.id: job for job in store.list()}
    assert 41 in present and 40 in present and 39 not in present
    decodes = _count_full_parses(monkeypatch)
    for job_id in range(0, 44):
        fresh = TinyDBStore(db_path, create=False)
        if job_id in present:
            assert fresh.get(job_id) == present[job_id]
        else:
            with pytest.raises(JobNotFound):
                fresh.get(job_id)
    assert decodes == []


@pytest.mark.parametrize("key", ['say "hi"', "back\\slash\\", '\\"', "k", "é✓", '"', "a\tb"])
def test_idempotency_keys_with_quotes_and_backslashes_are_found_exactly(db_path, key, monkeypatch):
    store = TinyDBStore(db_path)
    decoys = [key + "x", "x" + key, key + '"', key + "\\"]
    for decoy in decoys:
        store.add(make_draft(idempotency_key=decoy, title=f'"idempotency-key":{json.dumps(key)}'))
    store.add(make_draft(extra={"x-future": {"idempotency-key": key}}))  # the field, nested elsewhere
    decodes = _count_full_parses(monkeypatch)
    job, created = TinyDBStore(db_path).add(make_draft(idempotency_key=key))
    assert created and job.id == len(decoys) + 2
    again, created = TinyDBStore(db_path).add(make_draft(idempotency_key=key))
    assert (again, created) == (job, False)
    for n, decoy in enumerate(decoys, 1):
        assert TinyDBStore(db_path).add(make_draft(idempotency_key=decoy))[0].id == n
    assert decodes == []


def test_new_store_files_are_private_whatever_the_umask(db_path):
    old = os.umask(0)
    try:
        store = TinyDBStore(db_path)
        assert mode(db_path.parent) == 0o700
        assert mode(db_path) == 0o600
        assert mode(db_path.with_name("jobs.json.lock")) == 0o600
        store.add(make_draft())  # a rewrite is a new file: still 0600
        assert mode(db_path) == 0o600
    finally:
        os.umask(old)


def test_an_existing_directory_keeps_its_mode(tmp_path):
    tmp_path.chmod(0o755)
    TinyDBStore(tmp_path / "jobs.json")
    assert mode(tmp_path) == 0o755


def test_ids_come_from_the_counter_not_from_the_highest_id(db_path):
    store = TinyDBStore(db_path)
    ids = [store.add(make_draft())[0].id for _ in range(3)]
    with TinyDB(db_path) as plain:  # someone removes the newest job by hand
        plain.table("jobs").remove(doc_ids=[ids[-1]])
    assert store.add(make_draft())[0].id == ids[-1] + 1
    assert TinyDBStore(db_path).add(make_draft())[0].id == ids[-1] + 2


def test_a_stale_counter_never_makes_a_duplicate_id(db_path):
    store = TinyDBStore(db_path)
    for _ in range(3):
        store.add(make_draft())
    doc = json.loads(db_path.read_bytes())
    doc["meta"]["1"]["next-id"] = 2  # a bad hand edit
    db_path.write_text(json.dumps(doc))
    assert TinyDBStore(db_path).add(make_draft())[0].id == 4


def test_stale_temp_files_of_killed_writers_are_removed(db_path):
    store = TinyDBStore(db_path)
    leftover = db_path.with_name(".jobs.json.deadbeef.tmp")
    leftover.write_bytes(b'{"half a')
    unrelated = db_path.with_name("notes.tmp")
    unrelated.write_text("keep me")
    TinyDBStore(db_path).add(make_draft())
    assert not leftover.exists() and unrelated.exists()
    store.add(make_draft())
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["jobs.json", "jobs.json.lock", "notes.tmp"]


# --------------------------------------------------------------------------- files that are not ours
def _valid_store_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "model.json"
    store = TinyDBStore(path)
    for n in range(3):
        store.add(make_draft(title=f"job {n}"))
    return path.read_bytes()


BAD_FILES = {
    "not json": (b"{this is not json", "not valid JSON"),
    "binary garbage": (bytes(range(256)), "not valid JSON"),
    "truncated": (None, "not valid JSON"),
    "empty": (b"", "empty"),
    "only whitespace": (b"  \n\n", "empty"),
    "empty object": (b"{}", "not a jobman store"),
    "json array": (b"[1, 2, 3]", "not a jobman store"),
    "another tinydb database": (b'{"_default": {"1": {"name": "x"}}}', "not a jobman store"),
    "another program's meta": (b'{"meta": {"1": {"format": "other", "schema": 1}}}', "not a jobman store"),
    "newer schema": (b'{"jobs": {}, "meta": {"1": {"format": "jobman", "schema": 2, "store-id": "a", "next-id": 1}}}',
                     "schema 2 is newer"),
    "bad schema": (b'{"jobs": {}, "meta": {"1": {"format": "jobman", "schema": "1"}}}', "damaged"),
    "bad jobs table": (b'{"jobs": [], "meta": {"1": {"format": "jobman", "schema": 1, "store-id": "a", "next-id": 1}}}',
                       "damaged"),
    "a job that is not an object": (
        b'{"jobs": {"1": 5}, "meta": {"1": {"format": "jobman", "schema": 1, "store-id": "a", "next-id": 2}}}',
        "damaged"),
    "a job key that is not an id": (
        b'{"jobs": {"01": {}}, "meta": {"1": {"format": "jobman", "schema": 1, "store-id": "a", "next-id": 2}}}',
        "damaged"),
    # Damage to a file in the line layout, which the fast paths must notice as well as a full parse.
    "truncated in the middle of a job line": (lambda whole: whole[: whole.index(b'"2":') + 40], "not valid JSON"),
    "truncated at the end of a job line": (lambda whole: whole[: whole.index(b'"3":')], "not valid JSON"),
    "the meta line missing": (lambda whole: whole[: whole.rindex(b"},")] + b"}}\n", "not a jobman store"),
    "a garbage line between jobs": (lambda whole: whole.replace(b'\n"3":', b'\ngarbage\n"3":'), "not valid JSON"),
    "a byte of a job line changed": (lambda whole: whole.replace(b'"docker-image":', b'"docker-image"!', 1),
                                     "not valid JSON"),
    "a newer schema in the line layout": (lambda whole: whole.replace(b'"schema":1,', b'"schema":2,'),
                                          "schema 2 is newer"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_damaged_or_foreign_files_are_refused_and_never_written(tmp_path, case):
    content, expected = BAD_FILES[case]
    if content is None:
        whole = _valid_store_bytes(tmp_path)
        content = whole[: len(whole) // 2]
    elif callable(content):
        whole = _valid_store_bytes(tmp_path)
        content = content(whole)
        assert content != whole and whole.count(b"\n") == 5  # really damaged; it was in the line layout
    path = tmp_path / "jobs.json"
    healthy = TinyDBStore(path)  # a handle that was open before the file went bad
    healthy.add(make_draft())
    path.write_bytes(content)
    for attempt in (lambda: TinyDBStore(path), lambda: TinyDBStore(path, create=False),
                    lambda: healthy.add(make_draft()), lambda: healthy.update(1, bump),
                    lambda: healthy.get(1), lambda: healthy.list()):
        with pytest.raises(StoreError) as err:
            attempt()
        message = str(err.value)
        assert str(path) in message and expected in message
        assert "\n" not in message
    assert path.read_bytes() == content


def test_a_malformed_job_record_is_a_store_error(db_path):
    store = TinyDBStore(db_path)
    store.add(make_draft())
    doc = json.loads(db_path.read_bytes())
    del doc["jobs"]["1"]["docker-image"]
    db_path.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="job 1 is malformed"):
        TinyDBStore(db_path).get(1)


def test_a_path_that_cannot_be_read_is_a_store_error(tmp_path):
    (tmp_path / "jobs.json").mkdir()
    with pytest.raises(StoreError, match=r"jobs\.json: cannot read"):
        TinyDBStore(tmp_path / "jobs.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_a_store_error(db_path):
    TinyDBStore(db_path).add(make_draft())
    db_path.chmod(0)
    with pytest.raises(StoreError, match="Permission denied"):
        TinyDBStore(db_path)


def test_a_store_whose_file_vanished_refuses_to_start_over(db_path):
    store = TinyDBStore(db_path)
    store.add(make_draft())
    db_path.unlink()
    with pytest.raises(StoreError, match="disappeared"):
        store.add(make_draft())
    assert not db_path.exists()


# --------------------------------------------------------------------------- writes, and no writes
def test_idempotent_add_and_noop_update_leave_the_file_untouched(db_path):
    store = TinyDBStore(db_path)
    job, _ = store.add(make_draft(idempotency_key="k"))
    before, st = db_path.read_bytes(), os.stat(db_path)
    assert TinyDBStore(db_path).add(make_draft(idempotency_key="k")) == (job, False)
    assert store.update(job.id, lambda j: j) == job
    with pytest.raises(TransitionNotAllowed):
        store.update(job.id, lambda j: j.reported("running", None, NOW))
    assert db_path.read_bytes() == before
    assert os.stat(db_path).st_ino == st.st_ino and os.stat(db_path).st_mtime_ns == st.st_mtime_ns


def test_a_store_swapped_for_another_under_an_open_handle_is_refused(tmp_path, db_path):
    store = TinyDBStore(db_path)
    store.add(make_draft())
    TinyDBStore(tmp_path / "other.json").add(make_draft())
    os.replace(tmp_path / "other.json", db_path)
    with pytest.raises(StoreError, match="replaced by a different store"):
        store.list()
    assert len(TinyDBStore(db_path).list()) == 1  # a fresh handle simply opens the new store


def test_read_only_open_of_a_missing_store_creates_nothing(tmp_path):
    path = tmp_path / "not-yet" / "jobs.json"
    store = TinyDBStore(path, create=False)
    assert store.list() == [] and store.due(NOW) == [] and store.active() == []
    assert store.next_due_at() is None and store.change_marker() is None and store.store_id == ""
    with pytest.raises(JobNotFound):
        store.get(1)
    with pytest.raises(JobNotFound):
        store.update(1, bump)
    assert not path.parent.exists()
    job, created = store.add(make_draft())  # the first write creates it
    assert created and job.id == 1
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert store.store_id and TinyDBStore(path, create=False).store_id == store.store_id


def test_a_writer_creates_the_store_under_a_read_only_handle(db_path):
    reader = TinyDBStore(db_path, create=False)
    assert reader.list() == []
    job, _ = TinyDBStore(db_path).add(make_draft())
    assert reader.get(job.id) == job and reader.store_id
