"""A receipt the Price List cannot make yet follows the documented backoff (30 s doubling to 15 min,
8 tries, ~45 min) however often the ended job is written meanwhile (finding F2: every notification
attempt's record, the reaper's terminate... poked the job and each poke was a new try at once, so a
minute's outage made the receipt "unknown (after 8 tries)" for good)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from conftest import make_draft
from jobman_cli.clock import FixedClock
from jobman_cli.cost.quote import PriceUnavailable
from jobman_cli.cost.receipt import Receipt
from jobman_cli.daemon.costing import MAX_TRIES, Costing
from test_cost_daemon import store  # noqa: F401  (fixture: the same TinyDB file store)

UTC = timezone.utc
T0 = datetime(2031, 3, 4, 5, 6, 0, tzinfo=UTC)
OUTAGE = PriceUnavailable("Price List price of on-demand t3.micro in us-east-1: HTTP 500", transient=True)
# The README's schedule: the waits after tries 1..7; the 8th try gives up.
WAITS = [30, 60, 120, 240, 480, 900, 900]


class Pricer:
    """Answers from a script (the last answer repeats); records the clock at each call. ``during``
    runs inside the call: a write that happens while a try is under way."""

    def __init__(self, clock: FixedClock, *answers, during=None) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.during = during
        self.calls: list[datetime] = []

    def receipt(self, job):
        self.calls.append(self.clock.now())
        if self.during is not None:
            self.during(job)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer




def ended(store):
    job, _ = store.add(make_draft())
    store.update(job.id, lambda j: j.claimed(T0, "tok"))
    store.update(job.id, lambda j: j.launched("i-0abc", T0))
    return store.update(job.id, lambda j: j.reported("failed", 7, T0 + timedelta(hours=1)))


def test_writes_of_a_job_backing_off_do_not_bring_its_tries_forward(store):
    start = T0 + timedelta(hours=1)
    clock = FixedClock(start)
    lines: list[str] = []
    pricer = Pricer(clock, OUTAGE)
    costing = Costing(store, lambda: pricer, clock, log=lines.append)
    job = ended(store)
    for _ in range(5):                      # the end and four more writes, all at once
        costing.poke(job)
    costing.step()
    assert pricer.calls == [start]
    for wait in WAITS:
        clock.advance(wait - 1)             # a second early: pokes galore, no try
        for _ in range(3):
            costing.poke(store.get(job.id))
            costing.step()
        assert store.get(job.id).cost_basis is None
        clock.advance(1)
        costing.poke(store.get(job.id))
        costing.step()
    offsets = [(at - start).total_seconds() for at in pricer.calls]
    assert offsets == [0, 30, 90, 210, 450, 930, 1830, 2730]     # 2730 s: ~45 min
    assert len(pricer.calls) == MAX_TRIES
    assert [line.rsplit(" ", 1)[-1] for line in lines[:-1]] == [f"{w}s" for w in WAITS]
    assert store.get(job.id).cost_basis == f"unknown: {OUTAGE} (after {MAX_TRIES} tries)"
    assert lines[-1] == f"job {job.id} cost unknown ({store.get(job.id).cost_basis})"


def test_a_write_while_a_try_is_under_way_keeps_the_backoff(store):
    """The observer pokes from the callback thread while the cost thread is pricing."""
    start = T0 + timedelta(hours=1)
    clock = FixedClock(start)
    costing: Costing
    pricer = Pricer(clock, OUTAGE, OUTAGE, Receipt(0.01, "fine"), during=lambda job: costing.poke(job))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    job = ended(store)
    costing.poke(job)
    assert costing.step() == 1
    assert costing.step() == 0              # the mid-try poke queued nothing for now
    clock.advance(29)
    assert costing.step() == 0
    clock.advance(1)
    assert costing.step() == 1
    clock.advance(60)
    assert costing.step() == 1
    assert [(at - start).total_seconds() for at in pricer.calls] == [0, 30, 90]
    assert store.get(job.id).cost == 0.01


def test_a_job_that_just_ended_is_still_queued_at_once(store):
    """One pending entry per job, not one for all: another job's backoff does not hold up a new end."""
    clock = FixedClock(T0 + timedelta(hours=1))
    pricer = Pricer(clock, OUTAGE, Receipt(0.02, "fine"))
    costing = Costing(store, lambda: pricer, clock, log=lambda line: None)
    first = ended(store)
    costing.poke(first)
    costing.step()                          # first: backing off for 30 s
    second = ended(store)
    costing.poke(second)
    assert costing.step() == 1
    assert store.get(second.id).cost == 0.02
    assert store.get(first.id).cost_basis is None
