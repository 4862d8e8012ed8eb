"""Download on a clean host and pull the archives back: run (entry), request, client (the agent
protocol's client side), protocol (the table and the checked reader), agent and live (run on the
host; shipped lists them), ssh (the one SSH seam), pull and openssh (the byte paths)."""
