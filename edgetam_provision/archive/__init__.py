"""Tar archives of cache folders: the hostile-input reader (untrusted), what it found (contents),
the bytes of its data members (data), tar_io, compression; the packer is `remote.pack`, which the
fetch host runs too."""
