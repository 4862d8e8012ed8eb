"""`provision push`: real Ansible against three real sshd "hosts" on loopback, each with its own
HOME and so its own Hugging Face cache (sshd's SetEnv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MISSING_COMPONENT, MISSING_FLEET, REPO_ROOT, run_cli, tree_state

from edgetam_provision.backup import backup
from edgetam_provision.hub.cache import RepoSpec


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    from sshd import SSHD, SSHServer

    if not Path(SSHD).exists():
        pytest.skip(f"{MISSING_COMPONENT} (.ci/run)")
    pytest.importorskip("ansible", reason=MISSING_FLEET)
    servers = [SSHServer(tmp_path_factory.mktemp(f"host{i}")) for i in range(3)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    from edgetam_provision.fleet.push import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


def inventory(path: Path, servers, down_port: int | None = None, python: str | None = sys.executable) -> Path:
    known = path.parent / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for s in servers))
    lines = ["[fleet]"]
    lines += [f"host{i} ansible_host=127.0.0.1 ansible_port={s.port} "
              f"ansible_ssh_private_key_file={s.client_key}" for i, s in enumerate(servers)]
    if down_port:
        lines.append(f"down ansible_host=127.0.0.1 ansible_port={down_port} "
                     f"ansible_ssh_private_key_file={servers[0].client_key}")
    lines += ["", "[fleet:vars]", f"ansible_user={servers[0].user}",
              *([f"ansible_python_interpreter={python}"] if python else []),
              f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
              "-o ConnectTimeout=5'"]
    path.write_text("\n".join(lines) + "\n")
    return path


def push(inv: Path, backups: Path, wheel: Path, *extra: str):
    res = run_cli("push", "--inventory", inv, "--backups", backups, "--wheel", wheel, "--synthetic",
                  "--device", "cpu", "--json", *extra)
    return res, json.loads(res.stdout)


@pytest.fixture(scope="module")
def backups(tmp_path_factory, hub):
    from conftest import download

    cache = tmp_path_factory.mktemp("controller-cache")
    download(hub, cache, "org/tiny")
    out = tmp_path_factory.mktemp("backups")
    backup(cache, [RepoSpec("org/tiny")], out)
    return out


def host_cache(server) -> Path:
    return server.home / ".cache" / "huggingface" / "hub"


@pytest.mark.slow
def test_push_restores_and_verifies_on_every_host_then_copies_nothing_the_second_time(hosts, wheel, backups,
                                                                                    tmp_path):
    inv = inventory(tmp_path / "inv.ini", hosts)
    res, data = push(inv, backups, wheel)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert [r["host"] for r in data["hosts"]] == ["host0", "host1", "host2"]
    for row in data["hosts"]:
        assert row["passed"] and row["copied"] and row["restore"] == ["restored"] and row["verify"] is True
        assert row["repos"][0].startswith("org/tiny@") and row["four_cases_ms"] > 0
    for server in hosts:  # judged by huggingface_hub on each host's own cache
        from test_restore_verdicts import hub_loads_offline

        assert hub_loads_offline(host_cache(server), "org/tiny")
    res, again = push(inv, backups, wheel)
    assert res.exit_code == 0
    assert all(not r["copied"] and r["restore"] == ["already present"] for r in again["hosts"])


@pytest.mark.slow
def test_a_damaged_blob_on_one_host_is_repaired(hosts, wheel, backups, tmp_path):
    inv = inventory(tmp_path / "inv.ini", hosts)
    assert push(inv, backups, wheel)[0].exit_code == 0
    blobs = host_cache(hosts[1]) / "models--org--tiny" / "blobs"
    blob = next(p for p in blobs.iterdir() if len(p.name) == 64)
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    res, data = push(inv, backups, wheel)
    assert res.exit_code == 0, res.stdout
    assert {r["host"]: r["restore"] for r in data["hosts"]}["host1"] == ["repaired"]
    assert blob.read_bytes() == good


@pytest.mark.slow
def test_one_host_down_never_stops_the_others(hosts, wheel, backups, tmp_path):
    from sshd import free_port

    inv = inventory(tmp_path / "inv.ini", hosts, down_port=free_port())
    res, data = push(inv, backups, wheel)
    assert res.exit_code == 14
    rows = {r["host"]: r for r in data["hosts"]}
    assert not rows["down"]["passed"] and "nreachable" in rows["down"]["error"] + json.dumps(rows["down"])
    assert all(rows[f"host{i}"]["passed"] for i in range(3))
    text = run_cli("push", "--inventory", inv, "--backups", backups, "--wheel", wheel, "--synthetic",
                   "--device", "cpu")
    assert "down" in text.stdout and "3 of 4 hosts passed" in text.stdout


@pytest.mark.slow
def test_check_mode_writes_nothing_anywhere(hosts, wheel, backups, hub, tmp_path):
    from conftest import download

    cache = tmp_path / "c"
    download(hub, cache, "org/other")
    more = tmp_path / "more"
    shutil.copytree(backups, more)
    backup(cache, [RepoSpec("org/other")], more)
    def homes() -> list[dict]:  # Ansible's own remote temp folder aside
        return [{k: v for k, v in tree_state(s.home).items() if not k.startswith(".ansible")} for s in hosts]

    before = homes()
    inv = inventory(tmp_path / "inv.ini", hosts)
    res, data = push(inv, more, wheel, "--check")
    assert res.exit_code == 0, res.stdout
    assert all(r["copied"] for r in data["hosts"])  # would copy the new backup ...
    assert homes() == before  # ... and wrote nothing


def test_without_ansible_push_says_what_to_install(monkeypatch, tmp_path):
    from edgetam_provision.fleet import push as fleet

    monkeypatch.setattr(fleet.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    res = run_cli("push", "somehost", "--backups", tmp_path)
    assert res.exit_code == 2 and "edgetam-provision[fleet]" in res.stderr


def test_a_host_python_without_the_libraries_fails_naming_them(hosts, wheel, backups, tmp_path):
    bare = Path("/usr/bin/python3")
    if not bare.exists() or os.system(f"{bare} -c 'import torch' 2>/dev/null") == 0:
        pytest.skip("needs a system python3 without torch")
    inv = inventory(tmp_path / "inv.ini", hosts[:1])
    res, data = push(inv, backups, wheel, "--remote-python", str(bare))
    assert res.exit_code == 14
    [row] = data["hosts"]
    assert not row["passed"] and "missing on the host: torch" in row["error"]


def test_the_wheel_is_built_without_pip_by_uv(tmp_path, monkeypatch):
    """A uv venv has no pip: push builds its wheel with uv's build frontend instead."""
    from edgetam_provision.fleet import push as fleet

    real_run = fleet.subprocess.run

    def no_pip(argv, *a, **kw):
        if argv[1:3] == ["-m", "pip"]:
            return subprocess.CompletedProcess(argv, 1, b"", b"No module named pip")
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(fleet.subprocess, "run", no_pip)
    if fleet.find_uv():  # a real uv here: it builds the real wheel
        wheel = fleet.build_wheel(tmp_path)
        assert wheel.name.startswith("edgetam_provision-") and wheel.suffix == ".whl"
    bin_dir = tmp_path / "bin"  # whether or not this machine has uv: one on PATH, then none
    bin_dir.mkdir()
    (bin_dir / "uv").write_text("#!/bin/sh\n")
    (bin_dir / "uv").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("UV", raising=False)
    monkeypatch.setattr(fleet.sys, "executable", str(tmp_path / "python"))
    argv = fleet.wheel_builder(REPO_ROOT, tmp_path)
    assert argv is not None and argv[0] == str(bin_dir / "uv") and argv[1:3] == ["build", "--wheel"]
    (bin_dir / "uv").unlink()
    assert fleet.wheel_builder(REPO_ROOT, tmp_path) is None
    res = run_cli("push", "somehost", "--backups", tmp_path)
    assert res.exit_code == 2


