"""reportsync: fetch encrypted broker statements exactly once, decrypt and archive them."""

__version__ = "0.1.0"
