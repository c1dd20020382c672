"""``JobService.wait`` (behind ``status --wait``) must see a job's end that lands between its
first read of the job and its first read of the store's change marker (race hunt, Dec 4): with
the job read first, the marker it then held already included the end, so no later poll saw the
marker move and the wait ran to its timeout."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from conftest import make_draft

from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


class EndsNextToTheMarker:
    """A store whose first ``change_marker()`` read lands next to another process's cancel of the
    job: the cancel is written just after the marker is read if wait() reads the marker first,
    just before it if wait() reads the job first."""

    def __init__(self, store: TinyDBStore, job_id: int) -> None:
        self._store, self.job_id, self.armed, self.got = store, job_id, True, False

    def get(self, job_id: int) -> Any:
        self.got = True
        return self._store.get(job_id)

    def change_marker(self) -> Any:
        if not self.armed:
            return self._store.change_marker()
        self.armed = False
        if self.got:  # the job was read first: the end lands between the two reads
            self._store.update(self.job_id, lambda job: job.cancelled(NOW))
            return self._store.change_marker()
        marker = self._store.change_marker()  # the marker first: the end lands after both reads
        self._store.update(self.job_id, lambda job: job.cancelled(NOW))
        return marker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_wait_sees_an_end_next_to_its_first_marker_read(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "jobs.json")
    job, _ = store.add(make_draft())
    ended = JobService(EndsNextToTheMarker(store, job.id)).wait(job.id, 5.0, poll=0.01)
    assert ended is not None and ended.terminal  # before the fix: None after the 5 s timeout
    store.close()
