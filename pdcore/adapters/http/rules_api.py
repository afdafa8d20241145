"""PD's placement-rule and region-label endpoints (read side) under /pd/api/v1/config.

kubepd's placement rules are `PlacementRule` resources on Kubernetes (or the default
rule from the replication config); the rules in force are shown here in PD's JSON.
Writes over HTTP answer 400 saying where rules are edited, and change nothing.
kubepd keeps no region label rules: the lists are empty.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pdcore.adapters.http.common import (
    API,
    SERVICE_KEY,
    bad_request,
    error,
    json_response,
    uint_path,
)
from pdcore.scheduling.rules import Rule, fit, rules_for

RULE_WRITES = (
    "kubepd takes placement rules from PlacementRule resources (kubectl apply); "
    "they cannot be changed over the HTTP API"
)
LABEL_RULE_WRITES = "kubepd keeps no region label rules"


def rule_json(r: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"group_id": r.group_id, "id": r.id}
    if r.index:
        out["index"] = r.index
    if r.override:
        out["override"] = True
    out.update(
        start_key=r.start_key.hex(),
        end_key=r.end_key.hex(),
        role=r.role,
        is_witness=False,
        count=r.count,
    )
    if r.label_constraints:
        out["label_constraints"] = [
            {"key": c.key, "op": c.op, "values": list(c.values)} for c in r.label_constraints
        ]
    if r.location_labels:
        out["location_labels"] = list(r.location_labels)
    if r.isolation_level:
        out["isolation_level"] = r.isolation_level
    return out


def _rules(request: web.Request) -> list[Rule]:
    return request.app[SERVICE_KEY].coordinator.rules()


def _groups(rules: list[Rule]) -> list[dict[str, Any]]:
    """PD's rule groups; kubepd's rules carry only the group id (index 0, no override)."""
    return [{"id": g} for g in sorted({r.group_id for r in rules})]


async def list_rules(request: web.Request) -> web.Response:
    return json_response([rule_json(r) for r in _rules(request)])


async def group_rules(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    return json_response([rule_json(r) for r in _rules(request) if r.group_id == group])


async def get_rule(request: web.Request) -> web.Response:
    group, rid = request.match_info["group"], request.match_info["id"]
    for r in _rules(request):
        if (r.group_id, r.id) == (group, rid):
            return json_response(rule_json(r))
    return error(f"rule {group}/{rid} not found", 404)


async def region_rules(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    rid = uint_path(request, "region")
    region = svc.view.tree.get(rid)
    if region is None:
        return error(f"[PD:region:ErrRegionNotFound]region {rid} not found", 404)
    return json_response([rule_json(r) for r in rules_for(region, _rules(request))])


async def rule_groups(request: web.Request) -> web.Response:
    return json_response(_groups(_rules(request)))


async def rule_group(request: web.Request) -> web.Response:
    gid = request.match_info["id"]
    for g in _groups(_rules(request)):
        if g["id"] == gid:
            return json_response(g)
    return error(f"rule group {gid} not found", 404)


def _bundle(group: str, rules: list[Rule]) -> dict[str, Any]:
    return {
        "group_id": group,
        "group_index": 0,
        "group_override": False,
        "rules": [rule_json(r) for r in rules if r.group_id == group],
    }


async def bundles(request: web.Request) -> web.Response:
    rules = _rules(request)
    return json_response([_bundle(g["id"], rules) for g in _groups(rules)])


async def bundle(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    rules = _rules(request)
    if not any(r.group_id == group for r in rules):
        return error(f"rule group {group} not found", 404)
    return json_response(_bundle(group, rules))


def _hex_query(request: web.Request, name: str) -> bytes:
    try:
        return bytes.fromhex(request.query.get(name, ""))
    except ValueError as e:
        raise bad_request(f"encoding/hex: {e}") from None


async def replicated(request: web.Request) -> web.Response:
    """PD's replication state of a key range: REPLICATED when every region fits its
    rules, INPROGRESS while one does not, PENDING when the checker cannot repair one
    yet. Keys are hex (`startKey`, `endKey`)."""
    svc = request.app[SERVICE_KEY]
    start, end = _hex_query(request, "startKey"), _hex_query(request, "endKey")
    rules = _rules(request)
    stores = {s.id: s for s in svc.view.stores()}
    pending = svc.coordinator.patrol.pending
    state = "REPLICATED"
    for region in svc.view.tree.scan(start, end) if not end or start < end else []:
        if not fit(region, rules_for(region, rules), stores).satisfied:
            state = "INPROGRESS"
            if region.id in pending:
                state = "PENDING"
                break
    return json_response(state)


async def refuse_rule_write(request: web.Request) -> web.Response:
    return error(RULE_WRITES)


async def label_rules(request: web.Request) -> web.Response:
    return json_response([])


async def label_rules_by_ids(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        ids = json.loads(body or b"[]")
    except json.JSONDecodeError as e:
        raise bad_request(str(e)) from None
    if not isinstance(ids, list):
        raise bad_request("body must be a JSON list of rule ids")
    return json_response([])


async def label_rule(request: web.Request) -> web.Response:
    return error(f"rule {request.match_info['id']} not found", 404)


async def region_labels(request: web.Request) -> web.Response:
    return json_response({})


async def refuse_label_write(request: web.Request) -> web.Response:
    return error(LABEL_RULE_WRITES)


def add_rule_routes(app: web.Application) -> None:
    """Needs the scheduling service under SERVICE_KEY (add_scheduling_routes sets it)."""
    c = API + "/config"
    r = app.router
    r.add_get(API + "/regions/replicated", replicated)
    r.add_get(c + "/rules", list_rules)
    r.add_get(c + "/rules/group/{group}", group_rules)
    r.add_get(c + "/rules/region/{region}", region_rules)
    r.add_get(c + "/rule/{group}/{id}", get_rule)
    r.add_get(c + "/rule_groups", rule_groups)
    r.add_get(c + "/rule_group/{id}", rule_group)
    r.add_get(c + "/placement-rule", bundles)
    r.add_get(c + "/placement-rule/{group}", bundle)
    for path in ("/rule", "/rules", "/rules/batch", "/rule_group", "/placement-rule"):
        r.add_post(c + path, refuse_rule_write)
    r.add_post(c + "/rules/group/{group}", refuse_rule_write)
    r.add_post(c + "/placement-rule/{group}", refuse_rule_write)
    r.add_delete(c + "/rule/{group}/{id}", refuse_rule_write)
    r.add_delete(c + "/rule_group/{id}", refuse_rule_write)
    r.add_delete(c + "/placement-rule/{group}", refuse_rule_write)
    r.add_get(c + "/region-label/rules", label_rules)
    r.add_get(c + "/region-label/rules/ids", label_rules_by_ids)
    r.add_get(c + "/region-label/rule/{id}", label_rule)
    r.add_get(API + "/region/id/{id}/labels", region_labels)
    r.add_post(c + "/region-label/rule", refuse_label_write)
    r.add_patch(c + "/region-label/rules", refuse_label_write)
    r.add_delete(c + "/region-label/rule/{id}", refuse_label_write)
