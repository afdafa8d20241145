"""PD's placement-rule and region-label endpoints under /pd/api/v1/config.

The rules in force are shown in PD's JSON. Where rules are written depends on the
host: in the embedded mode (`kubepd serve`) PD's write endpoints edit them
(`PlacementRules` under RULES_KEY: checked as PD checks them, durable, applied to
scheduling); on Kubernetes they are `PlacementRule` resources, and a write over HTTP
answers 400 saying so and changes nothing.
kubepd keeps no region label rules: the lists are empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from aiohttp import web

from pdcore.adapters.http.common import (
    API,
    NODE_KEY,
    SERVICE_KEY,
    bad_request,
    error,
    json_body,
    json_response,
    uint_path,
)
from pdcore.scheduling.rule_config import (
    RuleEdit,
    RuleError,
    RuleGroup,
    RuleSet,
    group_from_json,
    group_to_json,
    matcher,
    rule_from_json,
    rule_to_json,
)
from pdcore.scheduling.rules import Rule, fit, rules_for
from pdcore.service.placement_rules import PlacementRules

RULES_KEY: web.AppKey[PlacementRules] = web.AppKey("placement_rules", PlacementRules)
RULE_WRITES = (
    "kubepd takes placement rules from PlacementRule resources (kubectl apply); "
    "they cannot be changed over the HTTP API"
)
LABEL_RULE_WRITES = "kubepd keeps no region label rules"
RULE_NOT_FOUND = "[PD:placement:ErrRuleNotFound]rule not found"


def _rules(request: web.Request) -> list[Rule]:
    return request.app[SERVICE_KEY].coordinator.rules()


def _rule_set(request: web.Request) -> RuleSet:
    """The rules and groups as written here, or (Kubernetes) the rules in force."""
    keeper = request.app.get(RULES_KEY)
    return keeper.current() if keeper is not None else RuleSet.of(_rules(request))


async def list_rules(request: web.Request) -> web.Response:
    return json_response([rule_to_json(r) for r in _rule_set(request).rules_in_force()])


async def group_rules(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    rules = _rule_set(request).rules_in_force()
    return json_response([rule_to_json(r) for r in rules if r.group_id == group])


async def get_rule(request: web.Request) -> web.Response:
    key = (request.match_info["group"], request.match_info["id"])
    rule = _rule_set(request).rules.get(key)
    return json_response(rule_to_json(rule)) if rule else error(RULE_NOT_FOUND, 404)


async def region_rules(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    rid = uint_path(request, "region")
    region = svc.view.tree.get(rid)
    if region is None:
        return error(f"[PD:region:ErrRegionNotFound]region {rid} not found", 404)
    return json_response([rule_to_json(r) for r in rules_for(region, _rules(request))])


async def rule_groups(request: web.Request) -> web.Response:
    return json_response([group_to_json(g) for g in _rule_set(request).all_groups()])


async def rule_group(request: web.Request) -> web.Response:
    """PD answers an unknown group with 404 and a null body."""
    group = _rule_set(request).group(request.match_info["id"])
    return json_response(group_to_json(group)) if group else json_response(None, 404)


def _bundle(rules: RuleSet, group: RuleGroup) -> dict[str, Any]:
    """PD's GroupBundle; `rules` is null for a group without rules, as PD writes it."""
    mine = [rule_to_json(r) for r in rules.rules_in_force() if r.group_id == group.id]
    return {
        "group_id": group.id,
        "group_index": group.index,
        "group_override": group.override,
        "rules": mine or None,
    }


async def bundles(request: web.Request) -> web.Response:
    rules = _rule_set(request)
    return json_response([_bundle(rules, g) for g in rules.all_groups()])


async def bundle(request: web.Request) -> web.Response:
    """PD answers an unknown group with an empty bundle of that id."""
    gid = request.match_info["group"]
    rules = _rule_set(request)
    return json_response(_bundle(rules, rules.group(gid) or RuleGroup(gid)))


