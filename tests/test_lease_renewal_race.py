"""The lease keeper's renewal thread against a launch that moves on while a renewal is in flight.

:meth:`LeaseKeeper.step` lists the claims to renew under its lock, then renews each with a store
write *outside* it (a DynamoDB round trip), then files the result under the lock again. Meanwhile
the launch thread may end its attempt (``release``) and the job may be claimed again for the next
attempt (``hold``). The renewal of the *old* attempt then fails (the job is no longer in it); that
answer is about the old attempt only and must not drop, or overwrite, the new attempt's claim: a
dropped claim is never renewed again, so after one lease another daemon takes a launch over that
is still under way.

The interleaving is made deterministic with a store whose ``update`` lets the launch thread's
release-and-claim happen just before the renewal's write reaches the store.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from conftest import make_draft

from jobman_cli.clock import FixedClock
from jobman_cli.daemon.common import CLAIMED_BY
from jobman_cli.daemon.lease import LeaseKeeper
from jobman_cli.model import Job
from jobman_cli.stores.tinydb import TinyDBStore

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
LEASE = 3.0


class Interleaving:
    """The store, with hooks run once: just before the next ``update`` reaches the store, or just
    after it returned (before its caller sees the answer)."""

    def __init__(self, store: TinyDBStore) -> None:
        self._store = store
        self.before_next_update: Callable[[], None] | None = None
        self.after_next_update: Callable[[], None] | None = None

    def update(self, job_id: int, change: Any) -> Job:
        before, self.before_next_update = self.before_next_update, None
        after, self.after_next_update = self.after_next_update, None
        if before is not None:
            before()
        written = self._store.update(job_id, change)
        if after is not None:
            after()
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def claimed_by(store: TinyDBStore, job_id: int, daemon_id: str, at: datetime) -> Job:
    def claim(current: Job) -> Job:
        job = current.claimed(at, f"token-{current.attempts + 1}")
        return dataclasses.replace(job, extra={**job.extra, CLAIMED_BY: daemon_id})

    return store.update(job_id, claim)


def next_attempt(store: TinyDBStore, job_id: int, at: datetime) -> Job:
    """The attempt ended and the job was claimed again by the same daemon (attempt + 1)."""
    return store.update(job_id, lambda cur: dataclasses.replace(
        cur, attempts=cur.attempts + 1, launch_token=f"token-{cur.attempts + 1}", updated_at=at,
        version=cur.version + 1))


def test_a_renewal_that_fails_for_an_ended_attempt_keeps_the_next_attempts_claim(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(T0)
    shared = Interleaving(store)
    keeper = LeaseKeeper(shared, clock, daemon_id="me", lease=LEASE, exclusive=False, log=lambda line: None)
    try:
        job, _ = store.add(make_draft(date_time=T0))
        first = claimed_by(store, job.id, "me", T0)
        keeper.hold(first)
        clock.advance(LEASE / 3 + 0.1)  # attempt 1's claim is due for renewal

        second: list[Job] = []

        def launch_moves_on() -> None:  # the launch thread, between the listing and the write
            keeper.release(job.id)
            second.append(next_attempt(store, job.id, clock.now()))
            keeper.hold(second[0])

        shared.before_next_update = launch_moves_on
        assert keeper.step() == 0  # attempt 1 is over: nothing of it to renew
        assert second and second[0].attempts == 2

        # Attempt 2's launch is slow: once a third of the lease passed, its claim is renewed.
        clock.advance(LEASE / 3 + 0.1)
        assert keeper.step() == 1
        assert store.get(job.id).version == second[0].version + 1
    finally:
        store.close()


def test_a_renewal_that_succeeds_as_the_attempt_ends_does_not_bring_the_old_claim_back(tmp_path: Path) -> None:
    """The renewal of attempt 1 lands, then the attempt ends and attempt 2 is claimed before the
    keeper files the renewal: attempt 2's claim stays attempt 2's (filing attempt 1 over it made
    the next renewal fail, which then dropped attempt 2's claim)."""
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(T0)
    shared = Interleaving(store)
    keeper = LeaseKeeper(shared, clock, daemon_id="me", lease=LEASE, exclusive=False, log=lambda line: None)
    try:
        job, _ = store.add(make_draft(date_time=T0))
        keeper.hold(claimed_by(store, job.id, "me", T0))
        clock.advance(LEASE / 3 + 0.1)
        second: list[Job] = []

        def launch_moves_on() -> None:  # attempt 1 was renewed; before the keeper files that, it ends
            keeper.release(job.id)
            second.append(next_attempt(store, job.id, clock.now()))
            keeper.hold(second[0])

        shared.after_next_update = launch_moves_on
        keeper.step()
        assert second and second[0].attempts == 2

        clock.advance(LEASE / 3 + 0.1)
        assert keeper.step() == 1
        assert store.get(job.id).version == second[0].version + 1
    finally:
        store.close()


def test_close_waits_for_the_renewal_in_flight_and_starts_no_other(tmp_path: Path) -> None:
    """The renewal thread is inside a write (held here until the test lets it go) when the daemon
    closes: close() returns only after that write, so the store the daemon closes next sees no
    late write, and the second claim due is not renewed at all."""
    store = TinyDBStore(tmp_path / "jobs.json")
    clock = FixedClock(T0)
    shared = Interleaving(store)
    keeper = LeaseKeeper(shared, clock, daemon_id="me", lease=0.06, exclusive=False, log=lambda line: None)
    events: list[str] = []
    entered, release = threading.Event(), threading.Event()
    try:
        jobs = [store.add(make_draft(date_time=T0))[0] for _ in range(2)]
        claims = [claimed_by(store, job.id, "me", T0) for job in jobs]
        for claim in claims:
            keeper.hold(claim)
        clock.advance(1.0)  # both due for renewal

        def held_write() -> None:
            entered.set()
            release.wait(60)  # a slow conditional write; ends when the test says so

        shared.before_next_update = held_write
        shared.after_next_update = lambda: events.append("write returned")
        keeper.start()
        assert entered.wait(30)
        closer = threading.Thread(target=lambda: (keeper.close(), events.append("close returned")))
        closer.start()
        # Bounded check (the write is held, so with the fix close() cannot return meanwhile):
        closer.join(1.0)
        assert closer.is_alive() and events == []
        release.set()
        closer.join(30)
        assert not closer.is_alive()
        assert events == ["write returned", "close returned"]
        renewed = [store.get(job.id).version - claim.version for job, claim in zip(jobs, claims)]
        assert sorted(renewed) == [0, 1]  # the write in flight landed; no other was started
    finally:
        release.set()
        keeper.close()
        store.close()
