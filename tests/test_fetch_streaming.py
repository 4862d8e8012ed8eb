"""The host sends the archive while it downloads: the bytes streamed are exactly the archive a pack
after the download writes, a download that disagrees with the Hub's listing voids the stream (and
the fetch still succeeds), a failed download is the download's error. The agent's part runs here
against a fake huggingface_hub whose download writes `.incomplete` files piece by piece; the whole
path runs against the real sshd and the Hub stand-in."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import fetch_args, lfs_blob_name
from conftest import hf_cache_verify, interruptible, run_cli
from huggingface_hub import snapshot_download
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetam_provision.fetch.run import streams_live
from edgetam_provision.hub.layout import FileRecord, repo_folder_name, snapshot_link
from edgetam_provision.remote.agent import _archive_file, download_and_pack
from edgetam_provision.remote.channel import AgentError, Channel
from edgetam_provision.remote.live import Arriving, NotAsListed
from edgetam_provision.remote.pack import PackPlan, pack_repo

COMMIT = "c" * 40


class FakeHub:
    """huggingface_hub as the agent uses it: repo info, the tree listing, and a snapshot download
    that writes each blob through a growing ``<blob>.<id>.incomplete`` file, as hub 1.x/2.x do."""

    def __init__(self, files: dict[str, bytes], listed_blob: dict[str, str] | None = None,
                 fail: Exception | None = None, restart: bool = False, scribble: bool = False) -> None:
        self.files, self.listed_blob, self.fail, self.restart = files, listed_blob or {}, fail, restart
        self.scribble = scribble  # a writer that is not sequential: zeros first, the bytes later
        self.voided: Callable[[], bool] = lambda: True  # whether the agent said stream-void (run_agent_side)

    def HfApi(self) -> SimpleNamespace:
        listing = [SimpleNamespace(path=p, blob_id=lfs_blob_name(d), size=len(d), lfs=None)
                   for p, d in self.files.items()]
        for f in listing:
            f.blob_id = self.listed_blob.get(f.path, f.blob_id)
        return SimpleNamespace(repo_info=lambda *a, **k: SimpleNamespace(sha=COMMIT),
                               list_repo_tree=lambda *a, **k: listing)

    def snapshot_download(self, repo_id: str, *, cache_dir: str, revision: str, **_: object) -> None:
        repo = Path(cache_dir) / repo_folder_name(repo_id)
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        for rel, data in self.files.items():
            blob = lfs_blob_name(data)
            if not (repo / "blobs" / blob).exists():
                if self.restart:  # a first attempt that stops half-way, then a fresh file
                    (repo / "blobs" / f"{blob}.aaaaaaaa.incomplete").write_bytes(data[: len(data) // 2])
                growing = repo / "blobs" / f"{blob}.{os.urandom(4).hex()}.incomplete"
                if self.scribble:  # the bytes come once the packer has read the zeros (it voids the stream)
                    growing.write_bytes(bytes(len(data)))
                    until = time.monotonic() + 10
                    while not self.voided() and time.monotonic() < until:
                        time.sleep(0.01)
                grow(growing, data)
                os.replace(next(p for p in (repo / "blobs").glob(f"{blob}.*.incomplete")
                                if p.stat().st_size == len(data)), repo / "blobs" / blob)
                for stale in (repo / "blobs").glob(f"{blob}.*.incomplete"):
                    stale.unlink()
            if self.fail is not None:
                raise self.fail
            link = repo / "snapshots" / revision / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(snapshot_link(rel, blob))


def grow(path: Path, data: bytes, pieces: int = 4) -> None:
    step = max(1, len(data) // pieces)
    with open(path, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            time.sleep(0.01)


def run_agent_side(hub: FakeHub, work: Path, stream: bool = True) -> tuple[list[dict], bytes, dict]:
    """Run the agent's download-and-pack; returns its events, the bytes it streamed, its packed event."""
    out = io.BytesIO()
    hub.voided = lambda: b'"stream-void"' in out.getvalue()
    chan = Channel(io.BytesIO(b""), out, lambda: None)
    _name, packed = download_and_pack(hub, {"repo_id": "org/m"}, {"stream": stream}, work, chan)
    chan.emit(packed)
    events, chunks, data = [], [], out.getvalue()
    while data:
        line, _, data = data.partition(b"\n")
        event = json.loads(line)
        events.append(event)
        if event["event"] == "chunk":
            chunks.append(data[: event["length"]])
            data = data[event["length"]:]
    return events, b"".join(chunks), packed


