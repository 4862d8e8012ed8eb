"""Download on a clean host and pull the archives back: run (entry), client (the agent protocol),
agent (shipped to the host), ssh (the one SSH seam), pull and openssh (the byte paths)."""
