"""The process-wide cache of remote JWKS key sets, kept across policy reloads (lives in `Services`).

Apart from proxy/auth/jwks.py so that every policy can hold one without importing pyjwt and
cryptography (about 9 MB resident): they are imported when a policy configures `auth.jwt`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.auth.jwks import RemoteJwks


@dataclass(slots=True)
class JwksRegistry:
    """Remote key sets by URL and settings."""

    _sets: dict[tuple[Any, ...], RemoteJwks] = field(default_factory=dict)

    def get(
        self, url: str, allowed: Iterable[str], timeout_s: float, cache_s: float, min_refresh_s: float
    ) -> RemoteJwks:
        from proxy.auth.jwks import RemoteJwks  # loaded already: the JWT verifier asking imports it

        allowed = frozenset(allowed)
        settings = (url, allowed, timeout_s, cache_s, min_refresh_s)
        if settings not in self._sets:
            self._sets[settings] = RemoteJwks(url, allowed, timeout_s, cache_s, min_refresh_s)
        return self._sets[settings]

    def prefetch(self) -> None:
        """Start fetching every set not fetched yet, so the first requests need not wait for it."""
        for remote in list(self._sets.values()):
            remote.prefetch()
