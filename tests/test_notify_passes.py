"""The daemon's Notifier in process over a real TinyDB store, a real receiver and a real stalled
socket on 127.0.0.1 (hostile review of issue 13): each target's outcome is written as soon as it
is known, whatever the job's other targets do; one target's failure never costs the others their
outcome; shutdown does not wait for a receiver that never answers; a delivery past ``max_age`` is
given up without sending."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from notify_receiver import Receiver

from jobman_cli.clock import SystemClock
from jobman_cli.daemon.notifier import Notifier
from jobman_cli.notify import deliveries as plan
from jobman_cli.notify.send import Sender
from jobman_cli.notify.settings import NotifySettings
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc


class Stalled:
    """Accepts connections and never answers; ``accepted`` is set at the first one."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.server.close()
        for conn in self.conns:
            conn.close()


def failed_job(store: TinyDBStore, targets: list[str], when: datetime | None = None) -> int:
    when = when or datetime.now(UTC)
    job, _ = JobService(store).schedule(ScheduleRequest(image="alpine:3.20", when="now", notify=targets[:1]))
    # stored as given (an older jobman's validation may have let a target through)
    store.update(job.id, lambda j: dataclasses.replace(j, notify=tuple(targets)))
    store.update(job.id, lambda j: j.claimed(when, "lt").reported("failed", 1, when))
    return job.id


def state(store: TinyDBStore, job_id: int, index: int) -> str | None:
    return (plan.record_of(store.get(job_id), index, "failed") or {}).get("state")


