"""Genuine backups and what an attacker makes of them: one builder, one list of transformations.

`genuine_backup` packs org/tiny with `provision backup` (its archive, members and manifest entry).
`Hostile` turns it into an archive that must be refused, or restored exactly as declared: extra
repos, refs and snapshots, missing files, header sizes that lie, long and unservable names, small
bombs, every compression; `hostile_backups` is the Hypothesis strategy over them.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard
from hypothesis import strategies as st

from edgetam_provision.backup import backup
from edgetam_provision.hub.cache import read_ref
from edgetam_provision.hub.layout import snapshot_link
from edgetam_provision.repos import RepoSpec

R = "models--org--tiny"
PLANTED = "models--yonigozlan--EdgeTAM-hf"
COMPRESSIONS = {"none": lambda b: b, "gzip": lambda b: gzip.compress(b, 1),
                "zstd": lambda b: zstandard.ZstdCompressor(level=1).compress(b),
                "bz2": lambda b: bz2.compress(b, 1), "xz": lambda b: lzma.compress(b, preset=0)}
Member = tuple[tarfile.TarInfo, "bytes | None"]


@dataclass(frozen=True)
class Genuine:
    archive: Path
    members: list[Member]
    entry: dict  # its manifest entry, as manifest.json holds it
    commit: str

    @property
    def blobs(self) -> dict[str, str]:
        """path -> blob of the declared files."""
        return {f["path"]: f["blob"] for f in self.entry["files"]}


def genuine_backup(cache: Path, out: Path) -> Genuine:
    """org/tiny's archive, made by `provision backup` from a cache huggingface_hub filled."""
    [result] = backup(cache, [RepoSpec("org/tiny")], out)
    with tarfile.open(result.archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    entry = json.loads((out / "manifest.json").read_text())["archives"][result.archive.name]
    return Genuine(result.archive, members, entry, read_ref(cache / R))


def reg(name: str, data: bytes) -> Member:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    return ti, data


def link(name: str, target: str) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o755
    return ti, None


def tar_bytes(members: list[Member], tail: bytes = b"") -> bytes:
    """A PAX tar of the members; `tail` is raw bytes (headers that lie) put before the end marker."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        body = tar.offset
    raw = buf.getvalue()
    return raw[:body] + tail + raw[body:]


def lying_header(name: str, size: int, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A member header claiming `size` bytes, followed by a few bytes only."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    return ti.tobuf(fmt, "utf-8", "surrogateescape") + b"x" * 1024


def long_name_header(size: int) -> bytes:
    """A GNU long-name header of `size` bytes (zeros), then a member it names."""
    ti = tarfile.TarInfo("././@LongLink")
    ti.type, ti.size = tarfile.GNUTYPE_LONGNAME, size
    pad = -size % tarfile.BLOCKSIZE
    named = tarfile.TarInfo("x").tobuf(tarfile.GNU_FORMAT)
    return ti.tobuf(tarfile.GNU_FORMAT) + b"\0" * (size + pad) + named


class Hostile:
    """Transformations of a genuine backup's members: name -> (members, raw tail, the verdict the
    rule must give with the genuine manifest: True = restored exactly, False = refused)."""

    def __init__(self, g: Genuine) -> None:
        self.g = g
        self.snap = f"{R}/snapshots/{g.commit}"

    def members(self, kind: str) -> tuple[list[Member], bytes, bool]:
        return getattr(self, kind.replace("-", "_"))()

    def _ms(self) -> list[Member]:
        return list(self.g.members)

    def _plus(self, *extra: Member) -> tuple[list[Member], bytes, bool]:
        """The genuine members and `extra`: more than was declared, refused."""
        return [*self._ms(), *extra], b"", False

    def _file(self, path: str, blob_of: str = "config.json", commit: str | None = None) -> Member:
        """A snapshot link at `path` to the blob of a declared file."""
        blob = self.g.blobs[blob_of]
        return link(f"{R}/snapshots/{commit or self.g.commit}/{path}", snapshot_link(path, blob))

    def genuine(self):
        return self._ms(), b"", True

    def reordered(self):  # the same members in another order
        return self._ms()[::-1], b"", True

    def planted_repo(self):
        """Another repo with its own ref, reusing a listed blob so that every size fits."""
        blob = self.g.blobs["config.json"]
        data = next(d for m, d in self.g.members if m.name.endswith(blob))
        c = "b" * 40
        return self._plus(reg(f"{PLANTED}/blobs/{blob}", data),
                          link(f"{PLANTED}/snapshots/{c}/config.json", snapshot_link("config.json", blob)),
                          reg(f"{PLANTED}/refs/main", c.encode()))

    def ref_moved(self):
        """refs/main moved to an unannounced commit whose config.json is the weights."""
        other = "c" * 40
        ms = [(m, d) for m, d in self._ms() if not m.name.endswith("/refs/main")]
        return [*ms, self._file("config.json", "model.safetensors", other),
                reg(f"{R}/refs/main", other.encode())], b"", False

    def extra_snapshot(self):
        return self._plus(self._file("config.json", commit="d" * 40))

    def extra_ref(self):
        return self._plus(reg(f"{R}/refs/dev", self.g.commit.encode()))

    def extra_file(self):
        return self._plus(self._file("extra.json"))

    def missing_file(self):
        return [(m, d) for m, d in self._ms() if not m.name.endswith("/sub/notes.txt")], b"", False

    def extra_blob(self):
        data = b"not used by any file\n"
        return self._plus(reg(f"{R}/blobs/{hashlib.sha256(data).hexdigest()}", data))

    def size_lie_62(self):
        return self._ms(), lying_header(f"{R}/blobs/{'ab' * 32}", 2**62), False

    def size_lie_80(self):
        return self._ms(), lying_header(f"{R}/blobs/{'ab' * 32}", 2**80, tarfile.GNU_FORMAT), False

    def long_name_bomb(self):
        return self._ms(), long_name_header(2 * 1024 * 1024), False

    def name_250_bytes(self):
        return self._plus(self._file("n" * 245 + ".json"))

    def unservable_name(self):
        return self._plus(self._file("a\u2028b.json"))


KINDS = ["genuine", "reordered", "planted-repo", "ref-moved", "extra-snapshot", "extra-ref", "extra-file",
         "missing-file", "extra-blob", "size-lie-62", "size-lie-80", "long-name-bomb", "name-250-bytes",
         "unservable-name"]
#: what a backup without a manifest may still hold (it declares only itself): consistent extras
HANDMADE_MAY = {"genuine", "reordered", "planted-repo", "ref-moved", "extra-snapshot", "extra-ref",
                "extra-file", "extra-blob", "name-250-bytes"}


@dataclass(frozen=True)
class HostileBackup:
    kind: str
    compression: str
    with_manifest: bool
    damage: tuple[str, int] | None  # ("flip", offset) or ("cut", length) of the compressed bytes

    def write(self, g: Genuine, folder: Path) -> tuple[Path, bool | None]:
        """Write the archive (and the genuine manifest entry, its sha256 and size those of these
        bytes, as a host announcing them would) into `folder`. Returns the archive and whether it
        must be restored (True), refused (False), or either (None: damage that may land in padding)."""
        members, tail, declared_ok = Hostile(g).members(self.kind)
        raw = bytearray(COMPRESSIONS[self.compression](tar_bytes(members, tail)))
        if self.damage:
            how, at = self.damage
            if how == "flip":
                raw[at % len(raw)] ^= 0x10
            else:
                raw = raw[:at % len(raw)]
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / ("x.tar" + {"none": "", "gzip": ".gz", "zstd": ".zst", "bz2": ".bz2",
                                       "xz": ".xz"}[self.compression])
        archive.write_bytes(bytes(raw))
        if self.with_manifest:
            entry = {**g.entry, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
            (folder / "manifest.json").write_text(json.dumps({"format": "edgetam-provision/1",
                                                              "archives": {archive.name: entry}}))
        may = declared_ok if self.with_manifest else self.kind in HANDMADE_MAY
        return archive, (None if may and self.damage else may)


def hostile_backups() -> st.SearchStrategy[HostileBackup]:
    damage = st.one_of(st.none(), st.tuples(st.sampled_from(["flip", "cut"]), st.integers(0, 1 << 20)))
    return st.builds(HostileBackup, st.sampled_from(KINDS), st.sampled_from(sorted(COMPRESSIONS)),
                     st.booleans(), damage)
