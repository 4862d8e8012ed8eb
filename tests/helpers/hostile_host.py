"""A fetch host that ignores the agent and speaks the protocol as a script says: an attacker.

Run in place of the host's Python (`--remote-python`, through a wrapper); it reads what the client
sends first (the program and the parameters line), then plays the steps of the JSON file named by
$HOSTILE_SCENARIO, in order:
  {"line": OBJ}         OBJ as one JSON line        {"text": STR}   STR and a newline, as is
  {"raw": STR}          STR's latin-1 bytes, as is  {"sleep": S}    wait S seconds (or until the client goes)
  {"command": true}     read one command line from the client
  {"steps": [STEP...]}  those steps, in order
  {"forever": STEP, "every": S, "grow": N}  STEP again and again (until the client goes), every S
                        seconds; with grow, its line's "bytes" N more each time
  {"flood": OBJ}        OBJ as JSON lines for ever, deaf: each write waits for room, never watching our
                        stdin (only a write that fails, the client's end of our stdout closed, ends it)
  {"close": true}       close our stdout (the client reads its end), then go on with the script
The client goes when it closes our stdin (over SSH the channel closes: the next write fails), and
the host stops then; with $HOSTILE_LINGER it lingers that long, deaf, after its script, so that the
client must end it.
"""

import contextlib
import json
import os
import select
import sys
import time

inp = sys.stdin.buffer
OUT = sys.stdout.fileno()
os.set_blocking(OUT, False)  # a write waits in `send`, where the client's going is seen
length = int(inp.readline())
inp.read(length)  # the agent program: ignored
inp.readline()  # the parameters


def wait(seconds: float) -> None:
    """Wait `seconds`, or until the client has gone (its end of our stdin closed); what it sends
    meanwhile is ignored."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if select.select([inp], [], [], left)[0] and gone():
            raise BrokenPipeError


def gone() -> bool:
    """Whether the client has closed our stdin; what else it sent is ignored (read and dropped)."""
    return not os.read(inp.fileno(), 1 << 16)


def send(data: bytes) -> None:
    """Write all of `data`, waiting while the client reads none of it, until it has gone."""
    view = memoryview(data)
    while view:
        readable, writable, _ = select.select([inp], [OUT], [])
        if writable:
            with contextlib.suppress(BlockingIOError):  # room for less than PIPE_BUF: wait again
                view = view[os.write(OUT, view):]
        elif readable and gone():
            raise BrokenPipeError


def flood(obj: dict) -> None:
    line = json.dumps(obj).encode() + b"\n"
    os.set_blocking(OUT, True)
    while True:
        os.write(OUT, line)


def play(step: dict) -> None:
    if "flood" in step:
        flood(step["flood"])
    elif "close" in step:
        os.close(OUT)
    elif "line" in step:
        send(json.dumps(step["line"]).encode() + b"\n")
    elif "text" in step:
        send(step["text"].encode("utf-8", "surrogateescape") + b"\n")
    elif "raw" in step:
        send(step["raw"].encode("latin-1"))
    elif "sleep" in step:
        wait(step["sleep"])
    elif "command" in step:
        inp.readline()
    elif "steps" in step:
        for each in step["steps"]:
            play(each)
    elif "forever" in step:
        while True:
            play(step["forever"])
            wait(step.get("every", 0.1))
            if "grow" in step:
                step["forever"]["line"]["bytes"] += step["grow"]


try:
    with open(os.environ["HOSTILE_SCENARIO"]) as fh:
        steps = json.load(fh)
    for step in steps:
        play(step)
    time.sleep(float(os.environ.get("HOSTILE_LINGER", "0")))
except (BrokenPipeError, ConnectionResetError):
    pass
