"""The verified cache as a read-only Hub endpoint: app (the ASGI app), run (start, state file)."""
