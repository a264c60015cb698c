"""Settings of the semantic cache (`stages.cache.semantic`): the embedder, the threshold, the bounds.

Read by proxy/cache/semantic.py; the cache stage's own settings embed this model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.policy.base import Name, Strict


class SemanticConfig(Strict):
    enabled: bool = Field(
        False,
        description="On an exact miss, look for a cached answer to a similar final user turn (same partition only).",
    )
    threshold: float = Field(
        0.85,
        ge=0.5,
        le=1.0,
        description="Cosine similarity a cached prompt must reach, and the precision guard must agree with. "
        "Tuned for the built-in embedder (bench/semantic_quality.py); an upstream model needs its own.",
    )
    embedder: Literal["builtin"] | Name = Field(
        "builtin",
        description="`builtin` (all-MiniLM-L6-v2 int8 on ONNX Runtime, the `semantic` extra) or the name of an "
        "`openai`-protocol upstream that serves /v1/embeddings.",
    )
    model: str = Field(
        "text-embedding-3-small",
        min_length=1,
        max_length=128,
        description="The model sent to an upstream embedder; ignored by `builtin`.",
    )
    timeout_s: float = Field(
        2.0, gt=0, le=30, description="Longest wait for an upstream embedding; then the lookup is a miss."
    )
    max_entries: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="Prompts indexed per process, over all partitions; past it the least recently used goes.",
    )
    max_text_chars: int = Field(
        2_000,
        ge=16,
        le=100_000,
        description="A final user turn longer than this is neither indexed nor looked up (exact caching only); "
        "the built-in embedder also skips one past its 256-token window.",
    )
    guard: bool = Field(
        True,
        description="Require numbers, negations, units, dates, named entities and their order to agree "
        "(proxy/cache/semantic_guard.py). Off only to measure what it prevents.",
    )
    candidates: int = Field(
        4, ge=1, le=32, description="How many most similar entries above the threshold the guard may check."
    )
    threads: int = Field(
        1, ge=1, le=16, description="Cores one built-in embedding may use (ONNX Runtime intra-op threads)."
    )
