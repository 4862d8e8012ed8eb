"""What runs on the fetch host: these modules' source, glued in this order into one program.

They must stay standard-library only (huggingface_hub is imported inside the agent, on the host):
a test parses each of them and checks every import. Each imports the ones before it inside
``contextlib.suppress(ImportError)``; glued, the names are already in the program's namespace.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
SHIPPED = ("hub/layout.py", "archive/pack.py", "fetch/live.py", "fetch/agent.py")  # relative to the package
FUTURE = "from __future__ import annotations\n"


def agent_program() -> bytes:
    """The shipped modules as one program (one `from __future__` line, at the top)."""
    sources = [(PACKAGE / name).read_text().replace(FUTURE, "") for name in SHIPPED]
    return (FUTURE + "\n\n".join(sources)).encode()
