"""Redacting JSON: tool-call arguments streamed as pieces of JSON text, tool responses, tool_use inputs.

Detectors run on the decoded text of each string value (so an escape such as `\\n` never
glues a letter to an e-mail address), and on numbers (a card sent as a number). The output
stays valid JSON: string contents are re-encoded, and a number that had to be redacted
becomes a string. Keys are left alone, but a key that names a secret (`password`,
`api_key`, `client_secret`...) has its whole scalar value redacted when the `password`
detector is on. `JsonTextRedactor` (pieces of text) and `redact_value` (a parsed value)
apply the same rules, so a streamed tool call and a whole one end the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from proxy.safety.stream_redactor import TextPipeline

MakePipeline = Callable[[], TextPipeline]
KeyRule = Callable[[str | None], Callable[[str], str] | None]
"""For the key a value sits under: the function that replaces the whole value, or None."""

_SENSITIVE_EXACT = frozenset({"pwd", "pass", "token", "secret", "authorization"})
_SENSITIVE_SUFFIXES = (
    "password", "passwd", "passphrase", "secret", "apikey", "accesstoken", "authtoken", "refreshtoken",
    "idtoken", "sessiontoken", "bearertoken", "privatekey", "secretkey", "accesskeysecret",
)  # fmt: skip
_KEY_NOISE = re.compile(r"[\s_.-]")
MAX_KEY = 256
MAX_SECRET_VALUE = 64 * 1024


def sensitive_key(key: str | None) -> bool:
    if not key or len(key) > MAX_KEY:
        return False
    normal = _KEY_NOISE.sub("", key.lower())
    return normal in _SENSITIVE_EXACT or normal.endswith(_SENSITIVE_SUFFIXES)


def no_key_rule(key: str | None) -> None:
    return None


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def encode(text: str) -> str:
    """The inside of a JSON string literal (no quotes)."""
    return _NEEDS_ESCAPE.sub(_escape, text)


_DECODE = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\(.)", re.S)
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(match: re.Match[str]) -> str:
    high, low, code, simple = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if code is not None:
        return chr(int(code, 16))
    return _SIMPLE.get(simple, simple)


# What may still be incomplete at the end of a piece: a backslash, a \u escape, or a high surrogate's escape.
_OPEN_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3}|u[dD][89abAB][0-9a-fA-F]{2}(?:\\u?[0-9a-fA-F]{0,3})?)?\Z")
_STRING_STOP = re.compile(r'["\\]')
_OUTSIDE_STOP = re.compile(r'["{}\[\]:,\-0-9]')
_NUMBER = re.compile(r"[-+0-9.eE]*")


class JsonTextRedactor:
    """Feed pieces of JSON text, get redacted pieces; `flush()` at the end."""

    def __init__(self, make_pipeline: MakePipeline, key_rule: KeyRule = no_key_rule):
        self._make = make_pipeline
        self._key_rule = key_rule
        self._keys: list[str | None] = []  # per open container: the key the next value sits under
        self._in_object: list[bool] = []
        self._expect_key = False
        self._carry = ""  # an escape cut by the end of a piece
        self._string: str | None = None  # None outside strings; "key", "value" or "secret" inside one
        self._pipeline: TextPipeline | None = None
        self._collected: list[str] = []  # the key being read, or a secret value
        self._secret: Callable[[str], str] | None = None
        self._number: list[str] | None = None

    @property
    def _current_key(self) -> str | None:
        return self._keys[-1] if self._keys else None

    def feed(self, text: str) -> str:
        text = self._carry + text
        self._carry = ""
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if self._string is not None:
                i = self._in_string(text, i, out)
            elif self._number is not None:
                match = _NUMBER.match(text, i)
                self._number.append(match.group())  # type: ignore[union-attr]
                i = match.end()  # type: ignore[union-attr]
                if i < n:
                    self._end_number(out)
            else:
                i = self._outside(text, i, out)
        return "".join(out)

    def flush(self) -> str:
        out: list[str] = []
        if self._carry:  # a cut escape at the very end: invalid JSON, passed on as it came
            if self._string is not None:
                self._string_text(self._carry, out)
            else:
                out.append(self._carry)
            self._carry = ""
        if self._number is not None:
            self._end_number(out)
        if self._string is not None:
            self._close_string(out, closed=False)
        return "".join(out)

    # ---- outside strings

    def _outside(self, text: str, i: int, out: list[str]) -> int:
        match = _OUTSIDE_STOP.search(text, i)
        if match is None:
            out.append(text[i:])
            return len(text)
        j = match.start()
        if j > i:
            out.append(text[i:j])
        char = text[j]
        if char == '"':
            self._open_string(out)
            return j + 1
        if char == "-" or char.isdigit():
            self._number = []
            return j
        out.append(char)
        if char in "{[":
            inherited = None if char == "{" else self._current_key
            self._keys.append(inherited)
            self._in_object.append(char == "{")
            self._expect_key = char == "{"
        elif char in "}]":
            if self._keys:
                self._keys.pop()
                self._in_object.pop()
            self._expect_key = False
        elif char == ":":
            self._expect_key = False
        elif char == ",":
            self._expect_key = bool(self._in_object) and self._in_object[-1]
        return j + 1

    def _end_number(self, out: list[str]) -> None:
        token = "".join(self._number or ())
        self._number = None
        rule = self._key_rule(self._current_key)
        redacted = rule(token) if rule is not None else self._make().whole(token)
        out.append(token if redacted == token else f'"{encode(redacted)}"')

    # ---- strings

    def _open_string(self, out: list[str]) -> None:
        in_object = bool(self._in_object) and self._in_object[-1]
        if in_object and self._expect_key:
            self._string = "key"
            self._collected = []
            out.append('"')
            return
        self._secret = self._key_rule(self._current_key)
        if self._secret is not None:
            self._string = "secret"
            self._collected = []
            return
        self._string = "value"
        self._pipeline = self._make()
        out.append('"')

    def _in_string(self, text: str, i: int, out: list[str]) -> int:
        """Up to the closing quote, whole escapes only: one cut by the end of the piece waits for the next."""
        j = i
        while (stop := _STRING_STOP.search(text, j)) is not None:
            j = stop.start()
            if text[j] == '"':
                self._string_text(text[i:j], out)
                self._close_string(out, closed=True)
                return j + 1
            if _OPEN_ESCAPE.match(text, j):
                self._string_text(text[i:j], out)
                self._carry = text[j:]
                return len(text)
            j = _DECODE.match(text, j).end()  # type: ignore[union-attr]
        self._string_text(text[i:], out)
        return len(text)

    def _string_text(self, raw: str, out: list[str]) -> None:
        if not raw:
            return
        decoded = _DECODE.sub(_unescape, raw) if "\\" in raw else raw
        if self._string == "key":
            if sum(map(len, self._collected)) < MAX_KEY + 1:
                self._collected.append(decoded)
            out.append(raw)
        elif self._string == "secret":
            if sum(map(len, self._collected)) < MAX_SECRET_VALUE:
                self._collected.append(decoded)
        else:
            out.append(encode(self._pipeline.feed(decoded)))  # type: ignore[union-attr]

    def _close_string(self, out: list[str], closed: bool) -> None:
        quote = '"' if closed else ""
        if self._string == "key":
            if self._keys:
                self._keys[-1] = "".join(self._collected)
            out.append(quote)
        elif self._string == "secret":
            out.append(f'"{encode(self._secret("".join(self._collected)))}{quote}')  # type: ignore[misc]
        else:
            out.append(encode(self._pipeline.flush()) + quote)  # type: ignore[union-attr]
        self._string, self._pipeline, self._secret, self._collected = None, None, None, []


def redact_json_text(text: str, make_pipeline: MakePipeline, key_rule: KeyRule = no_key_rule) -> str:
    redactor = JsonTextRedactor(make_pipeline, key_rule)
    return redactor.feed(text) + redactor.flush()


def redact_value(
    value: Any, make_pipeline: MakePipeline, key_rule: KeyRule = no_key_rule, key: str | None = None
) -> Any:
    """A parsed JSON value, by the same rules; returns the same object when nothing changed."""
    if isinstance(value, str):
        rule = key_rule(key)
        return rule(value) if rule is not None else make_pipeline().whole(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        token = str(value)
        rule = key_rule(key)
        redacted = rule(token) if rule is not None else make_pipeline().whole(token)
        return value if redacted == token else redacted
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for name, item in value.items():
            new = redact_value(item, make_pipeline, key_rule, name)
            changed = changed or new is not item
            out[name] = new
        return out if changed else value
    if isinstance(value, list):
        items = [redact_value(item, make_pipeline, key_rule, key) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value
