"""The deadlines a fetch runs under: the CLI's defaults, in a module that costs nothing to import
(`provision --help` needs them, and must not import the SSH or cache code)."""

TIMEOUT_S = 30.0  # connecting, and every silent stretch after it (`fetch --timeout`)
STALL_S = 600.0  # a host download that makes no progress this long is given up (`fetch --stall`)
