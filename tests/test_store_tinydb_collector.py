"""A read-only TinyDB handle keeps a whole-file parse out of the cyclic collector's walks
(``gc.freeze``) only while it is open, and a daemon's (``create=True``) handle never does: frozen
objects that became cyclic garbage would never be collected in a long-running process."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from conftest import make_draft
from jobman_cli.model import JobStatus
from jobman_cli.stores.tinydb import TinyDBStore


@pytest.fixture
def store_file(tmp_path) -> Path:
    path = tmp_path / "jobs.json"
    with TinyDBStore(path) as store:
        for _ in range(3):
            store.add(make_draft())
    return path


@pytest.fixture(autouse=True)
def unfrozen():
    gc.unfreeze()  # whatever an earlier test of this worker left: start from nothing frozen
    yield
    gc.unfreeze()


@pytest.mark.parametrize("call", ["list", "list_records"])
def test_read_only_handle_freezes_the_parse_until_it_is_closed(store_file, call):
    store = TinyDBStore(store_file, create=False)
    got = getattr(store, call)()
    assert len(got) == 3
    assert gc.get_freeze_count() > 0
    store.close()
    assert gc.get_freeze_count() == 0


def test_read_only_handle_that_never_parses_the_whole_file_freezes_nothing(store_file):
    with TinyDBStore(store_file, create=False) as store:
        assert store.get(2).id == 2
        assert len(store.list([JobStatus.SCHEDULED], limit=1)) == 1  # newest lines only, no full parse
        assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("call", ["list", "list_records"])
def test_a_writing_handle_never_freezes(store_file, call):
    with TinyDBStore(store_file) as store:
        assert len(getattr(store, call)()) == 3
        assert gc.get_freeze_count() == 0


def test_same_answers_with_and_without_the_freeze(store_file):
    with TinyDBStore(store_file) as writer:
        expected = writer.list_records()
    with TinyDBStore(store_file, create=False) as reader:
        assert reader.list_records() == expected
        assert [job.id for job in reader.list()] == [3, 2, 1]
