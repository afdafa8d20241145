"""One middleware for request bodies no handler can read: invalid UTF-8 or JSON nested
deeper than the parser's recursion limit is the client's mistake (400 with a message,
as PD answers a body it cannot decode), not a server error with a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from pdcore.domain.errors import PdError
from pdcore.service.rate_log import RateLimitedLog

log = logging.getLogger("kubepd.http")
_bad = RateLimitedLog(log)


@web.middleware
async def reject_bad_bodies(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except UnicodeDecodeError:
        _bad.warning(
            "http-utf8", "HTTP %s %s: body is not valid UTF-8", request.method, request.path
        )
        return web.json_response("body is not valid UTF-8 JSON", status=400)
    except RecursionError:
        _bad.warning(
            "http-nesting", "HTTP %s %s: body nested too deeply", request.method, request.path
        )
        return web.json_response("body is not valid JSON: nested too deeply", status=400)
    except PdError as e:  # e.g. storage refused the write: PD answers 500 with the reason
        return web.json_response(e.message, status=500)
