"""The floor: the least a reverse proxy built on aiohttp's server and client can do.

No policy, auth, metrics, timeouts, header filtering or accounting: read the request,
send it upstream on a pooled `ClientSession`, and copy the answer back (streams chunk by
chunk). A proxy made of those two parts adds at least what this adds; agent-proxy is made
of them too (proxy/forward/transport.py), with its policy work in between.
Run:  python bench/bare_forwarder.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the `fast` extra
    uvloop = None


def _forwarded(name: str) -> bool:
    """The body's type and the mock upstream's controls (answer length, pacing)."""
    return name == "content-type" or name.startswith("x-mock-")


async def serve(upstream: str, port: int) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar())

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if _forwarded(k.lower())}
        async with session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as answer:
            content_type = answer.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                return web.Response(status=answer.status, body=await answer.read(), content_type="application/json")
            out = web.StreamResponse(status=answer.status, headers={"content-type": content_type})
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
    runner.run(serve(sys.argv[1].rstrip("/"), int(sys.argv[2])))
