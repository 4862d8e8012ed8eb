"""Tar archives of cache folders: packing (pack), the hostile-input reader (untrusted), compression."""
