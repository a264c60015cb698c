"""Memory that large request bodies take is given back to the system after a burst.

A request holds its body about three times at its peak (aiohttp's chunks while they are
joined, the bytes, the parsed JSON's strings: docs/forwarding.md). glibc keeps freed heap
pages that are not at the top of the heap (aiohttp's 64 KiB chunks of a body are spread
through it), so without a trim a burst of large prompts stays in the process's RSS.
Other C libraries are left alone.

glibc also gives each thread that allocates (the ledger and log writers, `asyncio.to_thread`'s
workers) a malloc arena of its own, up to 8 per core, each with its own free pages; `serve`
caps them at MALLOC_ARENAS unless MALLOC_ARENA_MAX is set in the environment.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os

LARGE_BUFFER_BYTES = 1 << 20  # bodies from this size on are followed by a trim
TRIM_AFTER_S = 1.0
MALLOC_ARENAS = 2  # about 1 MB less resident under load than glibc's default, at the same CPU per request
_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc


_LIBC = _libc()


def limit_arenas() -> None:
    """At process start, before threads allocate: MALLOC_ARENAS arenas, unless MALLOC_ARENA_MAX says otherwise."""
    if _LIBC is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _LIBC.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


class HeapTrimmer:
    """Once large bodies are done, the heap's free pages go back to the system, at most once per second."""

    def __init__(self) -> None:
        self._pending: asyncio.TimerHandle | None = None

    def body_done(self, size: int) -> None:
        if _LIBC is None or size < LARGE_BUFFER_BYTES or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(TRIM_AFTER_S, self._trim)

    def _trim(self) -> None:
        self._pending = None
        assert _LIBC is not None
        _LIBC.malloc_trim(0)
