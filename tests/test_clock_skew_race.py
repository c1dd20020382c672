"""The clock-refusal notice (daemon/clockskew.py) when launch workers answer out of order.

AWS refuses this host's clock: one line says so when the episode starts, one when a request is
accepted again. Each worker reports its request's answer after the fact, so the reports of two
workers can arrive in the other order than their requests: a refusal of a request sent *before* a
request that was accepted must not reopen the episode (it used to: the daemon then said twice that
the clock looks wrong, and twice that it is right again).

The interleaving is made deterministic: job A's second request is refused, and A's worker reports
that refusal only after job B's request, sent after A's, was accepted and reported (as a worker
preempted between the answer and its report would).
"""

from __future__ import annotations

import threading
from datetime import timedelta

from test_daemon import T0, aws_env, aws_error, ec2, world  # noqa: F401  (fixtures)
from test_daemon_launch_guards import CLOCK_LINE, SKEWED

from jobman_cli.daemon.common import LAUNCHED

AGAIN = "AWS accepts this host's clock again"


def test_a_refusal_reported_after_a_later_request_was_accepted_does_not_reopen_the_episode(world):
    a = world.schedule(T0 + timedelta(minutes=1))
    b = world.schedule(T0 + timedelta(minutes=1), title="b")
    calls = {a.id: 0, b.id: 0}
    a_second_sent, b_accepted = threading.Event(), threading.Event()

    def before(job):
        with world.launcher.lock:
            calls[job.id] += 1
            call = calls[job.id]
        if job.id == a.id and call <= 2:
            if call == 2:
                a_second_sent.set()
            raise aws_error(*SKEWED["RequestExpired"], job)
        if job.id == b.id and call == 1:
            assert a_second_sent.wait(60)  # B's request goes after A's second one

    launch = world.daemon.launch
    real_skewed, real_accepted = launch.clock_skewed, launch.clock_accepted
    refusals = [0]

    def skewed(exc):
        refusals[0] += 1
        if refusals[0] == 2:  # A's second refusal: reported only after B's acceptance was
            assert b_accepted.wait(60)
        real_skewed(exc)

    def accepted():  # the first acceptance is B's (A's requests are refused until B's is in)
        real_accepted()
        b_accepted.set()

    world.launcher.before = before
    launch.clock_skewed, launch.clock_accepted = skewed, accepted
    report = world.tick(T0 + timedelta(minutes=1))

    assert sorted(report.job_ids(LAUNCHED)) == sorted([a.id, b.id]), world.lines
    assert calls == {a.id: 3, b.id: 1} and refusals == [2]
    assert len([line for line in world.lines if CLOCK_LINE in line]) == 1, world.lines
    assert len([line for line in world.lines if AGAIN in line]) == 1, world.lines
    assert not launch.skew._skewed  # the episode is over: the last answer was an acceptance


def _in_thread(call) -> None:
    """Run ``call`` on a thread of its own and wait for it (each worker has its own ticket)."""
    worker = threading.Thread(target=call)
    worker.start()
    worker.join(30)
    assert not worker.is_alive()


def test_the_notice_orders_answers_by_when_their_requests_were_sent():
    from jobman_cli.daemon.clockskew import ClockSkewNotice

    lines: list[str] = []
    notice = ClockSkewNotice(lines.append, 30.0)
    refusal = aws_error(*SKEWED["RequestExpired"])
    early, late = threading.Event(), threading.Event()
    tickets: dict[str, threading.Event] = {"early": early, "late": late}  # set once it took its ticket
    go: dict[str, threading.Event] = {}  # set to let it report its answer

    def worker(name: str, answer) -> threading.Thread:
        def run() -> None:
            notice.sending()
            tickets[name].set()
            go[name].wait(30)
            answer()
        go[name] = threading.Event()
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    # The later request is refused first; the earlier one's acceptance, reported after, is stale.
    first = worker("early", notice.accepted)
    assert early.wait(30)
    second = worker("late", lambda: notice.refused(refusal))
    assert late.wait(30)
    go["late"].set()
    second.join(30)
    go["early"].set()
    first.join(30)
    assert [line for line in lines if CLOCK_LINE in line] and not [line for line in lines if AGAIN in line]
    assert notice._skewed
    # A request sent now is accepted: the episode ends, once.
    _in_thread(lambda: (notice.sending(), notice.accepted()))
    assert len([line for line in lines if AGAIN in line]) == 1 and not notice._skewed
