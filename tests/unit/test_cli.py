"""The `agent-proxy` command: check, schema and keys hash, called in-process."""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest

from proxy.accounting.report import UsageRow, render_table, totals
from proxy.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "policies" / "demo.yaml"


def test_check_summarises_the_demo_policy(capsys):
    assert main(["check", "--policy", str(DEMO)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"policy {DEMO}: valid" in out
    for expected in (
        "routes (first match wins):",
        "anthropic",
        "prefix /v1/messages -> mock-anthropic",
        "prefix /v1/ -> mock-openai",
        "stages: auth, input(shadow), ratelimit, truncation, cache, tool_calls, redaction, usage",
        "stages: auth, ratelimit, toolgov, redaction, usage",  # the echo tool route
        "upstreams:",
        "mock-openai",
        "builtin://mock, injects Authorization",
        "mock-anthropic",
        "injects x-api-key",
        "callers:",
        "demo",
        "ops",
        "1 static key(s)",
    ):
        assert expected in out, expected
    assert "mock-provider-key" not in out  # injected credentials are never printed


def test_check_default_policy_never_prints_its_secrets(capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-SECRET-ant")
    monkeypatch.setenv("AGENT_PROXY_KEY_SHA256", "a" * 64)
    assert main(["check", "--policy", str(ROOT / "policies" / "default.yaml")]) == 0
    out = capsys.readouterr().out
    assert "api.openai.com" in out and "SECRET" not in out


SHIPPED = sorted([*ROOT.glob("policies/*.yaml"), *ROOT.glob("policies/examples/*.yaml")])
DEFAULT_POLICY_ENV = {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y", "AGENT_PROXY_KEY_SHA256": "a" * 64}


def test_check_accepts_every_shipped_policy_in_one_run(capsys, monkeypatch):
    """What CI runs: `agent-proxy check policies/*.yaml policies/examples/*.yaml`."""
    for name, value in DEFAULT_POLICY_ENV.items():
        monkeypatch.setenv(name, value)
    assert len(SHIPPED) >= 7
    assert main(["check", *map(str, SHIPPED)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for path in SHIPPED:
        assert f"policy {path}: valid" in out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_policy_says_in_its_header_what_it_demonstrates(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# "))
    text = " ".join(header)
    assert len(text.split()) >= 8, f"{path.name} needs a header comment saying what it demonstrates"
    if path.parent.name == "examples":  # and the command that tries it
        assert str(path.relative_to(ROOT)) in text, f"{path.name}: name the command that runs or checks it"


def test_check_names_every_invalid_file_and_still_summarises_the_valid_ones(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nupstreams: [\n")
    assert main(["check", str(DEMO), str(broken), str(tmp_path / "nope.yaml")]) == 2
    out, err = capsys.readouterr()
    assert f"policy {DEMO}: valid" in out
    assert f"{broken}" in err and "YAML syntax" in err and "cannot read the file" in err
    assert "2 of 3 policies invalid" in err


def test_check_an_invalid_policy_exits_2_naming_field_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "upstreams:\n"
        "  up:\n"
        "    url: ftp://example.com\n"
        "routes:\n"
        "  - prefix: /v1/\n"
        "    upstream: up\n"
        "    retries: 3\n"
    )
    assert main(["check", "--policy", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{bad}: invalid policy" in err
    assert "upstreams.up.url (line 4): must be an http:// or https:// URL" in err
    assert "routes[0].retries (line 8): unknown field" in err


def test_check_a_yaml_error_and_a_missing_file(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nupstreams: [\n")
    assert main(["check", "--policy", str(broken)]) == 2
    assert "line 3, column 1: YAML syntax" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_check_refuses_header_values_with_cr_lf_and_a_header_that_sets_host(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TOKEN", "tok\r\nx-injected: 1")
    bad = tmp_path / "headers.yaml"
    bad.write_text(
        "version: 1\n"
        "upstreams:\n"
        "  up:\n"
        "    url: https://example.com\n"
        "    credentials: {header: Authorization, value: 'Bearer ${UPSTREAM_TOKEN}'}\n"
        "    headers:\n"
        "      Host: internal.example\n"
        '      x-team: "a\\r\\nb"\n'
        "routes:\n"
        "  - {prefix: /, upstream: up}\n"
    )
    assert main(["check", "--policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "upstreams.up.credentials.value (line 5): a header value may not hold CR, LF" in err
    assert "upstreams.up.headers.Host (line 7): invalid name: 'host' is set by the proxy" in err
    assert "upstreams.up.headers.x-team (line 8): a header value may not hold CR, LF" in err
    assert "tok" not in err and "x-injected" not in err


def test_schema_prints_the_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = orjson.loads(capsys.readouterr().out)
    assert schema["type"] == "object" and schema["title"] == "Policy"
    assert {"upstreams", "routes", "auth", "callers", "stages"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert "Upstream" in schema["$defs"]


def test_keys_hash_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("demo-key-1\n"))
    assert main(["keys", "hash"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"demo-key-1").hexdigest()


def test_keys_hash_refuses_an_empty_key(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["keys", "hash"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no key given" in err


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_the_usage_table_is_plain_text_and_cuts_keys_to_fit():
    rows = [
        UsageRow("a-very-long-caller-name", 3, 1200, 0, 0, 300, 0, 0.0123, 0, 1, 0),
        UsageRow("local", 1, 5, 0, 0, 3, 0, 0.0, 1, 0, 0),
    ]
    data = {"by": "caller", "rows": [asdict(r) for r in rows], "totals": asdict(totals(rows))}
    wide = render_table(data, "usage by caller").splitlines()
    assert wide[0] == "usage by caller" and wide[1].split()[:3] == ["caller", "requests", "input"]
    assert wide[3].startswith("a-very-long-caller-name") and "1,200" in wide[3] and "0.012300" in wide[3]
    assert "unpriced" in wide[4] and wide[-1].startswith("total") and "1,205" in wide[-1]
    narrow = render_table(data, "t", width=len(wide[1]) - 10).splitlines()
    assert narrow[3].startswith("a-very-long-~ ") and max(map(len, narrow[1:])) == len(wide[1]) - 10
