"""MCP sessions: the session's GET stream is open upstream before the session's next requests reach it.

A streamable-HTTP MCP client opens the session's GET stream (where the server sends requests of its
own: sampling, elicitation, roots) as soon as `notifications/initialized` is answered, and sends its
next POST at once. The two travel on different connections, and they arrive within a fraction of a
millisecond of each other, often the POST first (it reuses a connection, the GET opens one). Directly,
the server is still handling the POST when the GET registers. Through a proxy each hop adds its own
jitter: the POST can reach the server well ahead of the GET, the server sends its request while no
GET stream is open, the request is lost, and the client waits for it until it times out.

So, per `mcp` route and `Mcp-Session-Id`:
- a GET is noted as it arrives, before any stage runs; the session's later requests wait, before they
  are forwarded, until its answer head came back from the upstream (or it ended), at most
  `timeouts.session_order_s`;
- a session the proxy has not seen before: once its first request (the `initialized` notification)
  has its answer head, the session's next requests wait for the GET stream the client is expected to
  open, at most `timeouts.session_stream_grace_s` after that answer; a GET that arrives in time is
  waited for as above. A client that opens no GET stream pays that grace once per session; 0 turns it off.

Waits are counted in `agent_proxy_mcp_session_order_waits_total{route,result}`. At most
`MAX_SESSIONS` sessions are remembered (the least recently seen is forgotten first, for an hour at most).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from cachetools import TTLCache

from proxy.exchange import Exchange

SESSION_HEADER = "mcp-session-id"
MAX_SESSION_ID = 256  # longer: not a session id the order is kept for
MAX_SESSIONS = 10_000
REMEMBER_S = 3600.0


@dataclass(slots=True, eq=False)
class _Session:
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set: nothing to wait for
    opening: Exchange | None = None  # the GET whose answer head has not come back yet
    first: Exchange | None = None  # the session's first request, while it has no answer head
    until: float = math.inf  # loop time after which nobody waits for a GET that has not come


class SessionOrder:
    """Process-wide (survives policy reloads), one per handler; all on the event loop, so no lock."""

    def __init__(self) -> None:
        self._sessions: TTLCache[tuple[str, str], _Session] = TTLCache(MAX_SESSIONS, REMEMBER_S)

    @staticmethod
    def _key(ex: Exchange) -> tuple[str, str] | None:
        if ex.protocol.name != "mcp":
            return None
        session = ex.headers.get(SESSION_HEADER)
        if not session or len(session) > MAX_SESSION_ID:
            return None
        return ex.route.label, session

    def arrived(self, ex: Exchange) -> None:
        """Called as a request arrives, before anything awaits."""
        if (key := self._key(ex)) is None:
            return
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session()
            if ex.method != "GET":
                session.first = ex  # not held: the client opens its GET stream once this is answered
        if ex.method == "GET" and session.opening is None:
            session.opening = ex
            if session.ready.is_set():  # a GET again (a resumption): later requests wait for it too
                session.ready = asyncio.Event()

    def opened(self, ex: Exchange, grace_s: float = 0.0) -> None:
        """`ex` has its answer head from the upstream, or ended without one."""
        key = self._key(ex)
        session = self._sessions.get(key) if key is not None else None
        if session is None:
            return
        if session.opening is ex:
            session.opening = None
            session.ready.set()
        elif session.first is ex:
            session.first = None
            if session.opening is None and not session.ready.is_set():
                if grace_s > 0:
                    session.until = asyncio.get_running_loop().time() + grace_s
                else:
                    session.ready.set()

    async def wait_turn(self, ex: Exchange, order_s: float, grace_s: float) -> str | None:
        """Before a request is forwarded: None (nothing to wait for), or how its wait ended, for the metric."""
        if ex.method == "GET" or (key := self._key(ex)) is None:
            return None
        session = self._sessions.get(key)
        if session is None or session.ready.is_set() or session.first is ex:
            return None
        ready, loop = session.ready, asyncio.get_running_loop()
        if session.opening is None:  # the GET stream the client is expected to open
            try:
                async with asyncio.timeout_at(min(session.until, loop.time() + grace_s)):
                    await ready.wait()
                return "waited"
            except TimeoutError:
                if session.opening is None:  # no GET came in time: this session opens none, nobody waits again
                    ready.set()
                    return "no_stream"
        try:  # a GET is on its way upstream
            async with asyncio.timeout(order_s):
                await ready.wait()
        except TimeoutError:
            return "timed_out"
        return "waited"

    def __len__(self) -> int:
        return len(self._sessions)
