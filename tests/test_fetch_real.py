"""`provision fetch` for real downloads: slow hosts, cut links, big repos, pinned revisions, and
diagnoses that say what is true. Against the real sshd and the Hub stand-in."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import agent_dirs, fetch_args
from conftest import interruptible, run_cli
from hub_standin import HubRepo

from edgetam_provision.errors import IntegrityError
from edgetam_provision.hub.cache import read_ref
from edgetam_provision.hub.layout import repo_folder_name


@pytest.fixture(scope="module")
def slow_repo(hub):
    """A small shard (done after ~1 s) and two big ones (~5 s each) through a 300 KB/s link
    (huggingface_hub downloads files in parallel, one connection each)."""
    files = {"shard-0.safetensors": os.urandom(300_000), "shard-1.safetensors": os.urandom(1_500_000),
             "shard-2.safetensors": os.urandom(1_500_000), "config.json": b'{"slow": true}'}
    hub.add(HubRepo("org/slow", files))
    return files


@pytest.fixture
def throttled(hub):
    hub.rate = 300_000
    yield hub
    hub.rate = None


def agent_processes(sshd) -> list[int]:
    """PIDs of the fetch agents `sshd` started (those whose TMPDIR is its sessions'), running on this
    machine (the 'host' of the tests): another test's agents, run at the same time, are not counted."""
    out = []
    mine = f"TMPDIR={sshd.tmp}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"provision-agent" in (proc / "cmdline").read_bytes() and \
                        mine in (proc / "environ").read_bytes().split(b"\0"):
                    out.append(int(proc.name))
            except OSError:
                pass
    return out


def test_a_host_download_longer_than_the_deadline_succeeds_while_progress_flows(sshd, hub, slow_repo,
                                                                                throttled, tmp_path):
    t0 = time.monotonic()
    res = run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/slow", "--timeout", "2"))
    took = time.monotonic() - t0
    assert res.exit_code == 0, res.stderr
    assert took > 4  # the host downloaded for twice the deadline and more ...
    assert "MB downloaded" in res.stderr  # ... and said so while it did


def test_the_host_stops_when_the_client_goes_and_the_rerun_resumes_there(sshd, hub, slow_repo, throttled,
                                                                        tmp_path):
    before_dirs = agent_dirs(sshd)
    served = hub.bytes_sent
    args = [sys.executable, "-m", "edgetam_provision",
            *fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/slow", "--fresh")]
    proc = interruptible(args)
    work = sshd.home / ".cache" / "edgetam-provision" / "work"
    small = next(iter(HubRepo("org/slow", {"s": slow_repo["shard-0.safetensors"]}).files.values()))
    import hashlib

    small_blob = hashlib.sha256(small).hexdigest()
    deadline = time.monotonic() + 20
    while not list(work.rglob(small_blob)) and time.monotonic() < deadline:  # the small shard is done
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    first = hub.bytes_sent - served
    gone_by = time.monotonic() + 5
    while (agent_processes(sshd) or agent_dirs(sshd) - before_dirs) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert agent_processes(sshd) == [] and agent_dirs(sshd) - before_dirs == set()  # nothing left running
    quiet_by = time.monotonic() + 5  # the stand-in notices the closed connections of the first run
    while hub.sending and time.monotonic() < quiet_by:
        time.sleep(0.05)
    assert not hub.sending, "the stand-in still sends to the first run"
    served = hub.bytes_sent
    res = run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/slow"))
    assert res.exit_code == 0, res.stderr
    assert "resuming the earlier download: finished files are kept" in res.stderr  # hub >= 1.18 here
    total = sum(len(v) for v in slow_repo.values())
    assert first > 0 and hub.bytes_sent - served <= total - len(small)  # the finished shard was kept
    assert not (work / "models--org--slow--main").exists()  # removed after the successful pull


def test_a_complete_archive_is_not_pulled_again(sshd, hub, tmp_path):
    out = tmp_path / "b"
    assert run_cli(*fetch_args(sshd, hub, out, "--repo", "org/tiny")).exit_code == 0
    res = run_cli(*fetch_args(sshd, hub, out, "--repo", "org/tiny", "--json"))
    assert res.exit_code == 0
    [archive] = json.loads(res.stdout)["archives"]
    assert archive["already_here"] is True and archive["resumed_from"] == archive["size"]


def test_a_pinned_revision_works_end_to_end(hub, tmp_path, monkeypatch):
    commit = hub.repos["org/tiny"].commit
    cache = tmp_path / "cache"
    res = run_cli("fetch", "--local", "--endpoint", hub.endpoint, "--repo", f"org/tiny@{commit}",
                  "--out", tmp_path / "b", "--cache-dir", cache, "--restore")
    assert res.exit_code == 0, res.stderr
    assert read_ref(cache / repo_folder_name("org/tiny")) is None  # pinned: no refs/main was invented
    status = json.loads(run_cli("status", "--cache-dir", cache, "--backups", tmp_path / "b", "--json").stdout)
    assert [r["commit"] for r in status["revisions"]] == [commit]
    from edgetam_provision.hub.cache import resolve_commit

    assert resolve_commit(cache, "org/tiny", commit[:12]) == commit  # the short form this tool prints
    assert resolve_commit(cache, "org/tiny", None) == commit  # the only snapshot, with no refs/main


def test_include_exclude_and_revision_flags(hub, tmp_path):
    res = run_cli("fetch", "--local", "--endpoint", hub.endpoint, "--repo", "org/tiny", "--revision", "main",
                  "--include", "*.json", "--include", "sub/*", "--exclude", "sub/*", "--out", tmp_path / "b",
                  "--json")
    assert res.exit_code == 0, res.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    [entry] = manifest["archives"].values()
    assert [f["path"] for f in entry["files"]] == ["config.json"]
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "c").exit_code == 0


def test_a_filtered_fetch_is_another_backup_and_never_replaces_the_whole_one(hub, tmp_path):
    """The data loss once found: --include into a folder holding the full backup of that revision."""
    out = tmp_path / "b"
    local = ("fetch", "--local", "--endpoint", hub.endpoint, "--repo", "org/tiny", "--out", out)
    assert run_cli(*local).exit_code == 0
    [whole] = out.glob("*.tar")
    before = whole.read_bytes()
    res = run_cli(*local, "--include", "config.json", "--json")
    assert res.exit_code == 0, res.stderr
    [part] = [Path(a["archive"]) for a in json.loads(res.stdout)["archives"]]
    assert part != whole and ".only-" in part.name and whole.read_bytes() == before
    manifest = json.loads((out / "manifest.json").read_text())["archives"]
    assert {whole.name, part.name} <= set(manifest) and len(manifest[whole.name]["files"]) == 3
    assert run_cli("check", out).exit_code == 0


def test_a_filter_that_matches_nothing_is_its_own_error_and_leaves_nothing(hub, tmp_path):
    res = run_cli("fetch", "--local", "--endpoint", hub.endpoint, "--repo", "org/tiny",
                  "--include", "*.nomatch", "--out", tmp_path / "b")
    assert res.exit_code == 13 and "matches --include" in res.stderr and "--include '*.json'" in res.stderr
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_a_dataset_repo_travels_and_restores(hub, tmp_path):
    hub.add(HubRepo("org/data", {"train.jsonl": b'{"x": 1}\n' * 100, "README.md": b"# data\n"},
                    repo_type="dataset"))
    res = run_cli("fetch", "--local", "--endpoint", hub.endpoint, "--repo", "org/data",
                  "--repo-type", "dataset", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert next((tmp_path / "b").glob("datasets--org--data--*.tar"))
    cache = tmp_path / "cache"
    assert run_cli("restore", tmp_path / "b", "--cache-dir", cache).exit_code == 0
    code = ("import sys; from huggingface_hub import snapshot_download;"
            "p = snapshot_download('org/data', repo_type='dataset', cache_dir=sys.argv[1],"
            " local_files_only=True);"
            "print(open(p + '/README.md').read())")
    out = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0 and "# data" in out.stdout, out.stderr
    status = json.loads(run_cli("status", "--cache-dir", cache, "--backups", tmp_path / "b", "--json").stdout)
    assert status["revisions"][0]["repo_type"] == "dataset"


# ---------------------------------------------------------------------------- true diagnoses

def test_a_missing_remote_python_is_named(sshd, hub, tmp_path):
    res = run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/tiny"),
                  "--remote-python", "/nonexistent/python3")
    assert res.exit_code == 13 and "cannot run '/nonexistent/python3'" in res.stderr
    assert "--remote-python" in res.stderr


def test_a_host_python_that_exits_at_once_is_named_with_its_status_and_last_words(sshd, hub, tmp_path):
    """Its exit status comes after its output ends (here a second after): the diagnosis waits for it."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 'this python is broken' >&2\nexec >&- 2>&-\nsleep 1\nexit 3\n")
    fake.chmod(0o755)
    res = run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/tiny"), "--remote-python", fake)
    assert res.exit_code == 13, res.stderr
    assert "exited with status 3 before starting the agent: this python is broken" in res.stderr


def test_a_local_host_that_stops_reading_fails_at_the_deadline_instead_of_blocking():
    """Writes to it are bounded like reads: a full pipe nobody reads is silence."""
    from edgetam_provision.errors import RemoteConnectError
    from edgetam_provision.fetch.protocol import Stream
    from edgetam_provision.fetch.run import _pipe_writer

    r, w = os.pipe()
    with os.fdopen(r, "rb"), os.fdopen(w, "wb") as pipe:
        stream = Stream(lambda n: b"", _pipe_writer(pipe, 0.2), "this machine")
        outcome: list[BaseException] = []
        sender = threading.Thread(target=lambda: outcome.extend(_raised(stream.send, b"x" * (4 << 20))))
        sender.start()
        sender.join(30)
        assert not sender.is_alive(), "send blocked on a pipe nobody reads"
        assert isinstance(outcome[0], RemoteConnectError)
        assert "went silent past the deadline" in str(outcome[0])


def _raised(call, *args) -> list[BaseException]:
    try:
        call(*args)
    except BaseException as exc:
        return [exc]
    return []


def test_a_host_python_that_dies_while_the_agent_is_still_being_sent_is_named(tmp_path):
    """The race behind a missing Python: its shell exits before our first write lands."""
    from edgetam_provision.errors import RemoteDownloadError
    from edgetam_provision.fetch.client import AgentLink, run_agent
    from edgetam_provision.fetch.protocol import Stream

    def closed(_: bytes) -> None:
        raise OSError("Socket is closed")

    link = AgentLink(Stream(lambda n: b"", closed, "edge-1"),
                     lambda: (127, "sh: 1: /nonexistent/python3: not found\n"), "/nonexistent/python3")
    with pytest.raises(RemoteDownloadError) as err:
        run_agent(link, {}, tmp_path / "b", lambda _: None, False, 60)
    assert "edge-1 cannot run '/nonexistent/python3'" in str(err.value)
    assert not (tmp_path / "b").exists()


def test_a_missing_key_file_is_a_usage_error_before_connecting(tmp_path):
    res = run_cli("fetch", "--host", "127.0.0.1", "-p", "1", "-i", tmp_path / "nokey",
                  "--out", tmp_path / "b")
    assert res.exit_code == 2 and "no such key file" in res.stderr and "connecting" not in res.stderr


def test_a_host_that_is_no_ssh_server_is_one_line_no_traceback(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def garbage() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=garbage, daemon=True).start()
    res = subprocess.run([sys.executable, "-m", "edgetam_provision", "fetch", "--host", f"127.0.0.1:{port}",
                          "--out", str(tmp_path / "b"), "--timeout", "5"], capture_output=True, text=True)
    srv.close()
    assert res.returncode == 10 and "Traceback" not in res.stderr and "not an SSH server" in res.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--host", "h", "--endpoint", "notaurl"], "is not an http(s) URL"),
    (["--host", "h", "--local"], "--host and --local both given"),
    (["--local"], "HF_HUB_OFFLINE is set"),
])
def test_bad_fetch_inputs_are_usage_errors_before_any_connection(tmp_path, monkeypatch, args, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("fetch", *args, "--out", tmp_path / "b")
    assert res.exit_code == 2 and says in res.stderr and "connecting" not in res.stderr


def test_host_port_destinations_reach_the_server(sshd, hub, tmp_path):
    res = run_cli("fetch", "--host", f"{sshd.user}@127.0.0.1:{sshd.port}", "-i", str(sshd.client_key),
                  "--known-hosts", str(sshd.known_hosts), "--remote-python", sys.executable,
                  "--endpoint", hub.endpoint, "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr


# ---------------------------------------------------------------------------- both data paths

def test_both_data_paths_give_the_same_verified_archive(sshd, hub, tmp_path):
    archives = {}
    for transfer in ("openssh", "stream"):
        res = run_cli(*fetch_args(sshd, hub, tmp_path / transfer, "--repo", "org/tiny",
                                  "--transfer", transfer, "--json"))
        assert res.exit_code == 0, res.stderr
        [a] = json.loads(res.stdout)["archives"]
        assert run_cli("check", tmp_path / transfer).exit_code == 0
        archives[transfer] = Path(a["archive"])
    assert archives["openssh"].name == archives["stream"].name
    assert archives["openssh"].read_bytes() == archives["stream"].read_bytes()


def test_several_openssh_streams_pull_one_archive_and_resume_by_range(sshd, hub, tmp_path):
    from edgetam_provision.fetch.openssh import pull_openssh
    from edgetam_provision.fetch.ssh import resolve_target

    data = os.urandom(3_000_001)
    src = tmp_path / "host" / "a.tar"
    src.parent.mkdir()
    src.write_bytes(data)
    import hashlib

    event = SimpleNamespace(archive="a.tar", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    target = resolve_target(f"{sshd.user}@127.0.0.1:{sshd.port}", identity=str(sshd.client_key),
                            known_hosts=str(sshd.known_hosts))
    out = tmp_path / "out"
    out.mkdir()
    assert pull_openssh(target, str(src), event, out, False, 10, streams=3).resumed == 0
    assert (out / "a.tar").read_bytes() == data
    # a cut pull: two of three ranges done -> only the third travels
    (out / "a.tar").unlink()
    step = -(-len(data) // 3)
    part = bytearray(len(data))
    part[:2 * step] = data[:2 * step]
    (out / "a.tar.part").write_bytes(bytes(part))
    ranges = [[0, step], [step, 2 * step], [2 * step, len(data)]]
    (out / "a.tar.part.ranges").write_text(json.dumps({"sha256": event.sha256, "size": len(data),
                                                       "ranges": ranges, "done": ranges[:2]}))
    assert pull_openssh(target, str(src), event, out, False, 10, streams=3).resumed == 2 * step
    assert (out / "a.tar").read_bytes() == data
    assert not (out / "a.tar.part.ranges").exists()
    # bytes that do not hash to the host's sha256 are never kept
    bad = SimpleNamespace(archive="b.tar", size=len(data), sha256="0" * 64)
    with pytest.raises(IntegrityError, match="do not match"):
        pull_openssh(target, str(src), bad, out, False, 10, streams=3)
    assert sorted(p.name for p in out.iterdir()) == ["a.tar"]


def test_a_failed_fetch_leaves_no_empty_work_folder(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    res = run_cli("fetch", "--local", "--endpoint", hub.endpoint, "--repo", "org/no-such-repo",
                  "--out", tmp_path / "b")
    assert res.exit_code == 13
    work = tmp_path / "home" / ".cache" / "edgetam-provision" / "work"
    assert not work.exists() or list(work.iterdir()) == []
