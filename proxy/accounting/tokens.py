"""Token counting for requests and responses whose upstream reported no usage.

Works offline: the o200k_base and cl100k_base encodings ship in proxy/data as
xz-compressed copies of OpenAI's tiktoken files (checked against tiktoken's published
SHA-256), loaded once per process, each on the first count that needs it (callers on the
event loop count in a thread until `ready`). Counts are exact (tiktoken's `encode_ordinary`)
from a compact rank table (proxy/accounting/bpe.py): an encoding holds about 11 MB
(o200k_base) or 6 MB (cl100k_base) where tiktoken's core holds 46-51 and 26-31, and most
upstreams report usage, so neither is loaded before a count needs it. If an encoding cannot
be loaded, counts fall back to a characters/4 estimate, so accounting degrades but never
fails a request.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from proxy.accounting.bpe import Encoding, load
from proxy.protocols.base import Protocol

log = logging.getLogger("agent_proxy.accounting.tokens")

ENDOFTEXT = "<|endoftext|>"
ENDOFPROMPT = "<|endofprompt|>"
# Split patterns and special tokens as in tiktoken_ext/openai_public.py (MIT, see proxy/data/TIKTOKEN-LICENSE).
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
ENCODINGS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "pat_str": _O200K_PATTERN,
        "special_tokens": {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    },
    "cl100k_base": {
        "pat_str": _CL100K_PATTERN,
        "special_tokens": {
            ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            ENDOFPROMPT: 100276,
        },
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    },
}
# OpenAI's chat format: every message costs a few tokens of framing, and the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

GENERIC = Protocol()
"""Reads messages in any of the chat shapes (proxy/protocols/prompt_size.py), for callers that name no adapter."""

_lock = threading.Lock()
_loaded: dict[str, Encoding | None] = {}  # None once loading failed


def encoding_name(model: str | None) -> str:
    """cl100k_base for the GPT-4/3.5 generation and embeddings; o200k_base for the rest.

    Other providers' models (Claude, local models) have tokenizers of their own that are
    not public; o200k_base is the estimate for them.
    """
    name = (model or "").lower().rsplit("/", 1)[-1]
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")):
        return "o200k_base"
    if name.startswith(("gpt-4", "gpt-3.5", "text-embedding-", "davinci-002", "babbage-002")):
        return "cl100k_base"
    return "o200k_base"


def _build(name: str) -> Encoding:
    spec = ENCODINGS[name]
    return load(name, spec["pat_str"], spec["sha256"])


def get_encoding(name: str) -> Encoding | None:
    """The encoding, loaded once per process; None if it cannot be loaded (counts fall back to chars/4)."""
    if name in _loaded:
        return _loaded[name]
    with _lock:
        if name not in _loaded:
            try:
                _loaded[name] = _build(name)
            except Exception:
                log.exception("could not load the %s encoding; token counts fall back to characters/4", name)
                _loaded[name] = None
    return _loaded[name]


def ready(model: str | None) -> bool:
    """True when counting for `model` will not load an encoding first (~0.3 s of blocking work)."""
    return encoding_name(model) in _loaded


def chars_estimate(text: str) -> int:
    return math.ceil(len(text) / 4)


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text` for `model`'s encoding; special-token strings count as plain text."""
    if not text:
        return 0
    encoding = get_encoding(encoding_name(model))
    if encoding is None:
        return chars_estimate(text)
    return encoding.count(text)


def count_message(message: Mapping[str, Any], model: str | None = None, protocol: Protocol = GENERIC) -> int:
    """One message with its framing: the texts its adapter says a tokenizer sees."""
    texts, names = protocol.message_text(message)
    return TOKENS_PER_MESSAGE + names * TOKENS_PER_NAME + sum(count_tokens(text, model) for text in texts)


def count_fixed(model: str | None = None, system: Any = None, tools: Any = None, protocol: Protocol = GENERIC) -> int:
    """What a chat prompt costs besides its messages: the reply priming, a system prompt given apart, tools.

    Tool definitions are counted as their JSON text, which is close to what providers bill.
    """
    total = REPLY_PRIMING
    if system:
        total += TOKENS_PER_MESSAGE + count_tokens(protocol.content_text(system), model)
    if tools:
        total += count_tokens(orjson.dumps(tools).decode(), model)
    return total


def count_messages(
    messages: Iterable[Mapping[str, Any]],
    model: str | None = None,
    system: Any = None,
    tools: Any = None,
    protocol: Protocol = GENERIC,
) -> int:
    """Prompt tokens of a chat request, the way OpenAI's cookbook estimates them."""
    fixed = count_fixed(model, system, tools, protocol)
    return fixed + sum(count_message(message, model, protocol) for message in messages)


def count_request(protocol: Protocol, body: Any, model: str | None) -> int:
    """Prompt tokens of a request body: its messages, system prompt and tools, or its plain input text."""
    messages = protocol.request_messages(body)
    if not messages:
        return count_tokens(protocol.request_input_text(body), model)
    return count_messages(messages, model, protocol.system_prompt(body), protocol.request_tools(body), protocol)
