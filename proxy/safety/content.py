"""One route's redaction, compiled once per policy, and what it does to one exchange.

`CompiledRedaction` holds the scanners and actions built from the policy. `ExchangeRedaction`
is per request: it pseudonymises or masks the prompt, then redacts what the caller
receives (whole bodies here, streamed events in events.py) with the output detectors,
and puts the original values back where the model repeated a placeholder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import Forbidden
from proxy.own_size import own_size
from proxy.protocols.base import Protocol
from proxy.protocols.text_slots import SlotKind, TextSlot
from proxy.safety.actions import PLACEHOLDER, Blocked, InputAction, OutputAction, OutputActions, Pseudonymiser
from proxy.safety.catalogue import BY_NAME, custom_detector, expand
from proxy.safety.config import RedactionConfig
from proxy.safety.detector import Detector
from proxy.safety.jsontext import JsonTextRedactor, redact_json_text, redact_value, sensitive_key
from proxy.safety.scanner import Scanner
from proxy.safety.stream_redactor import StreamRedactor, TextPipeline

PASSWORD = BY_NAME["password"]
BIG_NUMBER = re.compile(rb"[0-9]{20}")
# Every byte to `0` if a digit, else to a space: BIG_NUMBER is then a plain substring search, many times faster.
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_TWENTY_DIGITS = b"0" * 20


# `raw.find(x) >= 0`, not `x in raw`: on bytes, `in` first tries x as an int (a TypeError built and cleared).
def has_big_number(data: bytes) -> bool:
    """`BIG_NUMBER.search(data)`, faster: the regex tries its repeat at every digit."""
    return data.translate(_DIGITS_AS_ZERO).find(_TWENTY_DIGITS) >= 0


_RESTORE = Scanner([PLACEHOLDER], normalises=False)
EXACT_COPY_FROM = 4096  # bytes of orjson output from which its buffer is 8 times the data or more


def exact_size(data: bytes) -> bytes:
    """Held only while written: copied to its own size where orjson's buffer is much larger; a small one is kept."""
    return own_size(data) if len(data) >= EXACT_COPY_FROM else data


def blocked_error(detector: str) -> Forbidden:
    """A `block` hit: a 403 with code `content_blocked`, so SDKs raise PermissionDeniedError and do not retry."""
    return Forbidden(
        f"the response was blocked by the content policy: it contained a value the '{detector}' detector refuses",
        code="content_blocked",
    )


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRedaction:
    output: Scanner | None
    actions: dict[str, OutputAction]
    stream_text: tuple[tuple[str, ...], ...]
    hash_key: bytes | None
    input: Scanner | None
    input_action: InputAction
    hold_events: int = 16  # stream events held whole at most (RedactionConfig.stream_hold_events)
    hold_bytes: int = 64 * 1024

    @classmethod
    def from_config(cls, config: RedactionConfig) -> CompiledRedaction:
        custom = {c.name: custom_detector(c.name, c.pattern, c.label, c.ignore_case) for c in config.custom}

        def detectors(names: list[str]) -> list[Detector]:
            return [custom.get(name) or BY_NAME[name] for name in expand(names)]

        output, inputs = detectors(config.output), detectors(config.input)
        secret = config.hash_secret.get_secret_value().encode() if config.hash_secret is not None else None
        thresholds = config.detector_thresholds()
        return cls(
            output=Scanner(output, thresholds) if output else None,
            actions=config.output_actions(),
            stream_text=tuple(tuple(path.split(".")) for path in config.stream_text),
            hash_key=secret,
            input=Scanner(inputs, thresholds) if inputs else None,
            input_action=config.input_action,
            hold_events=config.stream_hold_events,
            hold_bytes=config.stream_hold_bytes,
        )

    @staticmethod
    def plain_text(protocol: Protocol, body: bytes, content_type: str, parse: Callable[[bytes], Any]) -> str | None:
        """The text of a JSON answer of one text (`Protocol.plain_answer`, most answers), or None (then:
        `redact_body`). If the output detectors find nothing in it (`Scanner.finds_nothing_in`), it goes out as it
        is, with no `ExchangeRedaction`: `redact_body` would give the same bytes back and count nothing, to a
        request with no pseudonyms to put back. A number orjson reads as a float (`has_big_number`) does not
        matter there: the body is never written again."""
        if "json" not in content_type:
            return None
        try:
            return protocol.plain_answer(parse(body))
        except orjson.JSONDecodeError:
            return None

    @property
    def restores(self) -> bool:
        return self.input is not None and self.input_action == "pseudonymise"

    @property
    def observes_response(self) -> bool:
        return self.output is not None or self.restores


