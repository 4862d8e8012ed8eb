"""The Hugging Face cache: its grammar (layout), what a cache holds (cache), backups' manifests."""
