"""The listener's connection caps: who gets a connection, and whom a newcomer pushes out.

This is the first rule of :mod:`jobman_cli.httpio` (read its docstring for why the caps exist): at
most ``per_address`` connections per client address and ``max_connections`` in all. At a cap the
connection that has waited longest *for its request* is closed to make room, first among the
newcomer's own address, so someone who opens connections and says nothing only ever pushes out
their own; a connection whose request is being handled is never closed, and only if every one is,
the newcomer is refused. Each closure or refusal is counted, and one summary line a minute at most
says how many and from where.

Kept apart from the server because it is only bookkeeping: it runs on the loop thread (no locks),
does no I/O itself (closing goes through the server's ``close``), and so the policy reads in one
place. Insertion-ordered dicts give "oldest wait first" for free.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, Protocol, TypeVar

#: Seconds between two summary lines about connections closed or refused at the caps.
SUMMARY_EVERY = 60.0


class _HasHost(Protocol):
    host: str


Conn = TypeVar("Conn", bound=_HasHost)


class Admission(Generic[Conn]):
    """Every open connection, by address, and those waiting for a request (oldest wait first)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: Callable[[str], None], *, max_connections: int,
                 per_address: int, close: Callable[[Conn], None], stopping: Callable[[], bool]) -> None:
        """``close`` ends a connection the caps push out (it must call :meth:`forget`);
        ``stopping``: the server is shutting down (closures then are not shedding, not counted)."""
        self.loop, self.log, self._close, self._stopping = loop, log, close, stopping
        self.max_connections, self.per_address = max_connections, per_address
        #: every connection; and those waiting for a request, oldest wait first (the ones a cap closes)
        self.connections: dict[Conn, None] = {}
        self.by_host: dict[str, dict[Conn, None]] = {}
        self.waiting: dict[Conn, None] = {}
        self.waiting_by_host: dict[str, dict[Conn, None]] = {}
        self.shed: dict[str, int] = {}  # host -> connections closed or refused at a cap since the last summary
        self._summary: asyncio.TimerHandle | None = None
        self._last_summary = -SUMMARY_EVERY

    def room_for(self, host: str) -> bool:
        """Make room for a newcomer from ``host`` (closing the longest waiter at a full cap); False
        when every connection at the cap has its request being handled: refuse it."""
        address_full = len(self.by_host.get(host, ())) >= self.per_address
        return not ((address_full and not self._make_room(self.waiting_by_host.get(host, {})))
                    or (len(self.connections) >= self.max_connections and not self._make_room(self.waiting)))

    def add(self, conn: Conn) -> None:
        """A connection let in: it waits for its first request (so a cap may close it)."""
        self.connections[conn] = None
        self.by_host.setdefault(conn.host, {})[conn] = None
        self.set_waiting(conn, True)

    def _make_room(self, waiting: dict[Conn, None]) -> bool:
        if not waiting:
            return False
        oldest = next(iter(waiting))
        self.count_shed(oldest.host)
        self._close(oldest)
        return True

    def set_waiting(self, conn: Conn, waiting: bool) -> None:
        """Mark a connection as waiting for a request (closable at a cap), newest wait last."""
        self.waiting.pop(conn, None)
        mine = self.waiting_by_host.setdefault(conn.host, {})
        mine.pop(conn, None)
        if waiting and conn in self.connections:
            self.waiting[conn] = None
            mine[conn] = None
        elif not mine:
            del self.waiting_by_host[conn.host]

    def forget(self, conn: Conn) -> None:
        """The connection is closed (or closing): it no longer counts against any cap."""
        if conn not in self.connections:
            return
        del self.connections[conn]
        self.set_waiting(conn, False)
        mine = self.by_host[conn.host]
        del mine[conn]
        if not mine:
            del self.by_host[conn.host]

    def count_shed(self, host: str) -> None:
        """One connection from ``host`` closed or refused at a cap (or an accept that failed)."""
        if self._stopping():
            return
        self.shed[host] = self.shed.get(host, 0) + 1
        if self._summary is None:
            when = max(1.0, self._last_summary + SUMMARY_EVERY - self.loop.time())
            self._summary = self.loop.call_later(when, self._log_summary)

    def _log_summary(self) -> None:
        self._summary, self._last_summary = None, self.loop.time()
        shed, self.shed = self.shed, {}
        top = sorted(shed.items(), key=lambda item: -item[1])[:3]
        self.log(f"{sum(shed.values())} connections closed or refused at the connection caps "
                 f"({self.per_address} per client address, {self.max_connections} in all), most from "
                 + ", ".join(f"{host} ({count})" for host, count in top)
                 + "; these were idle, slow, or not sending a request")
