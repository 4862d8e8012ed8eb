"""`provision doctor`: each cause of a failing download is reproduced and must be named correctly.

Every test runs with a temporary HOME and a scrubbed environment; the token never appears in output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import run_cli
from hub_standin import HubRepo
from hypothesis import given
from hypothesis import strategies as st

from edgetam_provision.doctor import checks as doctor
from edgetam_provision.errors import EXIT_CODES
from edgetam_provision.repos import BACKBONE_REPO, EDGETAM_REPO
from edgetam_provision.verify.synthetic import install_into_cache

TOKEN = "hf_StaleDoctorTokenXYZ987654321wxyz"
SCRUB = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "HF_ENDPOINT", "NETRC",
         "HF_HUB_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
         "http_proxy", "ALL_PROXY", "all_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE",
         "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(tmp_path, monkeypatch, hub):
    """A clean machine: its own HOME, no credentials, the Hub stand-in as endpoint, models cached."""
    for var in SCRUB:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    cache = tmp_path / "cache"
    install_into_cache(cache, EDGETAM_REPO, {"config.json": b"{}", "model.safetensors": b"w" * 2048})
    install_into_cache(cache, BACKBONE_REPO, {"config.json": b"{}"})
    if EDGETAM_REPO not in hub.repos:  # the online probe asks for it
        hub.add(HubRepo(EDGETAM_REPO, {"config.json": b"{}"}))
    return {"home": home, "cache": cache, "hub": hub}


def run_doctor(env, *args: str):
    res = run_cli("doctor", "--cache-dir", env["cache"], "--json", *args)
    assert TOKEN not in res.stdout + res.stderr
    data = json.loads(res.stdout)
    failing = [c["exit_code"] for c in data["checks"] if c["status"] == "fail"]
    assert all(code in EXIT_CODES and code > 0 for code in failing)  # each failure is a kind of the table
    return res.exit_code, {c["name"]: c for c in data["checks"]}


def test_a_clean_environment_reports_no_failures(clean_env):
    code, checks = run_doctor(clean_env, "--online")
    failing = {n: c for n, c in checks.items() if c["status"] == "fail"}
    assert code == 0 and failing == {}
    assert checks["credentials"]["status"] == "ok"
    assert checks["online: anonymous"]["status"] == "ok"


def test_doctor_says_what_it_is_waiting_for_and_quiet_silences_it(clean_env):
    """The torch import (seconds on a cold start) and the online probes are named while they run."""
    res = run_cli("doctor", "--cache-dir", clean_env["cache"], "--online")
    assert "asking torch which devices it sees" in res.stderr and "probing http" in res.stderr
    plain = json.loads(run_cli("doctor", "--cache-dir", clean_env["cache"], "--json").stdout)
    assert plain["checks"][-1]["name"] == "devices"  # the report's order is kept
    quiet = run_cli("doctor", "--cache-dir", clean_env["cache"], "-q")
    assert "asking torch" not in quiet.stderr


def test_bogus_env_token_is_named_masked_and_blamed_online(clean_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, checks = run_doctor(clean_env, "--online")
    assert code == 16  # download blocked (the exit-code table)
    assert "$HF_TOKEN" in checks["credentials"]["detail"]
    assert doctor.mask(TOKEN) == "hf_…wxyz" and "hf_…wxyz" in checks["credentials"]["detail"]
    online = checks["online: token"]
    assert online["status"] == "fail"
    assert "anonymous works, your $HF_TOKEN" in online["detail"] and "401" in online["detail"]
    assert "HF_HUB_DISABLE_IMPLICIT_TOKEN=1" in online["fix"]
    # a variable of the user's shell: the advice is the unset, never a --fix that cannot put it aside
    assert online["fix"].startswith("run `unset HF_TOKEN` in your shell")
    assert "puts it aside" not in online["fix"]


def test_legacy_env_token_is_named(clean_env, monkeypatch):
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKEN)
    _, checks = run_doctor(clean_env)
    assert "$HUGGING_FACE_HUB_TOKEN" in checks["credentials"]["detail"]


def test_bogus_token_file_is_named_and_empty_hf_token_trap_explained(clean_env, monkeypatch):
    hf_home = clean_env["home"] / ".cache" / "huggingface"
    hf_home.mkdir(parents=True)
    (hf_home / "token").write_text(TOKEN)
    monkeypatch.setenv("HF_TOKEN", "")
    code, checks = run_doctor(clean_env, "--online")
    assert code == 16
    assert f"token file {hf_home / 'token'}" in checks["credentials"]["detail"]
    assert "does NOT disable" in checks["empty HF_TOKEN"]["detail"]
    assert "token file" in checks["online: token"]["detail"]


def test_disabling_the_implicit_token_is_recognised(clean_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    code, checks = run_doctor(clean_env, "--online")
    assert code == 0 and "online: token" not in checks


@pytest.mark.parametrize("machine", ["127.0.0.1", "default"])
def test_netrc_entry_for_the_host_or_default_is_named(clean_env, machine, monkeypatch):
    line = f"machine 127.0.0.1 login u password {TOKEN}\n" if machine != "default" else \
        f"default login u password {TOKEN}\n"
    (clean_env["home"] / ".netrc").write_text(line)
    (clean_env["home"] / ".netrc").chmod(0o600)
    _, checks = run_doctor(clean_env, "--online")
    assert checks["netrc"]["status"] == "warn" and f"entry for {machine}" in checks["netrc"]["detail"]
    probe = checks["online: netrc"]
    # the installed huggingface_hub (2.x) never sends it: a warning, never a failure
    assert probe["status"] == "warn" and "rejected with 401" in probe["detail"]


def test_netrc_with_a_requests_based_hub_is_a_failure(clean_env, monkeypatch):
    (clean_env["home"] / ".netrc").write_text(f"machine 127.0.0.1 login u password {TOKEN}\n")
    versions = {**doctor.library_versions(), "huggingface_hub": "0.36.2"}
    monkeypatch.setattr(doctor, "library_versions", lambda: versions)
    code, checks = run_doctor(clean_env)
    assert code == 16 and checks["netrc"]["status"] == "fail"
    assert "Basic auth" in checks["netrc"]["detail"] and "NETRC=/dev/null" in checks["netrc"]["fix"]


def test_offline_flag_is_reported(clean_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, checks = run_doctor(clean_env)
    assert code == 16 and checks["offline"]["status"] == "fail"


def test_unwritable_cache_is_reported(clean_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = run_cli("doctor", "--cache-dir", blocker / "cache", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert res.exit_code == 5 and "not writable" in checks["cache"]["detail"]


def test_missing_models_are_named(clean_env, tmp_path):
    res = run_cli("doctor", "--cache-dir", tmp_path / "empty", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert res.exit_code == 7  # "model missing" in the exit-code table, not 1 (integrity)
    assert checks[EDGETAM_REPO]["status"] == "fail" and "provision fetch" in checks[EDGETAM_REPO]["fix"]
    assert checks[BACKBONE_REPO]["status"] == "warn"  # transformers >= 5.24 does not need it


def test_missing_backbone_with_older_transformers_is_a_failure(clean_env, tmp_path, monkeypatch):
    versions = {**doctor.library_versions(), "transformers": "4.57.6"}
    monkeypatch.setattr(doctor, "library_versions", lambda: versions)
    cache = tmp_path / "only-edgetam"
    install_into_cache(cache, EDGETAM_REPO, {"config.json": b"{}"})
    res = run_cli("doctor", "--cache-dir", cache, "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert res.exit_code == 7 and checks[BACKBONE_REPO]["status"] == "fail"


def test_known_bad_transformers_is_named(clean_env, monkeypatch):
    versions = {**doctor.library_versions(), "transformers": "5.17.0"}
    monkeypatch.setattr(doctor, "library_versions", lambda: versions)
    code, checks = run_doctor(clean_env)
    assert code == 8 and "cannot run EdgeTAM" in checks["transformers"]["detail"]


def test_missing_ca_bundle_and_proxy_are_reported(clean_env, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example:3128")
    res = run_cli("doctor", "--cache-dir", clean_env["cache"], "--json")
    assert "secret" not in res.stdout
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["CA bundle"]["status"] == "fail" and "proxy.example" in checks["proxy"]["detail"]


def test_human_output_has_fixes_and_a_summary(clean_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    res = run_cli("doctor", "--cache-dir", clean_env["cache"])
    assert TOKEN not in res.stdout and "fix:" in res.stdout and "warnings" in res.stdout
    assert os.environ["HF_TOKEN"] == TOKEN


SOURCES = {"env": ("HF_TOKEN", "hf_EnvStaleAAAA1111"),
           "legacy": ("HUGGING_FACE_HUB_TOKEN", "hf_LegacyBBBB2222"),
           "file": (None, "hf_FileStaleCCCC3333")}


@pytest.mark.parametrize("pair", [("env", "legacy"), ("env", "file"), ("legacy", "file")])
def test_every_stale_source_is_shown_the_shadowed_ones_too(clean_env, monkeypatch, pair):
    from huggingface_hub import get_token

    for name in pair:
        var, value = SOURCES[name]
        if var:
            monkeypatch.setenv(var, value)
        else:
            (clean_env["home"] / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
            (clean_env["home"] / ".cache" / "huggingface" / "token").write_text(value)
    res = run_cli("doctor", "--cache-dir", clean_env["cache"], "--json")
    checks = json.loads(res.stdout)["checks"]
    first, second = (SOURCES[n][1] for n in pair)
    sent = next(c for c in checks if c["name"] == "credentials")
    shadowed = [c for c in checks if c["name"] == "credentials (shadowed)"]
    assert doctor.mask(first) in sent["detail"] and len(shadowed) == 1
    assert doctor.mask(second) in shadowed[0]["detail"] and "would be sent next" in shadowed[0]["detail"]
    assert first not in res.stdout and second not in res.stdout  # masked only
    assert get_token() == first  # huggingface_hub agrees which one is sent ...
    assert not any(c["name"] == "credentials (cross-check)" for c in checks)  # ... and so does the check


def test_a_shadowed_stale_token_file_is_probed_too(clean_env, monkeypatch):
    """$HF_TOKEN is sent first and is fine; the token file behind it is stale: it is named, since it
    is what the next run sends once $HF_TOKEN is unset."""
    clean_env["hub"].accepted_tokens = {"hf_GoodTokenAcceptedByTheHub00001"}
    monkeypatch.setenv("HF_TOKEN", "hf_GoodTokenAcceptedByTheHub00001")
    hf_home = clean_env["home"] / ".cache" / "huggingface"
    hf_home.mkdir(parents=True)
    (hf_home / "token").write_text(TOKEN)
    try:
        _code, checks = run_doctor(clean_env, "--online")
    finally:
        clean_env["hub"].accepted_tokens = set()
    assert checks["online: token"]["status"] == "ok"
    shadowed = next(c for n, c in checks.items() if n.startswith("online: shadowed token-file"))
    assert shadowed["status"] == "warn" and "rejected with 401" in shadowed["detail"]


def test_a_mirror_without_the_probed_repo_is_told_apart_from_an_unreachable_one(clean_env):
    code, checks = run_doctor(clean_env, "--online", "--repo", "org/not-on-this-mirror")
    anon = checks["online: anonymous"]
    assert code == 16 and "404" in anon["detail"] and "--repo" in anon["fix"]
    assert "does not serve the model to anyone" not in anon["detail"] + anon["fix"]


def test_a_plain_doctor_with_a_token_says_it_was_not_tested(clean_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    res = run_cli("doctor", "--cache-dir", clean_env["cache"])
    assert "not tested: `provision doctor --online`" in res.stdout


@given(st.lists(st.tuples(st.sampled_from(["ok", "warn", "fail"]), st.sampled_from(doctor.EXIT_ORDER)),
                max_size=8))
def test_doctor_exits_with_the_tables_code_of_the_first_kind_that_fails(found):
    """One rule: 0 when nothing fails, else the code of the earliest kind in EXIT_ORDER that fails
    (a blocked download before the cache, the libraries, and the missing model it causes)."""
    checks = [doctor.Check("c", status, "", "", kind.exit_code if status == "fail" else 0)
              for status, kind in found]
    failing = [kind for status, kind in found if status == "fail"]
    code = doctor.exit_code(checks)
    assert code == (min(failing, key=doctor.EXIT_ORDER.index).exit_code if failing else 0)
    assert code in EXIT_CODES


def test_an_empty_cache_offline_exits_with_the_cause_not_the_symptom(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("doctor", "--cache-dir", tmp_path / "empty", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks[EDGETAM_REPO]["exit_code"] == 7 and checks["offline"]["exit_code"] == 16
    assert res.exit_code == 16


def test_bytes_in_netrc_that_are_not_utf8_are_a_finding_and_downloads_still_work(clean_env, tmp_path):
    netrc = clean_env["home"] / ".netrc"
    netrc.write_bytes(b"machine example.org login me password caf\xe9\n")
    netrc.chmod(0o600)
    for args in ((), ("--online",)):
        code, checks = run_doctor(clean_env, *args)
        assert code == 0, checks
        assert checks["netrc"]["status"] == "warn" and "not UTF-8 text (byte 0xe9 at offset 41)" in \
            checks["netrc"]["detail"]
    res = run_cli("doctor", "--fix", "--yes", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["changes"] == []
    assert netrc.read_bytes() == b"machine example.org login me password caf\xe9\n"
    code = ("import sys; from huggingface_hub import hf_hub_download;"
            f"print(hf_hub_download({EDGETAM_REPO!r}, 'config.json', cache_dir=sys.argv[1]))")
    dl = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dl")], capture_output=True, text=True)
    assert dl.returncode == 0, dl.stderr  # huggingface_hub itself downloads fine
