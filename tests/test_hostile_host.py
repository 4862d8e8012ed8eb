"""A hostile fetch host can do no harm: it cannot write outside --out, make us accept what was not
asked, hang us past our deadlines, crash us (exit 70), or reach the terminal with control bytes.

The host is `helpers/hostile_host.py` in place of the host's Python, with `fetch --local` (the same
client code as over SSH, through a local pipe); each test scripts what it says.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, examples, run_cli, tree_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetam_provision.errors import RemoteConnectError
from edgetam_provision.fetch import pace
from edgetam_provision.fetch.limits import STALL_S
from edgetam_provision.hub.layout import archive_name

HOST = REPO_ROOT / "tests" / "helpers" / "hostile_host.py"
COMMIT = "a" * 40
NAME = archive_name("org/tiny", COMMIT)
HELLO = {"line": {"event": "hello", "huggingface_hub": "2.4.0", "python": "3.12.0"}}
FILES = [{"path": "config.json", "blob": "b" * 40, "size": 10}]
HOST_MISBEHAVED = 15
DEADLINE_S = 12  # --timeout 2 and --stall 2, plus start-up on a busy machine


def stream(name: str = NAME, size: int = 4096) -> dict:
    return {"line": {"event": "stream", "archive": name, "size": size}}


def chunk(data: bytes) -> dict:
    return {"steps": [{"line": {"event": "chunk", "length": len(data)}}, {"raw": data.decode("latin-1")}]}


def download(done: int, total: int | None = 10**9, repo: str = "org/tiny") -> dict:
    return {"line": {"event": "download", "repo_id": repo, "bytes": done, "total": total}}


ARCHIVE = bytes(range(256)) * 8  # what the host says is an archive: its sha256 and size agree
READY = {"line": {"event": "ready"}}


def whole(**over) -> dict:
    return packed(sha256=hashlib.sha256(ARCHIVE).hexdigest(), size=len(ARCHIVE), **over)


def packed(**over) -> dict:
    event = {"event": "packed", "archive": NAME, "repo_id": "org/tiny", "repo_type": "model",
             "commit": COMMIT, "refs": ["main"], "files": FILES, "sha256": "0" * 64, "size": 2048}
    return {"line": {**event, **over}}


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """Run `provision fetch --local` against a scripted host; returns (result, seconds, out)."""
    wrapper = tmp_path / "host-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {HOST}\n")
    wrapper.chmod(0o755)
    (tmp_path / "home" / "venv" / "site-packages").mkdir(parents=True)  # what an attacker would aim at

    def run(steps: list, *extra: str, repo: str = "org/tiny", timeout: str | None = "2",
            stall: str | None = "2"):
        scenario = tmp_path / "scenario.json"
        scenario.write_text(json.dumps(steps))
        monkeypatch.setenv("HOSTILE_SCENARIO", str(scenario))
        out = tmp_path / "work" / "model_backups"
        before = {k: v for k, v in tree_state(tmp_path).items() if k.split("/")[0] != "work"}
        t0 = time.monotonic()
        deadlines = [*(["--timeout", timeout] if timeout else []), *(["--stall", stall] if stall else [])]
        repos = [a for r in repo.split() for a in ("--repo", r)]
        res = run_cli("fetch", "--local", "--remote-python", wrapper, *repos, "--out", out, *deadlines,
                      *extra)
        took = time.monotonic() - t0
        after = {k: v for k, v in tree_state(tmp_path).items() if k.split("/")[0] != "work"}
        assert after == before, "the host made the client write outside --out"
        assert not (tmp_path / "work").exists() or {p.parent for p in (tmp_path / "work").rglob("*")} <= {
            tmp_path / "work", out}
        assert res.exit_code != 70, res.stderr
        assert took < DEADLINE_S, f"ran {took:.1f} s"
        return res, took, out

    return run


@pytest.fixture
def fast_clock(monkeypatch):
    """The progress clock runs `factor` times real time: a --stall of minutes passes in seconds (the
    silence deadline, --timeout, keeps real time)."""

    def use(factor: float) -> None:
        t0 = time.monotonic()
        monkeypatch.setattr(pace, "CLOCK", lambda: t0 + (time.monotonic() - t0) * factor)

    return use


@pytest.fixture
def host_ends(monkeypatch):
    """How each host process this test starts ends: its exit status, how many waits on it ran to
    their bound, and whether it was killed. A host ended by our hang-up has no wait run out."""
    started: list[Watched] = []

    class Watched(subprocess.Popen):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw)
            self.waits_run_out, self.killed = 0, False
            started.append(self)

        def wait(self, timeout=None):
            try:
                return super().wait(timeout)
            except subprocess.TimeoutExpired:
                self.waits_run_out += 1
                raise

        def kill(self) -> None:
            self.killed = True
            super().kill()

    monkeypatch.setattr(subprocess, "Popen", Watched)
    return lambda: [(p.returncode, p.waits_run_out, p.killed) for p in started]


def refused(res, out: Path, words: str) -> None:
    assert res.exit_code == HOST_MISBEHAVED, res.stderr
    assert words in res.stderr, res.stderr
    assert res.stderr.count("error: ") == 1 and "hint: " in res.stderr
    assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith(".part")]


# ---------------------------------------------------------------------------- where it writes

@pytest.mark.parametrize("name", [
    "../../home/venv/site-packages/evil.pth", "/tmp/provision-absolute.tar", "", "a\x00b.tar",
    "models--org--tiny--aaaaaaaaaaaa.tar/../../x", "models--org--tiny--aaaaaaaaaaaa.tar\n",
])
def test_a_stream_may_not_name_a_path_of_the_hosts_choosing(hostile, name):
    res, _, out = hostile([HELLO, stream(name),
                           {"line": {"event": "chunk", "length": 5}}, {"raw": "evil\n"},
                           packed(streamed=True), {"line": {"event": "ready"}}])
    refused(res, out, "archive")


def test_a_stream_of_one_name_then_packed_under_another_is_refused_and_nothing_kept(hostile):
    other = archive_name("org/tiny", "c" * 40)
    res, _, out = hostile([HELLO, stream(),
                           {"line": {"event": "chunk", "length": 5}}, {"raw": "evil\n"},
                           packed(archive=other, commit="c" * 40, streamed=True),
                           {"line": {"event": "ready"}}])
    refused(res, out, "had not announced")
    assert not out.exists() or list(out.iterdir()) == []


def test_a_packed_archive_outside_the_name_grammar_is_refused(hostile):
    res, _, out = hostile([HELLO, packed(archive="../evil.tar"), {"line": {"event": "ready"}}])
    refused(res, out, "'archive'")


# ---------------------------------------------------------------------------- what was asked

def test_a_repo_that_was_not_asked_for_is_refused(hostile):
    evil = archive_name("evil/other", COMMIT)
    res, _, out = hostile([HELLO, packed(repo_id="evil/other", archive=evil), {"line": {"event": "ready"}}])
    refused(res, out, "evil/other, which was not asked for")


def test_a_pinned_commit_answered_with_another_is_refused(hostile):
    res, _, out = hostile([HELLO, packed(), {"line": {"event": "ready"}}], repo=f"org/tiny@{'d' * 40}")
    refused(res, out, "with another commit")


def test_ready_without_the_archives_is_refused(hostile):
    res, _, out = hostile([HELLO, {"line": {"event": "ready"}}])
    refused(res, out, "ready without sending org/tiny")


def test_the_same_repo_twice_is_refused(hostile):
    res, _, out = hostile([HELLO, packed(), packed(), {"line": {"event": "ready"}}])
    refused(res, out, "was already sent")


def test_a_size_the_files_cannot_fill_is_refused_before_anything_is_written(hostile):
    res, _, out = hostile([HELLO, packed(size=10 * 1024**3), {"line": {"event": "ready"}}])
    refused(res, out, "cannot hold its 1 files")


def test_data_other_than_asked_for_is_refused(hostile):
    res, _, out = hostile([HELLO, packed(), {"line": {"event": "ready"}}, {"command": True},
                           {"line": {"event": "data", "offset": 0, "length": 10 * 1024**3}}])
    refused(res, out, "offered bytes")


# ---------------------------------------------------------------------------- declared bounds

def test_a_stream_past_its_announced_size_is_refused_and_nothing_kept(hostile):
    res, _, out = hostile([HELLO, stream(size=8), chunk(b"12345"), chunk(b"6789")])
    refused(res, out, "more of " + NAME + " than the 8 bytes it announced")
    assert not out.exists() or list(out.iterdir()) == []


def test_a_stream_that_never_ends_ends_at_its_announcement_under_the_default_deadlines(hostile):
    res, _, out = hostile([HELLO, stream(size=1 << 20), {"forever": chunk(b"x" * 65536), "every": 0.001}],
                          timeout=None, stall=None)
    refused(res, out, "than the 1048576 bytes it announced")
    assert not out.exists() or list(out.iterdir()) == []


def test_free_space_for_the_whole_announcement_is_checked_before_a_byte_is_written(hostile):
    res, _, out = hostile([HELLO, stream(size=1 << 50), chunk(b"12345"), {"sleep": 5}])
    assert res.exit_code == 5 and "needs" in res.stderr and "nothing was written" in res.stderr, res.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_a_second_stream_for_the_same_repo_is_refused(hostile):
    res, _, out = hostile([HELLO, stream(), chunk(b"12345"), {"line": {"event": "stream-void", "why": "x"}},
                           stream(), chunk(b"12345")])
    refused(res, out, "second stream")


# ---------------------------------------------------------------------------- a violation keeps nothing

def test_a_violation_after_a_whole_streamed_archive_removes_it_too(hostile):
    """The first repo's archive arrived whole (its sha256 checks), then the host broke the protocol:
    it is not left in --out unrecorded, where a later restore of the folder would use it."""
    res, _, out = hostile([HELLO, stream(size=len(ARCHIVE) + 512), chunk(ARCHIVE), whole(streamed=True),
                           READY], repo="org/tiny org/two")
    refused(res, out, "ready without sending org/two")
    assert "nothing it sent in this run was kept (1 file removed)" in res.stderr, res.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_a_violation_during_the_pulls_removes_what_the_run_pulled_and_keeps_what_was_here(hostile, tmp_path):
    two, three = archive_name("org/two", COMMIT), archive_name("org/three", COMMIT)
    out = tmp_path / "work" / "model_backups"
    out.mkdir(parents=True)
    (out / two).write_bytes(ARCHIVE)  # from an earlier run, and what the host says: not pulled again
    res, _, out = hostile([HELLO, whole(), whole(archive=two, repo_id="org/two"),
                           whole(archive=three, repo_id="org/three"), READY,
                           {"command": True},
                           {"line": {"event": "data", "offset": 0, "length": len(ARCHIVE)}},
                           {"raw": ARCHIVE.decode("latin-1")},
                           {"command": True}, {"line": {"event": "data", "offset": 0, "length": 1 << 40}}],
                          repo="org/tiny org/two org/three")
    refused(res, out, "offered bytes")
    assert "(1 file removed)" in res.stderr and "before the run are as they were" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [two] and (out / two).read_bytes() == ARCHIVE


# ---------------------------------------------------------------------------- drips

@pytest.mark.parametrize("drip", [
    pytest.param([stream(size=1 << 20), {"line": {"event": "chunk", "length": 1 << 20}}], id="archive-bytes"),
    pytest.param([], id="an-event-line"),
])
def test_a_host_that_drips_a_byte_every_two_seconds_is_given_up(hostile, fast_clock, drip):
    fast_clock(20)  # 0.1 s here is 2 s to the progress clock
    res, _, _ = hostile([HELLO, *drip, {"forever": {"raw": "x"}, "every": 0.1}], timeout="5", stall="15")
    assert res.exit_code == 10, res.stderr
    assert ("made no progress for 15 s" if drip == [] else "in 15 s, less than the 1.0 MB") in res.stderr


def test_a_download_that_progresses_one_byte_a_second_is_given_up(hostile, fast_clock):
    fast_clock(20)
    res, _, _ = hostile([HELLO, {"forever": download(100), "every": 0.05, "grow": 1}],
                        timeout="5", stall="15")
    assert res.exit_code == 10 and "in 15 s, less than the 1.0 MB" in res.stderr, res.stderr


def test_download_progress_past_the_declared_total_is_no_progress(hostile, fast_clock):
    fast_clock(20)
    res, _, _ = hostile([HELLO, {"forever": download(0, total=10), "every": 0.05, "grow": 1 << 20}],
                        timeout="5", stall="15")
    assert res.exit_code == 10 and "moved only 10 B in 15 s" in res.stderr, res.stderr


def test_a_download_that_never_progresses_ends_at_the_default_stall(hostile, fast_clock):
    fast_clock(300)  # the default 600 s pass in 2 s
    res, _, _ = hostile([HELLO, {"forever": download(100), "every": 0.1}], timeout=None, stall=None)
    assert res.exit_code == 10 and f"made no progress for {STALL_S:.0f} s" in res.stderr, res.stderr


def test_a_download_report_for_a_repo_not_asked_is_refused(hostile):
    res, _, out = hostile([HELLO, download(5, repo="evil/other")])
    refused(res, out, "download of evil/other, which was not asked for")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=60, deadline=None)
@given(rate=st.integers(1, 4 << 20), every=st.floats(0.01, 5), window=st.floats(1, 900))
def test_property_a_host_is_given_up_exactly_when_a_window_moves_less_than_the_floor(rate, every, window):
    """Bytes at `rate` per second arriving every `every` s: a rate that moves a step (plus one
    arrival) per window runs forever; one that cannot move a step in a window plus an arrival is
    given up within that time, whatever else it does."""
    clock, step = Clock(), 1 << 20
    p = pace.Pace("host", window, step, clock)
    per_arrival = max(1, round(rate * every))
    horizon = 3 * window + 10 * every
    ended = None
    while clock.now < horizon and ended is None:
        clock.now += every
        p.moved(per_arrival)
        try:
            p.check()
        except RemoteConnectError:
            ended = clock.now
    if per_arrival / every * (window - every) >= step + per_arrival:
        assert ended is None
    if per_arrival / every * (window + every) < step:
        assert ended is not None and ended <= window + 2 * every


# ---------------------------------------------------------------------------- hangs and floods

def test_a_negative_chunk_length_is_refused_at_once(hostile):
    res, took, out = hostile([HELLO, stream(),
                              {"line": {"event": "chunk", "length": -5}}])
    refused(res, out, "'length'")
    assert took < 5


@pytest.mark.slow
def test_a_line_that_never_ends_is_cut_off(hostile):
    res, _, out = hostile([HELLO, {"raw": "x" * (9 * 1024 * 1024)}])
    refused(res, out, "longer than")


@pytest.mark.slow
def test_progress_that_never_advances_ends_at_the_stall_limit(hostile):
    same = {"line": {"event": "download", "repo_id": "org/tiny", "bytes": 100, "total": 1000}}
    res, took, _ = hostile([HELLO, {"forever": same, "every": 0.2}])
    assert res.exit_code == 10 and "made no progress for 2 s" in res.stderr, res.stderr
    assert took >= 2


@pytest.mark.slow
def test_silence_ends_at_the_read_deadline(hostile, monkeypatch):
    """A host deaf to the hang-up too (it lingers): ended after the wait for its exit (shortened here)."""
    monkeypatch.setenv("HOSTILE_LINGER", "30")
    monkeypatch.setattr("edgetam_provision.fetch.run.AGENT_EXIT_S", 0.5)
    res, _, _ = hostile([HELLO])
    assert res.exit_code == 10 and "silent" in res.stderr, res.stderr


def test_a_host_silent_before_its_hello_is_hung_up_on_not_waited_for(hostile, host_ends):
    """Silence past the deadline before the hello is that verdict: the host, still reading its stdin,
    ends at the hang-up (exit 0 on its EOF), with no wait on it run out."""
    res, _, _ = hostile([{"command": True}], timeout="1")
    assert res.exit_code == 10 and "went silent past the deadline" in res.stderr, res.stderr
    assert host_ends() == [(0, 0, False)]


def test_a_host_that_closes_its_end_and_waits_is_diagnosed_once_hung_up_on(hostile, host_ends):
    """A host that closes its stdout before the hello but goes on reading its stdin: the diagnosis
    hangs up on it first (as an SSH hang-up does) and says how it then ended, at once."""
    res, _, _ = hostile([{"close": True}, {"command": True}])
    assert res.exit_code == 13 and "exited with status 0 before starting the agent" in res.stderr, res.stderr
    assert host_ends() == [(0, 0, False)]


@pytest.mark.parametrize("flood", [{"event": "progress", "message": "x" * 200}, [1, 2, 3]])
def test_a_host_that_keeps_writing_and_never_listens_is_ended_by_the_hang_up(hostile, host_ends, flood):
    """The run ends (a stall, a malformed event) while the host still writes into a pipe we no
    longer read, deaf to its stdin: closing our end of its stdout ends it (its write fails), not
    the kill after the exit wait."""
    res, _, _ = hostile([HELLO, {"flood": flood}], timeout="1", stall="1")
    assert res.exit_code in (10, 15), res.stderr
    assert host_ends() == [(0, 0, False)]


# ---------------------------------------------------------------------------- malformed events

@pytest.mark.parametrize("line", [
    "[1, 2, 3]", '"a string"', "null", "42", "{not json", '{"event": "nonesuch"}',
    '{"event": "download", "repo_id": "org/tiny", "bytes": -1}',
    '{"event": "download", "repo_id": "org/tiny", "bytes": "12"}',
    '{"event": "download", "repo_id": "org/tiny", "bytes": 1e999}',
    '{"event": "download", "repo_id": "../../etc", "bytes": 1}',
    '{"event": "packed"}', '{"event": "chunk", "length": true}', '{"event": "error"}',
    '[' * 100_000 + ']' * 100_000,
])
def test_a_malformed_event_is_a_protocol_error_not_a_crash(hostile, line):
    res, _, out = hostile([HELLO, {"text": line}])
    refused(res, out, "")


def test_a_first_event_that_is_not_hello_is_judged_like_any_other(hostile):
    res, _, out = hostile([{"line": {"event": "ready"}}])
    refused(res, out, "ready without")


# ---------------------------------------------------------------------------- the terminal

ESCAPES = "\x1b[2J\x1b]0;owned\x07\rfetched OK \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\\u202e"


def test_control_bytes_from_the_host_never_reach_the_terminal(hostile):
    res, _, _ = hostile([HELLO, {"line": {"event": "progress", "message": ESCAPES}},
                         {"line": {"event": "error", "kind": "x", "message": ESCAPES, "log": ESCAPES}}])
    assert res.exit_code == 13
    assert not any(c in res.stderr for c in "\x1b\x07\r\u202e"), repr(res.stderr)


# ---------------------------------------------------------------------------- the property

NAMES = st.sampled_from([NAME, "../../x", "/abs.tar", "", archive_name("evil/other", COMMIT), "a\x00"])
INTS = st.one_of(st.integers(-10, 10), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2048]))
EVENT = st.one_of(
    st.just(HELLO),
    st.builds(lambda n, s: {"line": {"event": "stream", "archive": n, "size": s}}, NAMES, INTS),
    st.builds(lambda n: {"line": {"event": "chunk", "length": n}}, INTS),
    st.builds(lambda s: {"raw": s}, st.text(alphabet=st.characters(max_codepoint=255), max_size=64)),
    st.builds(lambda n, s, c: packed(archive=n, size=s, commit=c), NAMES, INTS,
              st.sampled_from([COMMIT, "c" * 40, "xyz"])),
    st.builds(lambda b: {"line": {"event": "download", "repo_id": "org/tiny", "bytes": b}}, INTS),
    st.builds(lambda k: {"line": {"event": k}},
              st.sampled_from(["ready", "bye", "stream-void", "data", "?"])),
    st.builds(lambda o, n: {"line": {"event": "data", "offset": o, "length": n}}, INTS, INTS),
    st.just({"command": True}),
)


@settings(max_examples=examples(ci=25, dev=8), deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(EVENT, max_size=8))
def test_property_no_script_makes_the_client_write_outside_accept_hang_or_crash(hostile, steps):
    """A script that waits (a command the client never sends) ends at --timeout: 1 s here, so the
    quick loop runs this too (any verdict but 0 is allowed, so a slow start-up cannot fail it)."""
    res, _, out = hostile(steps, timeout="1", stall="1")  # the fixture asserts: nothing outside --out,
    # no exit 70, in time
    assert res.exit_code != 0, "a host that never sent a real archive was accepted"
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix == ".tar"]
