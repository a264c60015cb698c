"""Policy loading: every shipped policy loads; every mistake names its field and line, never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.policy.load import PolicyError, load_policy, policy_from_text

POLICIES = sorted(Path(__file__).resolve().parents[2].joinpath("policies").rglob("*.yaml"))
ENV = {
    "OPENAI_API_KEY": "sk-test-openai",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "AGENT_PROXY_KEY_SHA256": "0" * 64,
}
SECRET = "sk-SECRET123"

BASE = """\
version: 1
upstreams:
  openai:
    url: https://api.openai.com
    credentials: {header: Authorization, value: "Bearer ${KEY}"}
routes:
  - name: chat
    prefix: /v1/
    upstream: openai
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as info:
        policy_from_text(text, "test.yaml", env={"KEY": SECRET} if env is None else env)
    assert str(info.value).startswith("test.yaml: invalid policy")
    return info.value.problems


def one_problem(text: str, env: dict[str, str] | None = None) -> str:
    found = problems(text, env)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_every_shipped_policy_loads(path):
    policy = load_policy(path, env=ENV)
    assert policy.upstreams and policy.routes


def test_shipped_default_needs_its_environment():
    default = next(p for p in POLICIES if p.name == "default.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy(default, env={})
    text = str(info.value)
    for name in ENV:
        assert f"environment variable {name} is not set" in text


def test_base_policy_loads_and_interpolates():
    policy = policy_from_text(BASE, env={"KEY": SECRET})
    assert policy.upstreams["openai"].credentials.value.get_secret_value() == f"Bearer {SECRET}"
    assert SECRET not in repr(policy)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (BASE + "bogus: 1\n", "bogus (line 10): unknown field"),
        (BASE.replace("    url: https", "    uri: x\n    url: https"), "upstreams.openai.uri (line 4): unknown field"),
        (BASE.replace("{header: Authorization,", "{header: Authorization, hedaer: x,"),
         "upstreams.openai.credentials.hedaer (line 5): unknown field"),
        (BASE + "  - {prefix: /x, upstream: openai, retries: 3}\n", "routes[1].retries (line 10): unknown field"),
        (BASE + "stages:\n  usage:\n    mode: enforce\n    extra: 1\n", "stages.usage.extra (line 13): unknown field"),
        (BASE + "server:\n  port: 70000\n", "server.port (line 11): Input should be less than or equal to 65535"),
    ],
)  # fmt: skip
def test_unknown_or_invalid_field_names_its_path_and_line(text, where):
    assert one_problem(text) == where


def test_every_problem_is_reported_at_once():
    text = BASE + "server:\n  port: 0\n  hots: x\n"
    assert problems(text) == [
        "server.port (line 11): Input should be greater than or equal to 1",
        "server.hots (line 12): unknown field",
    ]


def test_missing_variable_names_the_variable_field_and_line():
    expected = "upstreams.openai.credentials.value (line 5): environment variable KEY is not set"
    assert one_problem(BASE, env={}) == expected


def test_interpolation_fallback_and_escape():
    text = BASE.replace("Bearer ${KEY}", "Bearer ${MISSING:-fallback} $${KEY} ${KEY}")
    policy = policy_from_text(text, env={"KEY": "k"})
    assert policy.upstreams["openai"].credentials.value.get_secret_value() == "Bearer fallback ${KEY} k"
    empty = policy_from_text(BASE.replace("${KEY}", "${NONE:-}"), env={})
    assert empty.upstreams["openai"].credentials.value.get_secret_value() == "Bearer "


def test_interpolation_cannot_change_the_structure():
    text = BASE.replace("Bearer ${KEY}", "${KEY}")
    policy = policy_from_text(text, env={"KEY": "a}, bogus: {1: [2"})
    assert policy.upstreams["openai"].credentials.value.get_secret_value() == "a}, bogus: {1: [2"


