"""Static keys, listed in the policy by SHA-256 hash only.

A presented key is hashed and its SHA-256 looked up in a dict, so a request costs the same
with 10 keys or 10,000. The lookup's timing can tell a caller something about the hash of
the key it sent, never about a stored key: steering a hash towards a stored one is a
preimage search, which SHA-256 rules out.
"""

from __future__ import annotations

import hashlib
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
        self._by_hash = {
            key.sha256: Caller(
                name=key.caller,
                key_id=key.id or key.sha256[:8],
                scopes=frozenset(key.scopes),
                profile=key.caller if key.caller in profiles else "default",
            )
            for key in keys
        }

    def verify(self, credential: str) -> Caller | None:
        return self._by_hash.get(sha256_hex(credential))
