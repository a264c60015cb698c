"""The Host and Origin rules of the proxy's listener (proxy/host_check.py): DNS rebinding and cross-site pages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.host_check import HostRules
from proxy.policy.schema import ServerConfig

DEFAULT = HostRules.build((), (), "0.0.0.0")
SERVICE = HostRules.build(["agent-proxy", "*.svc.cluster.local", "api.internal:8443"], ["https://ui.example.com"])


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "LOCALHOST.:8080",  # case and the root label's dot do not matter
        "127.0.0.1:8080",
        "[::1]:8080",
        "[::1]",
        "10.1.2.3:8080",  # a pod's IP, as kubelet probes and Prometheus scrapes send it: a literal cannot be rebound
        "[fe80::1]:80",
        None,  # no Host at all: not a browser
    ],
)
def test_loopback_and_literals_are_always_allowed(host):
    assert DEFAULT.refusal(host, None) is None


@pytest.mark.parametrize(
    "host", ["evil.example.com", "evil.example.com:8080", "localhost.evil.example.com", "127.0.0.1.nip.io", "[::1", ""]
)
def test_a_rebinding_name_is_refused(host):
    assert DEFAULT.refusal(host, None) == "host"


def test_the_suites_rebinding_request_is_refused():
    # What the MCP conformance suite's dns-rebinding-protection scenario sends.
    assert DEFAULT.refusal("evil.example.com", "http://evil.example.com") == "host"


def test_a_request_without_origin_passes_on_host_alone():
    # SDKs and other non-browser clients send no Origin.
    assert DEFAULT.refusal("localhost:8080", None) is None
    assert SERVICE.refusal("agent-proxy:8080", None) is None


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "https://localhost",
        "http://127.0.0.1:5173",
        "http://[::1]:8080",
        "http://localhost:8080",
    ],
)
def test_loopback_origins_pass(origin):
    assert DEFAULT.refusal("localhost:8080", origin) is None


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example.com",
        "https://evil.example.com:443",
        "http://10.1.2.3:8080",  # a page on some other machine's address
        "null",  # sandboxed frames and file:// pages
        "http://localhost:8080/path",
        "ftp://localhost",
        "garbage",
    ],
)
def test_cross_site_origins_are_refused(origin):
    assert DEFAULT.refusal("localhost:8080", origin) == "origin"


def test_same_origin_passes():
    # A page the listener itself served under an allowed Host (the status page reached by the pod's IP).
    assert DEFAULT.refusal("10.1.2.3:8080", "http://10.1.2.3:8080") is None
    assert DEFAULT.refusal("10.1.2.3:8080", "http://10.1.2.3:9090") == "origin"


def test_allowed_names_subdomains_and_ports():
    assert SERVICE.refusal("agent-proxy", None) is None
    assert SERVICE.refusal("agent-proxy.team.svc.cluster.local:8080", None) is None
    assert SERVICE.refusal("svc.cluster.local", None) == "host"  # `*.` needs a label before the suffix
    assert SERVICE.refusal("api.internal:8443", None) is None
    assert SERVICE.refusal("api.internal:80", None) == "host"
    assert SERVICE.refusal("evil.example.com", None) == "host"


def test_allowed_origins_and_allowed_host_names_as_origins():
    assert SERVICE.refusal("agent-proxy:8080", "https://ui.example.com") is None
    assert SERVICE.refusal("agent-proxy:8080", "http://ui.example.com") == "origin"  # the scheme is part of it
    assert SERVICE.refusal("agent-proxy:8080", "http://agent-proxy:8080") is None


def test_the_listen_name_is_allowed_and_star_turns_a_check_off():
    assert HostRules.build((), (), "proxy.local").refusal("proxy.local:8080", None) is None
    everything = HostRules.build(["*"], ["*"])
    assert everything.refusal("evil.example.com", "http://evil.example.com") is None


@pytest.mark.parametrize("entry", ["http://x", "a b", "x/y", "*.*.x", "x:port", ""])
def test_the_policy_rejects_a_malformed_host_entry(entry):
    with pytest.raises(ValidationError):
        ServerConfig(allowed_hosts=[entry])


@pytest.mark.parametrize("entry", ["localhost", "http://x/path", "http://x:", "file:///x"])
def test_the_policy_rejects_a_malformed_origin_entry(entry):
    with pytest.raises(ValidationError):
        ServerConfig(allowed_origins=[entry])


def test_the_policy_accepts_documented_forms():
    config = ServerConfig(
        allowed_hosts=["agent-proxy", "*.svc.cluster.local", "[::1]:8080", "api.internal:*", "*"],
        allowed_origins=["https://ui.example.com", "http://localhost:*", "https://*.example.com", "*"],
    )
    assert len(config.allowed_hosts) == 5
