"""PD's store endpoints (`/store...`, `/stores...`, `/labels...`) in PD's JSON shapes.

kubepd keeps one add-peer/remove-peer limit for all stores (the schedule config's
`default-store-limit`) and no per-store weights: the per-store forms of those writes
answer 400 saying so rather than pretending to take effect.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from pdcore.adapters.http import pd_config
from pdcore.adapters.http.common import (
    API,
    bad_request,
    bootstrapped_node,
    error,
    json_object,
    json_response,
    uint_path,
)
from pdcore.domain.errors import PdError
from pdcore.domain.store import Store, StoreState
from pdcore.service.node import PdNode

STORE_NOT_FOUND = "[PD:core:ErrStoreNotFound]store {} not found"
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def byte_size(n: int) -> str:
    """PD's typeutil.ByteSize text (go-units BytesSize: "%.4g" and binary units)."""
    size, i = float(n), 0
    while size >= 1024 and i < len(_BINARY_UNITS) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{_BINARY_UNITS[i]}"


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def store_json(node: PdNode, s: Store) -> dict[str, Any]:
    """PD's StoreInfo: metapb.Store (zero values left out) + state_name, and status."""
    now = node.clock.now_s()
    st = node.tree.store_stats(s.id)
    meta: dict[str, Any] = {"id": s.id, "address": s.address}
    optional: dict[str, Any] = {
        "state": int(s.state),
        "labels": [{"key": k, "value": v} for k, v in s.labels],
        "version": s.version,
        "peer_address": s.peer_address,
        "status_address": s.status_address,
        "git_hash": s.git_hash,
        "start_timestamp": s.start_timestamp,
        "deploy_path": s.deploy_path,
        "last_heartbeat": s.last_heartbeat_ns,
        "node_state": int(s.node_state),
        "physically_destroyed": s.physically_destroyed,
    }
    meta.update({k: v for k, v in optional.items() if v})
    meta["state_name"] = s.state_name(now, node.config.schedule.max_store_down_time_s)
    status: dict[str, Any] = {
        "capacity": byte_size(s.stats.capacity),
        "available": byte_size(s.stats.available),
        "used_size": byte_size(s.stats.used_size),
        "leader_count": st.leader_count,
        "leader_weight": 1.0,
        "leader_score": float(st.leader_count),
        "leader_size": st.leader_size,
        "region_count": st.region_count,
        "region_weight": 1.0,
        "region_score": float(st.region_size),
        "region_size": st.region_size,
    }
    extra: dict[str, Any] = {
        "learner_count": st.learner_count,
        "pending_peer_count": st.pending_peer_count,
        "slow_score": s.stats.slow_score,
        "sending_snap_count": s.stats.sending_snap_count,
        "receiving_snap_count": s.stats.receiving_snap_count,
        "is_busy": s.stats.is_busy,
    }
    status.update({k: v for k, v in extra.items() if v})
    if s.start_timestamp:
        status["start_ts"] = _rfc3339(s.start_timestamp)
    if s.last_heartbeat_ns:
        status["last_heartbeat_ts"] = _rfc3339(s.last_heartbeat_ns / 1e9)
        if s.start_timestamp:
            up = max(0.0, s.last_heartbeat_ns / 1e9 - s.start_timestamp)
            status["uptime"] = pd_config.format_duration(up)
    return {"store": meta, "status": status}


def _store(request: web.Request) -> tuple[PdNode, Store]:
    node = bootstrapped_node(request)
    sid = uint_path(request)
    store = node.get_store(sid)
    if store is None:
        raise web.HTTPNotFound(
            text=json.dumps(STORE_NOT_FOUND.format(sid)), content_type="application/json"
        )
    return node, store


# -- reads ---------------------------------------------------------------------------
_STATE_NAMES = {"up", "offline", "tombstone", "down", "disconnected"}


async def stores(request: web.Request) -> web.Response:
    """`?state=0&state=1` (metapb.StoreState numbers, PD's default: not Tombstone)."""
    node = bootstrapped_node(request)
    wanted: set[int] = set()
    for text in request.query.getall("state", []):
        if not text.lstrip("-").isdigit():
            return error(f'strconv.Atoi: parsing "{text}": invalid syntax', 500)
        wanted.add(int(text))
    out = []
    for s in sorted(node.stores(), key=lambda s: s.id):
        if (wanted and int(s.state) not in wanted) or (not wanted and s.is_tombstone):
            continue
        out.append(store_json(node, s))
    return json_response({"count": len(out), "stores": out})


async def stores_by_state_name(request: web.Request) -> web.Response:
    """`/stores/check?state=Up` (state names; pd-ctl's `store check`)."""
    node = bootstrapped_node(request)
    names = [n.lower() for n in request.query.getall("state", []) if n]
    for n in names:
        if n not in _STATE_NAMES:
            return error(f"unknown StoreState: {n}")
    out = [store_json(node, s) for s in sorted(node.stores(), key=lambda s: s.id)]
    if names:
        out = [x for x in out if x["store"]["state_name"].lower() in names]
    return json_response({"count": len(out), "stores": out})


async def store_get(request: web.Request) -> web.Response:
    node, store = _store(request)
    return json_response(store_json(node, store))


async def labels(request: web.Request) -> web.Response:
    node = bootstrapped_node(request)
    seen: list[dict[str, str]] = []
    for s in sorted(node.stores(), key=lambda s: s.id):
        for k, v in s.labels:
            item = {"key": k, "value": v}
            if item not in seen:
                seen.append(item)
    return json_response(seen)


