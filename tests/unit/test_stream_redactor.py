"""Streaming redaction is exact: any split of a text into pieces gives the output of the whole text.

Property-based over generated texts full of PII, secrets and near-misses, and
exhaustive (every split) for short ones; the same for JSON text (tool-call arguments)
and for placeholders being put back. Also: the hold-back stays bounded, and the regex
reach analysis refuses patterns that could hold a stream forever.
"""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.safety import scanner as scanner_module
from proxy.safety.actions import PLACEHOLDER, OutputActions, Pseudonymiser
from proxy.safety.catalogue import BUILTIN, BY_NAME, custom_detector
from proxy.safety.jsontext import JsonTextRedactor, redact_json_text, redact_value, sensitive_key
from proxy.safety.regexbounds import UnboundedPattern, bounds
from proxy.safety.scanner import Scanner
from proxy.safety.stream_redactor import StreamRedactor, TextPipeline, redact_whole
from tests.data import redaction_corpus as corpus

DETECTORS = [*BUILTIN, custom_detector("ticket", r"TCK-\d{4,8}")]
SCANNER = Scanner(DETECTORS)
ACTIONS = {d.name: "hash" if d.name in ("email", "phone") else "mask" for d in DETECTORS}

VALUES = [
    "john.doe@acmecorp.com", "a@b.co", "x.y+z@sub.globex.org", "+1 415 555 0132", "(415) 555-0132",
    "+44 20 7946 0958", "536-22-1234", "4111 1111 1111 1111", "4012888888881881", "3782 822463 10005",
    "DE89 3704 0044 0532 0130 00", "GB29NWBK60161331926819", "192.168.1.10", "10.0.0.1", "2001:db8::1",
    "fe80::1ff:fe23:4567:890a", corpus.OPENAI_PROJECT, corpus.ANTHROPIC, corpus.AWS_ID,
    f"aws_secret_access_key = {corpus.AWS_SECRET}", corpus.GITHUB_CLASSIC, corpus.SLACK_BOT, corpus.STRIPE_LIVE,
    corpus.JWT, corpus.RSA_PEM, "password: hunter22", "api_key=9f8e7d6c5b4a", "TCK-123456",
    "a\u200b@b.co", "4111\u00a01111\u00a01111\u00a01111", "5116.9562.5300.3191", "ssn 536221234",
    corpus.RSA_PEM.replace("\n", "\\n"), "postgres://u:Zq8vR2mK9w@db", "curl -u a:Tr0ub4dor3x",
    "password is Xk29vLq7pT",
]  # fmt: skip
NEAR_MISSES = [
    " ", "  ", "\n", ".", ",", "-", "@", ":", "::", "+", "(", ")", "'", '"', "=", "a", "the", "Z9", "1", "12",
    "4111", "sk-", "sk-ant-", "AKIA", "eyJ", "ghp_", "xoxb-", "-----BEGIN ", "PRIVATE KEY-----", "password",
    "token", "DE89", "192.168", "icon@2x.png", "café", "😀", "TCK-", "12:30",
    "\u200b", "\u00ad", "\uff20", "\u00a0", "\u202e", "\\n", " is ", "`", "://", "-u ", "-p", "127.0.0.1", "git@",
]  # fmt: skip
TEXTS = st.lists(st.sampled_from(VALUES + NEAR_MISSES), min_size=1, max_size=10).map("".join)


def _redactor() -> StreamRedactor:
    return StreamRedactor(SCANNER, OutputActions(ACTIONS, b"k" * 16, "tenant"))


def _whole(text: str) -> str:
    return redact_whole(SCANNER, OutputActions(ACTIONS, b"k" * 16, "tenant"), text)


def _streamed(text: str, cuts: list[int]) -> str:
    redactor = _redactor()
    pieces, start = [], 0
    for cut in [*sorted(set(cuts)), len(text)]:
        pieces.append(redactor.feed(text[start:cut]))
        start = cut
    return "".join(pieces) + redactor.flush()


def _all_splits(text: str):  # type: ignore[no-untyped-def]
    for mask in range(1 << (len(text) - 1)):
        yield [i + 1 for i in range(len(text) - 1) if mask >> i & 1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=TEXTS)
def test_any_split_gives_the_whole_text_output(data, text):
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=40))
    assert _streamed(text, cuts) == _whole(text)


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_one_character_at_a_time(text):
    assert _streamed(text, list(range(1, len(text)))) == _whole(text)


