"""HTTP writes on a member that is not the pd-leader go to the pd-leader, as the
sidecars do with gRPC writes: the request is sent on unchanged to the leader's client
URL (which serves PD's HTTP API too) and its answer returned as is. Reads are served
locally, except reads of what only the pd-leader holds (the schedulers and operators a
forwarded write changed there), which follow the writes. With no reachable pd-leader
the answer is 503 with the reason; a request that was already forwarded once is never
forwarded again (no loops while leadership moves).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

log = logging.getLogger("kubepd.http.forward")

FORWARDED = "X-Kubepd-Forwarded"
READS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_PATHS = ("/health", "/metrics")  # always about this member
LEADER_READS = tuple("/pd/api/v1/" + p for p in ("schedulers", "scheduler-config", "operators"))
TIMEOUT_S = 10.0
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_leader_forwarding(
    app: web.Application, is_leader: Callable[[], bool], leader_url: Callable[[], str]
) -> None:
    """Install the forwarding on `app` (before it starts); `leader_url` is the
    pd-leader's client URL, "" while none is known."""
    session: list[aiohttp.ClientSession] = []

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        local_read = request.method in READS and not request.path.startswith(LEADER_READS)
        if local_read or is_leader() or request.path.startswith(LOCAL_PATHS):
            return await handler(request)
        if FORWARDED in request.headers:
            return web.json_response("not the pd-leader (request already forwarded)", status=503)
        url = leader_url()
        if not url:
            return web.json_response("no pd-leader is known yet", status=503)
        if not session:
            session.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers[FORWARDED] = "1"
        try:
            async with session[0].request(
                request.method,
                url.rstrip("/") + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as r:
                body = await r.read()
                return web.Response(
                    body=body, status=r.status, content_type=r.content_type, charset=r.charset
                )
        except (aiohttp.ClientError, TimeoutError) as e:
            log.info("forwarding %s %s failed: %s", request.method, request.path, e)
            return web.json_response(f"pd-leader {url} unreachable: {e}", status=503)

    async def close(app: web.Application) -> None:
        for s in session:
            await s.close()

    app.middlewares.append(middleware)
    app.on_cleanup.append(close)
