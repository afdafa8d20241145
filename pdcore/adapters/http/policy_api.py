"""HTTP API for Wasm scheduling policies in the embedded mode (`kubepd policy ...`)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from pdcore.adapters.wasm.host import PolicyLoadError, WasmHost, instantiate
from pdcore.policy.spec import PolicySpec, PolicySpecError, map_keys
from pdcore.service.policies import LoadedPolicy, PolicyService

PREFIX = "/pd/api/v1"
POLICIES_KEY: web.AppKey[PolicyService] = web.AppKey("policies", PolicyService)
HOST_KEY: web.AppKey[WasmHost] = web.AppKey("wasm_host", WasmHost)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# This API's key spellings of PolicySpec's fields ("module" is base64, decoded here).
HTTP_SPELLING = {
    "name": "name",
    "sha256": "sha256",
    "config": "config",
    "interval_s": "interval_s",
    "priority": "priority",
    "failure_strategy": "failure_strategy",
    "limits.fuel": "fuel",
    "limits.memory_mib": "memory_mib",
    "limits.timeout_ms": "timeout_ms",
    "limits.max_proposals": "max_proposals",
}


def spec_from_body(body: dict[str, Any]) -> PolicySpec:
    """The spec a request body asks for; PolicySpecError says what is wrong."""
    fields = map_keys(body, HTTP_SPELLING)
    if "module" in body:
        try:
            fields["module"] = base64.b64decode(body["module"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise PolicySpecError('"module" must be the base64 of a Wasm module') from None
    return PolicySpec.parse(fields)


def load_policy(host: WasmHost, body: dict[str, Any]) -> LoadedPolicy:
    """Build a policy from the request body; ValueError says what is wrong."""
    spec = spec_from_body(body)
    try:
        return LoadedPolicy(spec, instantiate(host, spec))
    except PolicyLoadError as e:
        raise ValueError(str(e)) from None


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
