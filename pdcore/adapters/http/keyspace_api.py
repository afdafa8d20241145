"""PD's HTTP keyspace API (`/pd/api/v2/keyspaces`): create, get by name or id, list
(paged by id), update config (merge patch: null removes a key) and update state.

Keyspaces look as PD shows them (`id`, `name`, `state` as a name, `created_at`,
`state_changed_at`, `config`). Status codes are PD's: 400 for a body or query that does
not bind (not a JSON object, config values not strings, an unknown target state, a bad
page token or limit); 500, with the reason, for whatever the keyspace manager refuses
(an unknown keyspace, a name in use or not allowed, a state change not allowed); 503
when this member is not the pd-leader. A list without `limit` returns every keyspace.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pdcore.adapters.storage.serde import keyspace_to_json
from pdcore.domain.errors import NotLeader, PdError
from pdcore.domain.keyspace import (
    Keyspace,
    check_config,
    check_name,
    state_named,
)
from pdcore.service.keyspaces import KeyspaceManager

PREFIX = "/pd/api/v2/keyspaces"
KEYSPACES_KEY: web.AppKey[KeyspaceManager] = web.AppKey("keyspaces", KeyspaceManager)

Handler = Callable[[web.Request, KeyspaceManager], Awaitable[Any]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class BadRequest(PdError):
    """The request does not bind to PD's parameter types (PD: 400)."""


def _status_of(err: Exception) -> int:
    if isinstance(err, BadRequest):
        return 400
    if isinstance(err, NotLeader):
        return 503
    return 500  # PD answers every keyspace manager refusal with 500 and its reason


def _handler(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Run `fn`; a keyspace becomes PD's JSON, an error a status with its reason."""

    async def handle(request: web.Request) -> web.Response:
        try:
            out = await fn(request, request.app[KEYSPACES_KEY])
        except (PdError, NotLeader) as e:
            return _json(str(e), _status_of(e))
        return _json(keyspace_to_json(out) if isinstance(out, Keyspace) else out)

    return handle


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _binds(check: Callable[[], Any]) -> Any:
    """A parameter check whose failure is a binding error (400), as PD's BindJSON."""
    try:
        return check()
    except PdError as e:
        raise BadRequest(e.message) from None


def _uint(raw: str, what: str, bound: int = (1 << 32) - 1) -> int:
    if not raw.isdigit() or int(raw) > bound:
        raise BadRequest(f"{what} must be an integer from 0 to {bound}, not {raw!r}")
    return int(raw)


async def create(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    body = await _body(request)
    config = _binds(lambda: check_config(body.get("config") or {}))
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("name must be a string")
    return await ks.create(check_name(name), config)


async def get_by_name(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    return ks.by_name(request.match_info["name"])


async def get_by_id(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise PdError("invalid keyspace id")  # PD: 500 with this text
    return ks.by_id(int(raw))


async def list_all(request: web.Request, ks: KeyspaceManager) -> dict[str, Any]:
    q = request.query
    start = _uint(q.get("page_token", "0") or "0", "page_token")
    limit = _uint(q.get("limit", "0") or "0", "limit", (1 << 63) - 2)
    page = ks.range(start, limit + 1 if limit else 0)
    out: dict[str, Any] = {"keyspaces": [keyspace_to_json(k) for k in page[: limit or None]]}
    out["next_page_token"] = str(page[limit].id) if limit and len(page) > limit else ""
    return out


async def update_config(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    body = await _body(request)
    patch = _binds(lambda: check_config(body.get("config"), allow_null=True))
    return await ks.update_config(request.match_info["name"], patch)


async def update_state(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    body = await _body(request)
    state = _binds(lambda: state_named(body.get("state")))
    keyspace = ks.by_name(request.match_info["name"])
    return await ks.update_state(keyspace.id, state)


def add_keyspace_routes(app: web.Application, keyspaces: KeyspaceManager) -> None:
    app[KEYSPACES_KEY] = keyspaces
    r = app.router
    r.add_post(PREFIX, _handler(create))
    r.add_get(PREFIX, _handler(list_all))
    r.add_get(PREFIX + "/id/{id}", _handler(get_by_id))
    r.add_get(PREFIX + "/{name}", _handler(get_by_name))
    r.add_patch(PREFIX + "/{name}/config", _handler(update_config))
    r.add_put(PREFIX + "/{name}/state", _handler(update_state))
