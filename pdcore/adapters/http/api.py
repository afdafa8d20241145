"""PD's HTTP API (`/pd/api/v1`, the subset pd-ctl and TiDB Operator use), `/health`
and `/metrics`, on the status address. JSON bodies use PD's field names."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pdcore.adapters.http.bad_body import reject_bad_bodies
from pdcore.adapters.http.metrics import Metrics
from pdcore.domain.config import ReplicationConfig, ScheduleConfig, to_pd_json, update_from_pd_json
from pdcore.domain.errors import PdError
from pdcore.domain.region import Peer, PeerRole, Region
from pdcore.domain.store import Store, StoreState
from pdcore.service.node import PdNode

PREFIX = "/pd/api/v1"
NOT_BOOTSTRAPPED = "TiKV cluster not bootstrapped, please start TiKV first"
NODE_KEY: web.AppKey[PdNode] = web.AppKey("node", PdNode)
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
STARTED_KEY: web.AppKey[float] = web.AppKey("started_at", float)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=None))


def _error(message: str, status: int = 400) -> web.Response:
    return _json(message, status)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{n}B"
        n /= 1024  # type: ignore[assignment]
    return f"{n}B"


def peer_json(p: Peer) -> dict[str, Any]:
    return {
        "id": p.id,
        "store_id": p.store_id,
        "role": int(p.role),
        "role_name": PeerRole(p.role).name.title().replace("_", ""),
    }


def region_json(r: Region) -> dict[str, Any]:
    return {
        "id": r.id,
        "start_key": r.start_key.hex().upper(),
        "end_key": r.end_key.hex().upper(),
        "epoch": {"conf_ver": r.epoch.conf_ver, "version": r.epoch.version},
        "peers": [peer_json(p) for p in r.peers],
        "leader": peer_json(r.leader) if r.leader else {},
        "down_peers": [
            {"peer": peer_json(d.peer), "down_seconds": d.down_seconds} for d in r.down_peers
        ],
        "pending_peers": [peer_json(p) for p in r.pending_peers],
        "written_bytes": r.flow.bytes_written,
        "read_bytes": r.flow.bytes_read,
        "written_keys": r.flow.keys_written,
        "read_keys": r.flow.keys_read,
        "approximate_size": r.approximate_size,
        "approximate_keys": r.approximate_keys,
        "cpu_usage": r.cpu_usage,
    }


def store_json(node: PdNode, s: Store) -> dict[str, Any]:
    now = node.sched_clock.now_s()
    st = node.tree.store_stats(s.id)
    return {
        "store": {
            "id": s.id,
            "address": s.address,
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
            "state": int(s.state),
            "state_name": s.state_name(now, node.config.schedule.max_store_down_time_s),
        },
        "status": {
            "capacity": _human_bytes(s.stats.capacity),
            "available": _human_bytes(s.stats.available),
            "used_size": _human_bytes(s.stats.used_size),
            "leader_count": st.leader_count,
            "leader_size": st.leader_size,
            "region_count": st.region_count,
            "region_size": st.region_size,
            "sending_snap_count": s.stats.sending_snap_count,
            "receiving_snap_count": s.stats.receiving_snap_count,
            "is_busy": s.stats.is_busy,
            "slow_score": s.stats.slow_score,
            "last_heartbeat_ts": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.last_heartbeat_ns / 1e9)
            )
            if s.last_heartbeat_ns
            else None,
        },
    }


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


def _bootstrapped(node: PdNode) -> web.Response | None:
    return None if node.is_bootstrapped else _error(NOT_BOOTSTRAPPED, 500)


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


async def stores(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    if (resp := _bootstrapped(node)) is not None:
        return resp
    wanted = {int(s) for s in request.query.getall("state", [])}
    out = []
    for s in sorted(node.stores(), key=lambda s: s.id):
        if wanted and int(s.state) not in wanted:
            continue
        if not wanted and s.is_tombstone:
            continue
        out.append(store_json(node, s))
    return _json({"count": len(out), "stores": out})


def _store_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps("store id must be an integer"), content_type="application/json"
        ) from None


async def store_get(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    s = node.get_store(_store_id(request))
    if s is None:
        return _error("store not found", 404)
    return _json(store_json(node, s))


async def store_delete(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    sid = _store_id(request)
    if node.get_store(sid) is None:
        return _error("store not found", 404)
    try:
        await node.set_store_state(sid, StoreState.OFFLINE, request.query.get("force") == "true")
    except PdError as e:
        return _error(e.message, 400)
    return _json("The store is set as Offline.")


async def store_state(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    sid = _store_id(request)
    wanted = request.query.get("state", "")
    states = {"Up": StoreState.UP, "Offline": StoreState.OFFLINE}
    if wanted not in states:
        return _error(f"state must be Up or Offline, got {wanted!r}")
    if node.get_store(sid) is None:
        return _error("store not found", 404)
    try:
        await node.set_store_state(sid, states[wanted])
    except PdError as e:
        return _error(e.message)
    return _json(f"The store's state is updated to {wanted}.")


async def store_label(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    sid = _store_id(request)
    store = node.get_store(sid)
    if store is None:
        return _error("store not found", 404)
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error("body must be a JSON object of label key to value")
    if not isinstance(body, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in body.items()
    ):
        return _error("body must be a JSON object of label key to value")
    labels = dict(store.labels)
    labels.update(body)
    await node.put_store(store.with_(labels=tuple(sorted(labels.items()))))
    return _json("The store's label is updated.")


async def regions(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    if (resp := _bootstrapped(node)) is not None:
        return resp
    out = [region_json(r) for r in node.tree]
    return _json({"count": len(out), "regions": out})


async def region_by_id(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        rid = int(request.match_info["id"])
    except ValueError:
        return _error("region id must be an integer")
    r = node.tree.get(rid)
    return _json(region_json(r) if r else None)


async def region_by_key(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    r = node.tree.find(request.match_info["key"].encode())
    return _json(region_json(r) if r else None)


async def config_get(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return _json(
        {
            "client-urls": ",".join(node.member.client_urls),
            "schedule": to_pd_json(node.config.schedule),
            "replication": to_pd_json(node.config.replication),
            "cluster-version": node.cluster_version(),
        }
    )


async def _update_config(request: web.Request, part: str) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error("body must be a JSON object")
    if not isinstance(body, dict):
        return _error("body must be a JSON object")
    try:
        if part == "schedule":
            sched = update_from_pd_json(node.config.schedule, body)
            assert isinstance(sched, ScheduleConfig)
            new = type(node.config)(schedule=sched, replication=node.config.replication)
        else:
            repl = update_from_pd_json(node.config.replication, body)
            assert isinstance(repl, ReplicationConfig)
            new = type(node.config)(schedule=node.config.schedule, replication=repl)
    except ValueError as e:
        return _error(str(e))
    await node.set_config(new)
    return _json("The config is updated.")


async def schedule_get(request: web.Request) -> web.Response:
    return _json(to_pd_json(request.app[NODE_KEY].config.schedule))


async def schedule_post(request: web.Request) -> web.Response:
    return await _update_config(request, "schedule")


async def replicate_get(request: web.Request) -> web.Response:
    return _json(to_pd_json(request.app[NODE_KEY].config.replication))


async def replicate_post(request: web.Request) -> web.Response:
    return await _update_config(request, "replication")


async def gc_safepoint(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    now = int(node.clock.now_s())
    node.gc.min_service_safe_point(now)
    return _json(
        {
            "gc_safe_point": node.gc.safe_point,
            "service_gc_safe_points": [
                {
                    "service_id": s.service_id.decode(errors="replace"),
                    "expired_at": s.expire_at_s,
                    "safe_point": s.safe_point,
                }
                for s in node.gc.services.values()
            ],
        }
    )


async def min_resolved_ts(request: web.Request) -> web.Response:
    return _json(
        {
            "min_resolved_ts": request.app[NODE_KEY].cluster_min_resolved_ts(),
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
    r.add_get(PREFIX + "/stores", stores)
    r.add_get(PREFIX + "/store/{id}", store_get)
    r.add_delete(PREFIX + "/store/{id}", store_delete)
    r.add_post(PREFIX + "/store/{id}/state", store_state)
    r.add_post(PREFIX + "/store/{id}/label", store_label)
    r.add_get(PREFIX + "/regions", regions)
    r.add_get(PREFIX + "/region/id/{id}", region_by_id)
    r.add_get(PREFIX + "/region/key/{key}", region_by_key)
    r.add_get(PREFIX + "/config", config_get)
    r.add_get(PREFIX + "/config/schedule", schedule_get)
    r.add_post(PREFIX + "/config/schedule", schedule_post)
    r.add_get(PREFIX + "/config/replicate", replicate_get)
    r.add_post(PREFIX + "/config/replicate", replicate_post)
    r.add_get(PREFIX + "/gc/safepoint", gc_safepoint)
    r.add_get(PREFIX + "/min-resolved-ts", min_resolved_ts)
    return app


async def ping(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return _json({"version": "v8.5.0"})
