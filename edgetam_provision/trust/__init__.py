"""The trust room: what may be kept of what arrives, and the checks that decide it.

- `accept`: the one acceptance rule (docs/accepted.md): what is kept is exactly what was asked,
  bounded in size, count and time by what was declared before the first byte.
- `hub_listing`: the Hub's own listing of a revision, asked from this machine without credentials,
  that an archive must equal where the endpoint answers.
- `hub_check`: an archive's manifest entry against that listing, for fetch and `check --hub`.

It stands beside `integrity/` (bytes against their hashes, free space, the hashed part), above the
archive reader and the cache it judges.
"""