# -- writes (embedded mode) -------------------------------------------------------------
def _refusal(e: RuleError) -> web.HTTPException:
    """For raising: PD's status and message for a refused write."""
    kind = web.HTTPBadRequest if e.status == 400 else web.HTTPInternalServerError
    return kind(text=json.dumps(e.message), content_type="application/json")


def _keeper(request: web.Request) -> PlacementRules:
    keeper = request.app.get(RULES_KEY)
    if keeper is None:
        raise bad_request(RULE_WRITES)
    return keeper


async def _parsed(request: web.Request, parse: Callable[[Any], Any]) -> Any:
    """The body through `parse`; PD's error if it is not acceptable."""
    _keeper(request)
    try:
        return parse(await json_body(request))
    except RuleError as e:
        raise _refusal(e) from None


async def _write(
    request: web.Request, change: Callable[[RuleEdit], None], done: str
) -> web.Response:
    try:
        await _keeper(request).write(change)
    except RuleError as e:
        raise _refusal(e) from None
    return json_response(done)


def _list(body: Any, go_type: str) -> list[Any]:
    if not isinstance(body, list):
        raise RuleError(f"json: cannot unmarshal non-array into Go value of type {go_type}")
    return body


async def _sync_max_replicas(request: web.Request, rules: list[Rule]) -> None:
    """As PD: writing the default rule `pd/default` sets max-replicas to its count."""
    node = request.app.get(NODE_KEY)
    for r in rules:
        if node is not None and (r.group_id, r.id) == ("pd", "default"):
            repl = node.config.replication
            if repl.max_replicas != r.count:
                new = replace(repl, max_replicas=r.count)
                await node.set_config(replace(node.config, replication=new))


async def set_rule(request: web.Request) -> web.Response:
    rule: Rule = await _parsed(request, rule_from_json)
    done = await _write(request, lambda e: e.set_rule(rule), "Update rule successfully.")
    await _sync_max_replicas(request, [rule])
    return done


async def delete_rule(request: web.Request) -> web.Response:
    group, rid = request.match_info["group"], request.match_info["id"]
    return await _write(request, lambda e: e.delete_rule(group, rid), "Delete rule successfully.")


def _set_all(rules: list[Rule]) -> Callable[[RuleEdit], None]:
    def change(e: RuleEdit) -> None:
        for r in rules:
            e.set_rule(r)

    return change


async def set_rules(request: web.Request) -> web.Response:
    rules: list[Rule] = await _parsed(
        request, lambda b: [rule_from_json(r) for r in _list(b, "[]*placement.Rule")]
    )
    done = await _write(request, _set_all(rules), "Update rules successfully.")
    await _sync_max_replicas(request, rules)
    return done


def _batch(body: Any) -> Callable[[RuleEdit], None]:
    """PD's rule ops, in order: `add` a rule, `del` one (with delete_by_id_prefix:
    every rule of the group whose id starts so); other actions do nothing, as in PD."""
    steps: list[Callable[[RuleEdit], None]] = []
    for op in _list(body, "[]placement.RuleOp"):
        if not isinstance(op, dict):
            raise RuleError("json: cannot unmarshal a rule op from a non-object")
        action = op.get("action")
        if action == "add":
            rule = rule_from_json(op)
            steps.append(partial(RuleEdit.set_rule, rule=rule))
        elif action == "del":
            group, rid = str(op.get("group_id") or ""), str(op.get("id") or "")
            if op.get("delete_by_id_prefix"):
                steps.append(partial(RuleEdit.delete_where, match=_prefix(group, rid)))
            else:
                steps.append(partial(RuleEdit.delete_rule, group=group, rule_id=rid))

    def change(e: RuleEdit) -> None:
        for step in steps:
            step(e)

    return change


def _prefix(group: str, prefix: str) -> Callable[[Rule], bool]:
    return lambda r: r.group_id == group and r.id.startswith(prefix)


async def batch_rules(request: web.Request) -> web.Response:
    change = await _parsed(request, _batch)
    return await _write(request, change, "Batch operations successfully.")


async def set_rule_group(request: web.Request) -> web.Response:
    group: RuleGroup = await _parsed(request, group_from_json)
    return await _write(request, lambda e: e.set_group(group), "Update rule group successfully.")


