"""What makes a burst of notifications cheap for the daemon, and that it changes no guarantee:
connections kept between attempts to one receiver (and what happens when the receiver closed one),
the attempt's deadline on a kept connection, and the recorder holding outcomes while callbacks
arrive (bounded by max_hold, and written at once by a flush)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jobman_cli.daemon.notify_recorder import Recorder, Write
from jobman_cli.notify import keepalive
from jobman_cli.notify.send import Sender

DATA = {"event-id": "eid-1", "event": "job.failed", "id": 1}


class Hook:
    """A keep-alive HTTP/1.1 receiver that counts connections and requests; ``close_after``:
    it closes each connection after answering that many requests on it (without saying so, as a
    server whose idle timeout ran out does); ``hang_on``: the request numbers it never answers."""

    def __init__(self, close_after: int | None = None, hang_on: frozenset[int] = frozenset()) -> None:
        self.connections = 0
        self.requests: list[str] = []
        self.release = threading.Event()
        lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.served = 0
                with lock:
                    hook.connections += 1

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    hook.requests.append(self.headers.get("X-Jobman-Event-Id", "?"))
                    number = len(hook.requests)
                if number in hang_on:
                    hook.release.wait(30)
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                self.served += 1
                if close_after is not None and self.served >= close_after:
                    self.close_connection = True  # no "Connection: close" header: the client learns it later

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_attempts_to_one_receiver_share_a_connection() -> None:
    hook = Hook()
    sender = Sender(b"s" * 16, timeout=5)
    try:
        outcomes = [sender.send(hook.url, dict(DATA, **{"event-id": f"e{n}"})) for n in range(5)]
        assert all(o.ok for o in outcomes)
        assert hook.requests == ["e0", "e1", "e2", "e3", "e4"]  # each sent once
        assert hook.connections == 1
    finally:
        sender.abort()
        hook.close()


def test_a_kept_connection_the_receiver_closed_is_retried_once_on_a_new_one(monkeypatch) -> None:
    # The receiver closes each connection after one answer, and the liveness check is made to miss
    # it (the close can come between the check and the request): the request fails on the dead
    # connection before any answer and is made once more on a new one. Delivered, not duplicated.
    hook = Hook(close_after=1)
    monkeypatch.setattr(keepalive, "_alive", lambda sock: True)
    sender = Sender(b"s" * 16, timeout=5)
    try:
        first = sender.send(hook.url, dict(DATA, **{"event-id": "e1"}))
        hook_conns_after_first = hook.connections
        second = sender.send(hook.url, dict(DATA, **{"event-id": "e2"}))
        assert first.ok and second.ok, (first, second)
        assert hook.requests == ["e1", "e2"]
        assert hook_conns_after_first == 1 and hook.connections == 2
    finally:
        sender.abort()
        hook.close()


def test_a_closed_kept_connection_is_noticed_before_use() -> None:
    hook = Hook(close_after=1)
    sender = Sender(b"s" * 16, timeout=5)
    try:
        assert sender.send(hook.url, dict(DATA, **{"event-id": "e1"})).ok
        # wait until the receiver's close has reached us (by the socket, not by time)
        kept = sender._idle._idle[0][2]
        kept.settimeout(10)
        assert kept.recv(1, socket.MSG_PEEK) == b""
        assert sender.send(hook.url, dict(DATA, **{"event-id": "e2"})).ok
        assert hook.requests == ["e1", "e2"] and sender._idle.reused == 0
    finally:
        sender.abort()
        hook.close()


def test_an_attempt_on_a_kept_connection_has_the_same_deadline() -> None:
    hook = Hook(hang_on=frozenset({2}))
    sender = Sender(b"s" * 16, timeout=10)  # the set-up send: room for a loaded box
    result: list[Any] = []
    try:
        assert sender.send(hook.url, dict(DATA, **{"event-id": "e1"})).ok
        sender.timeout = 1  # read per attempt: the deadline under test is the second attempt's
        sending = threading.Thread(target=lambda: result.append(sender.send(hook.url, DATA)), daemon=True)
        sending.start()
        sending.join(30)  # generous: the deadline is 1 s
        assert not sending.is_alive()
        assert not result[0].ok and not result[0].final and "within 1 s" in result[0].text
        assert hook.connections == 1 and sender._idle.reused == 1  # it was the kept connection
        assert len(hook.requests) == 2  # not made again on a new connection: it timed out
    finally:
        sender.abort()
        hook.close()


def test_idle_connections_expire_and_are_bounded() -> None:
    idle = keepalive.Idle(keep=0.0, max_idle=2)
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        key = ("http", "h", 80)
        for mine, _ in pairs:
            idle.give(key, mine)
        assert idle.take(key) is None  # kept 0 s: every one expired (and closed)
        assert all(mine.fileno() == -1 for mine, _ in pairs)
        idle.keep = 60.0
        fresh = [socket.socketpair() for _ in range(3)]
        pairs += fresh
        for mine, _ in fresh:
            idle.give(key, mine)
        assert fresh[0][0].fileno() == -1  # the oldest went: at most 2 kept
        assert idle.take(("http", "other", 80)) is None
        assert idle.take(key) is fresh[2][0]  # the newest first
    finally:
        for mine, theirs in pairs:
            mine.close()
            theirs.close()


class CountingStore:
    def __init__(self) -> None:
        self.updates: list[int] = []
        self.lock = threading.Lock()

    def update(self, job_id: int, change: Any) -> Any:
        with self.lock:
            self.updates.append(job_id)
        return change(job_id)


def test_outcomes_are_held_while_callbacks_arrive_and_a_flush_writes_them_at_once() -> None:
    store = CountingStore()
    asked = threading.Event()

    def busy() -> float:
        asked.set()
        return 60.0  # callbacks keep arriving

    recorder = Recorder(store, lambda line: None, window=0.01, hold=busy, max_hold=60.0)
    written = threading.Event()
    try:
        recorder.submit(Write(7, lambda job: job, lambda job, error: written.set()))
        assert asked.wait(30)  # its window ended and it asked whether callbacks are arriving...
        assert store.updates == [] and not written.is_set()  # ...they are: held
        recorder.flush()  # shutdown, --once: written now, not at the end of the hold
        assert written.is_set() and store.updates == [7]
    finally:
        recorder.close()


def test_a_hold_never_outlasts_max_hold() -> None:
    store = CountingStore()
    recorder = Recorder(store, lambda line: None, window=0.01, hold=lambda: 60.0, max_hold=0.2)
    written = threading.Event()
    try:
        recorder.submit(Write(3, lambda job: job, lambda job, error: written.set()))
        assert written.wait(30)  # generous; the bound is 0.2 s
        assert store.updates == [3]
    finally:
        recorder.close()


def test_a_poke_wakes_the_dispatcher_when_it_matters(tmp_path, monkeypatch) -> None:
    # Pokes wake the dispatcher only when it could send sooner (a burst of callbacks costs no
    # wakeup each). With its periodic look and the scan an hour away, every job poked must still
    # go at once: the first because it is due before the dispatcher's wait ends, the others
    # (no room: one worker) as soon as the attempt before them ends.
    from notify_receiver import Receiver
    from test_notifier import failed_jobs

    from jobman_cli.clock import SystemClock
    from jobman_cli.daemon import notifier as notifier_module
    from jobman_cli.notify.settings import NotifySettings
    from jobman_cli.stores.tinydb import TinyDBStore

    monkeypatch.setattr(notifier_module, "MAX_WAIT", 3600.0)
    hook = Receiver(delay=0.05)
    store = TinyDBStore(tmp_path / "jobs.json")
    notifier = notifier_module.Notifier(store, SystemClock(), NotifySettings(workers=1, busy_workers=1,
                                                                             scan_interval=3600.0),
                                        Sender(b"s" * 16), owner="test", exclusive=True, log=lambda line: None)
    notifier.start()
    try:
        for _ in range(3000):  # until its first scan is done and it waits (an event, polled)
            with notifier._cond:
                if notifier._wake_at > 0:
                    break
            threading.Event().wait(0.01)
        ids = failed_jobs(tmp_path / "jobs.json", hook.url, 3)
        for job_id in ids:
            notifier.poke(store.get(job_id))
        assert len(hook.wait_for(3, timeout=30)) == 3  # generous; without the wakeups: an hour
    finally:
        notifier.close()
        hook.close()
        store.close()


def test_while_callbacks_arrive_a_batch_is_written_by_few_threads() -> None:
    from jobman_cli.daemon import notify_recorder

    class Overlap(CountingStore):
        def __init__(self) -> None:
            super().__init__()
            self.now = self.most = 0

        def update(self, job_id: int, change: Any) -> Any:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            threading.Event().wait(0.02)  # a commit's time: lets other writers overlap if they can
            with self.lock:
                self.now -= 1
            return super().update(job_id, change)

    store = Overlap()
    recorder = Recorder(store, lambda line: None, window=0.01, hold=lambda: 60.0, max_hold=0.05)
    done = threading.Semaphore(0)
    try:
        for job_id in range(12):
            recorder.submit(Write(job_id, lambda job: job, lambda job, error: done.release()))
        for _ in range(12):
            assert done.acquire(timeout=30)
        assert sorted(store.updates) == list(range(12))  # every one written once
        assert store.most <= notify_recorder.BUSY_WRITERS
    finally:
        recorder.close()
