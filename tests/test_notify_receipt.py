"""Notifications carry the cost receipt (issue 15): the body's ``cost`` and ``cost-basis``.

Over a real TinyDB store and a real receiver on 127.0.0.1, with the notifier driven by a FixedClock
(``run_once`` for each pass, or its dispatcher thread where the observer's poke is what is tested):

* a job that will get a receipt: its first attempt waits for it, and goes as soon as the receipt is
  stored (the receipt's write pokes the notifier through the observer), carrying the exact figures;
* a receipt that never comes: the notification goes ``receipt_wait`` after the job ended, with nulls;
* a retry after the receipt arrived between attempts (even between an exclusive daemon's send and
  its record) sends the very bytes of the first attempt (same signature);
* a daemon without costing (a fake launcher, receipts off) and a job that never ran on an instance
  never wait.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from notify_receiver import Receiver

from jobman_cli.clock import FixedClock
from jobman_cli.cost.receipt import Receipt
from jobman_cli.daemon.costing import Costing
from jobman_cli.daemon.notifier import Notifier
from jobman_cli.daemon.observer import Observer, RecordingStore
from jobman_cli.notify import deliveries as plan
from jobman_cli.notify.message import BODY_FIELDS, SIGNATURE_HEADER, body, slack_text, verify
from jobman_cli.notify.send import Sender
from jobman_cli.notify.settings import RECEIPT_WAIT, NotifySettings
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores.tinydb import TinyDBStore

UTC = timezone.utc
T0 = datetime(2031, 3, 4, 5, 6, 0, tzinfo=UTC)
END = T0 + timedelta(hours=1)
SECRET = b"s" * 16
RECEIPT = Receipt(0.15, "on-demand t3.micro us-east-1a $0.15/h (Price List, fetched 2031-03-04); 3600 s")


class Pricer:
    def __init__(self, receipt: Receipt = RECEIPT) -> None:
        self.answer = receipt

    def receipt(self, job: Any) -> Receipt:
        return self.answer


def ended_job(store: Any, url: str, *, launched: bool = True) -> int:
    """A job that failed at END after running on an instance (or cancelled before any launch)."""
    job, _ = JobService(store).schedule(ScheduleRequest(image="alpine:3.20", when="now", notify=[url],
                                                        notify_on="end"))
    if launched:
        store.update(job.id, lambda j: j.claimed(T0, "lt"))
        store.update(job.id, lambda j: j.launched("i-0abc", T0))
        store.update(job.id, lambda j: j.reported("failed", 3, END))
    else:
        store.update(job.id, lambda j: j.cancelled(END))
    return job.id


def make(tmp_path: Path, *, receipts: bool, exclusive: bool = True, wait: float | None = None,
         sender: Any = None) -> tuple[Any, Notifier, Costing, FixedClock, list[str]]:
    """The daemon's wiring in small: the store as its writers see it (the observer tells the
    notifier of every write, the costing's receipt included), a notifier and a costing."""
    raw = TinyDBStore(tmp_path / "jobs.json")
    lines: list[str] = []
    observer = Observer(raw, lines.append)
    store = RecordingStore(raw, observer)
    clock = FixedClock(END + timedelta(seconds=1))
    settings = NotifySettings(scan_interval=3600.0, **({"receipt_wait": wait} if wait is not None else {}))
    notifier = Notifier(store, clock, settings, sender or Sender(SECRET), owner="d1", exclusive=exclusive,
                        log=lines.append, receipts=receipts)
    costing = Costing(store, lambda: Pricer(), clock, log=lines.append)
    observer.listeners.append(notifier.poke)
    observer.listeners.append(costing.poke)
    return store, notifier, costing, clock, lines


def sent(hook: Receiver, n: int) -> dict[str, Any]:
    return json.loads(hook.requests[n].body)


# --------------------------------------------------------------------------- the message
def test_body_has_cost_fields_after_timeout_and_slack_says_the_cost(tmp_path: Path) -> None:
    assert BODY_FIELDS[BODY_FIELDS.index("timeout") + 1:] == ("cost", "cost-basis")
    store = TinyDBStore(tmp_path / "jobs.json")
    job = store.get(ended_job(store, "http://127.0.0.1:9/h"))
    data = body(job, "e", {"cost": 0.15, "cost-basis": "b"})
    assert (data["cost"], data["cost-basis"]) == (0.15, "b")
    assert "Cost $0.15." in slack_text(data)
    assert "Cost" not in slack_text(body(job, "e"))  # no receipt: nothing said, never "$0.00"
    assert list(body(job, "e"))[-3:] == ["cost", "cost-basis", "log"]
    store.close()


def test_claim_snapshots_the_receipt_once_and_keeps_it(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "jobs.json")
    job = store.get(ended_job(store, "http://127.0.0.1:9/h"))
    policy = plan.Policy()
    first = plan.claim(job, 0, "failed", END, "a", policy, "eid")
    assert plan.record_of(first, 0, "failed")["receipt"] == {"cost": None, "cost-basis": None}
    settled = plan.settle(first, 0, "failed", 1, "a", plan.Outcome(False, "HTTP 500"), END, policy)
    priced = settled.with_cost(0.15, "basis", END)
    again = plan.claim(priced, 0, "failed", END + timedelta(hours=1), "a", policy, "eid")
    assert plan.record_of(again, 0, "failed")["receipt"] == {"cost": None, "cost-basis": None}
    store.close()


