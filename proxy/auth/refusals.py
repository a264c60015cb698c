"""Why a caller was refused: a fixed set of reasons, each with the error the caller sees.

The reason labels `agent_proxy_auth_failures_total`, so it must stay a small fixed set.
Verifiers raise `Refused(reason)`; only the authenticator turns it into a ProxyError, so
what leaves the auth boundary is always Unauthorized or Forbidden.
Callers get a generic message for forged or unknown credentials, and for every refused JWT
(a probe learns nothing about which check failed); operators see the precise reason in the
metric and in the log line's `decisions` (`auth:refused:<reason>`).
"""

from __future__ import annotations

from proxy.errors import Forbidden, ProxyError, Unauthorized

_INVALID = ("invalid_api_key", "the API key is not valid for this proxy")

UNAUTHORIZED: dict[str, tuple[str, str]] = {
    "missing": ("missing_api_key", "no API key was sent: use `Authorization: Bearer <key>` or `x-api-key: <key>`"),
    "malformed": _INVALID,
    "unknown_key": _INVALID,
    "bad_signature": _INVALID,
    "unknown_kid": _INVALID,
    "expired": ("expired_api_key", "the API key has expired"),
    "not_yet_valid": ("api_key_not_yet_valid", "the API key is not valid yet"),
    "revoked": ("revoked_api_key", "the API key has been revoked"),
    "wrong_issuer": ("invalid_api_key", "the token's issuer is not accepted here"),
    "wrong_audience": ("invalid_api_key", "the token's audience is not accepted here"),
    "bad_algorithm": ("invalid_api_key", "the token's algorithm is not accepted here"),
    "invalid_claims": ("invalid_api_key", "the token lacks a required claim"),
    "jwks_unavailable": ("invalid_api_key", "the token could not be checked: its signing keys are unavailable"),
}

FORBIDDEN: dict[str, tuple[str, str]] = {
    "no_profile": ("caller_not_allowed", "this caller has no profile in the policy, and there is no default"),
    "route_not_allowed": ("route_not_allowed", "this caller may not use this route"),
    "tool_not_allowed": ("tool_not_allowed", "this caller may not use this tool"),
    "model_not_allowed": ("model_not_allowed", "this caller may not use the requested model"),
    "admin_scope_required": ("admin_scope_required", "this key lacks the admin scope"),
}

REASONS = frozenset(UNAUTHORIZED) | frozenset(FORBIDDEN)


class Refused(Exception):
    """A verifier's verdict: the authenticator counts it, then raises the caller's 401 or 403 instead."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def as_error(reason: str, detail: str = "", generic: bool = False) -> ProxyError:
    """The error the caller sees for a refusal reason; `generic`: the same one for every 401 (JWTs)."""
    err: ProxyError
    if reason in FORBIDDEN:
        code, message = FORBIDDEN[reason]
        err = Forbidden(f"{message}{detail}", code=code)
    else:
        code, message = _INVALID if generic and reason != "missing" else UNAUTHORIZED[reason]
        err = Unauthorized(f"{message}{detail}", code=code)
    err.reason = reason
    return err
