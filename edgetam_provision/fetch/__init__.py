"""Download on a clean host and pull the archives back: run (entry), request, client (the agent
protocol's client side), protocol (the table and the checked reader), shipped (sends `remote/`, the
code that runs on the host), ssh (the one SSH seam), pull and openssh (the byte paths)."""
