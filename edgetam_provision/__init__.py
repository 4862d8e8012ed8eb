"""edgetam-provision: get Hugging Face models onto a machine when the direct download fails,
and prove the install works."""

__version__ = "0.1.0"