@pytest.mark.parametrize(
    "text",
    ["a@b.co x", "a@b.com.", "10.0.0.1.", "x 1.2.3.4:", "pwd=ab12cd", "::1 fe::2", "TCK-12345.", "sk-ab1@c.de"],
)
def test_every_split_of_short_texts(text):
    whole = _whole(text)
    for cuts in _all_splits(text):
        assert _streamed(text, cuts) == whole, cuts


def test_values_are_replaced_in_the_whole_text():
    text = f"mail john.doe@acmecorp.com, card 4111 1111 1111 1111, key {corpus.OPENAI_PROJECT}."
    out = _whole(text)
    assert "john.doe" not in out and "4111" not in out and corpus.OPENAI_PROJECT not in out
    assert "[CARD]" in out and "[API_KEY]" in out and out.startswith("mail [EMAIL_")


def test_hash_is_stable_per_tenant_and_differs_between_tenants():
    one = redact_whole(SCANNER, OutputActions(ACTIONS, b"k" * 16, "acme"), "a@b.co and a@b.co")
    again = redact_whole(SCANNER, OutputActions(ACTIONS, b"k" * 16, "acme"), "a@b.co")
    other = redact_whole(SCANNER, OutputActions(ACTIONS, b"k" * 16, "globex"), "a@b.co")
    first, second = one.split(" and ")
    assert first == second == again != other
    assert first.startswith("[EMAIL_") and len(first) == len("[EMAIL_]") + 12


def test_hold_back_in_prose_is_about_one_word():
    """Ordinary text is released as soon as a character ends every possible match."""
    redactor = _redactor()
    words = ("The service restarted cleanly and every check passed, so we can close the incident now. " * 20).split(" ")
    for word in words:
        redactor.feed(word + " ")
        assert redactor.pending <= 1
    redactor.feed("partial")
    assert redactor.pending <= len("partial")


def test_hold_back_never_exceeds_the_longest_reach():
    redactor = _redactor()
    longest = max(d.ahead for d in DETECTORS)
    for piece in ["1234 5678 " * 50, "a" * 3000, "-" * 500, "eyJ" + "A" * 5000]:
        redactor.feed(piece)
        assert redactor.pending <= longest
    assert redactor.flush()


# ---- JSON text: tool-call arguments and tool responses

KEY_RULE_ACTIONS = OutputActions({"password": "mask"}, None, "t")


def _pipeline() -> TextPipeline:
    return TextPipeline([_redactor()])


def _key_rule(key):  # type: ignore[no-untyped-def]
    return (lambda value: KEY_RULE_ACTIONS(BY_NAME["password"], value)) if sensitive_key(key) else None


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 63) - 1)  # what orjson writes; the lexer itself takes any number
    | st.sampled_from([4111111111111111, 1.5])
    | TEXTS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["to", "note", "password", "api_key", "n", "é\n"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=JSON_VALUES, indent=st.booleans())
def test_json_text_any_split_is_exact_valid_and_matches_the_parsed_walk(data, value, indent):
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    whole = redact_json_text(text, _pipeline, _key_rule)
    assert orjson.loads(whole) == redact_value(value, _pipeline, _key_rule)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=30))))
    redactor = JsonTextRedactor(_pipeline, _key_rule)
    out, start = [], 0
    for cut in [*cuts, len(text)]:
        out.append(redactor.feed(text[start:cut]))
        start = cut
    assert "".join(out) + redactor.flush() == whole


def test_json_escapes_are_decoded_before_detection():
    text = r'{"a": "line\njohn.doe@acmecorp.com", "b": "x\u0040y.com \ud83d\ude00", "password": 12345678}'
    out = orjson.loads(redact_json_text(text, _pipeline, _key_rule))
    assert out["a"].startswith("line\n[EMAIL_") and out["b"].startswith("[EMAIL_") and out["b"].endswith("😀")
    assert out["password"] == "[SECRET]"


def test_json_escape_cut_at_every_position():
    text = r'{"k": "a\u00e9\ud83d\ude00\"\\b@c.de"}'
    whole = redact_json_text(text, _pipeline)
    for cut in range(len(text) + 1):
        redactor = JsonTextRedactor(_pipeline)
        assert redactor.feed(text[:cut]) + redactor.feed(text[cut:]) + redactor.flush() == whole


