"""A listener-jamming client, run as its own process by ``tests/test_api_jam.py``.

``python jam_attacker.py HOST PORT SOURCE IDLE SLOW`` keeps IDLE connections that never send a
byte and SLOW slowloris connections (a byte of a request head every second, never finishing it)
open from the source address SOURCE, and reopens each one the moment the server closes it, for as
long as its stdin stays open. It prints ``ready`` once every connection was opened the first
time, and one JSON line of counts when stdin closes. One process with one ``selectors`` loop, so
the test's own clients are not slowed down by the attacker's threads (or its GIL).
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time

HEAD = (b"PUT /jobMan/v1.1/jobs/1/callback HTTP/1.1\r\nHost: jobman\r\nContent-Type: application/json\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"y" * 40) for n in range(50)))


def main() -> int:
    host, port, source, idle, slow = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    counts = {"opened": 0, "closed-by-server": 0, "answered-408": 0, "connect-errors": 0}
    slow_sockets: dict[socket.socket, int] = {}

    def open_one(kind: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            sock.connect_ex((host, port))
        except OSError:
            counts["connect-errors"] += 1
            sock.close()
            return
        counts["opened"] += 1
        selector.register(sock, selectors.EVENT_READ, kind)
        if kind == "slow":
            slow_sockets[sock] = 0

    for _ in range(idle):
        open_one("idle")
    for _ in range(slow):
        open_one("slow")
    print("ready", flush=True)
    next_byte = time.monotonic() + 1.0
    while True:
        for key, _ in selector.select(timeout=0.05):
            if key.data is None:  # stdin: closed (or anything written) means stop
                print(json.dumps(counts), flush=True)
                return 0
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                counts["answered-408"] += data.startswith(b"HTTP/1.1 408 ")
                continue
            counts["closed-by-server"] += 1
            selector.unregister(sock)
            slow_sockets.pop(sock, None)  # type: ignore[arg-type]
            sock.close()  # type: ignore[union-attr]
            open_one(key.data)
        if time.monotonic() >= next_byte:
            next_byte += 1.0
            for sock, sent in list(slow_sockets.items()):
                try:
                    sock.send(HEAD[sent % len(HEAD): sent % len(HEAD) + 1])
                    slow_sockets[sock] = sent + 1
                except OSError:
                    pass  # not connected yet, or closed: the read side will notice


if __name__ == "__main__":
    sys.exit(main())
