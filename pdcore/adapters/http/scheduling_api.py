"""PD's scheduler and operator HTTP endpoints, plus our "why nothing is scheduled"
diagnostic, under /pd/api/v1."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pdcore.adapters.http.common import SERVICE_KEY
from pdcore.adapters.http.pd_config import format_duration
from pdcore.adapters.http.rules_api import add_rule_routes
from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.scheduling.schedulers.base import HotStat
from pdcore.scheduling.schedulers.evict_leader import EvictLeader
from pdcore.service.placement_rules import PlacementRules
from pdcore.service.scheduling import SchedulingService

PREFIX = "/pd/api/v1"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(
            text=json.dumps("body must be a JSON object"), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps("body must be a JSON object"), content_type="application/json"
        )
    return body


async def list_schedulers(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    items = svc.coordinator.list_schedulers(svc.now())
    status = request.query.get("status")
    if status == "paused":
        items = [i for i in items if i["paused"]]
    if request.query.get("detail") == "true":
        return _json(items)
    return _json([i["name"] for i in items])


async def add_scheduler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str):
        return _json('body must name the scheduler: {"name": ...}', 400)
    args = {k: v for k, v in body.items() if k != "name"}
    try:
        created = svc.coordinator.add_scheduler(name, args)
    except ValueError as e:
        return _json(str(e), 400)
    return _json(f"The scheduler {created} is created.")


EVICT_LEADER = "evict-leader-scheduler"


def _remove(svc: SchedulingService, name: str) -> str:
    """Remove a scheduler by name. kubepd runs one evict-leader scheduler per store
    (`evict-leader-scheduler-<store>`) where PD runs one for all: PD's
    `evict-leader-scheduler` removes them all, and `...-<store>` stops evicting that
    store wherever it is listed. KeyError names what was not found."""
    coord = svc.coordinator
    if name in coord.schedulers:
        coord.remove_scheduler(name)
        return "The scheduler is removed."
    evicts = {
        n: st.scheduler
        for n, st in coord.schedulers.items()
        if isinstance(st.scheduler, EvictLeader)
    }
    if name == EVICT_LEADER and evicts:
        for n in evicts:
            coord.remove_scheduler(n)
        return "The scheduler is removed."
    base, _, store = name.rpartition("-")
    if base == EVICT_LEADER and store.isdigit():
        for n, sch in evicts.items():
            if int(store) in sch.store_ids:
                sch.store_ids = [s for s in sch.store_ids if s != int(store)]
                if not sch.store_ids:
                    coord.remove_scheduler(n)
                    return "The scheduler is removed."
                return "The scheduler has been applied to the store."
    raise KeyError(f"scheduler {name} not found")


async def delete_scheduler(request: web.Request) -> web.Response:
    try:
        return _json(_remove(request.app[SERVICE_KEY], request.match_info["name"]))
    except KeyError as e:
        return _json(str(e.args[0]), 404)


async def delete_scheduler_store(request: web.Request) -> web.Response:
    """pd-ctl's `scheduler remove evict-leader-scheduler-<store>` sends this."""
    name, store = request.match_info["name"], request.match_info["store"]
    try:
        return _json(_remove(request.app[SERVICE_KEY], f"{name}-{store}"))
    except KeyError as e:
        return _json(str(e.args[0]), 404)


async def pause_scheduler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    body = await _body(request)
    delay = body.get("delay")
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        return _json("delay must be a non-negative number of seconds (0 resumes)", 400)
    try:
        svc.coordinator.pause_scheduler(request.match_info["name"], float(delay), svc.now())
    except KeyError as e:
        return _json(str(e.args[0]), 404)
    return _json("Pause or resume the scheduler successfully.")


