"""The `upstream` embedder: POST {model, input} to an OpenAI-compatible upstream's /v1/embeddings.

Sent through the proxy's own transport (pooled connections, the upstream's credentials,
proxy and answer bounds from the policy), within `timeout_s` from start to parsed vector.
Any failure (no transport, connect error, timeout, a status other than 200, a body that is
not an embedding) gives None: the lookup is a miss, never an error to the caller. Failures
are logged at most once a minute per embedder, without the prompt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from multidict import CIMultiDict

from proxy.embed.vector import Vector, unit
from proxy.forward.bounds import ResponseLimits, Timeouts
from proxy.forward.headers import new_request_id

if TYPE_CHECKING:
    from proxy.forward.transport import Transport

log = logging.getLogger("agent_proxy.cache")
PATH = "/v1/embeddings"
LOG_EVERY_S = 60.0


class UpstreamLike(Protocol):
    """What the embedder reads of a compiled upstream (proxy.policy.compile.CompiledUpstream)."""

    name: str
    base_url: str
    inject_headers: tuple[tuple[str, str], ...]
    timeouts: Timeouts
    limits: ResponseLimits
    proxies: dict[str, str | None]


class UpstreamEmbedder:
    def __init__(
        self,
        upstream: UpstreamLike,
        model: str,
        timeout_s: float,
        transport: Callable[[], Transport | None],
    ) -> None:
        self.name = f"{upstream.name}:{model}"
        self._upstream = upstream
        self._model = model
        self._timeout_s = timeout_s
        self._transport = transport
        self._logged_at = -LOG_EVERY_S

    async def warm(self) -> bool:
        return True  # nothing to load

    async def embed(self, text: str) -> Vector | None:
        transport = self._transport()
        if transport is None:  # `agent-proxy check`, or a test that compiled without starting the app
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._request(transport, text)
        except Exception as exc:  # every failure is a miss
            self._log(f"{type(exc).__name__}")
            return None

    async def _request(self, transport: Transport, text: str) -> Vector | None:
        upstream = self._upstream
        headers: CIMultiDict[str] = CIMultiDict(upstream.inject_headers)
        headers["content-type"] = "application/json"
        headers["x-request-id"] = new_request_id()
        body = orjson.dumps({"model": self._model, "input": text, "encoding_format": "float"})
        now = asyncio.get_running_loop().time()
        deadline = now + self._timeout_s
        response = await transport.open(
            "POST",
            upstream.base_url + PATH,
            headers,
            body,
            connect_s=min(upstream.timeouts.connect_s, self._timeout_s),
            first_byte_at=deadline,
            deadline=deadline,
            limits=upstream.limits,
            proxy=upstream.proxies.get(upstream.base_url),
            upstream=upstream.name,
        )
        try:
            if response.status != 200:
                self._log(f"status {response.status}")
                return None
            payload = await response.read(self._timeout_s)
        finally:
            if response.finished:
                response.release()
            else:
                response.close()
        vector = _vector(orjson.loads(payload))
        if vector is None:
            self._log("an answer without an embedding")
        return vector

    def _log(self, what: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("semantic cache: embedding from upstream '%s' failed (%s): a miss", self._upstream.name, what)


def _vector(payload: Any) -> Vector | None:
    try:
        values = payload["data"][0]["embedding"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        return None
    return unit(values)