# --------------------------------------------------------------------------- waiting for the receipt
@pytest.mark.parametrize("exclusive", [True, False], ids=["tinydb-exclusive", "shared-claims"])
def test_first_attempt_waits_for_the_receipt_and_goes_when_it_is_stored(tmp_path: Path, exclusive: bool) -> None:
    hook = Receiver()
    store, notifier, costing, clock, _ = make(tmp_path, receipts=True, exclusive=exclusive)
    job_id = ended_job(store, hook.url)
    try:
        notifier.run_once()  # 1 s after the end: held for the receipt
        assert hook.count() == 0 and store.get(job_id).deliveries == ()
        # The dispatcher's own scan finds it held until END + RECEIPT_WAIT; the clock never gets
        # there, so only the receipt's write (through the observer's poke) can send it now.
        notifier.start()
        costing.step()  # the observer queued the job for its receipt when it ended
        assert store.get(job_id).cost == 0.15
        hook.wait_for(1, timeout=30)  # generous: the poke makes it go at once
    finally:
        notifier.close()
    data = sent(hook, 0)
    assert (data["cost"], data["cost-basis"]) == (RECEIPT.cost, RECEIPT.basis)
    assert verify(hook.requests[0].body, hook.requests[0].headers[SIGNATURE_HEADER], SECRET)
    assert plan.record_of(store.get(job_id), 0, "failed")["receipt"] == {"cost": 0.15, "cost-basis": RECEIPT.basis}
    hook.close()
    store.close()


def test_a_receipt_that_never_comes_is_waited_for_receipt_wait_then_sent_with_nulls(tmp_path: Path) -> None:
    assert RECEIPT_WAIT == 10.0
    hook = Receiver()
    store, notifier, _, clock, _ = make(tmp_path, receipts=True)
    job_id = ended_job(store, hook.url)
    try:
        clock.set(END + timedelta(seconds=RECEIPT_WAIT - 1))
        notifier.run_once()
        assert hook.count() == 0
        assert notifier._next[job_id] == (END + timedelta(seconds=RECEIPT_WAIT)).timestamp()
        clock.set(END + timedelta(seconds=RECEIPT_WAIT))
        notifier.run_once()
        assert hook.count() == 1
    finally:
        notifier.close()
    data = sent(hook, 0)
    assert data["cost"] is None and data["cost-basis"] is None and "cost" in data
    assert plan.record_of(store.get(job_id), 0, "failed")["state"] == "delivered"
    hook.close()
    store.close()


def test_receipt_wait_is_a_setting(tmp_path: Path) -> None:
    hook = Receiver()
    store, notifier, _, clock, _ = make(tmp_path, receipts=True, wait=5.0)
    ended_job(store, hook.url)
    try:
        clock.set(END + timedelta(seconds=5))
        notifier.run_once()
        assert hook.count() == 1
    finally:
        notifier.close()
    hook.close()
    store.close()