async def stores_by_label(request: web.Request) -> web.Response:
    node = bootstrapped_node(request)
    name, value = request.query.get("name", ""), request.query.get("value", "")
    out = [
        store_json(node, s)
        for s in sorted(node.stores(), key=lambda s: s.id)
        if not s.is_tombstone and any(k == name and (not value or v == value) for k, v in s.labels)
    ]
    return json_response({"count": len(out), "stores": out})


def store_limits(node: PdNode) -> dict[str, Any]:
    """PD's per-store limits: every store at the one default-store-limit."""
    sched = node.config.schedule
    each = {"add-peer": sched.store_limit_add_peer, "remove-peer": sched.store_limit_remove_peer}
    return {str(s.id): dict(each) for s in node.stores() if not s.is_tombstone}


async def stores_limit(request: web.Request) -> web.Response:
    return json_response(store_limits(bootstrapped_node(request)))


# -- writes --------------------------------------------------------------------------
async def store_delete(request: web.Request) -> web.Response:
    node, store = _store(request)
    try:
        await node.set_store_state(
            store.id, StoreState.OFFLINE, request.query.get("force") == "true"
        )
    except PdError as e:
        return error(e.message)
    return json_response("The store is set as Offline.")


async def store_state(request: web.Request) -> web.Response:
    node, store = _store(request)
    wanted = request.query.get("state", "")
    states = {"up": StoreState.UP, "offline": StoreState.OFFLINE}
    if wanted.lower() not in states:
        return error(f"invalid state {wanted}")
    try:
        await node.set_store_state(store.id, states[wanted.lower()])
    except PdError as e:
        return error(e.message)
    return json_response("The store's state is updated.")


async def store_label(request: web.Request) -> web.Response:
    node, store = _store(request)
    body = await json_object(request)
    if not all(isinstance(v, str) for v in body.values()):
        return error("body must be a JSON object of label key to value")
    new = dict(store.labels)
    new.update(body)
    try:
        await node.set_store_labels(store.id, new)
    except PdError as e:
        return error(e.message)
    return json_response("The store's label is updated.")


async def store_label_delete(request: web.Request) -> web.Response:
    """The body is the label key as a JSON string, as PD's Go client sends it."""
    node, store = _store(request)
    try:
        key = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return error(str(e))
    if not isinstance(key, str) or not key:
        return error("the body must be the label key, a JSON string")
    labels = dict(store.labels)
    if key not in labels:
        return error(f"the label key {key} does not exist", 404)
    del labels[key]
    try:
        await node.set_store_labels(store.id, labels)
    except PdError as e:
        return error(e.message)
    return json_response(f"The label {key} is deleted for store {store.id}.")


async def store_weight(request: web.Request) -> web.Response:
    _store(request)
    body = await json_object(request)
    for name in ("leader", "region"):
        if name not in body:
            return error(f"{name} weight unset")
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return error(f"bad format {name} weight")
        if value != 1:
            return error("kubepd weighs every store 1; per-store weights are not supported")
    return json_response("The store's weight is updated.")


def _limit_change(body: dict[str, Any]) -> tuple[float, list[str]]:
    if "rate" not in body:
        raise bad_request("rate unset")
    rate = body["rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
        raise bad_request("invalid rate which should be larger than 0")
    kind = body.get("type")
    if kind is None:
        return float(rate), ["add-peer", "remove-peer"]
    if kind not in ("add-peer", "remove-peer"):
        raise bad_request(f"unknown type: {kind}")
    return float(rate), [str(kind)]


async def set_stores_limit(request: web.Request) -> web.Response:
    node = bootstrapped_node(request)
    body = await json_object(request)
    rate, kinds = _limit_change(body)
    if "labels" in body:
        return error("kubepd keeps one limit for all stores; limits by label are not supported")
    limit = {k: rate for k in kinds}
    try:
        new = pd_config.update_schedule(node.config, {"default-store-limit": limit})
    except ValueError as e:
        return error(str(e))
    if new != node.config:
        await node.set_config(new)
    return json_response("Set store limit successfully.")


async def set_store_limit(request: web.Request) -> web.Response:
    node, _ = _store(request)
    rate, kinds = _limit_change(await json_object(request))
    sched = node.config.schedule
    current = {"add-peer": sched.store_limit_add_peer, "remove-peer": sched.store_limit_remove_peer}
    if any(current[k] != rate for k in kinds):
        return error(
            "kubepd keeps one limit for all stores; set it with POST /pd/api/v1/stores/limit"
        )
    return json_response("The store's limit is updated.")


def add_store_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(API + "/stores", stores)
    r.add_get(API + "/stores/check", stores_by_state_name)
    r.add_get(API + "/stores/limit", stores_limit)
    r.add_post(API + "/stores/limit", set_stores_limit)
    r.add_get(API + "/store/{id}", store_get)
    r.add_delete(API + "/store/{id}", store_delete)
    r.add_post(API + "/store/{id}/state", store_state)
    r.add_post(API + "/store/{id}/label", store_label)
    r.add_delete(API + "/store/{id}/label", store_label_delete)
    r.add_post(API + "/store/{id}/weight", store_weight)
    r.add_post(API + "/store/{id}/limit", set_store_limit)
    r.add_get(API + "/labels", labels)
    r.add_get(API + "/labels/stores", stores_by_label)
