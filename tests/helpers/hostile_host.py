"""A fetch host that ignores the agent and speaks the protocol as a script says: an attacker.

Run in place of the host's Python (`--remote-python`, through a wrapper); it reads what the client
sends first (the program and the parameters line), then plays the steps of the JSON file named by
$HOSTILE_SCENARIO, in order:
  {"line": OBJ}         OBJ as one JSON line        {"text": STR}   STR and a newline, as is
  {"raw": STR}          STR's latin-1 bytes, as is  {"sleep": S}    wait S seconds
  {"command": true}     read one command line from the client
  {"steps": [STEP...]}  those steps, in order
  {"forever": STEP, "every": S, "grow": N}  STEP again and again (until the client goes), every S
                        seconds; with grow, its line's "bytes" N more each time
"""

import json
import os
import sys
import time

out, inp = sys.stdout.buffer, sys.stdin.buffer
length = int(inp.readline())
inp.read(length)  # the agent program: ignored
inp.readline()  # the parameters


def play(step: dict) -> None:
    if "line" in step:
        out.write(json.dumps(step["line"]).encode() + b"\n")
    elif "text" in step:
        out.write(step["text"].encode("utf-8", "surrogateescape") + b"\n")
    elif "raw" in step:
        out.write(step["raw"].encode("latin-1"))
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "command" in step:
        inp.readline()
    elif "steps" in step:
        for each in step["steps"]:
            play(each)
    elif "forever" in step:
        while True:
            play(step["forever"])
            out.flush()
            time.sleep(step.get("every", 0.1))
            if "grow" in step:
                step["forever"]["line"]["bytes"] += step["grow"]
    out.flush()


try:
    with open(os.environ["HOSTILE_SCENARIO"]) as fh:
        steps = json.load(fh)
    for step in steps:
        play(step)
    time.sleep(float(os.environ.get("HOSTILE_LINGER", "0")))
except (BrokenPipeError, ConnectionResetError):
    pass
