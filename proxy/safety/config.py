"""The policy's `stages.input` and `stages.redaction`: pydantic models, validated when the policy loads.

Kept here, next to the detectors they name, and referenced from `StagesConfig` in
proxy/policy/schema.py. A custom pattern is compiled at load time and refused if its
matches are unbounded (the stream hold-back depends on it).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from proxy.policy.base import Mode, Name, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec
from proxy.safety.catalogue import BY_NAME, GROUPS, KNOWN_NAMES, MAX_CUSTOM_REACH, custom_detector, expand
from proxy.safety.regexbounds import UnboundedPattern

OutputAction = Literal["mask", "hash", "block"]


def _compiles(pattern: str, ignore_case: bool) -> None:
    try:
        re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc.msg} at position {exc.pos}") from None


# ---- stages.input ------------------------------------------------------------------------------------------------


class BlockedPattern(Strict):
    name: Name = Field(description="Shown in the 400 error, the decision and the metrics; never the matched text.")
    pattern: str = Field(min_length=1, max_length=2000, description="A Python regular expression.")
    ignore_case: bool = Field(False, description="Match regardless of case.")

    @model_validator(mode="after")
    def _valid(self) -> BlockedPattern:
        _compiles(self.pattern, self.ignore_case)
        return self


class InputConfig(Strict):
    """Checks on a request before it leaves (openai and anthropic routes): size, patterns, characters, shape."""

    mode: Mode = Field("enforce", description="`shadow` records what would be refused; `off` removes the stage.")
    max_chars: int | None = Field(
        None, gt=0, le=100_000_000, description="Most characters of prompt text (messages, system, tool results)."
    )
    max_tokens: int | None = Field(
        None, gt=0, le=10_000_000, description="Most prompt tokens, counted offline with the model's tokenizer."
    )
    blocked_patterns: list[str | BlockedPattern] = Field(
        default_factory=list,
        max_length=256,
        description="Regexes that refuse a prompt with a 400: plain strings (named pattern_1, pattern_2...) "
        "or {name, pattern, ignore_case}.",
    )
    strip_control_chars: bool = Field(
        True,
        description="Remove control characters (except tab and newlines), bidi overrides and zero-width spaces "
        "from prompt text.",
    )
    check_structure: bool = Field(
        True, description="Refuse with a 400 a body whose model, messages, roles or content parts are malformed."
    )

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns(cls, patterns: list[str | BlockedPattern]) -> list[str | BlockedPattern]:
        names: set[str] = set()
        for index, item in enumerate(patterns, 1):
            if isinstance(item, str):
                _compiles(item, False)
                name = f"pattern_{index}"
            else:
                name = item.name
            if name in names:
                raise ValueError(f"two blocked patterns are named '{name}'")
            names.add(name)
        return patterns

    def named_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        out = []
        for index, item in enumerate(self.blocked_patterns, 1):
            if isinstance(item, str):
                out.append((f"pattern_{index}", re.compile(item)))
            else:
                out.append((item.name, re.compile(item.pattern, re.IGNORECASE if item.ignore_case else 0)))
        return out


# ---- stages.redaction --------------------------------------------------------------------------------------------


class CustomDetectorConfig(Strict):
    name: Name = Field(description="Listed in `output` or `input` like a built-in detector; the metrics label.")
    pattern: str = Field(
        min_length=1,
        max_length=2000,
        description=f"A Python regex with bounded repeats ({{1,20}}, not + or *), matching at most "
        f"{MAX_CUSTOM_REACH} characters: streams hold back up to that many.",
    )
    label: str | None = Field(
        None, pattern=r"^[A-Z0-9_]{1,40}$", description="Mask token text, as [LABEL]; default: the name upper-cased."
    )
    ignore_case: bool = Field(False, description="Match regardless of case.")

    @model_validator(mode="after")
    def _bounded(self) -> CustomDetectorConfig:
        _compiles(self.pattern, self.ignore_case)
        try:
            custom_detector(self.name, self.pattern, self.label, self.ignore_case)
        except UnboundedPattern as exc:
            raise ValueError(str(exc)) from None
        return self


class RedactionConfig(Strict):
    """PII and secret redaction of what callers receive, and of prompts before they leave."""

    mode: Mode = Field("enforce", description="`shadow` counts what would be redacted and changes nothing.")
    output: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Detectors applied to what the caller receives (text, tool-call arguments, tool responses): "
        f"built-in names, groups ({', '.join(GROUPS)}) or `custom` names.",
    )
    action: OutputAction = Field(
        "mask", description="mask: [EMAIL]; hash: [EMAIL_<hmac>], stable per caller; block: refuse the response."
    )
    actions: dict[str, OutputAction] = Field(
        default_factory=dict, description="Per detector or group, overriding `action`, e.g. {api_key: block}."
    )
    input: list[str] = Field(
        default_factory=list, max_length=64, description="Detectors applied to prompts before they leave."
    )
    input_action: Literal["mask", "pseudonymise"] = Field(
        "mask",
        description="mask: [EMAIL] goes upstream; pseudonymise: [EMAIL_1] goes upstream and the caller's answer "
        "gets the original value back.",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Least confidence (0 to 1) a hit needs to be redacted, per detector or group; default 0.5 for "
        "every detector. Raise `credit_card` to 0.7 to leave published test card numbers, lower `ipv4` to 0.2 to "
        "redact version-like and documentation addresses too (docs/redaction.md lists the scores).",
    )
    custom: list[CustomDetectorConfig] = Field(default_factory=list, max_length=64, description="Your own regexes.")
    stream_text: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$")]] = Field(
        default_factory=list,
        max_length=16,
        description="On http and MCP routes: dotted paths of the string fields of a tool's JSON stream events "
        "whose text goes on from one event to the next (`delta`, `output.text`); each is a stream per field and "
        "event name, redacted exactly across events. Other JSON in events is redacted whole, event by event.",
    )
    stream_hold_events: int = Field(
        16,
        ge=0,
        le=1024,
        description="On LLM routes, most stream events held whole while their text may still be masked (an event "
        "that needs no mask then goes out as sent); beyond it the oldest goes out re-serialised with the text "
        "released so far. 0: never hold an event (each is rewritten as it comes).",
    )
    stream_hold_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=16 * 1024 * 1024,
        description="Most bytes of stream events held whole; beyond it the oldest goes out as above.",
    )
    hash_secret: SecretStr | None = Field(
        None, description="HMAC key of the hash action (use ${ENV}); at least 16 characters."
    )

    @model_validator(mode="after")
    def _names(self) -> RedactionConfig:
        customs = [c.name for c in self.custom]
        clash = [name for name in customs if name in KNOWN_NAMES]
        if clash:
            raise ValueError(f"custom detector '{clash[0]}' has the name of a built-in detector or group")
        if len(set(customs)) != len(customs):
            raise ValueError("two custom detectors have the same name")
        known = KNOWN_NAMES | set(customs)
        named = (("output", self.output), ("input", self.input), ("actions", list(self.actions)))
        for field, names in (*named, ("thresholds", list(self.thresholds))):
            for name in names:
                if name not in known:
                    raise ValueError(f"{field}: unknown detector '{name}' (known: {', '.join(sorted(known))})")
        for name, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"thresholds: '{name}' must be between 0 and 1, not {value}")
        if "hash" in (self.action, *self.actions.values()) and self.hash_secret is None:
            raise ValueError("the hash action needs `hash_secret`")
        secret = self.hash_secret.get_secret_value() if self.hash_secret is not None else None
        if secret is not None and len(secret) < 16:
            raise ValueError("`hash_secret` must have at least 16 characters")
        return self

    def detector_thresholds(self) -> dict[str, float]:
        """Each built-in detector's threshold: its default, its group's entry, then its own entry."""
        result = {name: detector.threshold for name, detector in BY_NAME.items()}
        for name, value in self.thresholds.items():
            if name in GROUPS:
                for member in expand([name]):
                    result[member] = value
        for name, value in self.thresholds.items():
            if name not in GROUPS or name in BY_NAME:
                result[name] = value
        return result

    def output_actions(self) -> dict[str, OutputAction]:
        """Each enabled output detector's action; a detector's own entry beats its group's."""
        result = {name: self.action for name in expand(self.output)}
        for name, action in self.actions.items():
            if name in GROUPS:
                for member in expand([name]):
                    if member in result:
                        result[member] = action
        for name, action in self.actions.items():
            if name in result:
                result[name] = action
        return result


INPUT_STAGE = StageSpec(
    name="input",
    implementation="proxy.stages.input_checks",
    settings=InputConfig,
    description="Input checks: size, blocked patterns, control characters, request shape (proxy/safety/).",
)

REDACTION_STAGE = StageSpec(
    name="redaction",
    implementation="proxy.stages.redact",
    settings=RedactionConfig,
    default_on=True,
    description="PII and secret redaction, both directions (proxy/safety/).",
    metrics=(
        # detector = a built-in or policy-defined name; direction = output (what callers receive) or input
        # (prompts before they leave). Counts, never values.
        MetricSpec(
            "redactions",
            "counter",
            "agent_proxy_redactions",
            "Values redacted, by detector, route and direction.",
            ("detector", "route", "direction"),
        ),
    ),
)
