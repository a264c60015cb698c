"""One cached answer, as it is kept in memory or in Redis: the response body and what accounting needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

FORMAT = 1  # bumped when the layout changes: older entries then read as misses


@dataclass(frozen=True, slots=True)
class Entry:
    """`body` is the whole (non-streamed) response body; a stored stream was assembled into one.

    `scope` is checked again on every read, so an entry can only ever be served in the scope
    that stored it, whatever the key. `usage` holds the token counts by kind, for the ledger
    and for the cost a hit saved.
    """

    body: dict[str, Any]
    model: str | None
    usage: dict[str, int]
    scope: str
    expires_at: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": FORMAT, "body": self.body, "model": self.model, "usage": self.usage, "scope": self.scope,
             "expires_at": self.expires_at}
        )  # fmt: skip

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """None for anything that is not an entry of this format (an older proxy's, or damaged)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("v") != FORMAT or not isinstance(data.get("body"), dict):
            return None
        usage = data.get("usage")
        model, scope, expires_at = data.get("model"), data.get("scope"), data.get("expires_at")
        if not isinstance(scope, str) or not isinstance(expires_at, int | float) or not isinstance(usage, dict):
            return None
        counts = {name: value for name, value in usage.items() if isinstance(value, int) and value >= 0}
        return cls(data["body"], model if isinstance(model, str) else None, counts, scope, float(expires_at))