async def scheduler_config(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    name = request.match_info["name"]
    for item in svc.coordinator.list_schedulers(svc.now()):
        if item["name"] == name or item["name"].startswith(name + "-"):
            return _json(item["config"])
    return _json(f"scheduler {name} not found", 404)


async def configure_scheduler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    body = await _body(request)
    try:
        return _json(svc.coordinator.configure_scheduler(request.match_info["name"], body))
    except KeyError as e:
        return _json(str(e.args[0]), 404)
    except ValueError as e:
        return _json(str(e), 400)


async def diagnose(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        return _json(svc.diagnose(request.match_info["name"]))
    except KeyError as e:
        return _json(str(e.args[0]), 404)


async def list_operators(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    if request.query.get("history") == "true":
        return _json(svc.history(int(request.query.get("limit", "100"))))
    kinds = [k for k in request.query.getall("kind", []) if k]
    running = svc.running_operators()
    if kinds:
        running = [op for op in running if any(k in op.kind.label().split(",") for k in kinds)]
    if "object" in request.query:  # PD's OpObject
        return _json(
            [
                {
                    "desc": op.desc,
                    "brief": op.reason,
                    "region_id": op.region_id,
                    "region_epoch": {"conf_ver": op.epoch.conf_ver, "version": op.epoch.version},
                    "kind": op.kind.label(),
                    "timeout": format_duration(op.total_timeout),
                    "status": op.status.name,
                }
                for op in running
            ]
        )
    return _json([op.summary() for op in running])


async def add_operator(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    body = await _body(request)
    name, rid = body.get("name"), body.get("region_id")
    if not isinstance(name, str) or not isinstance(rid, int):
        return _json('body needs "name" (operator kind) and an integer "region_id"', 400)
    op, problem = svc.add_operator(name, rid, body)
    if op is None:
        return _json(problem, 400)
    return _json("The operator is created.")


async def delete_operators(request: web.Request) -> web.Response:
    request.app[SERVICE_KEY].cancel_all("cancelled by an administrator")
    return _json("All pending operators are canceled.")


async def get_operator(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        rid = int(request.match_info["region_id"])
    except ValueError:
        return _json("region id must be an integer", 400)
    op = svc.find_operator(rid)
    if op is None:
        return _json("operator not found", 404)
    return _json(op.summary())


async def delete_operator(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        rid = int(request.match_info["region_id"])
    except ValueError:
        return _json("region id must be an integer", 400)
    if not svc.cancel_operator(rid, "cancelled by an administrator"):
        return _json("operator not found", 404)
    return _json("The pending operator is canceled.")


def _hot_stat_show(region: Region, store_id: int, rate: HotStat, kind: str) -> dict[str, Any]:
    peer = region.peer_on(store_id)
    return {
        "store_id": store_id,
        "stores": sorted(region.store_ids),
        "is_leader": region.leader_store_id == store_id,
        "is_learner": peer is not None and peer.is_learner,
        "region_id": region.id,
        "hot_degree": 0,
        "flow_bytes": rate.rate(kind, "byte"),
        "flow_keys": rate.rate(kind, "key"),
        "flow_query": rate.rate(kind, "query"),
        "flow_cpu": 0.0,
        "anti_count": 0,
    }


def _store_rates(store: Store | None, kind: str) -> tuple[float, float, float]:
    if store is None or store.stats.interval_s <= 0:
        return 0.0, 0.0, 0.0
    st, t = store.stats, float(store.stats.interval_s)
    if kind == "write":
        return st.bytes_written / t, st.keys_written / t, st.query_write / t
    return st.bytes_read / t, st.keys_read / t, st.query_read / t


async def hotspot(request: web.Request) -> web.Response:
    """PD's StoreHotPeersInfos: per store, the hot regions it holds as a peer and as
    the leader. Reads are served by leaders, so read traffic counts on the leader."""
    svc = request.app[SERVICE_KEY]
    kind = request.match_info["kind"]
    if kind not in ("read", "write"):
        return _json("kind must be read or write", 400)
    only: set[int] = set()
    for text in request.query.getall("store_id", []):
        if not text.isdigit():
            return _json(f"invalid store id: {text}", 400)
        only.add(int(text))
    as_peer: dict[int, list[dict[str, Any]]] = {}
    as_leader: dict[int, list[dict[str, Any]]] = {}
    for rid, st in svc.hot_regions().items():
        region = svc.view.tree.get(rid)
        if region is None or st.rate(kind, "byte") <= 0:
            continue
        peers = region.store_ids if kind == "write" else {region.leader_store_id}
        for sid in peers:
            as_peer.setdefault(sid, []).append(_hot_stat_show(region, sid, st, kind))
        leader = region.leader_store_id
        as_leader.setdefault(leader, []).append(_hot_stat_show(region, leader, st, kind))

    def per_store(stats: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sid, items in sorted(stats.items()):
            if only and sid not in only:
                continue
            items.sort(key=lambda x: -float(x["flow_bytes"]))
            sb, sk, sq = _store_rates(svc.view.get_store(sid), kind)
            out[str(sid)] = {
                "store_bytes": sb,
                "store_keys": sk,
                "store_query": sq,
                "store_cpu": 0.0,
                "total_flow_bytes": sum(float(i["flow_bytes"]) for i in items),
                "total_flow_keys": sum(float(i["flow_keys"]) for i in items),
                "total_flow_query": sum(float(i["flow_query"]) for i in items),
                "total_flow_cpu": 0.0,
                "regions_count": len(items),
                "statistics": items,
            }
        return out

    return _json({"as_peer": per_store(as_peer), "as_leader": per_store(as_leader)})


async def hot_history(request: web.Request) -> web.Response:
    """kubepd keeps no history of hot regions (PD writes one every 10 minutes)."""
    return _json({"history_hot_region": []})


async def hot_buckets(request: web.Request) -> web.Response:
    """kubepd does not track TiKV's buckets: no hot buckets to show."""
    return _json({})


async def hot_stores(request: web.Request) -> web.Response:
    """PD's HotStoreStats: each store's read and write rates from its heartbeats."""
    svc = request.app[SERVICE_KEY]
    out: dict[str, dict[str, float]] = {}
    for s in sorted(svc.view.stores(), key=lambda s: s.id):
        if s.is_tombstone:
            continue
        for kind in ("write", "read"):
            for name, value in zip(("bytes", "keys", "query"), _store_rates(s, kind), strict=True):
                out.setdefault(f"{name}-{kind}-rate", {})[str(s.id)] = value
    return _json(out)


def add_scheduling_routes(
    app: web.Application, service: SchedulingService, rules: PlacementRules | None = None
) -> None:
    """`rules`: where placement-rule writes go (the embedded mode); None refuses them."""
    app[SERVICE_KEY] = service
    add_rule_routes(app, rules)
    r = app.router
    r.add_get(PREFIX + "/schedulers", list_schedulers)
    r.add_post(PREFIX + "/schedulers", add_scheduler)
    r.add_delete(PREFIX + "/schedulers/{name}", delete_scheduler)
    r.add_post(PREFIX + "/schedulers/{name}", pause_scheduler)
    r.add_get(PREFIX + "/schedulers/diagnostic/{name}", diagnose)
    r.add_get(PREFIX + "/scheduler-config/{name}/list", scheduler_config)
    r.add_post(PREFIX + "/scheduler-config/{name}/config", configure_scheduler)
    r.add_delete(PREFIX + "/scheduler-config/{name}/delete/{store}", delete_scheduler_store)
    r.add_get(PREFIX + "/operators", list_operators)
    r.add_post(PREFIX + "/operators", add_operator)
    r.add_delete(PREFIX + "/operators", delete_operators)
    r.add_get(PREFIX + "/operators/{region_id}", get_operator)
    r.add_delete(PREFIX + "/operators/{region_id}", delete_operator)
    r.add_get(PREFIX + "/hotspot/regions/{kind}", hotspot)
    r.add_get(PREFIX + "/hotspot/stores", hot_stores)
    r.add_get(PREFIX + "/hotspot/regions/history", hot_history)
    r.add_get(PREFIX + "/hotspot/buckets", hot_buckets)
