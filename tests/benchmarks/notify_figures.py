"""Notification figure (issue 13): 1,000 jobs fail at once, each with a webhook to a receiver that
takes 200 ms to answer.

Each run: a fresh store of ``sizes.store`` jobs, ``sizes.callbacks`` of them ``running`` (made as
the callbacks figure makes them), the rest scheduled days ahead; a real ``jobman daemon``; 50
client threads send every running job a ``failed`` callback at once (new connection each, the
job's own token). "With notifications" every running job has ``--notify`` pointing at a receiver
in a process of its own (``http.server``, a thread per connection, 200 ms sleep before answering
200); "without", no target. Callback throughput = callbacks / wall time from the first request to
the last answer, as in the callbacks figure; runs alternate in ABBA order (without, with, with,
without, without, with, ...), so a drift of the machine's load does not favour either arm, and the
medians are compared, after one discarded run (the figure's first daemon start is the coldest).
"All delivered": the receiver counted exactly one POST per job and the store holds every delivery
as ``delivered`` after one attempt.
"""

from __future__ import annotations

import dataclasses
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

import datagen
from daemon_figures import _daemon_env, _put
from harness import BenchError, Daemon, MotoServer, cpu_seconds, free_port, median
from report import Row, Sizes

UTC = timezone.utc
DELAY = 0.2
DELIVERY_LIMIT = 300.0
RECEIVER = """
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
delay, out = float(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(delay)
        with lock:
            out.write(self.headers.get("X-Jobman-Event-Id", "?") + "\\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen() backlog: a class attribute, read by the constructor
server = Server(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
server.serve_forever()
"""


def _populate(db: Path, sizes: Sizes, target: str | None) -> list:
    """Like ``datagen.populate``, with ``notify`` set on the running jobs when ``target`` is given."""
    now = datetime.now(UTC)
    with datagen.TinyDBStore(db) as store:
        templates = datagen._templates(datagen.JobService(store))
        if target:
            templates = [dataclasses.replace(t, notify=(target,)) for t in templates]
        items = [(datagen._draft(templates, n, now, now), datagen._ended("running", n, now, store.store_id))
                 for n in range(sizes.callbacks)]
        running = datagen._write(store, items)
    datagen.populate(db, [("scheduled", now + timedelta(days=1 + n % 30)) for n in range(sizes.store - sizes.callbacks)])
    return running