def wait_until(predicate: Any, limit: float = 20.0) -> bool:
    """Polls ``predicate``; the limit is a generous bound on what should take 0.1 s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("exclusive", [True, False], ids=["tinydb-exclusive", "shared-claims"])
def test_a_fast_targets_outcome_is_written_while_a_slow_target_is_still_in_flight(tmp_path: Path,
                                                                                   exclusive: bool) -> None:
    # The fast target is sent first, then the slow one: before the fix, the fast one's outcome waited
    # for the slow one (a SIGKILL meanwhile re-sent the fast one; on a shared table its claim expired
    # and another daemon sent it again).
    hook, stalled = Receiver(), Stalled()
    store = TinyDBStore(tmp_path / "jobs.json")
    job_id = failed_job(store, [f"{hook.url}/fast", f"{stalled.url}/slow"])
    lines: list[str] = []
    notifier = Notifier(store, SystemClock(), NotifySettings(), Sender(b"s" * 16, timeout=300), owner="d1",
                        exclusive=exclusive, log=lines.append)
    notifier.start()
    try:
        hook.wait_for(1, timeout=30)
        assert stalled.accepted.wait(30)  # the slow attempt is in flight (for up to 300 s)
        assert wait_until(lambda: state(store, job_id, 0) == "delivered")  # not after the slow one's 300 s
        assert state(store, job_id, 1) == (None if exclusive else "sending")
        if not exclusive:  # the slow target's claim is its own, and covers one attempt's deadline
            record = plan.record_of(store.get(job_id), 1, "failed")
            assert record["claimed-by"] == "d1"
    finally:
        notifier.close(grace=0.1)
        stalled.close()
        hook.close()
    assert hook.count() == 1
    store.close()


@pytest.mark.parametrize("preempted", [False, True], ids=["prompt", "dispatcher-preempted-after-submit"])
def test_close_abandons_an_attempt_that_does_not_end(tmp_path: Path, preempted: bool) -> None:
    # ``preempted``: the dispatcher stalls 1 s just after handing the attempt to the pool, as a
    # loaded CI box did; the attempt connects and close() runs meanwhile. Tracking the attempt
    # only after submitting it let close() miss it: no wait, no abandon, no log line.
    stalled = Stalled()
    store = TinyDBStore(tmp_path / "jobs.json")
    job_id = failed_job(store, [f"{stalled.url}/never"])
    lines: list[str] = []
    notifier = Notifier(store, SystemClock(), NotifySettings(), Sender(b"s" * 16, timeout=600), owner="d1",
                        exclusive=True, log=lines.append)
    if preempted:
        submit = notifier._pool.submit

        def slow_submit(*args: Any, **kwargs: Any) -> Any:
            future = submit(*args, **kwargs)
            time.sleep(1.0)
            return future

        notifier._pool.submit = slow_submit  # type: ignore[method-assign]
    notifier.start()
    assert stalled.accepted.wait(30)
    closing = threading.Thread(target=notifier.close, kwargs={"grace": 0.5}, daemon=True)
    closing.start()
    closing.join(30)  # generous: grace is 0.5 s; before the fix, close() waited for the 600 s attempt
    try:
        assert not closing.is_alive()
        assert any("abandoned" in line for line in lines)
        assert state(store, job_id, 0) is None  # not recorded: made again after a restart
    finally:
        stalled.close()
        store.close()


class Exploding:
    """A sender whose attempts to one target raise (a bug, or a surprise from a library)."""

    def __init__(self, inner: Sender, bad: str) -> None:
        self.inner, self.bad = inner, bad

    def send(self, target: str, data: dict) -> Any:
        if self.bad in target:
            raise RuntimeError("boom")
        return self.inner.send(target, data)


def test_one_targets_error_does_not_cost_the_others_their_outcome(tmp_path: Path) -> None:
    hook = Receiver()
    store = TinyDBStore(tmp_path / "jobs.json")
    job_id = failed_job(store, [f"{hook.url}/first", f"{hook.url}/boom", f"{hook.url}/last"])
    lines: list[str] = []
    notifier = Notifier(store, SystemClock(), NotifySettings(), Exploding(Sender(b"s" * 16, timeout=5), "/boom"),
                        owner="d1", exclusive=True, log=lines.append)
    try:
        notifier.run_once()
        notifier.run_once()  # the next pass: nothing is sent again
    finally:
        notifier.close()
    assert sorted(r.path for r in hook.requests) == ["/first", "/last"]
    assert (state(store, job_id, 0), state(store, job_id, 2)) == ("delivered", "delivered")
    assert any("boom" in line for line in lines)
    hook.close()
    store.close()


def test_a_target_the_sender_cannot_encode_fails_alone(tmp_path: Path) -> None:
    hook = Receiver()
    store = TinyDBStore(tmp_path / "jobs.json")
    job_id = failed_job(store, [f"{hook.url}/good", "http://" + "a" * 64 + ".example/h"])
    notifier = Notifier(store, SystemClock(), NotifySettings(), Sender(b"s" * 16, timeout=5), owner="d1",
                        exclusive=True, log=lambda line: None)
    try:
        notifier.run_once()
        notifier.run_once()
    finally:
        notifier.close()
    assert hook.count() == 1
    assert (state(store, job_id, 0), state(store, job_id, 1)) == ("delivered", "failed")
    hook.close()
    store.close()


class Later(SystemClock):
    """The wall clock, some days ahead (the daemon was down meanwhile)."""

    def __init__(self, days: float) -> None:
        super().__init__()
        self.days = days

    def now(self) -> datetime:
        return super().now() + timedelta(days=self.days)


def test_a_delivery_past_max_age_is_given_up_without_sending(tmp_path: Path) -> None:
    hook = Receiver()
    store = TinyDBStore(tmp_path / "jobs.json")
    job_id = failed_job(store, [f"{hook.url}/late"])
    lines: list[str] = []
    notifier = Notifier(store, Later(3), NotifySettings(), Sender(b"s" * 16, timeout=5), owner="d1",
                        exclusive=True, log=lines.append)
    try:
        notifier.run_once()
    finally:
        notifier.close()
    record = plan.record_of(store.get(job_id), 0, "failed")
    assert hook.count() == 0
    assert record["state"] == "failed" and record["attempts"] == 0
    assert record["history"][-1]["outcome"] == "gave up: more than 24 h after the job ended"
    assert any("gave up" in line for line in lines)
    hook.close()
    store.close()
