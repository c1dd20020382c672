"""A fixed number of daemon threads that run the API's application, started as they are needed.

Not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined when the interpreter
exits, so one call stuck on a store (a file lock, a DynamoDB retry) would keep the daemon from
exiting after SIGTERM. These are daemon threads, as the listener's threads always were.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable


class Workers:
    def __init__(self, count: int, name: str) -> None:
        self.count = count
        self.name = name
        self.threads: list[threading.Thread] = []
        self.pending = 0  #: calls submitted and not yet finished
        self._idle = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self.pending += 1
            if self._idle <= 0 and len(self.threads) < self.count:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self.threads) + 1}", daemon=True)
                self.threads.append(thread)
                self._idle += 1  # counted before it starts, so a burst starts one thread per call
                thread.start()
            self._idle -= 1
            self._queue.put((future, function, args))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, function, args = item
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = function(*args)
                    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            finally:
                with self._lock:
                    self.pending -= 1
                    self._idle += 1

    def shutdown(self) -> None:
        """Let each thread end after the calls already queued."""
        for _ in self.threads:
            self._queue.put(None)