class ExchangeRedaction:
    """The redaction of one request: its pseudonyms, its counts, and fresh pipelines for each text."""

    anchored: str | None = None
    """A text searched already and found to hold an anchor (`plain_text`'s, redacted next): not searched again."""

    def __init__(self, compiled: CompiledRedaction, tenant: str):
        self.compiled = compiled
        self.actions = OutputActions(compiled.actions, compiled.hash_key, tenant) if compiled.output else None
        self.pseudonyms = Pseudonymiser(compiled.input_action) if compiled.input is not None else None
        self._secret_keys = compiled.output is not None and PASSWORD.name in compiled.actions

    # ---- the prompt

    def redact_request(self, protocol: Protocol, body: Any) -> bool:
        """Masks or pseudonymises the prompt text in place; True if anything changed."""
        scanner, pseudonyms = self.compiled.input, self.pseudonyms
        if scanner is None or pseudonyms is None:
            return False

        def make() -> TextPipeline:
            return TextPipeline([StreamRedactor(scanner, pseudonyms)])

        changed = False
        for slot in protocol.request_text_slots(body):
            value = slot.get(body)
            new = transform(slot.kind, value, make)
            if new is not value and new != value:
                slot.set(body, new)
                changed = True
        return changed

    # ---- what the caller receives

    def pipeline(self) -> TextPipeline:
        steps = []
        if self.compiled.output is not None and self.actions is not None:
            steps.append(StreamRedactor(self.compiled.output, self.actions))
        if self.pseudonyms is not None and self.pseudonyms.originals:
            steps.append(StreamRedactor(_RESTORE, self.pseudonyms.restore))
        return TextPipeline(steps)

    def key_rule(self, key: str | None) -> Callable[[str], str] | None:
        """Under a key that names a secret, the whole value is one `password` hit (our own placeholders come back)."""
        if not self._secret_keys or not sensitive_key(key):
            return None
        return self._secret_value

    def _secret_value(self, value: str) -> str:
        if self.pseudonyms is not None and value in self.pseudonyms.originals:
            return self.pseudonyms.originals[value]
        return self.actions(PASSWORD, value)  # type: ignore[misc]

    def channel(self, kind: SlotKind) -> TextPipeline | JsonTextRedactor:
        return JsonTextRedactor(self.pipeline, self.key_rule) if kind == "json" else self.pipeline()

    def whole(self, kind: SlotKind, value: Any, key: str | None = None) -> Any:
        """`key`: the one the value sits under, for the rule on keys that name secrets."""
        if kind == "text" and isinstance(value, str) and self._untouched(value):
            return value
        return transform(kind, value, self.pipeline, self.key_rule, key)

    def _untouched(self, text: str) -> bool:
        """What the pipeline would give back as it is, known without building it: nothing to detect, nothing
        to put back (most answers, in one search)."""
        scanner = self.compiled.output
        restores = self.pseudonyms is not None and self.pseudonyms.originals
        return scanner is not None and not restores and text is not self.anchored and scanner.finds_nothing_in(text)

    def rewrite_slots(self, payload: Any, slots: list[TextSlot]) -> tuple[Any, bool]:
        changed = False
        for slot in slots:
            value = slot.get(payload)
            new = self.whole(slot.kind, value)
            if new is not value and new != value:
                payload = slot.set(payload, new)
                changed = True
        return payload, changed

    def redact_body(
        self, protocol: Protocol, body: bytes, content_type: str, parse: Callable[[bytes], Any] = orjson.loads
    ) -> bytes:
        """A whole response body, the same bytes when nothing matched; a block hit raises Forbidden.
        `parse`: orjson's, or one that returns the parse another stage already made of these bytes."""
        if not body:
            return body
        if "json" not in content_type:
            if content_type.startswith("text/") and not protocol.parses_json:
                text = body.decode("utf-8", "replace")
                new = self._guard(lambda: self.pipeline().whole(text))
                return body if new == text else new.encode()
            return body
        if has_big_number(body):  # orjson would read it as a float, and write it back so
            return self._guard(lambda: self._odd_json(protocol, body))
        try:
            payload = parse(body)
        except orjson.JSONDecodeError:
            return self._guard(lambda: self._odd_json(protocol, body))
        try:  # `_guard` spelled out: the closure and the call cost about 1.6K instructions on every JSON answer
            payload, changed = self.rewrite_slots(payload, protocol.response_text_slots(payload))
        except Blocked as blocked:
            raise blocked_error(blocked.detector) from None
        return exact_size(orjson.dumps(payload)) if changed else body

    def _odd_json(self, protocol: Protocol, body: bytes) -> bytes:
        """JSON orjson cannot keep (integers beyond 64 bits), or no JSON at all: never a way around redaction."""
        text = body.decode("utf-8", "replace")
        try:
            payload = json.loads(text)
        except ValueError:  # not JSON: its string values and numbers, as far as they can be told apart
            new = redact_json_text(text, self.pipeline, self.key_rule)
            return body if new == text else new.encode()
        payload, changed = self.rewrite_slots(payload, protocol.response_text_slots(payload))
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() if changed else body

    @staticmethod
    def _guard(work: Callable[[], Any]) -> Any:
        try:
            return work()
        except Blocked as blocked:
            raise blocked_error(blocked.detector) from None

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        if self.actions is not None:
            out.update((("output", name), n) for name, n in self.actions.counts.items())
        if self.pseudonyms is not None:
            out.update((("input", name), n) for name, n in self.pseudonyms.counts.items())
        return out


def transform(
    kind: SlotKind,
    value: Any,
    make: Callable[[], TextPipeline],
    key_rule: Callable[[str | None], Any] | None = None,
    key: str | None = None,
) -> Any:
    """One slot's value, redacted whole."""
    if kind == "value":
        return redact_value(value, make, key_rule, key) if key_rule else redact_value(value, make)
    if not isinstance(value, str):
        return value
    if kind == "json":
        return redact_json_text(value, make, key_rule) if key_rule else redact_json_text(value, make)
    return make().whole(value)