# --------------------------------------------------------------------------- byte-identical retries
class ReceiptMidway:
    """A sender that stores the job's receipt right after its first attempt was sent and before
    its outcome is recorded (the worst moment: an exclusive daemon writes its claim then)."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner
        self.costing: Costing | None = None
        self.store: Any = None
        self.calls = 0

    def send(self, target: str, data: dict) -> Any:
        outcome = self.inner.send(target, data)
        self.calls += 1
        if self.calls == 1:
            assert self.costing is not None
            self.costing.step()  # the observer queued the job for its receipt when it ended
        return outcome


@pytest.mark.parametrize("exclusive", [True, False], ids=["tinydb-exclusive", "shared-claims"])
def test_a_retry_after_the_receipt_arrived_is_byte_identical(tmp_path: Path, exclusive: bool) -> None:
    hook = Receiver(answers=[500])
    sender = ReceiptMidway(Sender(SECRET))
    store, notifier, costing, clock, _ = make(tmp_path, receipts=True, exclusive=exclusive, sender=sender)
    sender.costing, sender.store = costing, store
    job_id = ended_job(store, hook.url)
    try:
        clock.set(END + timedelta(seconds=RECEIPT_WAIT))  # the wait is over: it goes without
        notifier.run_once()
        assert hook.count() == 1 and store.get(job_id).cost == 0.15  # the receipt came after the send
        clock.set(END + timedelta(seconds=RECEIPT_WAIT + 3600))  # past the backoff
        notifier.run_once()
        assert hook.count() == 2
    finally:
        notifier.close()
    first, second = hook.requests
    assert sent(hook, 0)["cost"] is None
    assert second.body == first.body
    assert second.headers[SIGNATURE_HEADER] == first.headers[SIGNATURE_HEADER]
    record = plan.record_of(store.get(job_id), 0, "failed")
    assert record["state"] == "delivered" and record["attempts"] == 2
    assert record["receipt"] == {"cost": None, "cost-basis": None}
    hook.close()
    store.close()


# --------------------------------------------------------------------------- never waiting
def test_a_daemon_without_costing_never_waits(tmp_path: Path) -> None:
    hook = Receiver()
    store, notifier, _, _, _ = make(tmp_path, receipts=False)
    ended_job(store, hook.url)
    try:
        notifier.run_once()  # 1 s after the end, no receipt and none coming
        assert hook.count() == 1
    finally:
        notifier.close()
    assert sent(hook, 0)["cost"] is None
    hook.close()
    store.close()


def test_a_job_that_never_launched_never_waits(tmp_path: Path) -> None:
    hook = Receiver()
    store, notifier, _, _, _ = make(tmp_path, receipts=True)
    ended_job(store, hook.url, launched=False)
    try:
        notifier.run_once()
        assert hook.count() == 1
    finally:
        notifier.close()
    data = sent(hook, 0)
    assert data["event"] == "job.cancelled" and data["cost"] is None and data["cost-basis"] is None
    hook.close()
    store.close()


def test_the_daemon_waits_only_when_it_makes_receipts(tmp_path: Path, isolated_aws: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from jobman_cli.daemon import Daemon
    from jobman_cli.launchers.base import EC2Settings
    from jobman_cli.launchers.ec2 import EC2Launcher
    from jobman_cli.settings import DaemonSettings

    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url="http://10.1.2.3:8321")

    def daemon(launcher: Any) -> Any:
        store = TinyDBStore(tmp_path / "jobs.json")
        made = Daemon(store, launcher, settings, clock=FixedClock(END), exclusive=True, log=lambda line: None,
                      notify_sender=Sender(SECRET))
        waits = made.notifier.receipts
        made.close()
        store.close()
        return waits

    class NotEC2:
        settings = EC2Settings()

    assert daemon(NotEC2()) is False  # a fake launcher: no costing, no wait
    monkeypatch.setenv("JOBMAN_COST_RECEIPTS", "on")
    assert daemon(EC2Launcher(EC2Settings())) is True
    monkeypatch.setenv("JOBMAN_COST_RECEIPTS", "off")
    assert daemon(EC2Launcher(EC2Settings())) is False


def test_receipt_wait_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jobman_cli.errors import ConfigError
    from jobman_cli.notify.settings import notify_settings

    assert notify_settings(tmp_path).receipt_wait == RECEIPT_WAIT
    monkeypatch.setenv("JOBMAN_NOTIFY_RECEIPT_WAIT", "0")
    assert notify_settings(tmp_path).receipt_wait == 0.0
    monkeypatch.setenv("JOBMAN_NOTIFY_RECEIPT_WAIT", "2m")
    assert notify_settings(tmp_path).receipt_wait == 120.0
    monkeypatch.setenv("JOBMAN_NOTIFY_RECEIPT_WAIT", "-1")
    with pytest.raises(ConfigError):
        notify_settings(tmp_path)


def test_the_wait_is_at_most_half_of_max_age_and_none_once_the_receipt_is_there(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "jobs.json")
    job = store.get(ended_job(store, "http://127.0.0.1:9/h"))
    short = plan.Policy(max_age=12.0)  # a 10 s wait would leave little time to send at all
    assert plan.due_at(job, 0, "failed", END, short, RECEIPT_WAIT) == END + timedelta(seconds=6)
    assert plan.due_at(job, 0, "failed", END, plan.Policy(), RECEIPT_WAIT) == END + timedelta(seconds=RECEIPT_WAIT)
    assert plan.due_at(job.with_cost(0.15, "b", END), 0, "failed", END, plan.Policy(), RECEIPT_WAIT) == END
    assert plan.due_at(job, 0, "failed", END, plan.Policy()) == END  # no receipt coming: no wait
    store.close()


def test_in_the_daemon_the_receipts_write_sends_the_held_notification(tmp_path: Path, isolated_aws: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's own wiring: costing writes through the store its observer watches, so the
    receipt's write pokes the notifier (no scan, no clock movement needed)."""
    from jobman_cli.daemon import Daemon, wiring
    from jobman_cli.settings import DaemonSettings

    monkeypatch.setattr(wiring, "costing_for", lambda store, launcher, clock, log: Costing(
        store, lambda: Pricer(), clock, log=log))
    hook = Receiver()
    raw = TinyDBStore(tmp_path / "jobs.json")
    settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url="http://10.1.2.3:8321")
    daemon = Daemon(raw, object(), settings, clock=FixedClock(END + timedelta(seconds=1)), exclusive=True,
                    log=lambda line: None, notify=NotifySettings(scan_interval=3600.0), notify_sender=Sender(SECRET))
    try:
        assert daemon.notifier.receipts
        job_id = ended_job(daemon.store, hook.url)
        daemon.notifier.run_once()
        assert hook.count() == 0  # held for the receipt
        daemon.notifier.start()
        daemon.costing.step()
        hook.wait_for(1, timeout=30)  # generous: the poke makes it go at once
    finally:
        daemon.close()
    assert sent(hook, 0)["cost"] == 0.15 and raw.get(job_id).cost == 0.15
    hook.close()
    raw.close()