def normal_pack(work: Path) -> bytes:
    buf = io.BytesIO()
    pack_repo(work / "hub", repo_folder_name("org/m"), COMMIT, buf)
    return buf.getvalue()


FILES = {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(300_000), "sub/dir/x.bin": b"x" * 5000}


def test_the_bytes_streamed_during_the_download_are_the_archive_a_later_pack_writes(tmp_path):
    events, streamed, packed = run_agent_side(FakeHub(FILES), tmp_path)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "stream" and "chunk" in kinds and packed["streamed"] is True
    assert streamed == normal_pack(tmp_path)
    assert packed["sha256"] == hashlib.sha256(streamed).hexdigest() and packed["size"] == len(streamed)
    assert not (tmp_path / packed["archive"]).exists()  # sent, not written: the client has it


def test_the_stream_announces_a_size_before_its_first_byte_that_the_archive_keeps_within(tmp_path):
    events, streamed, _packed = run_agent_side(FakeHub(FILES), tmp_path)
    announced = events[0]["size"]
    assert events[0]["event"] == "stream" and len(streamed) <= announced
    assert announced - len(streamed) < 64 * 1024  # headers are exact; the listing's allowance is small


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=6),
       names=st.lists(st.text(st.characters(min_codepoint=48, max_codepoint=0x2FFF, blacklist_characters="/"),
                              min_size=1, max_size=120), min_size=6, max_size=6, unique=True),
       ref=st.sampled_from([None, "main", "v1.0", "refs/pr/1"]))
