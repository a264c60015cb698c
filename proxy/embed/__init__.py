"""Text embedders for the semantic cache: the built-in local model, or an OpenAI-compatible upstream.

Both give unit-length float32 vectors, or None when they cannot: a failed embedding means
"no semantic hit", never an error to the caller.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    name: str

    async def embed(self, text: str) -> Vector | None:
        """The unit-length vector of `text`, or None when it cannot be had (logged by the embedder)."""
        ...


def unit(vector: npt.ArrayLike) -> Vector | None:
    """`vector` scaled to length 1, or None if it has no direction or is not finite."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    if array.size == 0 or not np.isfinite(norm) or norm == 0.0:
        return None
    return array / norm
