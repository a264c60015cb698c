"""Static keys, listed in the policy by SHA-256 hash only.

A presented key is hashed and compared in constant time against every stored hash, so
neither timing nor an early exit tells which stored key came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from proxy.auth.config import StaticKey
from proxy.exchange import Caller


def sha256_hex(key: str) -> str:
    """Undecodable header bytes arrive as surrogate escapes and hash as those bytes; no input raises."""
    try:
        raw = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates outside the escape range
        raw = key.encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()


class StaticKeyVerifier:
    """Keys listed in the policy by hash."""

    def __init__(self, keys: Sequence[StaticKey], profiles: Mapping[str, object]):
        self._keys = [
            (
                key.sha256,
                Caller(
                    name=key.caller,
                    key_id=key.id or key.sha256[:8],
                    scopes=frozenset(key.scopes),
                    profile=key.caller if key.caller in profiles else "default",
                ),
            )
            for key in keys
        ]

    def verify(self, credential: str) -> Caller | None:
        digest = sha256_hex(credential)
        found: Caller | None = None
        for stored, caller in self._keys:
            if hmac.compare_digest(stored, digest):
                found = caller
        return found
