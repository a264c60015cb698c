"""`auth.revoked`: key ids refused from now on, whatever characters a JWT's `jti` holds.

Key ids are what logs show. A minted key's id and a static key's id are policy names; a JWT's
`jti` is any string its issuer chose (base64 ids with `+`, `/` and `=` are common), so a `jti`
that is not a safe log token is shown and matched as `jti-` + 16 hex digits of its SHA-256.
An entry may list either form: the raw `jti` as the issuer wrote it, or the id from a log line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from proxy.auth.config import AuthConfig

SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def jti_key_id(jti: str) -> str:
    """The key id of a JWT with this `jti`: itself when it is a safe token, else a short hash of it."""
    if SAFE_ID.fullmatch(jti):
        return jti
    return "jti-" + hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def revoked_ids(entries: Iterable[str]) -> frozenset[str]:
    """Every entry as listed, and as the key id a `jti` equal to it would have."""
    ids: set[str] = set()
    for entry in entries:
        ids.add(entry)
        ids.add(jti_key_id(entry))
    return frozenset(ids)


def unmatchable(auth: AuthConfig) -> list[str]:
    """Warnings for entries no configured verifier can ever produce; they are shown by index, never echoed."""
    if auth.jwt is not None:  # a jti may be any string: every entry can match some token
        return []
    static_ids = {key.id or key.sha256[:8] for key in auth.static_keys}
    warnings = []
    for index, entry in enumerate(auth.revoked):
        if entry in static_ids or (auth.hmac_keys and _NAME.fullmatch(entry)):
            continue
        why = "no static key has this id" + ("" if auth.hmac_keys else ", and no hmac_keys or jwt are configured")
        if not _NAME.fullmatch(entry):
            why = "it is not a key id of a static or minted key, and no jwt is configured"
        warnings.append(f"auth.revoked[{index}] ({len(entry)} characters) can never match: {why}")
    return warnings