def test_property_the_bound_holds_every_pack_of_the_plan(sizes, names, ref):
    """Whatever the files' names (long ones take pax headers) and sizes, the pack of the plan, with
    the ref the download writes and a trees listing within its allowance, fits the bound."""
    import tempfile

    from edgetam_provision.remote.live import LISTING_PER_FILE, stream_bound

    files = {names[i]: bytes([i]) * n for i, n in enumerate(sizes)}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        FakeHub(files).snapshot_download("org/m", cache_dir=str(cache), revision=COMMIT)
        repo = cache / repo_folder_name("org/m")
        if ref is not None:
            (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
            (repo / "refs" / ref).write_text(COMMIT)
        (repo / "trees").mkdir()
        (repo / "trees" / f"{COMMIT}.json").write_text("x" * sum(LISTING_PER_FILE + len(p) for p in files))
        plan = PackPlan.from_files([FileRecord(r, lfs_blob_name(d), len(d)) for r, d in files.items()])
        size = pack_repo(cache, repo_folder_name("org/m"), COMMIT, io.BytesIO()).size
        assert size <= stream_bound(repo_folder_name("org/m"), COMMIT, plan, ref)


def test_a_pack_that_would_outgrow_its_announcement_voids_the_stream_and_packs_again(tmp_path, monkeypatch):
    from edgetam_provision.remote import agent

    monkeypatch.setattr(agent, "stream_bound", lambda *a: 4096)
    events, streamed, packed = run_agent_side(FakeHub(FILES), tmp_path)
    void = [e for e in events if e["event"] == "stream-void"]
    assert events[0]["size"] == 4096 and len(streamed) <= 4096
    assert void and "grew past the 4096 bytes announced" in void[0]["why"] and packed["streamed"] is False
    assert (tmp_path / packed["archive"]).read_bytes() == normal_pack(tmp_path)


def test_a_streamed_archive_the_client_asks_for_again_is_packed_to_the_same_bytes(tmp_path):
    _events, streamed, packed = run_agent_side(FakeHub(FILES), tmp_path)
    assert _archive_file(tmp_path, packed["archive"], packed)().read_bytes() == streamed


def test_a_download_restarted_into_a_new_file_still_streams_the_right_bytes(tmp_path):
    _events, streamed, packed = run_agent_side(FakeHub(FILES, restart=True), tmp_path)
    assert packed["streamed"] is True and streamed == normal_pack(tmp_path)


def test_a_download_that_differs_from_the_listing_voids_the_stream_and_packs_again(tmp_path):
    hub = FakeHub(FILES, listed_blob={"config.json": "e" * 64})  # the listing names another blob
    events, _streamed, packed = run_agent_side(hub, tmp_path)
    assert "stream-void" in [e["event"] for e in events] and packed["streamed"] is False
    assert (tmp_path / packed["archive"]).read_bytes() == normal_pack(tmp_path)


def test_bytes_read_before_a_writer_that_is_not_sequential_filled_them_void_the_stream(tmp_path):
    events, _streamed, packed = run_agent_side(FakeHub(FILES, scribble=True), tmp_path)
    void = [e for e in events if e["event"] == "stream-void"]
    assert void and "do not hash to" in void[0]["why"] and packed["streamed"] is False
    assert (tmp_path / packed["archive"]).read_bytes() == normal_pack(tmp_path)


def test_a_failed_download_is_the_downloads_error_not_a_streaming_one(tmp_path):
    with pytest.raises(AgentError, match="ConnectionError: the Hub went away"):
        run_agent_side(FakeHub(FILES, fail=ConnectionError("the Hub went away")), tmp_path)


def test_without_the_clients_consent_nothing_is_streamed(tmp_path):
    events, streamed, packed = run_agent_side(FakeHub(FILES), tmp_path, stream=False)
    assert streamed == b"" and "stream" not in [e["event"] for e in events] and packed["streamed"] is False


def test_a_blob_smaller_than_listed_is_noticed_not_waited_for(tmp_path):
    (tmp_path / ("b" * 64)).write_bytes(b"short")
    reader = Arriving(tmp_path, FileRecord("f", "b" * 64, 10), lambda: None, lambda: None)
    with pytest.raises(NotAsListed, match="smaller"):
        reader.read(10)


def test_last_bytes_that_land_just_before_the_rename_are_read_not_called_short(tmp_path):
    data = os.urandom(10_000)
    growing = tmp_path / f"{lfs_blob_name(data)}.0123abcd.incomplete"
    growing.write_bytes(data[:4000])
    reader = Arriving(tmp_path, FileRecord("f", lfs_blob_name(data), len(data)), lambda: None, lambda: None)
    reader._wait()  # opens the growing file
    assert reader.fh is not None and reader.fh.read(20_000) == data[:4000]
    reader.pos = 4000
    reader.hash.update(data[:4000])
    with open(growing, "ab") as fh:  # the rest, then the rename, between our last read and our look
        fh.write(data[4000:])
    os.replace(growing, tmp_path / lfs_blob_name(data))
    reader._wait()
    assert reader.read(len(data)) == data[4000:]


paths = st.lists(st.lists(st.sampled_from(["a", "b", "a.b", "b-c", "A", "z_1"]), min_size=1, max_size=3)
                 .map("/".join), min_size=1, max_size=8, unique=True)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rels=paths)
def test_the_plan_from_the_listing_is_the_plan_of_the_snapshot(rels, tmp_path_factory):
    rels = [r for r in rels if not any(o.startswith(r + "/") for o in rels)]  # a file is no folder
    work = tmp_path_factory.mktemp("plan")
    files = {r: r.encode() * 3 for r in rels}
    FakeHub(files).snapshot_download("org/m", cache_dir=str(work / "hub"), revision=COMMIT)
    listed = PackPlan.from_files([FileRecord(r, lfs_blob_name(d), len(d)) for r, d in files.items()])
    assert listed == PackPlan.from_snapshot(work / "hub" / repo_folder_name("org/m"), COMMIT)


