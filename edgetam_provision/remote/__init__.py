"""What runs on the fetch host: agent (the program), channel (events out, commands in, the send
loop), environment (credentials cleaned, huggingface_hub found or installed), download (the Hub
through huggingface_hub), live (packing while it downloads), pack (the archive's format) and
layout (the cache's grammar). The client imports pack and layout from here too: one definition,
the same bytes on both ends.

The contract of this package, held by tests/test_shipped.py:

- it runs on Python 3.8 and newer (``PYTHON_MIN``): hosts' system Pythons (Ubuntu 20.04's 3.8,
  macOS's 3.9, Debian 12's 3.11.2), so no syntax or library newer than 3.8;
- it imports the standard library only, and huggingface_hub on the host (``HOST_LIBRARIES``);
- its modules import each other relatively (``from .layout import ...``) and nothing else of
  edgetam_provision.

`fetch/shipped.py` sends it as a zip on every run, and a fixed bootstrap runs ``agent.main``.
This file itself parses on any Python 3, so that an older one says what it lacks.
"""

import sys

PYTHON_MIN = (3, 8)
HOST_LIBRARIES = ("huggingface_hub",)

if sys.version_info < PYTHON_MIN:
    raise SystemExit("the provision agent needs Python {}.{} or newer; this is {}".format(  # noqa: UP032 - any Python 3
        PYTHON_MIN[0], PYTHON_MIN[1], sys.version.split()[0]))
