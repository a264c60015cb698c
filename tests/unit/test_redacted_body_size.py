"""A redacted response body is held at its own size while it is written, not in orjson's larger buffer."""

from __future__ import annotations

import gc
import tracemalloc

import orjson

from proxy.protocols.openai import OpenAIProtocol
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction


def _redact(body: bytes) -> bytes:
    compiled = CompiledRedaction.from_config(RedactionConfig(output=["email"]))
    return ExchangeRedaction(compiled, "tenant").redact_body(OpenAIProtocol(), body, "application/json")


def _held(text: str) -> tuple[bytes, int]:
    """The redacted body and the memory still allocated for it once everything else is let go."""
    body = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        redacted = _redact(body)
        gc.collect()
        return redacted, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_large_redacted_body_holds_about_its_own_size():
    redacted, held = _held("write to jane.doe@acme-corp.com " + "lorem ipsum " * 90_000)  # about 1 MB
    assert b"jane.doe@acme-corp.com" not in redacted and len(redacted) > 1_000_000
    assert held < len(redacted) * 1.2  # orjson's own buffer for it is about 8 MB


def test_a_small_redacted_body_is_redacted_the_same_way():
    redacted, _ = _held("write to jane.doe@acme-corp.com")
    assert b"jane.doe@acme-corp.com" not in redacted and orjson.loads(redacted)["choices"][0]["message"]["content"]
