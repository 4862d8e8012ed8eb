"""`python -m edgetam_provision` = `provision`."""

from .cli import main

main()
