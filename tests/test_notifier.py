"""The daemon's Notifier in process, over a real TinyDB store and a real receiver on 127.0.0.1:
it never has more than ``busy_workers`` attempts in flight while callbacks arrive, and on an
exclusive store each attempt costs one store write (claim and outcome together, written by the
recorder), never a read-modify-write per step."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from notify_receiver import Receiver

from jobman_cli.clock import SystemClock
from jobman_cli.daemon import notifier as notifier_module
from jobman_cli.daemon.notifier import Notifier
from jobman_cli.model import JobStatus
from jobman_cli.notify.send import Sender
from jobman_cli.notify.settings import NotifySettings
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc


class CountingStore:
    """The store, counting ``update`` calls."""

    def __init__(self, store: TinyDBStore) -> None:
        self._store = store
        self.updates = 0
        self._lock = threading.Lock()

    def update(self, job_id, change):
        with self._lock:
            self.updates += 1
        return self._store.update(job_id, change)

    def __getattr__(self, name):
        return getattr(self._store, name)


def failed_jobs(db: Path, url: str, count: int) -> list[int]:
    now = datetime.now(UTC)
    ids = []
    with TinyDBStore(db) as store:
        service = JobService(store)
        for _ in range(count):
            job, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when="now", notify=[url]))
            store.update(job.id, lambda j: j.claimed(now, "lt").reported("failed", 1, now))
            ids.append(job.id)
    return ids


def test_busy_limit_and_one_write_per_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = Receiver(delay=0.2)
    store = CountingStore(TinyDBStore(tmp_path / "jobs.json"))
    ids = failed_jobs(tmp_path / "jobs.json", hook.url, 24)
    notifier = Notifier(store, SystemClock(), NotifySettings(workers=16, busy_workers=3), Sender(b"s" * 16),
                        owner="test", exclusive=True, log=lambda line: None)
    # Callbacks keep arriving for the whole test: one busy() before the dispatcher starts, with a
    # window longer than the test. (A thread calling busy() every 50 ms against the 0.5 s window
    # let the limit lapse on a loaded box: started late, or preempted for 0.5 s, it left the
    # dispatcher free to send 16 at once.)
    monkeypatch.setattr(notifier_module, "BUSY_WINDOW", 600.0)
    notifier.busy()
    notifier.start()
    try:
        hook.wait_for(len(ids), timeout=60)
        assert hook.max_in_flight <= 3  # while callbacks arrive, at most busy_workers at once
        deadline = time.monotonic() + 30
        while not all(s.deliveries and s.deliveries[0]["state"] == "delivered" for s in map(store.get, ids)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        notifier.close()
    assert hook.count() == len(ids)
    assert store.updates == len(ids)  # one write per attempt: the claim rides with the outcome
    assert all(store.get(i).status is JobStatus.FAILED for i in ids)
    hook.close()
    store.close()
