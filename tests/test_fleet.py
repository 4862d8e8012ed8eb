"""`provision push`: real Ansible against three real sshd "hosts" on loopback, each with its own
HOME and so its own Hugging Face cache (sshd's SetEnv)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import MISSING_COMPONENT, MISSING_FLEET, REPO_ROOT, run_cli, tree_state
from hypothesis import given
from hypothesis import strategies as st

from edgetam_provision.backup import backup
from edgetam_provision.repos import RepoSpec


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


def test_the_wheel_is_built_with_the_standard_library_alone(tmp_path, monkeypatch):
    """A uv venv has neither pip nor uv beside its Python: the wheel needs neither (nor any subprocess)."""
    from edgetam_provision.fleet import wheel as fleet_wheel

    def nothing_runs(*a, **kw):
        raise AssertionError(f"ran {a}")

    monkeypatch.setattr(subprocess, "run", nothing_runs)
    monkeypatch.setattr(subprocess, "Popen", nothing_runs)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("UV", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setitem(sys.modules, "pip", None)
    path = fleet_wheel.build_wheel(tmp_path / "a")
    assert path.name == "edgetam_provision-0.1.0-py3-none-any.whl"
    assert fleet_wheel.build_wheel(tmp_path / "b").read_bytes() == path.read_bytes()  # deterministic
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        record = zf.read("edgetam_provision-0.1.0.dist-info/RECORD").decode()
        meta = zf.read("edgetam_provision-0.1.0.dist-info/METADATA").decode()
        for line in record.splitlines():  # every file's hash, as installers check it
            name, digest, size = line.rsplit(",", 2)
            if digest:
                data = zf.read(name)
                assert digest == "sha256=" + base64.urlsafe_b64encode(
                    hashlib.sha256(data).digest()).rstrip(b"=").decode() and int(size) == len(data)
    assert {ln.rsplit(",", 2)[0] for ln in record.splitlines()} == names
    assert "Name: edgetam-provision\nVersion: 0.1.0\n" in meta
    assert {"edgetam_provision/fleet/push.yml", "edgetam_provision/fleet/callback_plugins/provision_json.py",
            "edgetam_provision/verify/assets/truck.jpg", "edgetam_provision/__main__.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.slow
def test_the_wheel_holds_what_setuptools_builds_from_pyproject(tmp_path):
    """The same files as the declared build backend ships (package data included), so nothing the
    hosts need is missing and nothing undeclared travels."""
    pytest.importorskip("setuptools")
    from edgetam_provision.fleet.wheel import build_wheel

    ours = build_wheel(tmp_path / "ours")
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "edgetam_provision", src / "edgetam_provision",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    code = "import sys, setuptools.build_meta as b; b.build_wheel(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "theirs")], cwd=src, check=True,
                   capture_output=True)
    [theirs] = (tmp_path / "theirs").glob("*.whl")

    def files(wheel: Path) -> set[str]:
        with zipfile.ZipFile(wheel) as zf:
            return {n for n in zf.namelist() if ".dist-info/" not in n}

    assert files(ours) == files(theirs)


def test_hosts_keep_the_names_the_user_gave_and_ansible_runs_the_given_python(tmp_path):
    from edgetam_provision.fleet.hosts import parse_destinations, write_inventory

    given = ("provbox", "me@jetson:2222", "lab@provbox:22", "ssh://root@[fe80::1]:2200")
    path, names = write_inventory(parse_destinations(given), "/opt/py/bin/python3", tmp_path)
    fleet = json.loads(path.read_text())["all"]["children"]["fleet"]
    assert names == {"provbox": "provbox", "jetson": "me@jetson:2222", "provbox-2": "lab@provbox:22",
                     "fe80::1": "ssh://root@[fe80::1]:2200"}
    assert fleet["hosts"]["jetson"] == {"ansible_host": {"__ansible_unsafe": "jetson"}, "ansible_port": 2222,
                                        "ansible_user": {"__ansible_unsafe": "me"}}
    assert fleet["vars"] == {"ansible_python_interpreter": {"__ansible_unsafe": "/opt/py/bin/python3"}}


SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"


@given(st.text(min_size=1, max_size=40) | st.text(SAFE + "@:[]{}%'\";\n ", min_size=1, max_size=40))
def test_a_fleet_host_is_accepted_only_in_openssh_grammar_with_safe_characters(text):
    """What is accepted holds nothing a template engine or a shell acts on; the rest is one usage error."""
    from edgetam_provision.errors import UsageError
    from edgetam_provision.fleet.hosts import parse_destination, parse_destinations

    d = parse_destination(text)
    if d is None:
        with pytest.raises(UsageError, match="not a valid fleet host"):
            parse_destinations(("good-host", text))
        return
    assert set(d.host) <= set(SAFE + ":%") and set(d.user or "") <= set(SAFE)
    assert not d.host.startswith("-") and not (d.user or "").startswith("-")
    assert d.port is None or 0 < d.port < 65536
    assert not ({"{", "}", "'", '"', ";", "$", "`", "\n", " "} & set(text))


@pytest.mark.parametrize("host", [
    "u@\"{{lookup('pipe','id>FILE')}}\"", "{{ 7 * 7 }}", "{% raw %}x", "host;id", "a'b", 'a"b',
    "host\nother", "host\n", "-oProxyCommand=id", "me@", "@host", "host:0", "host:70000", "u@h@h", "h ost",
    "h\x00", "h\u202e",
])
def test_push_with_a_host_name_that_is_not_data_is_a_usage_error_before_anything_runs(host, tmp_path,
                                                                                     monkeypatch):
    from edgetam_provision.fleet import push as fleet

    def nothing_runs(*a, **kw):
        raise AssertionError(f"ran {a}")

    monkeypatch.setattr(fleet.subprocess, "run", nothing_runs)
    monkeypatch.setattr(fleet, "build_wheel", nothing_runs)
    monkeypatch.setattr("edgetam_provision.restore.run.check_backups", nothing_runs)
    res = run_cli("push", "--backups", tmp_path / "absent", "--", "fine-host", host)
    assert res.exit_code == 2, res.stderr
    assert f"error: not a valid fleet host: {host!a}\n" in res.stderr and "fine-host" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_ansible_passes_every_value_push_gives_it_through_literally(tmp_path):
    """Ansible itself, on the inventory and extra variables push writes: a value holding a template
    (a lookup that would run a command on this machine) arrives as the literal text."""
    pytest.importorskip("ansible", reason=MISSING_FLEET)
    from edgetam_provision.fleet.hosts import parse_destinations, write_extra_vars, write_inventory
    from edgetam_provision.fleet.push import ansible_playbook, playbook

    ran = tmp_path / "ran"
    evil = "{{ lookup('pipe', 'touch " + str(ran) + "') }}"
    inventory, _ = write_inventory(parse_destinations(("me@box:2222",)), f"/opt/{evil}/python", tmp_path)
    extra = write_extra_vars({"provision_backups": f"/b/{evil}", "flag": True}, tmp_path)
    show = tmp_path / "show.yml"  # debug runs on this machine: nothing connects to "box"
    show.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"{{ "
                    "[ansible_host, ansible_user, ansible_port, ansible_python_interpreter, "
                    "provision_backups, flag] }}\"\n")
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "provision_json",
           "ANSIBLE_CALLBACK_PLUGINS": str(playbook().parent / "callback_plugins")}
    proc = subprocess.run([ansible_playbook(), "-i", inventory, show, "-e", f"@{extra}"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [task] = json.loads(proc.stdout[proc.stdout.index("{"):])["plays"][0]["tasks"]
    assert task["hosts"]["box"]["msg"] == ["box", "me", 2222, f"/opt/{evil}/python", f"/b/{evil}", True]
    assert not ran.exists()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["archives", "repos", "repo_id", "commits", "status", "report",
                                         "passed", "four_cases_warm_ms", "device", "missing", "message",
                                         "x"]),
                        inner, max_size=5), max_leaves=30)


def ansible_document(host: str, answers: dict[str, object], failed: tuple[str, ...] = ()) -> dict:
    """Ansible's JSON (our callback's shape) for one host whose tasks printed `answers`."""
    from edgetam_provision.fleet.rows import TASKS

    tasks = [{"task": {"name": TASKS[step]},
              "hosts": {host: {"stdout": out, "rc": 0, "changed": False, **({"failed": True} if step in failed
                                                                             else {})}}}
             for step, out in answers.items()]
    return {"plays": [{"tasks": tasks}], "stats": {host: {"failures": len(failed)}}}


GOOD = {"host": json.dumps({"dir": "/d", "missing": [], "made": []}),
        "restore": json.dumps({"archives": [{"status": "restored", "repos": [{"repo_id": "org/tiny",
                                                                              "commits": ["c" * 40]}]}]}),
        "verify": json.dumps({"report": {"passed": True, "four_cases_warm_ms": 12.5, "device": "cpu"}})}


def test_an_honest_hosts_answers_make_a_passing_row():
    from edgetam_provision.fleet.rows import host_rows

    [row] = host_rows(ansible_document("h", GOOD), False, {"h": "me@h:22"})
    assert row.passed and row.host == "me@h:22" and row.error == ""
    assert row.repos == ("org/tiny@cccccccccccc",) and row.restore == ("restored",) and row.verify is True
    assert row.four_cases_ms == 12.5 and row.device == "cpu"


@given(st.sampled_from(["host", "restore", "verify"]), JSON | st.text(max_size=30).map(lambda t: {"text": t}))
def test_whatever_a_host_answers_it_is_a_row_never_a_crash(step, answer):
    """Arbitrary JSON (or text that is no JSON, or a module result whose stdout is not text) in place of
    one answer: the host's row passes only when the answer has the right shape, else it fails saying why."""
    from edgetam_provision.fleet.rows import (
        BadAnswer,
        host_rows,
        missing_libraries,
        restore_answer,
        verify_answer,
    )

    stdout = answer["text"] if isinstance(answer, dict) and set(answer) == {"text"} else json.dumps(answer)
    for out in (stdout, answer):
        for reader in (restore_answer, verify_answer, missing_libraries):
            with contextlib.suppress(BadAnswer):
                reader(out)
        [row] = host_rows(ansible_document("h", {**GOOD, step: out}), False)
        assert row.passed or "answered what provision never prints" in row.error, row
        assert json.loads(json.dumps(row.to_dict())) == row.to_dict()
        assert all(c.isprintable() for c in row.error + "".join(row.repos + row.restore) + (row.device or ""))


