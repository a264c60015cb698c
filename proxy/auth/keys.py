"""HMAC-signed API keys: minted offline, verified statelessly.

Format: `apk_` + base64url(payload JSON) + `.` + base64url(HMAC-SHA256(secret, "apk_" + payload_b64)),
without padding. The payload carries everything (caller, scopes, expiry, the key's own
id, and `kid`, the id of the secret that signed it), so the caller name may contain any
separator: the key splits on its only `.`, which base64url never produces. The MAC covers
the exact text of the payload, so any changed character is refused. `kid` must be read
before the MAC can be checked; that parse is bounded and never trusted beyond picking
the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.auth.config import HmacKey
from proxy.auth.refusals import Refused
from proxy.policy.base import NAME_PATTERN

PREFIX = "apk_"
VERSION = 1
MAX_KEY_LENGTH = 4096
MAX_CALLER_LENGTH = 128
MAX_TTL_S = 3650 * 86400
_KEY = re.compile(r"apk_([A-Za-z0-9_-]{4,4000})\.([A-Za-z0-9_-]{43})")
_SCOPE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_KID = re.compile(NAME_PATTERN)
_TTL = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class KeyClaims:
    """What a key says about itself; trusted only once `HmacKeyVerifier.verify` returned it."""

    kid: str
    key_id: str
    caller: str
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "kid": self.kid,
            "id": self.key_id,
            "sub": self.caller,
            "scopes": list(self.scopes),
            "iat": self.issued_at,
            "exp": self.expires_at,
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()


def valid_caller_name(name: str) -> bool:
    return 0 < len(name) <= MAX_CALLER_LENGTH and name.isprintable()


def parse_ttl(text: str) -> int:
    """`90s`, `30m`, `24h`, `30d`, `2w` as seconds."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 30d, 2w)")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise ValueError("a key's lifetime must be between 1 second and 3650 days")
    return seconds


def mint(
    kid: str,
    secret: str | bytes,
    caller: str,
    scopes: Iterable[str] = (),
    ttl_s: int = 30 * 86400,
    *,
    now: float | None = None,
    key_id: str | None = None,
) -> str:
    """A new key for `caller`, signed with the secret named `kid`."""
    if not valid_caller_name(caller):
        raise ValueError(f"a caller name is 1 to {MAX_CALLER_LENGTH} printable characters")
    scopes = tuple(dict.fromkeys(scopes))
    if len(scopes) > 64 or not all(_SCOPE.fullmatch(scope) for scope in scopes):
        raise ValueError("scopes are at most 64 names of letters, digits and _ . : / -")
    if not _KID.fullmatch(kid):
        raise ValueError("invalid key id")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError("a key's lifetime must be between 1 second and 3650 days")
    issued = int(time.time() if now is None else now)
    claims = KeyClaims(kid, key_id or secrets.token_hex(6), caller, scopes, issued, issued + int(ttl_s))
    signed = PREFIX + _b64(orjson.dumps(claims.as_dict()))
    key_secret = secret.encode() if isinstance(secret, str) else secret
    key = f"{signed}.{_b64(_mac(key_secret, signed))}"
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError("too many or too long scopes: the key would be too long")
    return key


def _claims(payload: Any) -> KeyClaims | None:
    """The payload's claims when every field has the expected type, else None."""
    if not isinstance(payload, dict) or payload.get("v") != VERSION:
        return None
    kid, key_id, caller = payload.get("kid"), payload.get("id"), payload.get("sub")
    scopes, issued, expires = payload.get("scopes"), payload.get("iat"), payload.get("exp")
    if not (isinstance(kid, str) and _KID.fullmatch(kid)):
        return None
    if not (isinstance(key_id, str) and _KID.fullmatch(key_id)):
        return None
    if not (isinstance(caller, str) and valid_caller_name(caller)):
        return None
    if not (isinstance(scopes, list) and len(scopes) <= 64):
        return None
    if not all(isinstance(scope, str) and _SCOPE.fullmatch(scope) for scope in scopes):
        return None
    if type(issued) is not int or type(expires) is not int:
        return None
    return KeyClaims(kid, key_id, caller, tuple(scopes), issued, expires)


def _split(key: str) -> tuple[str, str, KeyClaims | None]:
    """(signed part, MAC text, claims or None); raises ValueError when it is not shaped like a key."""
    match = _KEY.fullmatch(key) if len(key) <= MAX_KEY_LENGTH else None
    if match is None:
        raise ValueError("not an agent-proxy key")
    try:
        payload = orjson.loads(_unb64(match.group(1)))
    except (binascii.Error, ValueError):
        raise ValueError("the key's payload is not base64url JSON") from None
    return PREFIX + match.group(1), match.group(2), _claims(payload)


def decode_untrusted(key: str) -> KeyClaims:
    """What a key claims, without checking its signature (`agent-proxy keys inspect`)."""
    _, _, claims = _split(key)
    if claims is None:
        raise ValueError("the key's payload does not have the expected fields")
    return claims


class HmacKeyVerifier:
    """Checks keys against the policy's `auth.hmac_keys`; stateless and constant-time in the MAC."""

    def __init__(self, keys: Sequence[HmacKey]):
        self._secrets = {key.id: key.secret.get_secret_value().encode() for key in keys}

    def verify(self, key: str, now: float | None = None) -> KeyClaims:
        """The key's claims, or Refused with the reason it is refused."""
        try:
            signed, mac_text, claims = _split(key)
        except ValueError:
            raise Refused("malformed") from None
        if claims is None:
            raise Refused("malformed")
        secret = self._secrets.get(claims.kid)
        if secret is None:
            raise Refused("unknown_kid")
        # Compared as text: a MAC's last base64url character has two unused bits, so comparing the
        # decoded bytes would let four spellings of one key verify.
        if not hmac.compare_digest(mac_text.encode("ascii"), _b64(_mac(secret, signed)).encode("ascii")):
            raise Refused("bad_signature")
        if (time.time() if now is None else now) >= claims.expires_at:
            raise Refused("expired")
        return claims