def _one_run(workdir: Path, sizes: Sizes, moto: MotoServer, tag: str, notify: bool) -> dict:
    moto.reset()
    db = workdir / f"notify-{tag}.json"
    db.unlink(missing_ok=True)
    seen = workdir / f"received-{tag}.txt"
    seen.unlink(missing_ok=True)
    receiver = None
    if notify:
        port = free_port()
        receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port), str(DELAY), str(seen)],
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    jobs = _populate(db, sizes, f"http://127.0.0.1:{port}/hook" if notify else None)
    work: queue.Queue = queue.Queue()
    for job in jobs:
        work.put((job.id, datagen.callback_token(job.id), orjson.dumps({"status": "failed", "exit-code": 1})))
    env = {**_daemon_env(moto.url, workdir), "JOBMAN_NOTIFY_SECRET": "bench-notify-secret-0123456789"}
    daemon = Daemon(env, db, "--reconcile-interval", "3600", log=workdir / f"daemon-{tag}.log")
    answers: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                job_id, token, body = work.get_nowait()
            except queue.Empty:
                return
            try:
                status, _ = _put(daemon.port, job_id, token, body)
            except OSError:
                status = 0
            with lock:
                answers.append(status)

    try:
        daemon.wait_ready()
        time.sleep(1.0)  # let the start-up work (first parse, first reconcile) settle
        cpu_start = cpu_seconds(daemon.pid)
        threads = [threading.Thread(target=client) for _ in range(sizes.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        cpu_callbacks = cpu_seconds(daemon.pid) - cpu_start
        delivered_after = None
        if notify:
            deadline = time.monotonic() + DELIVERY_LIMIT
            while _count(seen) < len(jobs):
                if time.monotonic() > deadline:
                    raise BenchError(f"only {_count(seen)} of {len(jobs)} notifications arrived")
                time.sleep(0.1)
            delivered_after = time.perf_counter() - start
            # the outcomes are stored just after the answers: wait for the last ones
            deadline = time.monotonic() + 60
            while _stored_delivered(db, jobs) < len(jobs) and time.monotonic() < deadline:
                time.sleep(0.2)
        cpu_all = cpu_seconds(daemon.pid) - cpu_start
    finally:
        daemon.stop()
        if receiver is not None:
            receiver.kill()
            receiver.wait(timeout=10)
    bad = sum(1 for a in answers if a != 200)
    result = {"rate": len(answers) / elapsed, "bad": bad, "delivered_after": delivered_after,
              "cpu_callbacks": cpu_callbacks, "cpu_all": cpu_all}
    if notify:
        events = seen.read_text().split()
        result["posts"] = len(events)
        result["distinct"] = len(set(events))
        stored = datagen.read_jobs(db)
        result["stored"] = sum(1 for j in jobs if stored[j.id].deliveries
                               and stored[j.id].deliveries[0].get("state") == "delivered"
                               and stored[j.id].deliveries[0].get("attempts") == 1)
    return result


def _count(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def _stored_delivered(db: Path, jobs: list) -> int:
    stored = datagen.read_jobs(db)
    return sum(1 for j in jobs if stored[j.id].deliveries and stored[j.id].deliveries[0].get("state") == "delivered")


def _rates(runs: list[dict]) -> str:
    return ", ".join(f"{run['rate']:.0f}" for run in runs)


def notify(workdir: Path, sizes: Sizes, moto: MotoServer) -> list[Row]:
    reps = 2 if sizes.quick else 5
    plain, with_notify = [], []
    # a discarded first run: the figure's first daemon start is the coldest (page cache, moto), and
    # in the order below it would always be a run without notifications
    _one_run(workdir, sizes, moto, "warm-up", notify=False)
    for rep in range(reps):
        # ABBA order (without, with, with, without, ...): a drift of the machine's load during the
        # figure falls on both arms alike (in a fixed order, "with" always ran second of a pair)
        for notify in ((False, True) if rep % 2 == 0 else (True, False)):
            if notify:
                with_notify.append(_one_run(workdir, sizes, moto, f"notify-{rep}", notify=True))
            else:
                plain.append(_one_run(workdir, sizes, moto, f"plain-{rep}", notify=False))
    base, rate = median([r["rate"] for r in plain]), median([r["rate"] for r in with_notify])
    ratio = rate / base
    n = sizes.callbacks
    all_delivered = all(r["posts"] == n and r["distinct"] == n and r["stored"] == n for r in with_notify)
    bad = sum(r["bad"] for r in plain + with_notify)
    took = median([r["delivered_after"] for r in with_notify])
    cpu_with, cpu_without = median([r["cpu_callbacks"] for r in with_notify]), median([r["cpu_callbacks"] for r in plain])
    return [
        Row(f"notifications: {n:,} jobs fail at once, webhook answers in {DELAY * 1000:.0f} ms",
            f"{rate:.0f} callbacks/s with, {base:.0f}/s without (× {ratio:.2f}); "
            f"{'all' if all_delivered else 'NOT all'} {n:,} delivered once",
            "throughput ≥ 90 % of the run without; every one delivered once",
            f"median of {reps} alternating runs each (ABBA order, after a warm-up); "
            f"last delivery {took:.1f} s after the first callback; "
            f"runs with: {_rates(with_notify)}/s, without: {_rates(plain)}/s; daemon CPU during the callbacks "
            f"{cpu_with:.2f} s with, {cpu_without:.2f} s without; {bad} non-200",
            ratio >= 0.9 and all_delivered and bad == 0),
    ]