@pytest.mark.parametrize("value", ["a\nbogus: 1", "Bearer x\r\nHost: evil", "nul\x00", "snow\u2603"])
def test_an_interpolated_header_value_that_would_break_requests_is_refused_unseen(value):
    problem = one_problem(BASE, env={"KEY": value})
    assert problem.startswith("upstreams.openai.credentials.value (line 5): a header value may not hold CR, LF")
    assert value not in problem


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("host: api.evil", "'host' is set by the proxy"),
        ("Content-Length: '5'", "'content-length' is set by the proxy"),
        ("transfer-encoding: chunked", "'transfer-encoding' is set by the proxy"),
        ("Connection: close", "'connection' is set by the proxy"),
        ("x-agent-proxy-caller: admin", "are the proxy's own"),
        ("'bad name': x", "a header name is a token"),
        ('x-ok: "a\\r\\nb"', "a header value may not hold CR, LF"),
    ],
)
def test_upstream_headers_that_would_break_requests_are_refused(header, message):
    text = BASE.replace("    credentials:", f"    headers: {{{header}}}\n    credentials:")
    problem = one_problem(text)
    assert problem.startswith("upstreams.openai.headers.") and "(line 5)" in problem and message in problem


def test_keys_are_not_interpolated():
    assert one_problem(BASE + "callers:\n  ${KEY}: {}\n").startswith("callers.${KEY} (line 11): invalid name: String")


def test_yaml_syntax_error_gives_line_and_column():
    assert one_problem(BASE + "server:\n  port: 1\n port: 2\n").startswith("line 12, column 2: YAML syntax:")
    assert one_problem("version: 1\nupstreams:\n  a: [\n").startswith("line 4, column 1: YAML syntax")


@pytest.mark.parametrize("doc", ["", "# only a comment\n", "- a\n- b\n", "just text\n"])
def test_a_policy_must_be_a_mapping(doc):
    assert "must be a YAML mapping" in one_problem(doc)


def test_duplicate_keys_are_rejected_with_their_line():
    text = BASE.replace("    prefix: /v1/\n", "    prefix: /v1/\n    prefix: /v2/\n")
    assert one_problem(text) == "line 9, column 5: YAML syntax: duplicate key 'prefix'"
    assert "duplicate key 'openai'" in one_problem(BASE.replace("routes:", "  openai: {url: http://b}\nroutes:"))


def test_merge_keys_may_be_overridden():
    text = BASE.replace(
        "    credentials:", "    timeouts:\n      <<: {connect_s: 3, idle_s: 4}\n      connect_s: 7\n    credentials:"
    )
    timeouts = policy_from_text(text, env={"KEY": "k"}).upstreams["openai"].timeouts
    assert (timeouts.connect_s, timeouts.idle_s) == (7, 4)


def test_anchors_and_merges_across_upstreams():
    text = """\
version: 1
upstreams:
  a: &base
    url: http://a.local
    timeouts: {connect_s: 2}
  b:
    <<: *base
    url: http://b.local
  c:
    <<: *base
    url: http://c.local
routes:
  - {prefix: /, upstream: b, fallbacks: [a, c]}
"""
    policy = policy_from_text(text, env={})
    assert policy.upstreams["b"].url == "http://b.local"
    assert policy.upstreams["c"].timeouts.connect_s == 2
    assert "duplicate key 'url'" in one_problem(text.replace("  c:\n", "  c:\n    url: http://x\n"))


LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def test_an_alias_bomb_is_refused_naming_a_line():
    """A few hundred bytes that stand for 9**9 strings: each level is built once, so the bound is met at once."""
    problem = one_problem(BASE + LAUGHS)
    assert problem.startswith("line ") and "YAML refused: the document expands to more than 1000000 nodes" in problem


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\nroutes: &r [*r]\n", 2),
        ("version: 1\nupstreams: &u\n  x: *u\n", 2),
        ("version: 1\nupstreams:\n  a: &m\n    <<: *m\n", 3),
        ("version: 1\nx: &a [1, [2, [3, *a]]]\n", 2),
    ],
)
def test_a_recursive_alias_is_a_policy_error_naming_its_line(text, line):
    assert one_problem(text).startswith(f"line {line}, column") and "recursive alias" in one_problem(text)


def test_deep_nesting_is_refused_naming_its_line():
    assert "YAML refused: nested more than 100 levels deep" in one_problem("version: 1\nx: " + "[" * 150 + "]" * 150)


