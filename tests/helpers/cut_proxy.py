"""ProxyCommand that relays to HOST:PORT and cuts the connection after LIMIT bytes downstream."""

import os
import selectors
import socket
import sys

host, port, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port))
sel = selectors.DefaultSelector()
sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
sel.register(sock, selectors.EVENT_READ)
down = 0
while down < limit:
    for key, _ in sel.select():
        if key.fileobj is sock:
            data = sock.recv(65536)
            if not data:
                sys.exit(0)
            down += len(data)
            os.write(sys.stdout.fileno(), data)
        else:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                sys.exit(0)
            sock.sendall(data)
sock.close()
