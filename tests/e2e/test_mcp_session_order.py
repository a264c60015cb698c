"""MCP sessions through the proxy: the session's GET stream is open upstream before its next request arrives.

The upstream here is race-prone on purpose, as MCP servers are: a request it sends to the client
(sampling) goes on the session's GET stream if that stream is open, and is lost otherwise; and it
is slow to open a GET stream. The client sends `tools/call` and opens the GET at the same moment,
right after `notifications/initialized` was answered, as the SDKs do, in either order, session after
session. Through the proxy every server request must reach the client.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from tests.fixtures.servers import ServerThread

SESSIONS = 20
GET_OPENS_S = 0.02  # how long the upstream takes to open a GET stream
SESSION = "mcp-session-id"


class RacyServer:
    """A streamable-HTTP MCP server reduced to what the ordering needs; it records what arrived in what order."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.streams: dict[str, web.StreamResponse] = {}
        self.arrivals: dict[str, list[str]] = {}

    async def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/mcp", self.post)
        app.router.add_get("/mcp", self.get)
        return app

    async def post(self, request: web.Request) -> web.StreamResponse:
        message = await request.json()
        session = request.headers.get(SESSION)
        if message["method"] == "initialize":
            session = f"s-{next(self.ids)}"
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "serverInfo": {"name": "racy", "version": "1"},
            }
            return web.json_response(
                {"jsonrpc": "2.0", "id": message["id"], "result": result}, headers={SESSION: session}
            )
        assert session is not None
        self.arrivals.setdefault(session, []).append(message["method"])
        if "id" not in message:
            return web.Response(status=202)
        stream = self.streams.get(session)
        if stream is None:  # nobody to ask: the request to the client is lost
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {"sampling": "lost"}})
        ask = b'{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{}}'
        await stream.write(b"event: message\ndata: " + ask + b"\n\n")
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {"sampling": "sent"}})

    async def get(self, request: web.Request) -> web.StreamResponse:
        session = request.headers[SESSION]
        self.arrivals.setdefault(session, []).append("GET")
        await asyncio.sleep(GET_OPENS_S)  # the stream is not there yet: a sampling request now would be lost
        stream = web.StreamResponse(headers={"content-type": "text/event-stream", SESSION: session})
        await stream.prepare(request)
        self.streams[session] = stream
        try:
            await asyncio.Event().wait()  # open until the client goes away (the handler is cancelled then)
        finally:
            self.streams.pop(session, None)


@pytest.fixture
def racy() -> Iterator[tuple[RacyServer, str]]:
    server = RacyServer()
    thread = ServerThread(server.app).start()
    try:
        yield server, thread.url
    finally:
        thread.stop()


def policy(upstream: str, grace: float = 0.25) -> str:
    return f"""
version: 1
upstreams:
  racy:
    url: {upstream}
    protocol: mcp
    timeouts: {{connect_s: 2, first_byte_s: 5, idle_s: 30, total_s: 60, session_stream_grace_s: {grace}}}
routes:
  - {{name: mcp, prefix: /mcp, upstream: racy, auth: none}}
"""


HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def start_session(http: aiohttp.ClientSession, url: str) -> str:
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
    async with http.post(url, json=initialize, headers=HEADERS) as answer:
        session = answer.headers[SESSION]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http.post(url, json=initialized, headers={**HEADERS, SESSION: session}) as answer:
        assert answer.status == 202
    return session


async def one_session(http: aiohttp.ClientSession, url: str, post_first: bool) -> tuple[str, bytes]:
    """tools/call and the GET stream sent at the same moment; the call's answer and the GET stream's first event."""
    session = await start_session(http, url)
    headers = {**HEADERS, SESSION: session}

    async def call() -> str:
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "test_sampling"}}
        async with http.post(url, json=message, headers=headers) as answer:
            return (await answer.json())["result"]["sampling"]

    async def listen() -> bytes:
        async with http.get(url, headers={**headers, "accept": "text/event-stream"}) as stream:
            try:
                async with asyncio.timeout(2):
                    return await stream.content.readuntil(b"\n\n")
            except TimeoutError:
                return b""

    tasks = [call(), listen()] if post_first else [listen(), call()]
    results = await asyncio.gather(*tasks)
    called, heard = (results[0], results[1]) if post_first else (results[1], results[0])
    return called, heard


def test_server_requests_on_the_get_stream_are_never_lost(racy, proxy_factory):
    server, upstream = racy
    proxy = proxy_factory(policy(upstream))

    async def sessions() -> list[tuple[str, bytes]]:
        async with aiohttp.ClientSession() as http:
            return [await one_session(http, proxy.url + "/mcp", i % 2 == 0) for i in range(SESSIONS)]

    results = asyncio.run(sessions())
    assert [called for called, _ in results] == ["sent"] * SESSIONS
    assert all(b"sampling/createMessage" in heard for _, heard in results)
    # Upstream, each session's GET came before its tools/call, whatever order the client sent them in.
    assert all(arrivals == ["notifications/initialized", "GET", "tools/call"] for arrivals in server.arrivals.values())
    assert proxy.metric("agent_proxy_mcp_session_order_waits_total", {"route": "mcp", "result": "waited"}) >= SESSIONS


def test_a_session_without_a_get_stream_waits_once_within_the_grace(racy, proxy_factory):
    _, upstream = racy
    proxy = proxy_factory(policy(upstream, grace=0.05))

    async def calls() -> list[str]:
        async with aiohttp.ClientSession() as http:
            url = proxy.url + "/mcp"
            session = await start_session(http, url)
            answers = []
            for n in range(3):
                message = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "x"}}
                async with http.post(url, json=message, headers={**HEADERS, SESSION: session}) as answer:
                    answers.append((await answer.json())["result"]["sampling"])
            return answers

    assert asyncio.run(calls()) == ["lost"] * 3  # this client never opened a stream to be asked on
    no_stream = {"route": "mcp", "result": "no_stream"}
    assert proxy.metric("agent_proxy_mcp_session_order_waits_total", no_stream) == 1  # the first call only
    assert proxy.metric("agent_proxy_mcp_session_order_waits_total", {"route": "mcp", "result": "waited"}) == 0
