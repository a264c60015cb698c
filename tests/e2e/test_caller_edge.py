"""The caller's side on real sockets: slow and silent callers, connection caps, malformed HTTP.

Timeouts are short in the test policy; every wait is a socket read with a deadline, never a sleep.
"""

from __future__ import annotations

import gzip
import logging
import socket
import time

import orjson
import pytest

from proxy.edge import EdgeHandler, EdgeServer
from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.logs import captured_log_lines
from tests.fixtures.proxy_server import DEMO_KEY, ProxyServer, basic_policy
from tests.fixtures.waiting import wait_for

HEAD_S = 0.6
BODY_S = 0.6
SECRET = "sk-live-SECRETKEY0123456789"
SSN = "078-05-1120"

EDGE = f"""
server:
  request_head_timeout_s: {HEAD_S}
  request_body_timeout_s: {BODY_S}
  keepalive_s: 1.0
  max_connections: 300
  max_unauthenticated_connections: 100
"""


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def proxy(upstream):
    with ProxyServer(basic_policy(upstream.url, EDGE)) as server:
        yield server


def connect(proxy: ProxyServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, deadline_s: float = 10.0) -> bytes:
    """Everything the proxy sends until it closes the connection; fails past the deadline."""
    sock.settimeout(deadline_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a content-length, read from a kept-alive connection."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def parse(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def chat_request(body: bytes = CHAT, extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {DEMO_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def closed_count(proxy: ProxyServer, reason: str) -> float:
    return proxy.metric("agent_proxy_caller_connections_closed_total", {"reason": reason})


# ---- the hook itself


def test_runner_builds_edge_handlers(proxy):
    """The runner's server is the proxy's, and its connections are EdgeHandlers with the policy's parser limits."""
    sock = connect(proxy)
    try:

        async def inspect():
            server = proxy.server._runner.server
            return type(server), [(type(c), c.max_headers, c.max_field_size) for c in server.connections]

        wait_for(lambda: proxy.run(inspect())[1])
        server_type, connections = proxy.run(inspect())
        assert server_type is EdgeServer
        assert connections == [(EdgeHandler, 100, 16384)]
    finally:
        sock.close()


# ---- timeouts


def test_a_dribbled_head_gets_408_at_the_configured_time(proxy):
    sock = connect(proxy)
    started = time.monotonic()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n")
    sock.settimeout(0.05)
    data = b""
    for char in b"x-slow: 1234567890":  # a byte every 50 ms, for longer than the head timeout
        try:
            sock.sendall(bytes([char]))
        except OSError:
            break
        try:
            data += sock.recv(65536)
            if data:
                break
        except TimeoutError:
            continue
    data += read_until_closed(sock)
    elapsed = time.monotonic() - started
    status, body = parse(data)
    assert status == 408
    assert body["error"]["code"] == "request_timeout"
    assert HEAD_S * 0.9 <= elapsed < HEAD_S + 3
    assert closed_count(proxy, "head_timeout") == 1


def test_a_silent_connection_is_closed_at_the_head_timeout(proxy):
    sock = connect(proxy)
    started = time.monotonic()
    assert read_until_closed(sock) == b""  # nothing came, so nothing is said: just closed
    assert HEAD_S * 0.9 <= time.monotonic() - started < HEAD_S + 3
    assert closed_count(proxy, "head_timeout") == 1


def test_a_dribbled_body_with_a_valid_key_gets_408(proxy, upstream):
    sock = connect(proxy)
    before = upstream.count("/v1/chat/completions")
    whole = chat_request()
    sock.sendall(whole[: whole.index(b"\r\n\r\n") + 4 + 5])  # the head and 5 bytes of the body
    started = time.monotonic()
    status, body = parse(read_until_closed(sock))
    assert status == 408
    assert body["error"]["code"] == "request_timeout"  # the route's (OpenAI) shape
    assert BODY_S * 0.9 <= time.monotonic() - started < BODY_S + 3
    assert closed_count(proxy, "body_timeout") == 1
    assert upstream.count("/v1/chat/completions") == before


def test_an_idle_keepalive_connection_is_closed(proxy):
    sock = connect(proxy)
    sock.sendall(chat_request())
    status, _, _ = read_response(sock)
    assert status == 200
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert 0.9 <= time.monotonic() - started < 4  # keepalive_s: 1.0


def test_the_head_timer_restarts_for_each_keepalive_request(proxy):
    sock = connect(proxy)
    for _ in range(3):  # together longer than one head timeout: each request has its own
        sock.sendall(chat_request())
        assert read_response(sock)[0] == 200
    sock.close()
    assert closed_count(proxy, "head_timeout") == 0


def test_a_keepalive_request_has_the_whole_head_timeout_from_its_own_first_byte(proxy):
    sock = connect(proxy)
    sock.sendall(chat_request())
    assert read_response(sock)[0] == 200
    time.sleep(HEAD_S / 2)  # the connection's timer, set for the first head, is still pending
    sock.sendall(chat_request()[:20])  # part of the next head, then nothing
    started = time.monotonic()
    status, body = parse(read_until_closed(sock))
    assert status == 408
    assert body["error"]["code"] == "request_timeout"
    assert HEAD_S * 0.9 <= time.monotonic() - started < HEAD_S + 3
    assert closed_count(proxy, "head_timeout") == 1


# ---- connection caps


def test_idle_sockets_past_the_cap_are_refused_while_an_identified_caller_gets_through(upstream):
    policy = basic_policy(
        upstream.url, "server: {request_head_timeout_s: 60, max_connections: 300, max_unauthenticated_connections: 100}"
    )
    with ProxyServer(policy) as proxy:
        _flood_while_identified(proxy)


def _flood_while_identified(proxy: ProxyServer) -> None:
    caller = connect(proxy)
    caller.sendall(chat_request())
    assert read_response(caller)[0] == 200  # identified: no longer counted as unauthenticated
    flood: list[socket.socket] = []
    try:
        for _ in range(1500):
            flood.append(connect(proxy))
        wait_for(lambda: closed_count(proxy, "unauthenticated_cap") >= 1400, timeout=20)
        held = proxy.metric("agent_proxy_caller_connections", {"state": "unauthenticated"})
        assert held == 100
        assert closed_count(proxy, "unauthenticated_cap") == 1400
        caller.sendall(chat_request())  # the identified keep-alive connection still works
        assert read_response(caller)[0] == 200
    finally:
        for sock in flood:
            sock.close()
        caller.close()
    wait_for(lambda: proxy.metric("agent_proxy_caller_connections", {"state": "unauthenticated"}) == 0)


def test_the_total_cap_refuses_even_after_identification(upstream):
    policy = basic_policy(upstream.url, "server: {max_connections: 5, max_unauthenticated_connections: 5}")
    with ProxyServer(policy) as proxy:
        held = [connect(proxy) for _ in range(5)]
        for sock in held:
            sock.sendall(chat_request())
            assert read_response(sock)[0] == 200
        extra = connect(proxy)
        assert read_until_closed(extra) == b""
        assert closed_count(proxy, "connection_cap") == 1
        for sock in held:
            sock.close()


# ---- malformed HTTP

MALFORMED = {
    "bare_cr": f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\rAuthorization: Bearer {SECRET}\r\n\r\n",
    "bare_lf": f"POST /v1/chat/completions HTTP/1.1\nHost: localhost\nAuthorization: Bearer {SECRET}\n\n",
    "obs_fold": f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n  Bearer {SECRET}\r\n\r\n",
    "nul_in_header": f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00{SECRET}\r\n\r\n",
    "nul_in_target": f"POST /v1/chat\x00{SECRET} HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "long_request_line": f"GET /v1/{'a' * 20000}{SECRET} HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "long_header": f"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Long: {'b' * 20000}{SECRET}\r\n\r\n",
    "200_headers": "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n"
    + "".join(f"X-H{i}: {SECRET}\r\n" for i in range(200))
    + "\r\n",
    "space_before_colon": f"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization : Bearer {SECRET}\r\n\r\n",
    "bad_version": f"GET /v1/models HTTP/9.{SECRET}\r\nHost: localhost\r\n\r\n",
    "not_http": f"\x16\x03\x01{SECRET}\r\n\r\n",
    "two_content_lengths": f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
    f"Content-Length: 4\r\n\r\n{SECRET}",
    "cl_and_te": f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
    f"Transfer-Encoding: chunked\r\n\r\n{SECRET}",
    "bad_chunk_size": f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    f"zz\r\n{SECRET}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_get_a_json_400_and_a_clean_log_line(proxy, name):
    with captured_log_lines() as logs:
        sock = connect(proxy)
        sock.sendall(MALFORMED[name].encode("latin-1") + f'{{"ssn": "{SSN}"}}'.encode())
        raw = read_until_closed(sock)
        wait_for(lambda: any(line.get("msg") == "malformed request" for line in logs.parsed()))
    status, body = parse(raw)
    assert status == 400
    assert body["error"]["code"] == "malformed_request"
    assert SECRET.encode() not in raw and SSN.encode() not in raw
    text = logs.text()
    assert SECRET not in text and SSN not in text
    assert "Traceback" not in text and '"exc"' not in text
    [line] = [line for line in logs.parsed() if line["msg"] == "malformed request"]
    assert set(line) == {"ts", "level", "logger", "msg", "kind", "status", "peer", "request_id"}
    assert line["peer"] == "127.0.0.1" and len(line["kind"]) < 40


def test_bad_chunking_answers_in_the_route_shape(proxy, upstream):
    """A framing error inside a body, after a good head with a valid key, reaches the request reading it."""
    with captured_log_lines() as logs:
        sock = connect(proxy)
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nx-api-key: " + DEMO_KEY.encode() + b"\r\n"
            b"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n'
        )
        wait_for(lambda: proxy.metric("agent_proxy_requests_in_flight") == 1)  # the handler is reading the body
        sock.sendall(b"zz\r\n" + SECRET.encode() + b"\r\n")
        started = time.monotonic()
        status, body = parse(read_until_closed(sock))
        wait_for(lambda: any(line.get("msg") == "request" for line in logs.parsed()))
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # Anthropic's shape
    assert time.monotonic() - started < BODY_S  # answered at once, not at the body timeout
    assert SECRET not in logs.text() and "Traceback" not in logs.text()
    assert closed_count(proxy, "malformed") == 1


def test_malformed_input_leaves_only_the_proxys_own_lines(proxy):
    """aiohttp's loggers (which would write the exception, its bytes and a traceback) say nothing."""
    with captured_log_lines(logging.WARNING) as logs:
        sock = connect(proxy)
        sock.sendall(MALFORMED["bare_lf"].encode())
        read_until_closed(sock)
        wait_for(lambda: logs.lines)
    assert all(line["logger"].startswith("agent_proxy") for line in logs.parsed())


def test_a_compressed_body_counts_its_inflated_size(proxy, upstream):
    """aiohttp inflates a gzip request body 64 KiB at a time; the body limit counts what it inflates to."""
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)  # 64 MiB from ~64 KB
    sock = connect(proxy)
    sock.sendall(chat_request(bomb, extra="content-encoding: gzip\r\n"))
    status, _, body = read_response(sock)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"
    sock.close()
