"""Restore backups into the cache: plan (types), read (hash and stage), publish (atomic, proved), run."""
