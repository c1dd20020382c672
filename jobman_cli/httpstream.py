"""A connection's bytes for the API's event loop: a buffer the loop fills, read by line or by count.

A plain :class:`asyncio.Protocol` rather than asyncio's streams: the listener accepts sockets
itself (to count each one before any TLS handshake) and upgrades them with ``loop.start_tls``,
which takes a protocol. Reading pauses at :data:`READ_HIGH_WATER` bytes not yet used, so a client
that sends more than one request's worth is not read further until the application caught up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .httpwire import MAX_BODY, MAX_HEADER_BYTES, MAX_LINE, Disconnected

READ_HIGH_WATER = MAX_LINE + MAX_HEADER_BYTES + MAX_BODY


class Stream(asyncio.Protocol):
    """A connection's bytes: a buffer the loop fills, read by line or by count, with back-pressure."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Any = None
        self.buffer = bytearray()
        self.eof = self.closed = self.discard = self.tls = False
        self.dropped = 0
        self._waiter: asyncio.Future[None] | None = None
        self._read_paused = self._write_paused = False
        self._resumes = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.discard:
            self.dropped += len(data)
        else:
            self.buffer += data
            if len(self.buffer) > READ_HIGH_WATER and not self._read_paused:
                self._read_paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return not self.tls  # keep the write side open: a client may half-close and still read its answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.closed = True
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resumes += 1
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until something happens: bytes, EOF, the connection lost, writing possible again."""
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_data(self) -> None:
        while not self.buffer and not self.eof:
            await self.wait()

    async def readline(self, limit: int) -> bytes:
        """A line with its ``\\n``; or ``limit`` bytes without one; or what came before EOF."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self.buffer) >= limit or self.eof:
                return self._take(limit)
            start = len(self.buffer)
            await self.wait()

    async def read(self, count: int) -> bytes:
        """``count`` bytes, fewer only at EOF."""
        while len(self.buffer) < count and not self.eof:
            await self.wait()
        return self._take(count)

    def skip(self, count: int) -> None:
        self._take(count)

    def _take(self, count: int) -> bytes:
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        if self._read_paused and len(self.buffer) <= READ_HIGH_WATER // 2 and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes, stall: float) -> None:
        """Send ``data``; :class:`TimeoutError` when the client takes none of it for ``stall``
        seconds (a deadline on progress, not on the whole: a long answer on a slow link is fine)."""
        if self.closed:
            raise Disconnected()
        self.transport.write(data)
        while self._write_paused and not self.closed:
            resumed = self._resumes
            async with asyncio.timeout(stall):
                while self._resumes == resumed and not self.closed:
                    await self.wait()
        if self.closed:
            raise Disconnected()

    def start_discarding(self) -> None:
        self.discard = True
        self.dropped += len(self.buffer)
        self.buffer.clear()
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
