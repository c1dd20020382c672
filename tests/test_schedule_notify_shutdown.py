"""The schedule-events thread at shutdown and when a schedule is deleted mid-send (review SN5, SN6).

SN5: once ``close()`` gave up waiting for an attempt in flight ("abandoned ... made again later"),
that attempt's outcome is not recorded afterwards (its claim expires and the attempt is made again,
as the log says). SN6: a schedule deleted between the claim and the outcome is not "made again":
the log says its events go with it. Fake senders ordered by events (no sleeps).
"""

from __future__ import annotations

import threading
from datetime import timedelta

from test_schedule_notify import T0, Setup, _notified

from jobman_cli.notify.deliveries import Outcome
from jobman_cli.stores.tinydb import TinyDBStore

TARGET = "https://hooks.example.com/x"  # never contacted: the senders below are fakes


class HeldSender:
    """send() waits until released (as a slow receiver does until the daemon aborts the connection)."""

    def __init__(self) -> None:
        self.entered, self.release, self.returned = threading.Event(), threading.Event(), threading.Event()

    def send(self, target: str, data: dict) -> Outcome:
        self.entered.set()
        self.release.wait(120)
        self.returned.set()
        return Outcome(False, "no answer: RemoteDisconnected")


def test_an_attempt_abandoned_at_shutdown_is_not_recorded_afterwards(tmp_path):
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    sender = HeldSender()
    setup.events.sender = sender
    made = setup.create(every="1m", notify=[TARGET])
    setup.events.start()
    setup.step(T0 + timedelta(minutes=5, seconds=1))  # the materializer pokes the thread
    assert sender.entered.wait(120)
    assert setup.events.close(0.05) is False  # still in flight: abandoned
    sender.release.set()  # the daemon aborts the connection: send() returns a failure
    assert sender.returned.wait(120)
    setup.events._thread.join(120)
    assert not setup.events._thread.is_alive()
    delivery = _notified(setup.store, made.id)[0]["notifications"][0]
    assert delivery["state"] == "sending" and delivery["attempts"] == 1  # the claim, left to expire
    assert not any("attempt 1:" in line for line in setup.lines)


class DeletingSender:
    """Another process deletes the schedule while its event is being sent."""

    def __init__(self, path) -> None:
        self.other = TinyDBStore(path)

    def send(self, target: str, data: dict) -> Outcome:
        self.other.delete_schedule(data["schedule-id"])
        return Outcome(True, "HTTP 200")


def test_a_schedule_deleted_mid_send_is_not_promised_a_new_attempt(tmp_path):
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    setup.events.sender = DeletingSender(tmp_path / "jobs.json")
    made = setup.create(every="1m", notify=[TARGET])
    setup.step(T0 + timedelta(minutes=5, seconds=1))
    assert setup.events.run_once() == 1
    said = [line for line in setup.lines if line.startswith(f"notify: schedule {made.id}")]
    assert said == [f"notify: schedule {made.id} was deleted during the attempt to {TARGET}; its events go with it"]
    assert not any("made again" in line for line in setup.lines)
    setup.clock.set(T0 + timedelta(hours=1))
    assert setup.events.run_once() == 0
