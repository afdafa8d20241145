"""PD's HTTP keyspace API (`/pd/api/v2/keyspaces`): create, get by name or id, list
(paged by id), update config (merge patch: null removes a key) and update state.

Keyspaces look as PD shows them (`id`, `name`, `state` as a name, `created_at`,
`state_changed_at`, `config`). Errors: 400 with the reason for bad input, 404 for an
unknown keyspace, 409 for a name in use, 503 when this member is not the pd-leader.
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
    KeyspaceExists,
    KeyspaceNotFound,
    check_config,
    check_name,
    state_named,
)
from pdcore.service.keyspaces import KeyspaceManager

PREFIX = "/pd/api/v2/keyspaces"
KEYSPACES_KEY: web.AppKey[KeyspaceManager] = web.AppKey("keyspaces", KeyspaceManager)
DEFAULT_PAGE = 100

Handler = Callable[[web.Request, KeyspaceManager], Awaitable[Any]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _status_of(err: Exception) -> int:
    if isinstance(err, KeyspaceNotFound):
        return 404
    if isinstance(err, KeyspaceExists):
        return 409
    if isinstance(err, NotLeader):
        return 503
    return 400


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
        raise PdError("body must be a JSON object")
    return body


def _uint(raw: str, what: str) -> int:
    if not raw.isdigit():
        raise PdError(f"{what} must be a non-negative integer, not {raw!r}")
    return int(raw)


async def create(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    body = await _body(request)
    config = check_config(body.get("config") or {})
    return await ks.create(check_name(body.get("name")), config)  # type: ignore[arg-type]


async def get_by_name(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    return ks.by_name(request.match_info["name"])


async def get_by_id(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    return ks.by_id(_uint(request.match_info["id"], "keyspace id"))


async def list_all(request: web.Request, ks: KeyspaceManager) -> dict[str, Any]:
    q = request.query
    start = _uint(q.get("page_token", "0") or "0", "page_token")
    limit = _uint(q.get("limit", str(DEFAULT_PAGE)) or "0", "limit") or DEFAULT_PAGE
    page = ks.range(start, limit + 1)
    out: dict[str, Any] = {"keyspaces": [keyspace_to_json(k) for k in page[:limit]]}
    if len(page) > limit:
        out["next_page_token"] = str(page[limit].id)
    return out


async def update_config(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    body = await _body(request)
    patch = check_config(body.get("config"), allow_null=True)
    return await ks.update_config(request.match_info["name"], patch)


async def update_state(request: web.Request, ks: KeyspaceManager) -> Keyspace:
    body = await _body(request)
    keyspace = ks.by_name(request.match_info["name"])
    return await ks.update_state(keyspace.id, state_named(body.get("state")))


def add_keyspace_routes(app: web.Application, keyspaces: KeyspaceManager) -> None:
    app[KEYSPACES_KEY] = keyspaces
    r = app.router
    r.add_post(PREFIX, _handler(create))
    r.add_get(PREFIX, _handler(list_all))
    r.add_get(PREFIX + "/id/{id}", _handler(get_by_id))
    r.add_get(PREFIX + "/{name}", _handler(get_by_name))
    r.add_patch(PREFIX + "/{name}/config", _handler(update_config))
    r.add_put(PREFIX + "/{name}/state", _handler(update_state))