def test_an_alias_used_twice_is_one_shared_value_interpolated_once():
    text = BASE.replace("routes:", "  other:\n    url: https://b.local\n    credentials: *creds\nroutes:")
    text = text.replace("    credentials: {header", "    credentials: &creds {header")
    policy = policy_from_text(text, env={"KEY": "k1"})
    assert {u.credentials.value.get_secret_value() for u in policy.upstreams.values()} == {"Bearer k1"}
    assert "environment variable KEY is not set" in problems(text, env={})[0]


def test_route_naming_an_undefined_upstream():
    text = BASE + "  - name: other\n    prefix: /other/\n    upstream: nowhere\n"
    problem = one_problem(text)
    assert problem.startswith("routes[1].upstream (line 12): ")
    assert "not defined in `upstreams` (defined: openai)" in problem
    fallback = one_problem(BASE.replace("upstream: openai", "upstream: openai\n    fallbacks: [openai, gone]"))
    assert fallback.startswith("routes[0].fallbacks[1] (line 10): ")


@pytest.mark.parametrize(
    "matcher",
    ["    path: /v1/chat/completions\n    prefix: /v1/\n", ""],
    ids=["both", "neither"],
)
def test_route_needs_exactly_one_of_path_or_prefix(matcher):
    text = BASE.replace("    prefix: /v1/\n", matcher)
    assert one_problem(text) == "routes[0] (line 7): a route needs exactly one of `path` or `prefix`"


def test_route_paths_start_with_a_slash():
    assert "start with /" in one_problem(BASE.replace("prefix: /v1/", "prefix: v1/"))


def test_builtin_mock_is_an_accepted_url():
    policy = policy_from_text(BASE.replace("https://api.openai.com", "builtin://mock"), env={"KEY": "k"})
    assert policy.upstreams["openai"].url == "builtin://mock"


def test_trailing_slash_is_dropped_and_a_base_path_kept():
    policy = policy_from_text(BASE.replace("https://api.openai.com", "http://10.0.0.1:8000/openai/"), env={"KEY": "k"})
    assert policy.upstreams["openai"].url == "http://10.0.0.1:8000/openai"


@pytest.mark.parametrize(
    "url",
    ["https://api.openai.com/v1?x=1", "ftp://files.local", "https://api.openai.com/#frag", "api.openai.com",
     "builtin://other", "http://"],
)  # fmt: skip
def test_bad_upstream_url_is_rejected(url):
    problem = one_problem(BASE.replace("https://api.openai.com", url))
    assert problem.startswith("upstreams.openai.url (line 4): must be an http:// or https:// URL")


def test_state_redis_needs_a_url():
    assert one_problem(BASE + "state: {backend: redis}\n").startswith("state (line 10): state.backend 'redis' needs")


def test_static_key_for_an_unknown_caller_without_default():
    text = BASE + f"callers:\n  ops: {{}}\nauth:\n  static_keys:\n    - {{caller: nobody, sha256: '{'a' * 64}'}}\n"
    problem = one_problem(text)
    assert problem.startswith("auth.static_keys[0].caller (line 14): names a caller")


@pytest.mark.parametrize(
    "text",
    [
        BASE + "server:\n  port: ${KEY}\n",
        BASE + "server:\n  max_body_bytes: '${KEY}'\n",
        BASE.replace("https://api.openai.com", "https://api.openai.com/?k=${KEY}"),
        BASE.replace("upstream: openai", "upstream: ${KEY}"),
        BASE.replace("prefix: /v1/", "prefix: ${KEY}"),
        BASE + "upstreams_extra: ${KEY}\n",
        BASE + "auth:\n  static_keys:\n    - {caller: agent, sha256: '${KEY}'}\n",
        BASE + "callers: {ops: {}}\nauth:\n  static_keys:\n    - {caller: '${KEY}', sha256: '" + "a" * 64 + "'}\n",
        BASE + "auth: {mode: '${KEY}'}\n",
        BASE.replace("protocol", "x").replace("    url:", "    protocol: ${KEY}\n    url:"),
        BASE + "ledger: {flush_interval_ms: '${KEY}'}\n",
    ],
)
def test_errors_never_show_an_interpolated_value(text):
    found = problems(text)
    assert found
    for problem in found:
        assert SECRET not in problem and "SECRET" not in problem


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.yaml", env={})
    assert "cannot read the file" in info.value.problems[0]