# ---------------------------------------------------------------------------- end to end

def fetch_tiny(sshd, hub, out: Path, *extra: str) -> list[str]:
    return fetch_args(sshd, hub, out, "--repo", "org/tiny", *extra)


def test_over_ssh_the_archive_arrives_while_packed_and_restores(sshd, hub, tmp_path):
    """--transfer stream: what auto picks on a LAN, named so that a busy test machine's round trip
    cannot change the path under test (the choice itself is the parametrized test below)."""
    cache = tmp_path / "cache"
    res = run_cli(*fetch_tiny(sshd, hub, tmp_path / "b", "--cache-dir", cache, "--restore", "--json",
                              "--transfer", "stream"))
    assert res.exit_code == 0, res.stderr
    [archive] = json.loads(res.stdout)["archives"]
    assert archive["streamed"] is True and archive["resumed_from"] == 0
    assert not list((tmp_path / "b").glob("*.part"))
    files = snapshot_download("org/tiny", cache_dir=cache, local_files_only=True)  # judged by the hub
    for rel, data in hub.repos["org/tiny"].files.items():
        assert (Path(files) / rel).read_bytes() == data
    judge = hf_cache_verify(hub, cache, "org/tiny")
    assert judge.returncode == 0, judge.stdout + judge.stderr  # checksums against the Hub's own listing


def test_an_explicit_openssh_transfer_pulls_after_packing(sshd, hub, tmp_path):
    res = run_cli(*fetch_tiny(sshd, hub, tmp_path / "b", "--transfer", "openssh", "--json"))
    assert res.exit_code == 0, res.stderr
    [archive] = json.loads(res.stdout)["archives"]
    assert archive["streamed"] is False and (tmp_path / "b" / Path(archive["archive"]).name).is_file()


@pytest.mark.parametrize(("transfer", "rtt", "live"), [
    ("auto", 0.0001, True), ("auto", 0.004, True), ("auto", 0.02, False), ("auto", float("inf"), False),
    ("stream", 0.2, True), ("openssh", 0.0001, False)])
def test_the_archive_streams_during_the_download_only_on_a_short_round_trip_or_if_asked(transfer, rtt, live):
    assert streams_live(transfer, rtt) is live


def test_a_stream_cut_by_the_client_resumes_from_what_arrived(sshd, hub, tmp_path):
    import signal

    from hub_standin import HubRepo

    hub.add(HubRepo("org/cut", {"a.safetensors": os.urandom(600_000), "b.safetensors": os.urandom(900_000)}))
    out = tmp_path / "b"
    args = [sys.executable, "-m", "edgetam_provision", *fetch_tiny(sshd, hub, out)]
    args[args.index("org/tiny")] = "org/cut"
    hub.rate = 300_000
    try:
        proc = interruptible([*args, "--fresh"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(p.stat().st_size > 100_000 for p in out.glob("*.part")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
    finally:
        hub.rate = None
    [part] = out.glob("*.part")
    kept = part.stat().st_size
    assert kept > 100_000
    res = run_cli(*args[3:])
    assert res.exit_code == 0, res.stderr
    assert f"from byte {kept}" in res.stderr  # the rerun pulled only what the cut stream had not brought
    assert not list(out.glob("*.part"))


def test_a_long_pack_is_not_silence_to_the_clients_deadline():
    """The host says how far packing got every few seconds (a big pack once ran into --timeout),
    and stops saying it with the pack: its thread has ended when the block does."""
    import threading

    from edgetam_provision.remote.agent import _telling

    said: list[dict] = []
    three = threading.Event()

    def emit(_self, event: dict) -> None:
        said.append(event)
        if len(said) >= 3:
            three.set()

    chan = type("Chan", (), {"emit": emit})()
    with _telling(chan, lambda: "packing x: 5 MB so far", every=0.01):
        assert three.wait(10)
    assert said[0] == {"event": "progress", "message": "packing x: 5 MB so far"}
    assert not [t for t in threading.enumerate() if t.name == "provision-telling"]
