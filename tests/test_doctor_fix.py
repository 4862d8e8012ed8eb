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
from conftest import run_cli
from hub_standin import HubRepo

from edgetam_provision.hub.cache import EDGETAM_REPO

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
    before = stale_everywhere(home, monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    assert plain_download(home, hub, tmp_path).returncode != 0  # the user's 401, before
    monkeypatch.setenv("HF_TOKEN", STALE)
    res = run_cli("doctor", "--fix", "--yes", "--fix-shell", "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert STALE not in res.stdout + res.stderr
    assert data["after"] == 200 and data["unset"] == ["unset HF_TOKEN"]
    hf = home / ".cache" / "huggingface"
    assert not (hf / "token").exists()
    assert "[good]" in (hf / "stored_tokens").read_text() and STALE not in (hf / "stored_tokens").read_text()
    netrc = (home / ".netrc").read_text()
    assert OTHER_ENTRY in netrc and "# my machines" in netrc and STALE in netrc  # commented, not deleted
    assert all(ln.startswith("#") for ln in netrc.splitlines() if "127.0.0.1" in ln or STALE in ln)
    assert oct((home / ".netrc").stat().st_mode & 0o777) == "0o600"
    assert f"# export HF_TOKEN={STALE}" in (home / ".zshrc").read_text()
    assert plain_download(home, hub, tmp_path).returncode == 0  # the same download, after
    # --undo gives every file back, byte for byte
    res = run_cli("doctor", "--undo", *data["backups"])
    assert res.exit_code == 0, res.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert oct((home / ".netrc").stat().st_mode & 0o777) == "0o600"


def test_without_fix_shell_the_exports_are_named_and_left_alone(home, hub, monkeypatch):
    stale_everywhere(home, monkeypatch)
    zshrc = (home / ".zshrc").read_bytes()
    res = run_cli("doctor", "--fix", "--yes")
    assert res.exit_code == 0, res.stderr
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


def test_a_change_that_cannot_be_written_leaves_everything_as_it_was(home, hub, monkeypatch):
    """As a read-only home does (root ignores permissions, so the refusal is simulated)."""
    from edgetam_provision.doctor import fix

    stale_everywhere(home, monkeypatch, env=False)
    snapshot = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    real_copy = fix.shutil.copy2

    def refuse_netrc(src, dst, *a, **k):
        if Path(src).name == ".netrc":
            raise PermissionError(13, "Permission denied", str(dst))
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(fix.shutil, "copy2", refuse_netrc)
    res = run_cli("doctor", "--fix", "--yes")
    assert res.exit_code == 5 and "nothing was changed" in res.stderr
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == snapshot


def test_without_a_terminal_or_yes_nothing_is_changed(home, hub, monkeypatch):
    stale_everywhere(home, monkeypatch)
    token = (home / ".cache" / "huggingface" / "token").read_bytes()
    res = run_cli("doctor", "--fix")
    assert res.exit_code == 2 and "--yes" in res.stderr
    assert (home / ".cache" / "huggingface" / "token").read_bytes() == token
