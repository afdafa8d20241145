"""Who may change things through the HTTP API when TLS does not say who the client is:
a read-only mode, or a bearer token every write must carry. Reads (GET, HEAD) are
always open: PD's dashboards and pd-ctl's read commands keep working."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ApiAccess:
    read_only: bool = False
    token: str = ""  # empty: writes need no token

    @property
    def restricted(self) -> bool:
        return self.read_only or bool(self.token)


def guard_writes(access: ApiAccess) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in READS:
            return await handler(request)
        if access.read_only:
            return web.json_response("the HTTP API is read-only on this member", status=403)
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {access.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response(
                "this write needs the API token: Authorization: Bearer <token>", status=401
            )
        return await handler(request)

    return check
