"""`provision fetch`: a real OpenSSH server and a local Hub stand-in that rejects credentials.

The host's account carries the user's trap (bogus HF_TOKEN, a token file, a ~/.netrc entry for the
Hub's host); fetch must succeed anyway, and so must --local with the same trap on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import agent_dirs, fetch_args
from conftest import REPO_ROOT, hf_cache_verify, run_cli
from hub_standin import HubRepo
from sshd import BOGUS_TOKEN, keygen

from edgetam_provision.hub.cache import check_revision, read_ref
from edgetam_provision.hub.layout import repo_folder_name

HELPERS = REPO_ROOT / "tests" / "helpers"
BIG = 24_000_000


@pytest.fixture(scope="module")
def big_repo(hub):
    files = {"config.json": b'{"big": true}', "model.safetensors": os.urandom(BIG)}
    hub.add(HubRepo("org/big", files))
    return files


def fetch(sshd, hub, out: Path, *extra: str):
    return run_cli(*fetch_args(sshd, hub, out, "--timeout", "10", *extra))


def wait_for_no_agent_dirs(sshd, before: set[str], seconds: float = 10) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = sorted(agent_dirs(sshd) - before)
        if not left:
            return []
        time.sleep(0.1)
    return left


def test_the_hosts_stale_credentials_really_break_a_plain_download(sshd, hub):
    """Control: on that host, huggingface_hub as-is sends the bogus token and gets 401."""
    code = (f"import os; os.environ['HF_ENDPOINT']={hub.endpoint!r};"
            "from huggingface_hub import snapshot_download as s; s('org/tiny')")
    res = sshd.openssh(sys.executable, "-c", f'"{code}"')
    assert res.returncode != 0
    assert "401" in res.stderr or "Invalid credentials" in res.stderr


def test_fetch_succeeds_despite_stale_credentials_and_sends_none(sshd, hub, tmp_path):
    before = agent_dirs(sshd)
    seen = len(hub.requests)
    res = fetch(sshd, hub, tmp_path / "b", "--repo", "org/tiny", "--json")
    assert res.exit_code == 0, res.stderr
    [a] = json.loads(res.stdout)["archives"]
    assert a["repo_id"] == "org/tiny" and len(a["commit"]) == 40
    assert all(auth is None for _m, _p, auth in hub.requests[seen:])
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["archives"][Path(a["archive"]).name]["sha256"] == a["sha256"]
    assert wait_for_no_agent_dirs(sshd, before) == []


def test_local_fetch_succeeds_despite_stale_local_credentials(hub, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "hf").mkdir(parents=True)
    (home / "hf" / "token").write_text(BOGUS_TOKEN)
    (home / ".netrc").write_text(f"machine 127.0.0.1 login x password {BOGUS_TOKEN}\n")
    for k, v in {"HF_TOKEN": BOGUS_TOKEN, "HF_HOME": str(home / "hf"), "HOME": str(home),
                 "NETRC": str(home / ".netrc")}.items():
        monkeypatch.setenv(k, v)
    seen = len(hub.requests)
    res = run_cli("fetch", "--local", "--repo", "org/tiny", "--endpoint", hub.endpoint,
                  "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert all(auth is None for _m, _p, auth in hub.requests[seen:])
    assert len(list((tmp_path / "b").glob("*.tar"))) == 1


def test_fetch_then_restore_then_verify_end_to_end(sshd, hub, tmp_path):
    from edgetam_provision.verify.synthetic import build_model_files

    hub.add(HubRepo("yonigozlan/EdgeTAM-hf", build_model_files()))
    cache = tmp_path / "cache"
    overlays = tmp_path / "overlays"
    res = fetch(sshd, hub, tmp_path / "b", "--repo", "yonigozlan/EdgeTAM-hf", "--restore",
                "--no-quality-gate", "--cache-dir", cache, "--verify-out", overlays, "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["verify"]["passed"] is True and data["verify"]["parameters"] == 9_120_641
    assert len(list(overlays.glob("*.png"))) == 4  # --verify-out honoured
    assert {Path(c["overlay"]).parent for c in data["verify"]["cases"]} == {overlays}
    repo = "yonigozlan/EdgeTAM-hf"
    assert check_revision(cache, repo, read_ref(cache / repo_folder_name(repo))).ok
    judge = hf_cache_verify(hub, cache, repo)
    assert judge.returncode == 0, judge.stdout + judge.stderr


def test_unknown_host_key_is_refused(sshd, hub, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = [a if a != str(sshd.known_hosts) else str(empty) for a in sshd.ssh_args()]
    res = run_cli("fetch", *args, "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 12
    assert "unknown host key" in res.stderr and "--accept-new-host-key" in res.stderr
    assert empty.read_text() == ""


def test_accept_new_host_key_appends_exactly_one_line(sshd, hub, tmp_path):
    kh = tmp_path / "known_hosts"
    other = keygen(tmp_path / "other").split()
    kh.write_text(f"other.example {other[0]} {other[1]}\n# a comment\nbroken line\n")
    before = kh.read_text()
    args = [a if a != str(sshd.known_hosts) else str(kh) for a in sshd.ssh_args()]
    common = [*args, "--remote-python", sys.executable, "--endpoint", hub.endpoint, "--repo", "org/tiny"]
    res = run_cli("fetch", *common, "--out", tmp_path / "b", "--accept-new-host-key")
    assert res.exit_code == 0, res.stderr
    after = kh.read_text()
    assert after.startswith(before) and after.count("\n") == before.count("\n") + 1
    assert after.splitlines()[-1].split()[:2] == [f"[127.0.0.1]:{sshd.port}", "ssh-ed25519"]
    assert run_cli("fetch", *common, "--out", tmp_path / "c").exit_code == 0
    assert kh.read_text() == after


def test_changed_host_key_is_refused_even_with_accept_new(sshd, hub, tmp_path):
    other = keygen(tmp_path / "impostor").split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    before = kh.read_text()
    args = [a if a != str(sshd.known_hosts) else str(kh) for a in sshd.ssh_args()]
    res = run_cli("fetch", *args, "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--accept-new-host-key")
    assert res.exit_code == 12 and "CHANGED" in res.stderr
    assert kh.read_text() == before


def test_no_key_at_all_is_an_auth_error_that_says_so(sshd, hub, tmp_path, monkeypatch):
    """The host answered; we had nothing to offer it (no ~/.ssh key, no agent, no --identity)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    args = ["--host", "127.0.0.1", "--port", str(sshd.port), "--user", sshd.user,
            "--known-hosts", str(sshd.known_hosts)]
    res = run_cli("fetch", *args, "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 11 and "no SSH key to offer" in res.stderr and "ssh-keygen" in res.stderr


def test_wrong_key_is_an_auth_error(sshd, hub, tmp_path):
    keygen(tmp_path / "stranger")
    args = [a if a != str(sshd.client_key) else str(tmp_path / "stranger") for a in sshd.ssh_args()]
    res = run_cli("fetch", *args, "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 11 and "rejected our keys" in res.stderr


def test_a_silent_peer_fails_within_its_deadline(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    t0 = time.monotonic()
    res = run_cli("fetch", "--host", "127.0.0.1", "--port", str(listener.getsockname()[1]),
                  "--known-hosts", tmp_path / "kh", "--timeout", "0.5", "--out", tmp_path / "b")
    assert res.exit_code == 10
    assert time.monotonic() - t0 < 10
    listener.close()


def test_a_host_that_goes_silent_after_auth_fails_within_its_deadline(sshd, hub, tmp_path):
    sleepy = tmp_path / "sleepy-python"
    sleepy.write_text("#!/bin/sh\nexec sleep 600\n")
    sleepy.chmod(0o755)
    t0 = time.monotonic()
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", str(sleepy), "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--timeout", "2")
    assert res.exit_code == 10 and "went silent" in res.stderr
    assert time.monotonic() - t0 < 15


def test_an_interrupted_pull_resumes_and_verifies(sshd, hub, big_repo, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host cut\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                   f"  ProxyCommand {sys.executable} {HELPERS / 'cut_proxy.py'} %h %p 9000000\n")
    before = agent_dirs(sshd)
    common = ["--identity", sshd.client_key, "--known-hosts", sshd.known_hosts, "--remote-python",
              sys.executable, "--endpoint", hub.endpoint, "--repo", "org/big", "--out", tmp_path / "b",
              "--timeout", "10", "--ssh-config", cfg, "--transfer", "stream"]
    # stream named: auto's choice on a LAN, which a busy machine's round trip (over 5 ms) would turn
    # into four ssh streams after the pack, each under the proxy's cut (CI saw 24 MB arrive whole)
    res = run_cli("fetch", "--host", "cut", *common)
    assert res.exit_code == 10, res.stderr
    [part] = (tmp_path / "b").glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < BIG
    assert wait_for_no_agent_dirs(sshd, before) == []
    cfg.write_text(f"Host cut\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n")
    res = run_cli("fetch", "--host", "cut", *common, "--json")
    assert res.exit_code == 0, res.stderr
    [a] = json.loads(res.stdout)["archives"]
    assert a["resumed_from"] == kept, res.stderr  # the host re-packed the same bytes: the part was kept
    assert not list((tmp_path / "b").glob("*.part"))
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "cache").exit_code == 0


def test_corrupted_bytes_are_detected_and_nothing_is_kept(sshd, hub, tmp_path):
    wrapper = tmp_path / "corrupting-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {HELPERS / 'corrupting_python.py'} \"$@\"\n")
    wrapper.chmod(0o755)
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", str(wrapper), "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--transfer", "stream")
    assert res.exit_code == 1 and "do not match" in res.stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize("args", [
    ["--repo", "org/tiny;touch {marker}"],
    ["--repo", "org/tiny@$(touch {marker})"],
    ["--repo", "org/tiny@`touch {marker}`"],
    ["--remote-python", "python3;touch {marker}"],
])
def test_shell_metacharacters_are_rejected_and_inert(sshd, hub, tmp_path, args):
    marker = tmp_path / "marker"
    args = [a.format(marker=marker) for a in args]
    base = ["--remote-python", sys.executable] if "--remote-python" not in args else []
    res = run_cli("fetch", *sshd.ssh_args(), *base, "--endpoint", hub.endpoint, *args,
                  "--out", tmp_path / "b")
    assert res.exit_code == 2 and "hint:" in res.stderr
    assert not marker.exists()


def test_the_agent_itself_refuses_bad_repo_ids(tmp_path):
    from edgetam_provision.remote.channel import AgentError
    from edgetam_provision.remote.download import resolve

    with pytest.raises(AgentError, match="invalid repo id"):
        resolve(None, {"repo_id": "org/x;touch y"}, False)
    with pytest.raises(AgentError, match="invalid repo id"):
        resolve(None, {"repo_id": "org/x", "repo_type": "space;id"}, False)
    with pytest.raises(AgentError, match="invalid revision"):
        resolve(None, {"repo_id": "org/x", "revision": "$(id)"}, False)


def test_a_token_for_gated_repos_never_leaks(sshd, hub, tmp_path, monkeypatch):
    canary = "hf_CANARYcanaryCANARY1234567890abcdef"
    monkeypatch.setenv("MY_HF_TOKEN", canary)
    found: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        me = str(os.getpid())
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit() or proc.name == me:
                    continue
                for what in ("cmdline", "environ"):
                    try:
                        if canary.encode() in (proc / what).read_bytes():
                            found.append(f"{proc.name}/{what}")
                    except OSError:
                        pass
            time.sleep(0.01)

    hub.reject_credentials = False
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        seen = len(hub.requests)
        res = fetch(sshd, hub, tmp_path / "b", "--repo", "org/tiny", "--token-env", "MY_HF_TOKEN")
    finally:
        stop.set()
        watcher.join()
        hub.reject_credentials = True
    assert res.exit_code == 0, res.stderr
    assert any(auth == f"Bearer {canary}" for _m, _p, auth in hub.requests[seen:])
    assert canary not in res.stdout + res.stderr
    assert canary not in sshd.log.read_text()
    assert found == []
    assert all(canary not in p.read_text(errors="replace") for p in (tmp_path / "b").glob("*.json"))


def test_missing_huggingface_hub_on_the_host_is_explained(sshd, hub, tmp_path):
    bare = shutil.which("python3", path="/usr/bin")
    if not bare or os.system(f"{bare} -c 'import huggingface_hub' 2>/dev/null") == 0:
        pytest.skip("no bare system python3 here")
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", bare, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 13
    assert "huggingface_hub is not installed" in res.stderr and "--bootstrap" in res.stderr


def test_unknown_repo_is_a_remote_download_error(sshd, hub, tmp_path):
    res = fetch(sshd, hub, tmp_path / "b", "--repo", "org/nope")
    assert res.exit_code == 13 and "org/nope" in res.stderr and "repo id" in res.stderr


def fetch_modelbox(sshd, hub, cfg: Path, out: Path, logins: int):
    """`fetch --host modelbox` through the ssh config `cfg`; returns (result, logins it made), once
    sshd's log shows the `logins` expected (or after 10 s: then fewer, and the test says so)."""
    before = sshd.log.read_text().count("Accepted publickey")
    res = run_cli("fetch", "--host", "modelbox", "--ssh-config", cfg, "--known-hosts", sshd.known_hosts,
                  "--remote-python", sys.executable, "--endpoint", hub.endpoint, "--repo", "org/tiny",
                  "--out", out)
    deadline = time.monotonic() + 10
    while (made := sshd.log.read_text().count("Accepted publickey") - before) < logins:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return res, made


def test_ssh_config_alias_and_proxyjump_are_honoured(sshd, hub, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host jump\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                   f"  IdentityFile {sshd.client_key}\n"
                   f"Host modelbox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                   f"  IdentityFile {sshd.client_key}\n  ProxyJump jump\n")
    res, logins = fetch_modelbox(sshd, hub, cfg, tmp_path / "b", 2)
    assert res.exit_code == 0, res.stderr
    assert len(list((tmp_path / "b").glob("*.tar"))) == 1
    assert logins == 2  # the jump, then the target


def test_host_or_local_is_required(tmp_path):
    res = run_cli("fetch", "--out", tmp_path / "b")
    assert res.exit_code == 2 and "--host HOST or --local" in res.stderr


def test_the_agents_channel_resumes_from_a_kept_part(sshd, hub, big_repo, tmp_path):
    out = tmp_path / "b"
    first = fetch(sshd, hub, out, "--repo", "org/big", "--json")
    assert first.exit_code == 0, first.stderr
    archive = Path(json.loads(first.stdout)["archives"][0]["archive"])
    part = archive.with_name(archive.name + ".part")
    part.write_bytes(archive.read_bytes()[:5_000_000])  # as if a pull had been cut there
    archive.unlink()
    res = fetch(sshd, hub, out, "--repo", "org/big", "--transfer", "stream", "--json")
    assert res.exit_code == 0, res.stderr
    [a] = json.loads(res.stdout)["archives"]
    assert a["resumed_from"] == 5_000_000 and not part.exists()
    assert run_cli("restore", out, "--cache-dir", tmp_path / "cache").exit_code == 0


def test_a_part_the_channel_kept_resumes_there_where_auto_would_pick_openssh(sshd, hub, big_repo, tmp_path,
                                                                             monkeypatch):
    """A slow round trip makes auto pull big archives with ssh ranges; a channel's part (no ledger)
    still resumes on the channel, where the agent confirms the prefix, instead of being dropped."""
    import edgetam_provision.fetch.openssh as openssh

    out = tmp_path / "b"
    first = fetch(sshd, hub, out, "--repo", "org/big", "--transfer", "stream", "--json")
    archive = Path(json.loads(first.stdout)["archives"][0]["archive"])
    part = archive.with_name(archive.name + ".part")
    part.write_bytes(archive.read_bytes()[:7_000_000])
    archive.unlink()
    monkeypatch.setattr(openssh, "worth_openssh", lambda size, rtt: True)
    res = fetch(sshd, hub, out, "--repo", "org/big", "--json")
    assert res.exit_code == 0, res.stderr
    [a] = json.loads(res.stdout)["archives"]
    assert a["resumed_from"] == 7_000_000 and not part.exists()


def test_the_agents_channel_discards_a_part_that_is_not_a_prefix(sshd, hub, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    first = fetch(sshd, hub, tmp_path / "ref", "--repo", "org/tiny", "--json")
    name = Path(json.loads(first.stdout)["archives"][0]["archive"]).name
    (out / f"{name}.part").write_bytes(b"garbage" * 100)
    res = fetch(sshd, hub, out, "--repo", "org/tiny", "--transfer", "stream", "--json")
    assert res.exit_code == 0, res.stderr
    assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_bootstrap_installs_huggingface_hub_into_the_temporary_folder(sshd, hub, tmp_path):
    bare = shutil.which("python3", path="/usr/bin")
    if not bare or os.system(f"{bare} -c 'import huggingface_hub' 2>/dev/null") == 0 or \
            os.system(f"{bare} -m pip --version >/dev/null 2>&1") != 0:
        pytest.skip("needs a system python3 with pip and without huggingface_hub")
    before = agent_dirs(sshd)
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", bare, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--bootstrap", "--timeout", "300")
    assert res.exit_code == 0, res.stderr
    assert os.system(f"{bare} -c 'import huggingface_hub' 2>/dev/null") != 0  # nothing left installed
    assert wait_for_no_agent_dirs(sshd, before) == []


@pytest.fixture(scope="module")
def old_hub_python(hub036_site):
    """A Python whose huggingface_hub is 0.36 (requests-based, reads ~/.netrc): the common host."""
    site = hub036_site
    wrapper = site / "python-hub036"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def test_with_a_requests_based_hub_the_hosts_netrc_really_breaks_a_plain_download(sshd, hub, old_hub_python):
    """Control: huggingface_hub 0.36 sends the host's ~/.netrc entry even with token=False."""
    code = (f"import os; os.environ['HF_ENDPOINT']={hub.endpoint!r};"
            "import huggingface_hub as h; assert h.__version__.startswith('0.36');"
            "h.snapshot_download('org/tiny', token=False)")
    res = sshd.openssh(str(old_hub_python), "-c", f'"{code}"')
    assert res.returncode != 0 and "401" in res.stderr


def test_fetch_works_with_a_requests_based_hub_on_the_host(sshd, hub, old_hub_python, tmp_path):
    seen = len(hub.requests)
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", str(old_hub_python),
                  "--endpoint", hub.endpoint, "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert "huggingface_hub 0.36.2" in res.stderr
    assert all(auth is None for _m, _p, auth in hub.requests[seen:])
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "cache").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("host_hub", ["0.36", "2.x"])
def test_a_host_download_cut_at_80_percent_continues_as_the_hosts_hub_can(sshd, hub, tmp_path, host_hub,
                                                                          request):
    """The link drops while the host has 80% of a file (the client is killed: the agent goes with
    it). As docs/fetch.md says, a rerun with huggingface_hub 0.36 on the host continues that file
    from its last whole 10 MiB piece (a Range request); from 1.18 the file starts over. Measured:
    bytes the Hub sent until the rerun succeeded, over the file's size."""
    size = 40_000_000
    repo = f"org/cut-{host_hub.replace('.', '')}"
    hub.add(HubRepo(repo, {"config.json": b"{}", "model.safetensors": os.urandom(size)}))
    python = str(request.getfixturevalue("old_hub_python")) if host_hub == "0.36" else sys.executable
    args = [*sshd.ssh_args(), "--remote-python", python, "--endpoint", hub.endpoint, "--repo", repo,
            "--out", tmp_path / "b", "--timeout", "10"]
    before, sent = agent_dirs(sshd), hub.bytes_sent
    hub.rate = 20e6  # two seconds for the file: time to cut it at 80%
    try:
        client = subprocess.Popen([sys.executable, "-m", "edgetam_provision", "fetch", *map(str, args)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while hub.bytes_sent - sent < 0.8 * size and time.monotonic() < deadline and client.poll() is None:
            time.sleep(0.005)
        client.kill()
        client.wait()
    finally:
        hub.rate = None
    assert wait_for_no_agent_dirs(sshd, before) == []
    cut = (hub.bytes_sent - sent) / size
    assert 0.75 < cut < 0.95, cut
    res = run_cli("fetch", *args)
    assert res.exit_code == 0, res.stderr
    rerun = (hub.bytes_sent - sent) / size - cut
    if host_hub == "0.36":  # the rest, from the last whole 10 MiB piece (two or three were kept)
        assert rerun < 0.6, rerun
        assert "cut files included" in res.stderr
    else:
        assert rerun > 0.95, rerun  # the whole file again
        assert "starts a file that was cut over" in res.stderr
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "cache").exit_code == 0


def test_progress_bar_shows_bytes_rate_and_eta_only_when_enabled(capsys):
    from edgetam_provision.fetch.pull import ProgressBar

    bar = ProgressBar("model.tar", 4_000_000, 0, enabled=True)
    bar.update(2_000_000)
    bar.update(2_000_000)
    err = capsys.readouterr().err
    assert "model.tar" in err and "100%" in err and "4.00M/4.00M" in err and "B/s" in err
    assert err.endswith("\n")  # the bar's line is ended: what follows starts on its own line
    quiet = ProgressBar("model.tar", 10, 0, enabled=False)
    quiet.update(10)
    assert capsys.readouterr().err == ""


def test_the_eta_stays_near_the_truth_when_bytes_arrive_in_10_mib_bursts(monkeypatch):
    """huggingface_hub writes in 10 MiB pieces: the bar's rate is an average over the run, so its
    ETA never shoots up between bursts (hand-made bars showed 3,640,054 s). tqdm's clock is ours."""
    import tqdm.std

    from edgetam_provision.fetch.pull import ProgressBar

    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    piece, pieces, every = 10 * 2**20, 8, 0.06
    bar = ProgressBar("model.tar", piece * pieces, 0, enabled=True)
    worst = 0.0
    for i in range(1, pieces):
        now[0] += every
        bar.update(piece)
        now[0] += every / 2  # between bursts
        bar.bar.refresh()
        d = bar.bar.format_dict
        rate = d["rate"] or d["n"] / d["elapsed"]  # as tqdm shows it
        eta, truth = (d["total"] - d["n"]) / rate, (pieces - i) * d["elapsed"] / i  # at the pace so far
        worst = max(worst, eta / truth)
    bar.close()
    assert worst < 3, worst


def test_a_proxyjump_chain_with_user_host_port_hops_is_followed(sshd, hub, tmp_path):
    cfg = tmp_path / "ssh_config"
    hop = f"{sshd.user}@127.0.0.1:{sshd.port}"
    cfg.write_text(f"Host *\n  IdentityFile {sshd.client_key}\n"
                   f"Host modelbox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                   f"  ProxyJump {hop},{hop}\n")
    res, logins = fetch_modelbox(sshd, hub, cfg, tmp_path / "b", 3)
    assert res.exit_code == 0, res.stderr
    assert logins == 3  # two hops, then the target


def test_proxycommand_tokens_see_the_port_and_user_given_on_the_command_line(sshd, tmp_path):
    from edgetam_provision.fetch.ssh import resolve_target

    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host box\n  HostName 10.9.8.7\n  Port 2200\n  User cfguser\n  ProxyCommand nc %h %p %r\n")
    plain = resolve_target("box", ssh_config=str(cfg))
    assert plain.proxy_command == "nc 10.9.8.7 2200 cfguser"
    over = resolve_target("box", port=4242, user="me", ssh_config=str(cfg))
    assert (over.port, over.user, over.proxy_command) == (4242, "me", "nc 10.9.8.7 4242 me")
    dest = resolve_target("ssh://ann@box:2222", ssh_config=str(cfg))
    assert (dest.port, dest.user, dest.hostname) == (2222, "ann", "10.9.8.7")
    assert resolve_target("127.0.0.1:2022", ssh_config=str(cfg)).port == 2022


def test_a_revoked_host_key_is_refused_even_when_also_listed(sshd, hub, tmp_path):
    kh = tmp_path / "known_hosts"
    key_type, key = sshd.host_pub.split()[:2]
    kh.write_text(sshd.known_hosts.read_text() + f"@revoked * {key_type} {key}\n")
    args = [a if a != str(sshd.known_hosts) else str(kh) for a in sshd.ssh_args()]
    res = run_cli("fetch", *args, "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--accept-new-host-key")
    assert res.exit_code == 12 and "REVOKED" in res.stderr


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host_hub", ["0.36", "2.x"])
@pytest.mark.parametrize("endpoint", ["closed-port", "http://nonexistent.invalid"])
def test_an_endpoint_the_agent_cannot_reach_is_named_with_what_to_do(tmp_path, host_hub, endpoint, request):
    """Whether the name does not resolve or the port is closed, with httpx (2.x) or requests (0.36):
    one line naming the endpoint and why, not huggingface_hub's exception text."""
    python = str(request.getfixturevalue("old_hub_python")) if host_hub == "0.36" else sys.executable
    url = f"http://127.0.0.1:{closed_port()}" if endpoint == "closed-port" else endpoint
    res = run_cli("fetch", "--local", "--remote-python", python, "--repo", "org/tiny", "--endpoint", url,
                  "--out", tmp_path / "b")
    assert res.exit_code == 13
    error, hint = res.stderr.splitlines()[-2:]
    assert error.startswith(f"error: download on this machine failed: org/tiny@main: cannot resolve or "
                            f"reach {url} ([Errno ")
    assert "MaxRetryError" not in error and "ConnectError" not in error
    assert hint == ("hint: check the network, HF_ENDPOINT, or pass --endpoint URL with an endpoint this "
                    "machine can reach")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_a_host_that_cannot_reach_the_endpoint_is_told_how_to_get_one(sshd, tmp_path):
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", sys.executable, "--repo", "org/tiny",
                  "--endpoint", "http://nonexistent.invalid", "--out", tmp_path / "b")
    assert res.exit_code == 13
    assert (f"error: download on {sshd.ssh_args()[1]} failed: org/tiny@main: cannot resolve or reach "
            "http://nonexistent.invalid ([Errno ") in res.stderr
    assert ("hint: this machine's HF_ENDPOINT is not passed to the host (it uses its own, or "
            "huggingface.co): pass --endpoint URL with an endpoint the host can resolve and reach"
            ) in res.stderr


def test_fetch_names_the_absolute_folder_and_the_next_command(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["fetch", "--local", "--repo", "org/tiny", "--endpoint", hub.endpoint]
    res = run_cli(*common, "--out", "backups here")
    assert res.exit_code == 0, res.stderr
    folder = (tmp_path / "backups here").resolve()
    assert res.stdout.splitlines()[-1] == f"archives in {folder}; next: provision restore '{folder}'"
    res = run_cli(*common, "--out", "b", "--restore", "--cache-dir", "cache")
    assert res.exit_code == 0, res.stderr
    folder = (tmp_path / "b").resolve()
    assert res.stdout.splitlines()[-1] == (f"archives kept in {folder} (for another machine: provision "
                                           f"restore {folder})")
    assert f"entries into {(tmp_path / 'cache').resolve()}" in res.stdout


def test_accepting_a_new_host_key_says_its_type_fingerprint_and_where_it_went(sshd, hub, tmp_path):
    """As OpenSSH says it: the fingerprint is the one ssh-keygen -l gives for the host's key."""
    kh = tmp_path / "known_hosts"
    args = [a if a != str(sshd.known_hosts) else str(kh) for a in sshd.ssh_args()]
    res = run_cli("fetch", *args, "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--accept-new-host-key")
    assert res.exit_code == 0, res.stderr
    keygen_l = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(sshd.root / "host_key.pub")],
                              capture_output=True, text=True, check=True).stdout.split()
    fingerprint = keygen_l[1]
    assert fingerprint.startswith("SHA256:") and keygen_l[-1] == "(ED25519)"
    assert (f"added the host key of [127.0.0.1]:{sshd.port} (ssh-ed25519 {fingerprint}) to {kh}\n"
            in res.stderr)
    again = run_cli("fetch", *args, "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                    "--repo", "org/tiny", "--out", tmp_path / "c", "--accept-new-host-key")
    assert again.exit_code == 0 and "added the host key" not in again.stderr


def test_a_resumed_host_download_starts_its_bar_at_what_the_host_had():
    """The first report of a resumed download carries what an earlier run left (472 MB): that is
    where the bar starts, not bytes of this run, so no 6.53TB/s."""
    from edgetam_provision.console import no_progress
    from edgetam_provision.fetch.client import HostProgress
    from edgetam_provision.fetch.events import Download
    from edgetam_provision.fetch.pace import Declared, Pace

    host = HostProgress("this machine", no_progress, bar=True,
                        declared=Declared(Pace("this machine", 60), {"org/big"}))
    host.update(Download(repo_id="org/big", bytes=472_000_000, total=500_000_000))
    host.update(Download(repo_id="org/big", bytes=473_000_000, total=500_000_000))
    d = host.bars["org/big"].bar.format_dict
    assert (d["initial"], d["n"]) == (472_000_000, 473_000_000)  # tqdm's rate: (n - initial) / elapsed
    host.finish("org/big")


def test_the_ssh_cipher_is_said_only_under_debug(sshd, hub, tmp_path):
    res = fetch(sshd, hub, tmp_path / "b", "--repo", "org/tiny")
    assert res.exit_code == 0, res.stderr
    assert "cipher" not in res.stderr
    res = fetch(sshd, hub, tmp_path / "c", "--repo", "org/tiny", "--debug")
    assert res.exit_code == 0, res.stderr
    assert "\ncipher aes128-gcm@openssh.com\n" in res.stderr


def test_a_local_fetch_that_resumes_does_not_speak_of_a_host(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "edgetam-provision" / "work" / "models--org--tiny--main" / "hub").mkdir(parents=True)
    res = run_cli("fetch", "--local", "--repo", "org/tiny", "--endpoint", hub.endpoint,
                  "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert "this machine: downloading org/tiny@main (resuming the earlier download" in res.stderr
    assert "host" not in res.stderr


def test_status_says_a_revision_from_a_filtered_fetch_is_partial(hub, tmp_path):
    """`--include "*.json"` brings one file of org/tiny's three: status must not call that `ok`
    alone (verify cannot load such a model), and a whole fetch of the same commit is not partial."""
    common = ["fetch", "--local", "--repo", "org/tiny", "--endpoint", hub.endpoint, "--out", tmp_path / "b",
              "--restore", "--cache-dir", tmp_path / "cache"]
    assert run_cli(*common, "--include", "*.json").exit_code == 0
    res = run_cli("status", "--backups", tmp_path / "b", "--cache-dir", tmp_path / "cache")
    line = next(x for x in res.stdout.splitlines() if x.startswith("  org/tiny@"))
    assert " 1 file " in line and line.endswith(
        "  ok, partial: the files of a filtered fetch (--include/--exclude), not the whole revision")
    data = json.loads(run_cli("status", "--backups", tmp_path / "b", "--cache-dir", tmp_path / "cache",
                              "--json").stdout)
    assert [r["partial"] for r in data["revisions"]] == [True]
    assert run_cli(*common).exit_code == 0
    res = run_cli("status", "--backups", tmp_path / "b", "--cache-dir", tmp_path / "cache")
    assert "partial" not in res.stdout and " 3 files " in res.stdout


@pytest.mark.parametrize(("command", "timeout", "said"), [
    ("while :; do printf x; sleep 0.05; done", 5, "less than the 1.0 MB"),  # a byte every second, to the pace
    ("sleep 30", 0.5, "went silent past the deadline"),
])
def test_openssh_ranges_run_under_the_fetchs_deadlines(tmp_path, command, timeout, said):
    """A host whose `tail | head` drips or hangs: each ssh range ends within the deadlines (the
    first range's error stops the others), where it used to wait as long as the host liked."""
    from edgetam_provision.errors import RemoteConnectError
    from edgetam_provision.fetch.openssh import Deadlines, _pull_ranges
    from edgetam_provision.fetch.pace import Pace

    t0 = time.monotonic()
    fast = Pace("host", 15, clock=lambda: t0 + (time.monotonic() - t0) * 20)  # 15 s pass in 0.75 s
    event = SimpleNamespace(archive="a.tar", size=10 << 20, sha256="0" * 64)  # what pulls need (`Announced`)
    with pytest.raises(RemoteConnectError, match=said):
        _pull_ranges(["sh", "-c", command, "sh"], "/x", event, tmp_path, False, 2, "host",
                     Deadlines("host", timeout, fast))
