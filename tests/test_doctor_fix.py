"""`provision doctor --fix`: the credentials the Hub rejects are put aside, the rest is kept byte for
byte, a plain huggingface_hub download works afterwards, and --undo gives every file back.

Each test builds a throwaway HOME with stale sources; the Hub stand-in rejects any credential but
the one it was told is valid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import examples, run_cli
from hub_standin import HubRepo
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetam_provision.repos import EDGETAM_REPO

STALE = "hf_StaleTokenThatTheHubRejects0001"
VALID = "hf_ValidTokenThatTheHubAccepts0002"
SCRUB = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "NETRC", "HF_HUB_OFFLINE",
         "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_STORED_TOKENS_PATH", "XDG_CACHE_HOME")
OTHER_ENTRY = "machine example.org login me password kept-secret\n"


@pytest.fixture
def home(tmp_path, monkeypatch, hub):
    for var in SCRUB:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    if EDGETAM_REPO not in hub.repos:
        hub.add(HubRepo(EDGETAM_REPO, {"config.json": b"{}"}))
    hub.accepted_tokens = {VALID}
    return home


def stale_everywhere(home: Path, monkeypatch, *, env: bool = True) -> dict[Path, bytes]:
    """Every stale source at once; returns each file's bytes."""
    hf = home / ".cache" / "huggingface"
    (hf / "token").write_text(STALE)
    (hf / "stored_tokens").write_text(f"[old]\nhf_token = {STALE}\n\n[good]\nhf_token = {VALID}\n")
    netrc = home / ".netrc"
    netrc.write_text(f"# my machines\n{OTHER_ENTRY}machine 127.0.0.1\n  login stale\n  password {STALE}\n")
    netrc.chmod(0o600)
    (home / ".zshrc").write_text(f"alias ll='ls -l'\nexport HF_TOKEN={STALE}\n")
    if env:
        monkeypatch.setenv("HF_TOKEN", STALE)
    return {p: p.read_bytes() for p in (hf / "token", hf / "stored_tokens", netrc, home / ".zshrc")}