@pytest.mark.parametrize(("step", "answer", "why"), [
    ("restore", "[1, 2, 3]", "restore there answered what provision never prints (a JSON array where an "
                             "object with 'archives' belongs)"),
    ("restore", "Traceback (most recent", "restore there answered what provision never prints (not JSON"),
    ("verify", '{"report": {"passed": "yes"}}', "verify there answered what provision never prints ('passed' "
                                                "is a string, not a boolean)"),
    ("verify", '{"report": {"passed": true, "four_cases_warm_ms": Infinity}}', "not a finite number"),
])
def test_a_host_answering_garbage_is_a_failed_row_saying_so(step, answer, why):
    from edgetam_provision.fleet.rows import host_rows

    [row] = host_rows(ansible_document("h", {**GOOD, step: answer}), False)
    assert not row.passed and why in row.error


@pytest.mark.slow
def test_a_push_to_a_host_whose_python_answers_garbage_prints_the_table(hosts, wheel, backups, tmp_path):
    """One host's `restore --json` prints [1, 2, 3]: its row fails with the reason, the others pass (14)."""
    liar = tmp_path / "python"
    liar.write_text("#!/bin/sh\ncase \"$*\" in *'edgetam_provision restore'*) echo '[1, 2, 3]'; exit 0;; "
                    f"esac\nexec {sys.executable} \"$@\"\n")
    liar.chmod(0o755)
    inv = inventory(tmp_path / "inv.ini", hosts[:2])
    inv.write_text(inv.read_text().replace("host1 ", f"host1 ansible_python_interpreter={liar} ", 1))
    res = run_cli("push", "--inventory", inv, "--backups", backups, "--wheel", wheel, "--synthetic",
                  "--device", "cpu")
    assert res.exit_code == 14, res.stdout + res.stderr
    rows = {ln.split()[0]: ln for ln in res.stdout.splitlines()[1:-1]}
    assert "PASSED" in rows["host0"] and "1 of 2 hosts passed" in res.stdout
    assert rows["host1"].endswith("restore there answered what provision never prints (a JSON array where an "
                                  "object with 'archives' belongs); a different version there?")