# ---- placeholders put back


def test_placeholders_split_anywhere_are_restored():
    pseudonyms = Pseudonymiser("pseudonymise")
    masked = redact_whole(SCANNER, pseudonyms, "write to a@b.co and c@d.io, again a@b.co")
    assert masked == "write to [EMAIL_1] and [EMAIL_2], again [EMAIL_1]"
    reply = "Sent to [EMAIL_2] and [EMAIL_1]; [EMAIL_9] and [NOT_A PLACEHOLDER_1] stay."
    restore = Scanner([PLACEHOLDER])
    expected = "Sent to c@d.io and a@b.co; [EMAIL_9] and [NOT_A PLACEHOLDER_1] stay."
    assert redact_whole(restore, pseudonyms.restore, reply) == expected
    for cuts in itertools.combinations(range(1, len(reply)), 2):
        redactor = StreamRedactor(restore, pseudonyms.restore)
        a, b = cuts
        out = redactor.feed(reply[:a]) + redactor.feed(reply[a:b]) + redactor.feed(reply[b:]) + redactor.flush()
        assert out == expected


# ---- the reach of a regex


@pytest.mark.parametrize(
    ("pattern", "ahead"),
    [(r"abc", 3), (r"\d{3}-\d{2}", 6), (r"(?<!\w)a{1,5}(?=xy)", 7), (r"a|bcd", 3), (r"(a{2})\1", 4), (r"\bab\b", 4)],
)
def test_reach_of_bounded_patterns(pattern, ahead):
    assert bounds(pattern).ahead == ahead


@pytest.mark.parametrize("pattern", [r"a+", r"\d*", r"x{3,}", r"(?=.*secret)abc"])
def test_unbounded_patterns_are_refused(pattern):
    with pytest.raises(UnboundedPattern):
        bounds(pattern)


def test_custom_detectors_get_a_literal_head():
    detector = custom_detector("order", r"ORD-\d{6}")
    assert detector.start is not None and detector.start.search("xx ORD") and detector.ahead == 10


# ---- searching by anchor finds what a plain search finds


def _both_ways(text: str) -> tuple[str, str]:
    outputs = []
    for threshold in (0, 1 << 30):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(scanner_module, "ANCHORED_FROM", threshold)
            outputs.append(_whole(text))
    return outputs[0], outputs[1]


@settings(max_examples=200, deadline=None)
@given(text=TEXTS)
def test_anchored_search_finds_what_a_plain_search_finds(text):
    anchored, plain = _both_ways(text)
    assert anchored == plain


def test_anchored_search_on_the_corpus():
    texts = [p.text for items in corpus.POSITIVE.values() for p in items]
    texts += corpus.CLEAN + [t for items in corpus.NEGATIVE.values() for t in items]
    for text in texts:
        anchored, plain = _both_ways(text)
        assert anchored == plain, text


# ---- a split `start` (full heads where a hint is, partial heads at the end) finds what the whole regex finds


def _starts_agree(text: str) -> None:
    for detector in (d for d in DETECTORS if d.start_hints):
        split, whole = scanner_module._start_parts(detector), (detector.start, None, 0, (), None)
        assert split is not None and split[3]  # it has partial heads, a run of one class among them
        for end in range(len(text) + 1):
            prefix = text[:end]
            for low in range(0, end, 3):
                found = Scanner._open_start(detector, split, prefix, low, end, end)
                expected = Scanner._open_start(detector, whole, prefix, low, end, end)
                assert found == expected, (detector.name, prefix, low)
                for limit in range(low + 1, end, 2):  # below the caller's hold so far it is exact, else past it
                    bounded = Scanner._open_start(detector, split, prefix, low, end, limit)
                    assert bounded == found if found < limit else bounded >= limit, (detector.name, prefix, limit)


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_split_start_search_finds_what_the_whole_start_regex_finds(text):
    _starts_agree(text[:120])


def test_split_start_search_on_the_corpus():
    texts = [p.text for items in corpus.POSITIVE.values() for p in items if "secret" in p.text.lower()]
    texts += ["PGPASSWORD=Zq8vR2mK9w", "my Secret Access Key is x", "the passphrase `x", "AUTHORIZATION: Bearer x"]
    for text in texts:
        _starts_agree(text[:200])
