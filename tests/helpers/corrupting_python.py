"""Stand-in for the host's python3: runs the real one, flipping one byte of each piece of archive it
sends (whole archives after ``data``, pieces sent while packing after ``chunk``)."""

import json
import subprocess
import sys

real = subprocess.Popen([sys.executable, *sys.argv[1:]], stdout=subprocess.PIPE)
out = sys.stdout.buffer
remaining, flip_at, buf = 0, None, b""
while chunk := real.stdout.read1(1 << 20):
    buf += chunk
    while buf:
        if remaining:
            piece, buf = buf[:remaining], buf[remaining:]
            if flip_at is not None and flip_at < len(piece):
                piece = piece[:flip_at] + bytes([piece[flip_at] ^ 0xFF]) + piece[flip_at + 1:]
                flip_at = None
            elif flip_at is not None:
                flip_at -= len(piece)
            remaining -= len(piece)
            out.write(piece)
        elif b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            out.write(line + b"\n")
            event = json.loads(line)
            if event.get("event") in ("data", "chunk") and event["length"]:  # archive bytes follow
                remaining, flip_at = event["length"], min(1000, event["length"] - 1)
        else:
            break
    out.flush()
sys.exit(real.wait())