@pytest.mark.parametrize(("said", "cause"), [
    ("Permission denied (publickey).", "auth: the host rejected our SSH keys"),
    ("pyenv: python3.13: command not found", "a pyenv shim"),
    ("Module result deserialization failed: No start of json char found", "a pyenv shim"),
    ("/bin/sh: 1: /usr/bin/python3: not found", "no Python found"),
    ("ssh: connect to host x port 22: Connection refused", "unreachable"),
])
def test_a_failed_host_is_told_by_its_cause_with_ansibles_words_kept(said, cause):
    from edgetam_provision.fleet.rows import host_rows

    result = {"plays": [{"tasks": [{"task": {"name": "Check the host's libraries"},
                                     "hosts": {"h": {"failed": True, "msg": said}}}]}],
              "stats": {"h": {"failures": 1}}}
    [row] = host_rows(result, False, {"h": "me@h:22"})
    assert row.host == "me@h:22" and not row.passed
    assert cause in row.error and said in row.ansible_said


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



def python_wrapper(path: Path, site: str) -> Path:
    """A host Python: this one with `site` after the folders the playbook puts on PYTHONPATH."""
    path.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\nexport PYTHONPATH\n'
                    f'exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


@pytest.mark.slow
def test_push_p2p_hosts_take_the_archives_from_each_other_and_one_without_libtorrent_gets_the_copy(
        hosts, wheel, backups, tmp_path):
    from conftest import MISSING_P2P

    lt = pytest.importorskip("libtorrent", reason=MISSING_P2P)
    with_lt = python_wrapper(tmp_path / "python-p2p", str(Path(lt.__file__).resolve().parents[1]))
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "libtorrent.py").write_text("raise ImportError('not on this host')\n")
    without = python_wrapper(tmp_path / "python-plain", str(blocked))
    inv = inventory(tmp_path / "inv.ini", hosts)
    lines = inv.read_text().splitlines()
    for i, python in enumerate((with_lt, with_lt, without)):  # each host's own interpreter
        lines[1 + i] += f" ansible_python_interpreter={python}"
    inv.write_text("\n".join(lines) + "\n")
    for server in hosts:  # hosts that have no archive yet
        shutil.rmtree(server.home / ".cache" / "edgetam-provision" / "fleet" / "backups", ignore_errors=True)
    base = free_ports()
    res, data = push(inv, backups, wheel, "--p2p", "--p2p-port", str(base))
    assert res.exit_code == 0, res.stdout + res.stderr
    rows = {r["host"]: r for r in data["hosts"]}
    size = sum(p.stat().st_size for p in backups.glob("*.tar*"))
    for name in ("host0", "host1"):
        assert rows[name]["path"] == "p2p" and rows[name]["copied"] and rows[name]["verify"] is True
        assert rows[name]["from_controller"] + rows[name]["from_peers"] >= size
    assert rows["host2"]["path"].startswith("copy (libtorrent is not installed") and rows["host2"]["copied"]
    assert rows["host2"]["from_controller"] == 0 and rows["host2"]["passed"]
    assert 0 < data["p2p"]["controller_uploaded"] <= 2 * size and data["p2p"]["archive_bytes"] == size
    for server in hosts:
        from test_restore_verdicts import hub_loads_offline

        assert hub_loads_offline(host_cache(server), "org/tiny")
    port = data["p2p"]["port"]
    for p in range(base, base + 10):  # nothing listens after the push, here or on a host
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p), timeout=5).close()
    text = run_cli("push", "--inventory", inv, "--backups", backups, "--wheel", wheel, "--synthetic",
                   "--device", "cpu", "--p2p", "--p2p-port", str(port))
    assert text.exit_code == 0, text.stdout + text.stderr
    assert "p2p (already there)" in text.stdout and "copy (libtorrent is not installed" in text.stdout


def free_ports(n: int = 10) -> int:
    """The first of `n` free ports in a row, below Linux's ephemeral range (no server on port 0 is
    given one of them meanwhile), each pytest-xdist worker in its own thousand."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    start = 20000 + 1000 * (worker % 12)
    for base in range(start, start + 1000 - n, 101):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no run of free ports on this machine")
