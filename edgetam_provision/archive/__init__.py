"""Tar archives of cache folders: the hostile-input reader (untrusted), what it found (contents),
tar_io, compression; the packer is `remote.pack`, which the fetch host runs too."""
