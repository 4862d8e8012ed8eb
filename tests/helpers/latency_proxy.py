"""ProxyCommand that adds latency: `latency_proxy.py HOST PORT SECONDS` (this kernel has no netem).

Bytes flow between stdin/stdout and HOST:PORT; each chunk is held SECONDS before it is passed on,
in each direction, so the round trip grows by 2 x SECONDS while throughput is left alone.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time


def pump(read, write, delay: float) -> None:
    q: queue.Queue = queue.Queue()

    def reader() -> None:
        while True:
            data = read()
            q.put((time.monotonic() + delay, data))
            if not data:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        due, data = q.get()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not data:
            return
        write(data)


def main() -> None:
    host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.create_connection((host, port))
    out = sys.stdout.buffer

    def to_stdout(data: bytes) -> None:
        out.write(data)
        out.flush()

    up = threading.Thread(target=pump, args=(lambda: os.read(0, 1 << 20), sock.sendall, delay), daemon=True)
    up.start()
    pump(lambda: sock.recv(1 << 20), to_stdout, delay)


if __name__ == "__main__":
    main()
