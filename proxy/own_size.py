"""Bytes that outlive the request get a copy of their own size.

A bytes object fresh from `orjson.dumps` keeps orjson's whole output buffer (from orjson 3.12 on:
4 KiB for a few hundred bytes, 8.3 MB for a 1 MB body). What is stored (cache entries, compiled
schemas) or held while written and retried (rewritten bodies) is copied to its own size.
"""

from __future__ import annotations


def own_size(data: bytes) -> bytes:
    """A copy holding only `data`'s bytes (a plain `bytes(data)` would return `data` itself)."""
    return bytes(memoryview(data))
