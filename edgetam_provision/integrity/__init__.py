"""The integrity room: bytes held to their names, below everything that keeps bytes.

- `hashing`: a file's sha256, a blob against its name (sha256 or git sha1), git tree ids; one read
  loop, regular files only.
- `space`: whether a write fits the disk, said before the first byte.
- `receive`: the resumable hashed ``NAME.part``: what a part proves when resumed, and when it
  becomes the archive (its sha256 equals the host's, then one rename).

What may be kept of what arrives (the acceptance rule) is `trust/`, beside it.
"""
