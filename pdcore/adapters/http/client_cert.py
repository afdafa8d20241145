"""The HTTP API over TLS, and PD's cert-allowed-cn on it: with mutual TLS and a list of
names, only a client certificate carrying one of them may call it (403 otherwise)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from pdcore.adapters.tls import HttpTls, Security, peer_common_names

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


def secure(app: web.Application, sec: Security) -> HttpTls | None:
    """Set the HTTP API up for TLS as `sec` says: the SSL context to serve with (its
    `watch()` reloads changed files) and, with cert-allowed-cn, the name check."""
    if not sec.enabled:
        return None
    if sec.cert_allowed_cn:
        app.middlewares.append(require_common_name(sec.cert_allowed_cn))
    return HttpTls(sec)