def plain_download(home: Path, hub, tmp_path: Path) -> subprocess.CompletedProcess:
    """huggingface_hub's own hf_hub_download of a public file, as the user would run it (with the
    variables they were told to unset, unset)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(HOME=str(home), HF_ENDPOINT=hub.endpoint)
    code = ("import sys; from huggingface_hub import hf_hub_download;"
            f"print(hf_hub_download({EDGETAM_REPO!r}, 'config.json', cache_dir=sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "dl")], capture_output=True, text=True,
                          env=env)


def test_fix_puts_every_rejected_source_aside_and_a_plain_download_works(home, hub, tmp_path, monkeypatch):
    before = stale_everywhere(home, monkeypatch, env=False)
    assert plain_download(home, hub, tmp_path).returncode != 0  # the user's 401, before
    res = run_cli("doctor", "--fix", "--yes", "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert STALE not in res.stdout + res.stderr
    assert data["after"] == data["now"] == 200 and data["unset"] == []
    hf = home / ".cache" / "huggingface"
    assert not (hf / "token").exists()
    stored = (hf / "stored_tokens").read_text()
    assert "[good]" in stored and all(ln.startswith("#") for ln in stored.splitlines() if STALE in ln)
    netrc = (home / ".netrc").read_text()
    assert OTHER_ENTRY in netrc and "# my machines" in netrc and STALE in netrc  # commented, not deleted
    assert all(ln.startswith("#") for ln in netrc.splitlines() if "127.0.0.1" in ln or STALE in ln)
    assert oct((home / ".netrc").stat().st_mode & 0o777) == "0o600"
    assert plain_download(home, hub, tmp_path).returncode == 0  # the same download, after
    # --undo gives every file back, byte for byte
    res = run_cli("doctor", "--undo", *data["backups"])
    assert res.exit_code == 0, res.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert oct((home / ".netrc").stat().st_mode & 0o777) == "0o600"


def test_while_the_shell_still_sends_a_rejected_variable_fix_is_no_success(home, hub, tmp_path, monkeypatch):
    """$HF_TOKEN belongs to the shell that started provision: --fix changes the files (and with
    --fix-shell the start-up lines) but says the truth about this shell: still a 401, exit 16."""
    before = stale_everywhere(home, monkeypatch)
    res = run_cli("doctor", "--fix", "--yes", "--fix-shell", "--json")
    assert res.exit_code == 16, res.stderr
    data = json.loads(res.stdout)
    assert data["after"] == 200 and data["now"] == 401 and data["unset"] == ["unset HF_TOKEN"]
    assert "error: in this shell a plain download still gets 401: it sends $HF_TOKEN" in res.stderr
    assert "hint: run `unset HF_TOKEN` in your shell" in res.stderr
    assert f"# export HF_TOKEN={STALE}" in (home / ".zshrc").read_text()
    assert run_cli("doctor", "--online", "--json").exit_code == 16  # the same shell agrees
    text = run_cli("doctor", "--fix", "--yes")
    assert "a plain download now gets" not in text.stdout and "in this shell now it gets 401" in text.stdout
    monkeypatch.delenv("HF_TOKEN")  # what the user runs
    assert run_cli("doctor", "--fix", "--yes").stdout.startswith("no credential found here is rejected")
    assert plain_download(home, hub, tmp_path).returncode == 0
    assert run_cli("doctor", "--undo", *data["backups"]).exit_code == 0
    assert {p: p.read_bytes() for p in before} == before


def test_without_fix_shell_the_exports_are_named_and_left_alone(home, hub, monkeypatch):
    stale_everywhere(home, monkeypatch)
    zshrc = (home / ".zshrc").read_bytes()
    res = run_cli("doctor", "--fix", "--yes")
    assert res.exit_code == 16, res.stderr
    assert f"run now, in your shell: unset HF_TOKEN (set in {home / '.zshrc'}:2)" in res.stdout
    assert (home / ".zshrc").read_bytes() == zshrc
    undo_line = next(ln for ln in res.stdout.splitlines() if ln.startswith("undo: provision doctor --undo "))
    backups = undo_line.split("--undo ", 1)[1].split()
    assert len(backups) == 3 and run_cli("doctor", "--undo", *backups).exit_code == 0


def test_a_working_token_is_never_touched(home, hub, monkeypatch):
    token = home / ".cache" / "huggingface" / "token"
    token.write_text(VALID)
    res = run_cli("doctor", "--fix", "--yes", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["changes"] == []
    assert token.read_text() == VALID


def test_nothing_is_judged_where_anonymous_access_fails(home, hub, monkeypatch):
    stale_everywhere(home, monkeypatch)
    snapshot = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    res = run_cli("doctor", "--fix", "--yes", "--repo", "org/private-or-absent")
    assert res.exit_code == 2 and "cannot judge" in res.stderr
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == snapshot


@pytest.mark.parametrize("refused", ["the netrc", "its backup"])
def test_a_change_that_cannot_be_written_leaves_everything_as_it_was(home, hub, monkeypatch, refused):
    """As an immutable netrc (chattr +i) or a read-only folder does (root ignores permissions, so the
    refusal is simulated): nothing was changed, and no backup is left behind."""
    from edgetam_provision.doctor import edits

    stale_everywhere(home, monkeypatch, env=False)
    snapshot = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    real_write = edits.write_atomic

    def refuse(path, data, mode=0o644):
        name = ".netrc" if refused == "the netrc" else ".netrc.provision-backup"
        if path.name.startswith(name) and (refused != "the netrc" or path.name == name):
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_write(path, data, mode=mode)

    monkeypatch.setattr(edits, "write_atomic", refuse)
    res = run_cli("doctor", "--fix", "--yes")
    assert res.exit_code == 5 and "nothing was changed" in res.stderr
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == snapshot


def test_without_a_terminal_or_yes_nothing_is_changed(home, hub, monkeypatch):
    stale_everywhere(home, monkeypatch)
    token = (home / ".cache" / "huggingface" / "token").read_bytes()
    res = run_cli("doctor", "--fix")
    assert res.exit_code == 2 and "--yes" in res.stderr
    assert (home / ".cache" / "huggingface" / "token").read_bytes() == token


def fixed_netrc(home: Path, monkeypatch) -> tuple[bytes, str]:
    """A stale netrc entry, put aside by --fix; returns (the file before, its backup)."""
    netrc = home / ".netrc"
    netrc.write_text(f"# my machines\n{OTHER_ENTRY}machine 127.0.0.1\n  login stale\n  password {STALE}\n")
    netrc.chmod(0o600)
    before = netrc.read_bytes()
    res = run_cli("doctor", "--fix", "--yes", "--json")
    assert res.exit_code == 0, res.stderr
    [backup] = json.loads(res.stdout)["backups"]
    return before, backup


def test_a_netrc_line_added_after_the_fix_survives_the_undo(home, hub, monkeypatch):
    before, backup = fixed_netrc(home, monkeypatch)
    netrc = home / ".netrc"
    added = "machine gitlab.example login bot password added-after-the-fix\n"
    netrc.write_text(netrc.read_text() + added)
    found = netrc.read_bytes()
    res = run_cli("doctor", "--undo", backup, "--json")
    assert res.exit_code == 0, res.stderr
    [undone] = json.loads(res.stdout)["restored"]
    assert undone["outcome"] == "merged" and "1 lines added" in undone["note"] and "3 lines" in undone["note"]
    assert netrc.read_bytes() == before + added.encode()  # the entry is back, the new line kept
    assert Path(undone["saved"]).read_bytes() == found  # and the file as found is saved
    assert oct(netrc.stat().st_mode & 0o777) == "0o600" and not Path(backup).exists()
    again = run_cli("doctor", "--undo", backup)
    assert again.exit_code == 0 and again.stdout.startswith("nothing to undo: ")


def test_a_token_written_after_the_fix_is_kept_by_the_undo(home, hub, monkeypatch, tmp_path):
    """`hf auth login` after --fix writes a new token file and rewrites stored_tokens (huggingface_hub's
    own functions, as the login calls them once the Hub said the token is valid)."""
    stale_everywhere(home, monkeypatch, env=False)
    res = run_cli("doctor", "--fix", "--yes", "--json")
    backups = json.loads(res.stdout)["backups"]
    hf = home / ".cache" / "huggingface"
    login = ("from huggingface_hub._login import _save_token, _set_active_token;"
             f"_save_token({VALID!r}, 'fresh'); _set_active_token('fresh', False)")
    subprocess.run([sys.executable, "-c", login], check=True, env={**os.environ, "HOME": str(home)})
    token, stored = (hf / "token").read_bytes(), (hf / "stored_tokens").read_bytes()
    assert token == VALID.encode() and b"[fresh]" in stored
    res = run_cli("doctor", "--undo", *backups, "--json")
    assert res.exit_code == 0, res.stderr
    outcome = {Path(u["path"]).name: u for u in json.loads(res.stdout)["restored"]}
    assert (hf / "token").read_bytes() == token and (hf / "stored_tokens").read_bytes() == stored  # kept
    assert outcome["token"]["outcome"] == "kept newer" and outcome["stored_tokens"]["outcome"] == "merged"
    aside = {p.name: p.read_bytes() for p in hf.iterdir() if ".provision-before-fix-" in p.name}
    assert sorted(n.split(".provision")[0] for n in aside) == ["stored_tokens", "token"]
    assert STALE.encode() in b"".join(aside.values())  # nothing lost: the rejected token is still aside
    assert plain_download(home, hub, tmp_path).returncode == 0
    assert all(u["outcome"] == "nothing to undo" for u in json.loads(
        run_cli("doctor", "--undo", *backups, "--json").stdout)["restored"])


def test_a_symlinked_netrc_is_edited_at_its_target_and_stays_a_link(home, hub, monkeypatch):
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "netrc"
    target.write_text(f"machine 127.0.0.1 login stale password {STALE}\n{OTHER_ENTRY}")
    target.chmod(0o600)
    before = target.read_bytes()
    (home / ".netrc").symlink_to(target)
    res = run_cli("doctor", "--fix", "--yes", "--json")
    assert res.exit_code == 0, res.stderr
    [backup] = json.loads(res.stdout)["backups"]
    assert (home / ".netrc").is_symlink() and (home / ".netrc").resolve() == target
    assert target.read_text().startswith("# machine 127.0.0.1") and Path(backup).parent == dotfiles
    assert run_cli("doctor", "--undo", backup).exit_code == 0
    assert (home / ".netrc").is_symlink() and target.read_bytes() == before


def lines_of(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")


@settings(max_examples=examples(ci=200, dev=50), deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=12)
                | st.sampled_from(["", "a", "# a", "# # a", " "]), min_size=1, max_size=12), st.data())
def test_undo_gives_back_what_the_fix_took_and_keeps_every_change_made_since(tmp_path_factory, lines, data):
    from edgetam_provision.doctor.edits import comment_out, undo_one

    folder = tmp_path_factory.mktemp("merge")
    path = folder / "file"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    ours = data.draw(st.sets(st.integers(0, len(lines) - 1)))
    change = comment_out(path, ours, "file", "test")
    fixed = lines_of(path)
    # lines removed since; not one that reads as a line the fix commented out (which of the two went
    # cannot be told from the file, and undo then gives back less, keeping the rest in the backup)
    removable = sorted(i for i in set(range(len(lines))) - ours if fixed[i] not in {fixed[k] for k in ours})
    gone = data.draw(st.sets(st.sampled_from(removable), max_size=2) if removable else st.just(set()))
    at = data.draw(st.lists(st.integers(0, len(lines)), max_size=4))
    expected, now = list(lines), list(fixed)
    for n, i in enumerate(sorted(at, reverse=True)):  # unique new lines, inserted after the fix
        expected.insert(i, f"added since {n}")
        now.insert(i, f"added since {n}")
    for i in sorted(gone, reverse=True):  # and lines the fix did not touch, removed since
        shift = sum(1 for j in at if j <= i)
        del expected[i + shift], now[i + shift]
    path.write_bytes("\n".join(now).encode("utf-8", "surrogateescape"))
    undone = undo_one(Path(change.backup))
    assert lines_of(path) == "\n".join(expected).split("\n")
    assert not [p for p in folder.iterdir() if ".provision-backup-" in p.name or "before-fix" in p.name]
    assert undone.outcome == "put back" or at or gone
    if undone.saved:
        assert lines_of(Path(undone.saved)) == "\n".join(now).split("\n")