def test_hosts_keep_the_names_the_user_gave_and_ansible_runs_the_given_python(tmp_path):
    from edgetam_provision.fleet.push import inventory_for

    given = ("provbox", "me@jetson:2222", "lab@provbox:22")
    path, names = inventory_for(given, "/opt/py/bin/python3", tmp_path)
    text = path.read_text()
    assert names == {"provbox": "provbox", "jetson": "me@jetson:2222", "provbox-2": "lab@provbox:22"}
    assert "jetson ansible_host=jetson ansible_port=2222 ansible_user=me" in text
    assert "ansible_python_interpreter=/opt/py/bin/python3" in text


@pytest.mark.parametrize(("said", "cause"), [
    ("Permission denied (publickey).", "auth: the host rejected our SSH keys"),
    ("pyenv: python3.13: command not found", "a pyenv shim"),
    ("Module result deserialization failed: No start of json char found", "a pyenv shim"),
    ("/bin/sh: 1: /usr/bin/python3: not found", "no Python found"),
    ("ssh: connect to host x port 22: Connection refused", "unreachable"),
])
def test_a_failed_host_is_told_by_its_cause_with_ansibles_words_kept(said, cause):
    from edgetam_provision.fleet.push import host_rows

    result = {"plays": [{"tasks": [{"task": {"name": "Check the host's libraries"},
                                     "hosts": {"h": {"failed": True, "msg": said}}}]}],
              "stats": {"h": {"failures": 1}}}
    [row] = host_rows(result, False, {"h": "me@h:22"})
    assert row["host"] == "me@h:22" and not row["passed"]
    assert cause in row["error"] and said in row["ansible_said"]


