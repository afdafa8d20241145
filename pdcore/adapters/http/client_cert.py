"""PD's cert-allowed-cn on the HTTP API: with mutual TLS and a list of names, only a
client certificate carrying one of them may call it (403 otherwise)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from pdcore.adapters.tls import peer_common_names

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require_common_name(allowed: Collection[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed_set = frozenset(allowed)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        names = peer_common_names(peer)
        if not names & allowed_set:
            return web.json_response(
                f"client certificate common name {sorted(names)} is not allowed", status=403
            )
        return await handler(request)

    return check
