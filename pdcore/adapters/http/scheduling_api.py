"""PD's scheduler and operator HTTP endpoints, plus our "why nothing is scheduled"
diagnostic, under /pd/api/v1."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pdcore.service.scheduling import SchedulingService

PREFIX = "/pd/api/v1"
SERVICE_KEY: web.AppKey[SchedulingService] = web.AppKey("scheduling", SchedulingService)


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


async def delete_scheduler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        svc.coordinator.remove_scheduler(request.match_info["name"])
    except KeyError as e:
        return _json(str(e.args[0]), 404)
    return _json("The scheduler is removed.")


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
        return _json(svc.coordinator.diagnose(request.match_info["name"]))
    except KeyError as e:
        return _json(str(e.args[0]), 404)


async def list_operators(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    if request.query.get("history") == "true":
        return _json(svc.history(int(request.query.get("limit", "100"))))
    ops = svc.operators()
    kind = request.query.get("kind")
    if kind:
        ops = [o for o in ops if kind in str(o["kind"])]
    return _json(ops)


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


async def get_operator(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        rid = int(request.match_info["region_id"])
    except ValueError:
        return _json("region id must be an integer", 400)
    op = svc.coordinator.controller.get(rid)
    if op is None:
        return _json("operator not found", 404)
    return _json(op.summary())


async def delete_operator(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        rid = int(request.match_info["region_id"])
    except ValueError:
        return _json("region id must be an integer", 400)
    if svc.coordinator.controller.cancel(rid, svc.now(), "cancelled by an administrator") is None:
        return _json("operator not found", 404)
    return _json("The pending operator is canceled.")


async def hotspot(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    kind = request.match_info["kind"]
    if kind not in ("read", "write"):
        return _json("kind must be read or write", 400)
    out = []
    for rid, st in svc.coordinator.hot.items():
        rate = st.write_bytes if kind == "write" else st.read_bytes
        region = svc.view.tree.get(rid)
        if rate > 0 and region is not None:
            out.append({"region_id": rid, "store_id": region.leader_store_id, "byte_rate": rate})
    out.sort(key=lambda x: -float(x["byte_rate"]))
    return _json({"as_leader": out})


def add_scheduling_routes(app: web.Application, service: SchedulingService) -> None:
    app[SERVICE_KEY] = service
    r = app.router
    r.add_get(PREFIX + "/schedulers", list_schedulers)
    r.add_post(PREFIX + "/schedulers", add_scheduler)
    r.add_delete(PREFIX + "/schedulers/{name}", delete_scheduler)
    r.add_post(PREFIX + "/schedulers/{name}", pause_scheduler)
    r.add_get(PREFIX + "/schedulers/diagnostic/{name}", diagnose)
    r.add_get(PREFIX + "/scheduler-config/{name}/list", scheduler_config)
    r.add_post(PREFIX + "/scheduler-config/{name}/config", configure_scheduler)
    r.add_get(PREFIX + "/operators", list_operators)
    r.add_post(PREFIX + "/operators", add_operator)
    r.add_get(PREFIX + "/operators/{region_id}", get_operator)
    r.add_delete(PREFIX + "/operators/{region_id}", delete_operator)
    r.add_get(PREFIX + "/hotspot/regions/{kind}", hotspot)
