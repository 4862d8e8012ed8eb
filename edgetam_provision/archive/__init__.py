"""Tar archives of cache folders: the hostile-input reader (untrusted), tar_io, compression; the
packer is `remote.pack`, which the fetch host runs too."""
