"""The vectors embedders give: float32, unit length (so a dot product is the cosine similarity)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def unit(vector: npt.ArrayLike) -> Vector | None:
    """`vector` scaled to length 1, or None if it has no direction or is not finite."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    if array.size == 0 or not np.isfinite(norm) or norm == 0.0:
        return None
    return array / norm