async def delete_rule_group(request: web.Request) -> web.Response:
    gid = request.match_info["id"]
    return await _write(request, lambda e: e.delete_group(gid), "Delete rule group successfully.")


Bundle = tuple[RuleGroup, list[Rule]]


def _bundle_from_json(obj: Any, group: str = "") -> Bundle:
    """PD's GroupBundle; `group`: the id from the path, used when the body has none."""
    if not isinstance(obj, dict):
        raise RuleError("json: cannot unmarshal a group bundle from a non-object")
    gid = obj.get("group_id") or group
    if group and gid != group:
        raise RuleError(f"group id {gid} does not match request URI {group}")
    g = group_from_json(
        {"id": gid, "index": obj.get("group_index"), "override": obj.get("group_override")}
    )
    rules = _list(obj.get("rules") or [], "[]*placement.Rule")
    return g, [rule_from_json(r, g.id) for r in rules]


def _replace(given: list[Bundle], match: Callable[[str], bool]) -> Callable[[RuleEdit], None]:
    """Drop the groups `match` picks, with their rules, then write the bundles."""

    def change(e: RuleEdit) -> None:
        e.delete_where(lambda r: match(r.group_id))
        for gid in list(e.groups):
            if match(gid):
                e.delete_group(gid)
        for g, rules in given:
            e.set_group(g)
            for r in rules:
                e.set_rule(r)

    return change


async def set_bundles(request: web.Request) -> web.Response:
    """Every group and rule replaced by the bundles given (`?partial`: only the groups
    the bundles name)."""
    given: list[Bundle] = await _parsed(
        request, lambda b: [_bundle_from_json(x) for x in _list(b, "[]placement.GroupBundle")]
    )
    names = {g.id for g, _ in given}
    partial = "partial" in request.query
    change = _replace(given, lambda gid: not partial or gid in names)
    return await _write(request, change, "Update rules and groups successfully.")


async def set_bundle(request: web.Request) -> web.Response:
    gid = request.match_info["group"]
    given: Bundle = await _parsed(request, lambda b: _bundle_from_json(b, gid))
    change = _replace([given], lambda g: g == gid)
    return await _write(request, change, "Update group and rules successfully.")


async def delete_bundle(request: web.Request) -> web.Response:
    """`?regexp`: the group in the path is a regular expression."""
    _keeper(request)
    try:
        match = matcher(request.match_info["group"], "regexp" in request.query)
    except RuleError as e:
        raise _refusal(e) from None
    return await _write(request, _replace([], match), "Delete group and rules successfully.")


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


def add_rule_routes(app: web.Application, rules: PlacementRules | None = None) -> None:
    """Needs the scheduling service under SERVICE_KEY (add_scheduling_routes sets it).
    `rules`: where rule writes go (the embedded mode); None: writes are refused."""
    if rules is not None:
        app[RULES_KEY] = rules
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
    r.add_post(c + "/rule", set_rule)
    r.add_delete(c + "/rule/{group}/{id}", delete_rule)
    r.add_post(c + "/rules", set_rules)
    r.add_post(c + "/rules/batch", batch_rules)
    r.add_post(c + "/rule_group", set_rule_group)
    r.add_delete(c + "/rule_group/{id}", delete_rule_group)
    r.add_post(c + "/placement-rule", set_bundles)
    r.add_post(c + "/placement-rule/{group}", set_bundle)
    r.add_delete(c + "/placement-rule/{group}", delete_bundle)
    r.add_get(c + "/region-label/rules", label_rules)
    r.add_get(c + "/region-label/rules/ids", label_rules_by_ids)
    r.add_get(c + "/region-label/rule/{id}", label_rule)
    r.add_get(API + "/region/id/{id}/labels", region_labels)
    r.add_post(c + "/region-label/rule", refuse_label_write)
    r.add_patch(c + "/region-label/rules", refuse_label_write)
    r.add_delete(c + "/region-label/rule/{id}", refuse_label_write)
