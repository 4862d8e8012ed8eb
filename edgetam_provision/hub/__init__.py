"""The Hugging Face cache: its grammar (layout, defined in `remote.layout`), what a cache holds
(cache), backups' manifests."""
