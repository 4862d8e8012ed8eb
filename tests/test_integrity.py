"""The integrity room: a file and a blob hashed against their names, free space asked before the
first byte, and the resumable hashed part that all three byte paths (the agent's channel, OpenSSH's
ranges, the live stream) receive into."""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetam_provision.errors import CacheError, IntegrityError
from edgetam_provision.fetch.openssh import _pull_ranges
from edgetam_provision.fetch.pull import LiveArchive, pull
from edgetam_provision.hub.layout import blob_name
from edgetam_provision.integrity.hashing import blob_matches, blob_names, git_tree_id, sha256_file
from edgetam_provision.integrity.receive import Part
from edgetam_provision.integrity.space import ensure_space, nearest_existing

FLAG = "--"
tmp_dirs = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def announced(name: str, data: bytes) -> SimpleNamespace:
    return SimpleNamespace(archive=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def agent_source(data: bytes, sent: list[int], spoil: int = 0):
    """The agent's ``send``: from the offset asked when our prefix is its own, else from 0; the
    first `spoil` answers have one byte flipped."""

    def fetch_from(offset: int, prefix_sha256: str):
        start = offset if hashlib.sha256(data[:offset]).hexdigest() == prefix_sha256 else 0
        body = bytearray(data[start:])
        if len(sent) < spoil and body:
            body[0] ^= 1
        sent.append(start)
        return start, iter([bytes(body[i:i + 4096]) for i in range(0, len(body), 4096)])

    return fetch_from


@given(data=st.binary(min_size=1, max_size=20_000), lfs=st.booleans())
def test_a_file_hashes_to_its_blob_name_and_to_nothing_else(tmp_path_factory, data, lfs):
    path = tmp_path_factory.mktemp("blob") / "b"
    path.write_bytes(data)
    name = blob_name(data, lfs)
    assert blob_matches(path, name)
    assert name in blob_names(path) and sha256_file(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    assert not blob_matches(path, name)


def test_git_tree_ids_are_gits():
    assert git_tree_id(b"") == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        sha256_file(fifo)  # refused at once, never a read that waits for a writer


@tmp_dirs
@given(data=st.binary(min_size=1, max_size=50_000), cut=st.floats(0, 1))
def test_a_cut_channel_pull_resumes_from_the_exact_byte(tmp_path_factory, data, cut):
    out = tmp_path_factory.mktemp("out")
    kept = int(len(data) * cut)
    (out / "a.tar.part").write_bytes(data[:kept])
    sent: list[int] = []
    assert pull(agent_source(data, sent), announced("a.tar", data), out, False).resumed == kept
    assert sent == [kept] and (out / "a.tar").read_bytes() == data and not (out / "a.tar.part").exists()


@pytest.mark.parametrize("part", [b"garbage" * 10, b"x" * 100_000])  # not a prefix; longer than the archive
def test_a_part_that_proves_nothing_is_received_again_from_the_start(tmp_path, part):
    data = os.urandom(70_000)
    (tmp_path / "a.tar.part").write_bytes(part)
    sent: list[int] = []
    assert pull(agent_source(data, sent), announced("a.tar", data), tmp_path, False).resumed == 0
    assert sent == [0] and (tmp_path / "a.tar").read_bytes() == data


def test_bytes_that_are_not_the_hosts_are_never_kept(tmp_path):
    data = os.urandom(10_000)
    sent: list[int] = []
    assert pull(agent_source(data, sent, spoil=1), announced("a.tar", data), tmp_path, False).resumed == 0
    assert sent == [0, 0] and (tmp_path / "a.tar").read_bytes() == data  # dropped, pulled once more
    with pytest.raises(IntegrityError, match="do not match"):
        pull(agent_source(data, [], spoil=2), announced("b.tar", data), tmp_path, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def test_a_live_stream_cut_at_80_percent_resumes_on_the_channel_from_there(tmp_path):
    data = os.urandom(100_000)
    live = LiveArchive(tmp_path, "a.tar", len(data))
    live.add(iter([data[:80_000]]))
    live.close()  # the connection died: the part is a prefix
    sent: list[int] = []
    assert pull(agent_source(data, sent), announced("a.tar", data), tmp_path, False).resumed == 80_000
    assert sent == [80_000] and (tmp_path / "a.tar").read_bytes() == data


def test_a_live_stream_is_kept_only_when_size_and_sha256_are_the_hosts(tmp_path):
    data = os.urandom(5_000)
    for size, sha, kept in [(len(data), hashlib.sha256(data).hexdigest(), True),
                            (len(data) + 1, hashlib.sha256(data).hexdigest(), False),
                            (len(data), "0" * 64, False)]:
        live = LiveArchive(tmp_path, "a.tar", size)
        live.add(iter([data]))
        assert (live.finish(size, sha) is not None) is kept
        assert (tmp_path / "a.tar").exists() is kept and not (tmp_path / "a.tar.part").exists()
        (tmp_path / "a.tar").unlink(missing_ok=True)


LOCAL_SSH = ["sh", "-c", 'eval "$1"', "sh"]  # runs the range command here, as ssh runs it on the host


def test_a_ranged_part_and_ledger_from_the_previous_version_resume_the_missing_range(tmp_path):
    """The files as the earlier `fetch/openssh.py` wrote them: the part at full size and
    ``NAME.part.ranges`` (sha256, size, ranges, done)."""
    data = os.urandom(300_001)
    src = tmp_path / "host.tar"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    step = -(-len(data) // 3)
    ranges = [[0, step], [step, 2 * step], [2 * step, len(data)]]
    (out / "a.tar.part").write_bytes(data[:2 * step] + bytes(len(data) - 2 * step))
    event = announced("a.tar", data)
    (out / "a.tar.part.ranges").write_text(json.dumps({"sha256": event.sha256, "size": len(data),
                                                       "ranges": ranges, "done": ranges[:2]}))
    assert _pull_ranges(LOCAL_SSH, str(src), event, out, False, 3, "host").resumed == 2 * step
    assert (out / "a.tar").read_bytes() == data and sorted(p.name for p in out.iterdir()) == ["a.tar"]


def test_a_ledger_of_another_archive_proves_nothing(tmp_path):
    data = os.urandom(90_000)
    src = tmp_path / "host.tar"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.tar.part").write_bytes(bytes(len(data)))  # zeros, "done" by another archive's ledger
    (out / "a.tar.part.ranges").write_text(json.dumps({"sha256": "0" * 64, "size": len(data),
                                                       "ranges": [[0, len(data)]], "done": [[0, len(data)]]}))
    assert _pull_ranges(LOCAL_SSH, str(src), announced("a.tar", data), out, False, 1, "host").resumed == 0
    assert (out / "a.tar").read_bytes() == data


def test_a_ranged_part_whose_bytes_are_not_the_hosts_is_removed_with_its_ledger(tmp_path):
    src = tmp_path / "host.tar"
    src.write_bytes(os.urandom(50_000))
    event = SimpleNamespace(archive="a.tar", size=50_000, sha256="0" * 64)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match="do not match"):
        _pull_ranges(LOCAL_SSH, str(src), event, out, False, 2, "host")
    assert list(out.iterdir()) == []


def test_what_a_part_holds_and_proves(tmp_path):
    part = Part(tmp_path, "a.tar", 10, "0" * 64)
    assert part.held() == 0 and part.prefix()[0] == 0 and not part.in_order()
    part.path.write_bytes(b"12345")
    assert part.held() == 5 and part.in_order()
    assert part.prefix()[1].hexdigest() == hashlib.sha256(b"12345").hexdigest()
    part.ledger.write_text("{}")
    assert not part.in_order()  # a ranged part: its ledger, not its length, says what it holds


def test_free_space_is_asked_before_writing_in_the_librarys_words(tmp_path):
    later = tmp_path / "not" / "made" / "yet"
    assert nearest_existing(later) == tmp_path
    ensure_space(later, 1, "a.tar")  # measured where it will be made
    with pytest.raises(CacheError) as err:
        ensure_space(later, 1 << 62, "a.tar", folder_words="cache folder", kept="nothing was written")
    assert "a.tar needs" in err.value.message and "another cache folder" in err.value.hint
    assert FLAG not in err.value.message + err.value.hint and not later.exists()
