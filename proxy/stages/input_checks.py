"""Input checks: a request's shape, size and content, before anything else spends effort on it.

Right after auth. On openai and anthropic routes it refuses, with a 400 in the protocol's
shape: a body whose model, messages, roles or content parts are malformed; prompt text
longer than `max_chars` or `max_tokens`; text matching a blocked pattern (the error names
the pattern, never the text). Blocked patterns run on the event loop, so a policy whose
pattern could backtrack past linear time is refused when it loads
(proxy/policy/pattern_rules.py). It also strips control characters, bidi overrides and
zero-width spaces from the prompt text. The raw body is scanned first, so a clean request
is not walked for them.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.accounting.tokens import count_tokens, ready
from proxy.errors import BadRequest
from proxy.exchange import Exchange, Reply
from proxy.pipeline import SharedStageFactory, Stage, StageFactory
from proxy.policy.pattern_rules import check_patterns
from proxy.policy.schema import Route
from proxy.protocols.text_slots import TextSlot
from proxy.safety.config import InputConfig

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

# C0 except tab, LF, CR; DEL and C1; zero-width space, word joiner, BOM; bidi embeddings, overrides and isolates.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069]")
# The same characters as they appear in a JSON body: escaped below U+0020, escaped or raw UTF-8 above.
CONTROL_IN_JSON = re.compile(
    rb"\\u00[01][0-9a-fA-F]|\\u007[fF]|\\u00[89][0-9a-fA-F]|\\[bf]|\\u20(?:0[bB]|2[a-eA-E]|6[0-9])|\\u[fF][eE][fF][fF]"
    rb"|\x7f|\xc2[\x80-\x9f]|\xe2\x80[\x8b\xaa-\xae]|\xe2\x81[\xa0\xa6-\xa9]|\xef\xbb\xbf"
)


def _may_hold_control(raw: bytes) -> bool:
    """Every match of CONTROL_IN_JSON starts with a backslash, DEL or a byte above 0x7F: an ASCII body with
    neither (most) is settled by three C scans, about a quarter of the regex's cost. `raw.find(x) >= 0`, not
    `x in raw`: on bytes, `in` first tries x as an int (a TypeError built and cleared)."""
    return not raw.isascii() or raw.find(b"\\") >= 0 or raw.find(b"\x7f") >= 0


TOKENS_INLINE = 4_000  # longer prompts are counted in a thread (Python: ~0.3 ms per KB of prose, ~0.8 of CJK)


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return CONTROL.sub("", value)
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def _text(slot: TextSlot, value: Any) -> str:
    if slot.kind == "value":
        return orjson.dumps(value).decode()
    return value if isinstance(value, str) else ""


class InputChecksStage(Stage):
    name: ClassVar[str] = "input"

    def __init__(self, factory: InputChecksFactory):
        super().__init__(factory.mode)
        self._factory = factory

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if not ex.has_llm_body:
            return None
        protocol = ex.protocol
        config = self._factory.config
        body = ex.request_json
        # The usual chat, read in one pass, has no shape problem; any other body is checked and walked for its slots.
        texts = protocol.plain_prompt(body)
        if texts is None and config.check_structure and (problem := protocol.request_shape_problem(body, ex.path)):
            raise BadRequest(f"malformed request: {problem}", code="invalid_request_shape")
        if config.strip_control_chars and _may_hold_control(ex.body) and CONTROL_IN_JSON.search(ex.body):
            slots = protocol.request_text_slots(body)
            body = self._strip(ex, body, slots)
            texts = [_text(slot, slot.get(body)) for slot in slots]
        elif texts is None:
            texts = [_text(slot, slot.get(body)) for slot in protocol.request_text_slots(body)]
        if config.max_chars is not None:
            chars = sum(map(len, texts))
            if chars > config.max_chars:
                raise BadRequest(
                    f"the prompt has {chars} characters; this route accepts at most {config.max_chars}",
                    code="prompt_too_long",
                )
        for name, pattern in self._factory.patterns:
            if any(pattern.search(text) for text in texts):
                self.decide(ex, f"pattern:{name}")
                raise BadRequest(
                    f"the request contains content this route does not accept (blocked pattern '{name}')",
                    code="blocked_pattern",
                )
        if config.max_tokens is not None:
            await self._check_tokens(ex, "\n".join(texts), config.max_tokens)
        return None

    def _strip(self, ex: Exchange, body: Any, slots: list[TextSlot]) -> Any:
        stripped = orjson.loads(orjson.dumps(body)) if not self.enforcing else body
        changed = False
        for slot in slots:
            if slot.kind == "json":  # JSON text: control characters inside it are escapes, not characters
                continue
            value = slot.get(stripped)
            new = _strip(value)
            if new != value:
                stripped = slot.set(stripped, new)
                changed = True
        if changed:
            self.decide(ex, "control_chars_stripped")
            if self.enforcing:
                ex.replace_request_json(stripped)
        return stripped

    @staticmethod
    async def _check_tokens(ex: Exchange, text: str, limit: int) -> None:
        if len(text.encode("utf-8", "surrogatepass")) <= limit:  # a token is at least one byte
            return
        model = ex.model_requested
        if len(text) > TOKENS_INLINE or not ready(model):  # the first count loads the encoding
            tokens = await asyncio.to_thread(count_tokens, text, model)
        else:
            tokens = count_tokens(text, model)
        if tokens > limit:
            raise BadRequest(
                f"the prompt has about {tokens} tokens; this route accepts at most {limit}", code="prompt_too_long"
            )


class InputChecksFactory(SharedStageFactory):
    stage = InputChecksStage  # keeps nothing per request: one serves them all

    def __init__(self, config: InputConfig):
        super().__init__(config.mode)
        self.config = config
        self.patterns = config.named_patterns()
        check_patterns(self.patterns)  # on the event loop, every one of them must run in linear time


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: InputConfig | None = ctx.stage_config(route, "input")
    if config is None or config.mode == "off":
        return None
    if not ctx.speaks_llm(route):
        return None
    return ctx.shared(f"input:{id(config)}", lambda: InputChecksFactory(config))
