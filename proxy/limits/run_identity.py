"""Agent runs: which run a request belongs to, and what counts as the same request or tool call.

A run is one conversation across many LLM and tool calls. An agent may name it with
`x-agent-run-id`; otherwise it is the conversation's stable prefix (the system prompt
and everything up to the first user turn), which every later request of the same
conversation repeats, so no agent change is needed. Two conversations of one caller
that start identically share a run; the header tells them apart.

The loop guard compares requests without their volatile fields (`stream`, `metadata`...)
and tool calls by name and arguments (canonical JSON, so key order does not matter).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from proxy.exchange import Exchange

RUN_HEADER = "x-agent-run-id"
MAX_RUN_ID = 256
_ID = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces


def _hash(value: Any) -> str:
    try:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits and the like: still a stable text
        raw = repr(value).encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def header_run_id(headers: Mapping[str, str]) -> str | None:
    value = headers.get(RUN_HEADER)
    return value if value and _ID.fullmatch(value) else None


def conversation_fingerprint(ex: Exchange, body: Any) -> str | None:
    """A hash of the system prompt and the messages up to and including the first user turn."""
    protocol = ex.protocol
    prefix: list[Any] = []
    for message in protocol.request_messages(body):
        prefix.append([message.get("role"), message.get("content")])
        if message.get("role") == "user":
            break
    else:
        return None  # no user turn yet: nothing stable to recognise the conversation by
    return _hash([protocol.system_prompt(body), prefix])


def run_id(ex: Exchange, body: Any) -> str | None:
    """`h` + the header's hash, or `f` + the conversation's fingerprint; None when neither exists."""
    given = header_run_id(ex.headers)
    if given is not None:
        return "h" + hashlib.blake2b(given.encode(), digest_size=12).hexdigest()
    if body is None or not ex.protocol.parses_json:
        return None
    fingerprint = conversation_fingerprint(ex, body)
    return None if fingerprint is None else "f" + fingerprint


def request_hash(body: Any, ignore: Iterable[str]) -> str:
    if isinstance(body, dict):
        skipped = frozenset(ignore)
        body = {key: value for key, value in body.items() if key not in skipped}
    return _hash(body)


def _canonical_arguments(arguments: Any) -> Any:
    """OpenAI sends arguments as a JSON string; `{"a":1,"b":2}` and `{"b":2,"a":1}` are one call."""
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
    return arguments


def tool_call_hashes(ex: Exchange, body: Any) -> list[str]:
    """The latest tool calls of an LLM request, or the call a tool route is carrying; distinct ones only."""
    if ex.route.tool is not None:
        payload = [ex.route.tool, ex.method, ex.path, ex.query_string, hashlib.blake2b(ex.body).hexdigest()]
        return [_hash(payload)]
    if body is None or not ex.protocol.parses_json:
        return []
    calls = ex.protocol.last_tool_calls(body)
    return sorted({_hash([name, _canonical_arguments(arguments)]) for name, arguments in calls})
