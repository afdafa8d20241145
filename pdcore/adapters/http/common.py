"""What every PD HTTP handler module shares: the app keys and PD's reply shapes
(a JSON value with the status; errors are a JSON string, as PD's renderer writes)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pdcore.adapters.http.metrics import Metrics
from pdcore.service.node import PdNode
from pdcore.service.scheduling import SchedulingService

API = "/pd/api/v1"
NODE_KEY: web.AppKey[PdNode] = web.AppKey("node", PdNode)
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
STARTED_KEY: web.AppKey[float] = web.AppKey("started_at", float)
SERVICE_KEY: web.AppKey[SchedulingService] = web.AppKey("scheduling", SchedulingService)
NOT_BOOTSTRAPPED = "TiKV cluster not bootstrapped, please start TiKV first"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=None))


def error(message: str, status: int = 400) -> web.Response:
    return json_response(message, status)


def bad_request(message: str) -> web.HTTPBadRequest:
    """For raising from helpers: a 400 with PD's JSON-string body."""
    return web.HTTPBadRequest(text=json.dumps(message), content_type="application/json")


def uint_path(request: web.Request, name: str = "id") -> int:
    """A numeric path part; otherwise 400 with Go's strconv message, as PD answers."""
    text = request.match_info[name]
    if not text.isdigit():
        raise bad_request(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


def bootstrapped_node(request: web.Request) -> PdNode:
    """The node, or PD's 500 for a cluster TiKV has not bootstrapped yet."""
    node = request.app[NODE_KEY]
    if not node.is_bootstrapped:
        raise web.HTTPInternalServerError(
            text=json.dumps(NOT_BOOTSTRAPPED), content_type="application/json"
        )
    return node


async def json_body(request: web.Request) -> Any:
    """The request body as JSON (null when empty); otherwise 400 with what was wrong."""
    try:
        return json.loads(await request.read() or b"null")
    except UnicodeDecodeError as e:
        raise bad_request(f"body is not valid UTF-8 JSON: {e}") from None
    except json.JSONDecodeError as e:
        raise bad_request(str(e)) from None


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; otherwise 400 with what was wrong."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}"
        )
    return body
