"""Offline token counting: the shipped encodings, model mapping, message framing, the fallback."""

from __future__ import annotations

import pytest

from proxy.accounting import tokens


def test_shipped_encodings_load_offline_and_match_openais_token_ids():
    # Reference ids from OpenAI's published encodings.
    assert tokens.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert tokens.get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert len(tokens.get_encoding("o200k_base")) == 199998  # ordinary tokens; the special ones are never matched


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        (None, "o200k_base"),
    ],
)
def test_models_map_to_their_encoding(model, encoding):
    assert tokens.encoding_name(model) == encoding


def test_count_tokens_counts_special_token_text_as_plain_text():
    assert tokens.count_tokens("", "gpt-4o") == 0
    plain = tokens.count_tokens("a <|endoftext|> b", "gpt-4o")
    assert plain == len(tokens.get_encoding("o200k_base").encode_ordinary("a <|endoftext|> b")) > 3


def test_count_messages_adds_openais_framing():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi", "name": "ann"}]
    enc = tokens.get_encoding("o200k_base")

    def n(text: str) -> int:
        return len(enc.encode_ordinary(text))

    expected = 3 + (3 + n("system") + n("be brief")) + (3 + n("user") + n("hi") + n("ann") + 1)
    assert tokens.count_messages(messages, "gpt-4o") == expected


def test_count_messages_reads_parts_blocks_system_and_tools():
    parts = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}]}]
    assert tokens.count_messages(parts, "gpt-4o") == tokens.count_messages([{"role": "user", "content": "look"}])
    with_system = tokens.count_messages(parts, "gpt-4o", system=[{"type": "text", "text": "rules"}])
    assert with_system == tokens.count_messages(parts, "gpt-4o") + 3 + tokens.count_tokens("rules")
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert tokens.count_messages(parts, "gpt-4o", tools=tools) > tokens.count_messages(parts, "gpt-4o")


def test_an_encoding_that_fails_to_load_falls_back_to_chars_over_four(monkeypatch, caplog):
    monkeypatch.setattr(tokens, "_loaded", {})
    monkeypatch.setitem(tokens.ENCODINGS, "cl100k_base", {**tokens.ENCODINGS["cl100k_base"], "sha256": "0" * 64})
    assert tokens.get_encoding("cl100k_base") is None
    assert "does not match the published hash" in caplog.text
    assert tokens.count_tokens("x" * 10, "gpt-4") == 3  # ceil(10 / 4)
    assert tokens.count_tokens("hello world", "gpt-4o") == 2  # the other encoding is unaffected
