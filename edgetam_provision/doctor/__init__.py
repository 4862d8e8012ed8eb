"""Why downloads fail here: checks (every credential source, netrc, endpoint, cache, libraries,
devices; online probes), and fix (put the credentials the Hub rejects aside, with a way back)."""