@pytest.fixture(scope="module")
def shim_hosts(tmp_path_factory):
    """Two hosts whose PATH starts with broken pyenv shims, as on many Macs and dev boxes."""
    from sshd import SSHD, SSHServer

    if not Path(SSHD).exists():
        pytest.skip(f"{MISSING_COMPONENT} (.ci/run)")
    pytest.importorskip("ansible", reason=MISSING_FLEET)
    shims = tmp_path_factory.mktemp("shims")
    for name in ("python3.13", "python3.12", "python3.11", "python3.10", "python3", "python"):
        (shims / name).write_text(f'#!/bin/sh\necho "pyenv: {name}: command not found" >&2\nexit 127\n')
        (shims / name).chmod(0o755)
    servers = [SSHServer(tmp_path_factory.mktemp(f"shimhost{i}"), path_first=shims) for i in range(2)]
    yield servers
    for s in servers:
        s.stop()


def test_a_broken_pyenv_shim_is_named_as_the_cause(shim_hosts, backups, wheel, tmp_path):
    res, data = push(inventory(tmp_path / "inv.ini", shim_hosts, python=None), backups, wheel)
    assert res.exit_code == 14
    for row in data["hosts"]:
        assert not row["passed"] and "--remote-python" in row["error"], row
        assert "Module result deserialization" not in row["error"]


@pytest.mark.slow
def test_remote_python_is_ansibles_interpreter_too_so_shims_do_not_matter(shim_hosts, backups, wheel,
                                                                          tmp_path):
    res, data = push(inventory(tmp_path / "inv.ini", shim_hosts, python=None), backups, wheel,
                     "--remote-python", sys.executable)
    assert res.exit_code == 0, res.stderr
    assert [r["passed"] for r in data["hosts"]] == [True, True]


def debians_python_with_the_libraries(folder: Path) -> Path:
    """Debian 12's system Python 3.11.2 (whose tarfile has no data filter) in a venv that sees the
    libraries of this test run's 3.11 venv (cp311 wheels): the host a Debian 12 user has."""
    bare = Path("/usr/bin/python3")
    check = ("import sys, tarfile; assert sys.version_info[:3] == (3, 11, 2), sys.version;"
             "assert not hasattr(tarfile, 'data_filter')")
    if sys.version_info[:2] != (3, 11) or not bare.exists() or subprocess.run([bare, "-c", check]).returncode:
        pytest.skip("needs Debian 12's /usr/bin/python3 (3.11.2) and a 3.11 test run")
    subprocess.run([bare, "-m", "venv", "--without-pip", folder], check=True)
    [site] = (folder / "lib").glob("python3.11/site-packages")
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "libraries.pth").write_text("\n".join(ours) + "\n")  # paths only: no editable install of ours
    python = folder / "bin" / "python3"
    assert subprocess.run([python, "-c", check + "; import torch, transformers"]).returncode == 0
    return python


@pytest.mark.slow
def test_push_succeeds_on_two_shim_hosts_whose_python_is_debians_3_11_2(shim_hosts, backups, wheel, tmp_path):
    python = debians_python_with_the_libraries(tmp_path / "py3112")
    res, data = push(inventory(tmp_path / "inv.ini", shim_hosts, python=None), backups, wheel,
                     "--remote-python", str(python))
    assert res.exit_code == 0, res.stderr
    assert [r["passed"] for r in data["hosts"]] == [True, True]

