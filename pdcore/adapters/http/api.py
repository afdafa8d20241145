"""PD's HTTP API (`/pd/api/v1`, the subset pd-ctl and TiDB Operator use), `/health`
and `/metrics`, on the status address. JSON bodies use PD's field names."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pdcore.adapters.http.bad_body import reject_bad_bodies
from pdcore.adapters.http.common import (
    API,
    METRICS_KEY,
    NODE_KEY,
    NOT_BOOTSTRAPPED,
    STARTED_KEY,
    error,
    json_response,
)
from pdcore.adapters.http.config_api import add_config_routes
from pdcore.adapters.http.metrics import Metrics
from pdcore.adapters.http.regions_api import add_region_routes
from pdcore.adapters.http.stores_api import add_store_routes
from pdcore.domain.errors import PdError
from pdcore.service.node import PdNode

PREFIX = API
_json = json_response
_error = error


def member_json(node: PdNode) -> dict[str, Any]:
    m = node.member
    return {
        "name": m.name,
        "member_id": m.member_id,
        "client_urls": list(m.client_urls),
        "peer_urls": list(m.peer_urls or m.client_urls),
        "binary_version": m.binary_version,
        "git_hash": m.git_hash,
        "deploy_path": m.deploy_path,
        "leader_priority": 0,
    }


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    if not node.started:
        return _json({"health": False, "reason": "server not started"}, 503)
    return _json([{**member_json(node), "health": True}])


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def members(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    me = member_json(node)
    return _json(
        {
            "header": {"cluster_id": node.cluster_id},
            "members": [me],
            "leader": me,
            "etcd_leader": me,
        }
    )


async def leader(request: web.Request) -> web.Response:
    return _json(member_json(request.app[NODE_KEY]))


async def status(request: web.Request) -> web.Response:
    return _json(
        {
            "version": "v8.5.0",
            "git_hash": "",
            "kernel_type": "kubepd",
            "start_timestamp": int(request.app[STARTED_KEY]),
        }
    )


async def cluster(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    meta = node.cluster
    if meta is None:
        return _error(NOT_BOOTSTRAPPED, 500)
    return _json({"id": meta.id, "max_peer_count": meta.max_peer_count})


async def cluster_status(request: web.Request) -> web.Response:
    """PD's ClusterState; kubepd does not record when TiKV bootstrapped (left out)."""
    node = request.app[NODE_KEY]
    return _json({"is_initialized": node.is_bootstrapped, "replication_status": "majority"})


async def gc_safepoint(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    now = int(node.clock.now_s())
    minimum = node.gc.min_service_safe_point(now)
    out: dict[str, Any] = {
        "service_gc_safe_points": [
            {
                "service_id": s.service_id.decode(errors="replace"),
                "expired_at": s.expire_at_s,
                "safe_point": s.safe_point,
            }
            for s in node.gc.services.values()
        ],
        "gc_safe_point": node.gc.safe_point,
    }
    if minimum is not None and minimum.safe_point:
        out["min_service_gc_safe_point"] = minimum.safe_point
    return _json(out)


async def gc_safepoint_delete(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    service = request.match_info["service_id"].encode()
    try:
        await node.update_service_safe_point(service, 0, 0)
    except PdError as e:
        return _error(e.message, 500)
    return _json("Delete service GC safepoint successfully.")


async def min_resolved_ts(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    out: dict[str, Any] = {
        "min_resolved_ts": node.cluster_min_resolved_ts(),
        "is_real_time": True,
        "persist_interval": "1s",
    }
    scope = request.query.get("scope")
    if scope is not None:
        ids = [s.id for s in node.stores() if s.is_up] if scope == "cluster" else []
        if scope != "cluster":
            try:
                ids = [int(x) for x in scope.split(",") if x]
            except ValueError:
                return _error(f'strconv.ParseUint: parsing "{scope}": invalid syntax')
            # For named stores PD answers the minimum over those stores.
            out["min_resolved_ts"] = min((node.min_resolved_ts.get(i, 0) for i in ids), default=0)
        out["stores_min_resolved_ts"] = {str(i): node.min_resolved_ts.get(i, 0) for i in ids}
    return _json(out)


async def store_min_resolved_ts(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    text = request.match_info["store_id"]
    if not text.isdigit():
        return _error(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return _json(
        {
            "min_resolved_ts": node.min_resolved_ts.get(int(text), 0),
            "is_real_time": True,
            "persist_interval": "1s",
        }
    )


def build_app(node: PdNode, metrics_: Metrics) -> web.Application:
    app = web.Application(middlewares=[reject_bad_bodies])
    app[NODE_KEY] = node
    app[METRICS_KEY] = metrics_
    app[STARTED_KEY] = time.time()
    r = app.router
    r.add_get("/health", health)
    r.add_get("/metrics", metrics)
    r.add_get(PREFIX + "/health", health)
    r.add_get(PREFIX + "/ping", ping)
    r.add_get(PREFIX + "/members", members)
    r.add_get(PREFIX + "/leader", leader)
    r.add_get(PREFIX + "/status", status)
    r.add_get(PREFIX + "/version", version)
    r.add_get(PREFIX + "/cluster", cluster)
    r.add_get(PREFIX + "/cluster/status", cluster_status)
    r.add_get(PREFIX + "/gc/safepoint", gc_safepoint)
    r.add_delete(PREFIX + "/gc/safepoint/{service_id}", gc_safepoint_delete)
    r.add_get(PREFIX + "/min-resolved-ts", min_resolved_ts)
    r.add_get(PREFIX + "/min-resolved-ts/{store_id}", store_min_resolved_ts)
    add_store_routes(app)
    add_region_routes(app)
    add_config_routes(app)
    return app


async def ping(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return _json({"version": "v8.5.0"})
