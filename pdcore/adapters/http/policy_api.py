"""HTTP API for Wasm scheduling policies in the embedded mode (`kubepd policy ...`)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from pdcore.adapters.wasm.host import Limits, PolicyInstance, PolicyLoadError, WasmHost
from pdcore.service.policies import LoadedPolicy, PolicyService

PREFIX = "/pd/api/v1"
POLICIES_KEY: web.AppKey[PolicyService] = web.AppKey("policies", PolicyService)
HOST_KEY: web.AppKey[WasmHost] = web.AppKey("wasm_host", WasmHost)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def load_policy(host: WasmHost, body: dict[str, Any]) -> LoadedPolicy:
    """Build a policy from the request body; ValueError says what is wrong."""
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('"name" is required')
    try:
        wasm = base64.b64decode(body.get("module", ""), validate=True)
    except (binascii.Error, TypeError):
        raise ValueError('"module" must be the base64 of a Wasm module') from None
    if not wasm:
        raise ValueError('"module" is required')
    config = body.get("config", {})
    if not isinstance(config, dict):
        raise ValueError('"config" must be a JSON object')
    lim = body.get("limits", {})
    if not isinstance(lim, dict):
        raise ValueError('"limits" must be an object')
    try:
        limits = Limits(
            fuel=int(lim.get("fuel", 100_000_000)),
            memory_bytes=int(lim.get("memory_mib", 64)) << 20,
            timeout_ms=int(lim.get("timeout_ms", 500)),
            max_proposals=int(lim.get("max_proposals", 64)),
        )
        interval = float(body.get("interval_s", 10.0))
    except (TypeError, ValueError):
        raise ValueError("limits and interval_s must be numbers") from None
    try:
        instance = PolicyInstance(host, wasm, limits, body.get("sha256"))
    except PolicyLoadError as e:
        raise ValueError(str(e)) from None
    return LoadedPolicy(
        name=name,
        instance=instance,
        config=config,
        interval_s=interval,
        failure_strategy=str(body.get("failure_strategy", "Disable")),
        max_proposals=limits.max_proposals,
        priority=int(body.get("priority", 50)),
    )


async def list_policies(request: web.Request) -> web.Response:
    return _json(request.app[POLICIES_KEY].list())


async def add_policy(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _json("body must be a JSON object", 400)
    if not isinstance(body, dict):
        return _json("body must be a JSON object", 400)
    try:
        policy = load_policy(request.app[HOST_KEY], body)
        request.app[POLICIES_KEY].put(policy)
    except ValueError as e:
        return _json(str(e), 400)
    return _json(policy.status())


async def get_policy(request: web.Request) -> web.Response:
    p = request.app[POLICIES_KEY].policies.get(request.match_info["name"])
    return _json(p.status()) if p else _json("policy not found", 404)


async def delete_policy(request: web.Request) -> web.Response:
    try:
        request.app[POLICIES_KEY].remove(request.match_info["name"])
    except KeyError:
        return _json("policy not found", 404)
    return _json("The policy is removed.")


def add_policy_routes(app: web.Application, service: PolicyService, host: WasmHost) -> None:
    app[POLICIES_KEY] = service
    app[HOST_KEY] = host
    r = app.router
    r.add_get(PREFIX + "/policies", list_policies)
    r.add_post(PREFIX + "/policies", add_policy)
    r.add_get(PREFIX + "/policies/{name}", get_policy)
    r.add_delete(PREFIX + "/policies/{name}", delete_policy)
